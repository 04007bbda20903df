"""The learning-rate sweep's training budget, on a small synthetic split (no MNIST needed)."""

import torch

from nnhw import config, sweep
from nnhw.data import N_CLASSES, N_PIXELS, Split

from conftest import REPO


def synthetic_splits(n=300, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"train": Split(torch.rand(n, N_PIXELS, generator=gen), torch.randint(0, N_CLASSES, (n,), generator=gen))}


def test_a_budget_of_several_passes_trains_on_every_one(monkeypatch):
    """--budget allows up to 10 effective epochs: a budget past one pass of the split draws a fresh
    permutation for each pass, and every step gets a full batch, as nnhw.train's would."""
    cfg = config.load(REPO / "configs" / "relu.toml", ['run.device="cpu"', "train.batch_size=100"])
    seen = []
    real = sweep.make_train_step

    def counting(*args, **kwargs):
        step = real(*args, **kwargs)

        def counted(x, y, lr, *rest):
            seen.append(y.clone())
            return step(x, y, lr, *rest)

        return counted

    monkeypatch.setattr(sweep, "make_train_step", counting)
    loss = sweep.loss_after_budget(cfg, synthetic_splits(), 0.5, 750, torch.device("cpu"))  # 2.5 passes of 300 points
    sizes = [len(y) for y in seen]
    assert sizes == [100] * 7 + [50] and sum(sizes) == 750
    assert torch.isfinite(torch.tensor(loss))
    # each full pass sees every point once, in a new order
    first, second = torch.cat(seen[:3]), torch.cat(seen[3:6])
    assert sorted(first.tolist()) == sorted(second.tolist()) and not torch.equal(first, second)
