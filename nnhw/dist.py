"""Data-parallel training on torch.distributed, launched with torchrun.

DistributedDataParallel needs a torch Module, which nnhw does not use, so the
gradient all-reduce is ours: every rank takes its shard of each global batch
(the same global permutation everywhere), computes the mean-loss gradient of
its shard, weights it by its share of the batch, and one all-reduce over the
flattened gradients sums the shares into the gradient of the global batch. The
optimiser step is then identical on every rank.

Without torchrun (no WORLD_SIZE in the environment) World is a single process
and every method is a no-op.
"""

import datetime
import os

import torch
import torch.distributed as dist


class World:
    """This process's place among the training processes."""

    def __init__(self, rank=0, size=1, local_rank=0):
        self.rank, self.size, self.local_rank = rank, size, local_rank

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.size > 1

    def shard(self, n):
        """[lo, hi) of this rank's share of n consecutive items (as even as possible)."""
        base, extra = divmod(n, self.size)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    def reduce_gradients(self, grads, weight):
        """sum over ranks of weight_r * grad_r, with one all-reduce of the flattened gradients."""
        if not self.distributed:
            return grads
        flat = torch.cat([g.reshape(-1) for g in grads]).mul_(weight)
        dist.all_reduce(flat)
        return [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in grads]), grads)]

    def sum(self, tensor):
        """All-reduce (sum) a tensor in place; returns it."""
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def any(self, flag, device):
        """True on every rank when the flag is set on any rank."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def close(self):
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def init(device_name, timeout_s):
    """The World from torchrun's environment; initialises the process group when there are peers."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend="nccl" if use_cuda else "gloo",
        timeout=datetime.timedelta(seconds=timeout_s),
        **({"device_id": torch.device("cuda", local_rank)} if use_cuda else {}),
    )
    return World(rank, size, local_rank)
