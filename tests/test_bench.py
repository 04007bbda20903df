"""The benchmark's references must compute what they claim, or their timings mean nothing."""

import importlib.util

import pytest
import torch

from nnhw import config, models
from nnhw.train import build, make_train_step

from conftest import REPO

spec = importlib.util.spec_from_file_location("bench", REPO / "tools" / "bench.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model.hidden=[30, 20]", "model.transfer=tanh", "optim.l2=1e-3"],
        ["model.hidden=[25]", "model.transfer=relu", "model.init=he"],
    ],
)
def test_fused_reference_makes_the_same_updates_as_nnhw(overrides):
    cfg = config.load(REPO / "configs" / "sigmoid.toml", ['run.device="cpu"', *overrides])
    gen = torch.Generator().manual_seed(3)
    batches = [(torch.randn(16, 784, generator=gen), torch.randint(0, 10, (16,), generator=gen)) for _ in range(5)]
    params, forward, loss_fn, opt = build(cfg, torch.device("cpu"))
    fused = bench.fused_step_fn(cfg, params)
    ours = make_train_step(params, forward, loss_fn, opt, engine="tape")
    for x, y in batches:
        ours(x, y, cfg.optim.lr)
        fused(x, y)
    assert set(fused.params) == set(params)
    for name, p in params.items():
        assert not torch.equal(p.detach(), models.init_params(cfg.model, 0)[name])  # the steps moved it
        torch.testing.assert_close(fused.params[name], p.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["relu", "deep", "cnn"])
def test_fused_reference_declines_what_it_does_not_implement(name):
    # relu: squared error; deep: dropout; cnn: convolutions
    cfg = config.load(REPO / "configs" / f"{name}.toml", ['run.device="cpu"'])
    assert bench.fused_step_fn(cfg, models.init_params(cfg.model, 0)) is None


def test_products_reference_runs_every_product_of_the_step():
    cfg = config.load(REPO / "configs" / "sigmoid.toml", ['run.device="cpu"', "model.hidden=[30, 20]", "train.batch_size=8"])
    calls = []
    real_mm = torch.mm

    def counting_mm(a, b, **kw):
        calls.append((tuple(a.shape), tuple(b.shape)))
        return real_mm(a, b, **kw)

    step = bench.products_step_fn(cfg, torch.device("cpu"))
    torch.mm = counting_mm
    try:
        step(torch.randn(8, 784), torch.zeros(8, dtype=torch.int64))
    finally:
        torch.mm = real_mm
    # forward: 3 layers; weight gradients: 3; input gradients: 2 (none for the pixels)
    assert sorted(calls) == sorted([
        ((8, 784), (784, 30)), ((8, 30), (30, 20)), ((8, 20), (20, 10)),
        ((10, 8), (8, 20)), ((20, 8), (8, 30)), ((30, 8), (8, 784)),
        ((8, 10), (10, 20)), ((8, 20), (20, 30)),
    ])
