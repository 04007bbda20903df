"""Evaluation: the average loss and the misclassification error of a model on a split."""

import torch

from . import dist as dist_mod


@torch.no_grad()
def evaluate(params, forward, loss_fn, split, batch_size, world=None, max_points=0):
    """Average loss and misclassification % over a split (its first max_points only, when > 0), in
    large batches. Under torchrun each process evaluates its shard and one all-reduce adds them up."""
    world = world or dist_mod.World()
    n = len(split) if not max_points else min(max_points, len(split))
    lo, hi = world.shard(n)
    totals = torch.zeros(2, device=split.x.device, dtype=torch.float64)  # loss sum, mistakes
    for i in range(lo, hi, batch_size):
        x, y = split.x[i : min(i + batch_size, hi)], split.y[i : min(i + batch_size, hi)]
        out = forward(params, x)
        totals[0] += loss_fn(out, y).double() * len(y)
        totals[1] += (out.argmax(dim=1) != y).sum()
    loss_sum, wrong = world.sum(totals).tolist()
    return loss_sum / n, 100.0 * wrong / n
