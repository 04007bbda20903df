"""nnhw's optimisers and schedules against their formulas, and against torch.optim as a reference
(the tests may use it; nnhw/ may not)."""

import math

import pytest
import torch

from nnhw import config, optim, sharpness
from nnhw.optim import Adam, MomentumSGD, lr_at


def _problem(seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = {"W1": torch.randn(4, 3, generator=gen, dtype=torch.float64), "b1": torch.randn(4, generator=gen, dtype=torch.float64)}
    x = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    return params, x


def _grads(params, x):
    loss = ((x @ params["W1"].T + params["b1"]).tanh() ** 2).mean()
    return torch.autograd.grad(loss, list(params.values()))


@pytest.mark.parametrize("l2", [0.0, 0.01])
def test_adam_matches_torch_adam(l2):
    """L2 enters the gradient before the running means, as torch.optim.Adam's weight_decay does;
    biases are left out of it, so the reference gets two groups."""
    ours, x = _problem()
    ours = {n: p.clone().requires_grad_() for n, p in ours.items()}
    ref = {n: p.detach().clone().requires_grad_() for n, p in ours.items()}
    opt = Adam(ours, beta1=0.8, beta2=0.99, eps=1e-6, l2=l2)
    ref_opt = torch.optim.Adam([{"params": [ref["W1"]], "weight_decay": l2}, {"params": [ref["b1"]], "weight_decay": 0.0}],
                               lr=0.05, betas=(0.8, 0.99), eps=1e-6)
    for step in range(6):
        lr = 0.05 * (step + 1) / 6  # a changing rate, as under a schedule
        opt.step(_grads(ours, x), lr)
        for group in ref_opt.param_groups:
            group["lr"] = lr
        ref_opt.zero_grad()
        for p, g in zip(ref.values(), _grads(ref, x)):
            p.grad = g
        ref_opt.step()
    for n in ours:
        torch.testing.assert_close(ours[n], ref[n], rtol=1e-12, atol=1e-14)


def test_adam_first_step_moves_each_weight_by_lr():
    """After one update m^ = g and s^ = g^2, so every weight moves by lr * sign(g) (eps aside)."""
    params, x = _problem(1)
    params = {n: p.clone().requires_grad_() for n, p in params.items()}
    before = {n: p.detach().clone() for n, p in params.items()}
    grads = _grads(params, x)
    Adam(params, eps=1e-12).step(grads, 0.01)
    for (n, p), g in zip(params.items(), grads):
        torch.testing.assert_close(p.detach() - before[n], -0.01 * torch.sign(g), rtol=1e-8, atol=1e-12)


def test_adam_state_round_trips():
    params, x = _problem(2)
    params = {n: p.clone().requires_grad_() for n, p in params.items()}
    opt = Adam(params)
    for _ in range(3):
        opt.step(_grads(params, x), 0.01)
    fresh = Adam({n: p.detach().clone().requires_grad_() for n, p in params.items()})
    fresh.load_state_dict(opt.state_dict())
    assert fresh.t == 3 and all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), opt.state_dict().values()))


def test_momentum_sgd_is_the_heavy_ball_update():
    params, x = _problem(3)
    params = {n: p.clone().requires_grad_() for n, p in params.items()}
    w0 = params["W1"].detach().clone()
    opt = MomentumSGD(params, momentum=0.5, l2=0.1)
    g1 = _grads(params, x)
    opt.step(g1, 0.1)
    v1 = g1[0] + 0.1 * w0
    torch.testing.assert_close(params["W1"].detach(), w0 - 0.1 * v1)


def _optim(**kw):
    cfg = config.load(None, [f"optim.{k}={v!r}".replace("'", '"') for k, v in kw.items()])
    return cfg.optim


def test_warmup_then_linear_is_one_cycle():
    o = _optim(lr=0.01, schedule="linear", warmup=0.2, final_fraction=0.0)
    assert lr_at(o, 0.0, 2) == 0.0
    assert lr_at(o, 0.2, 2) == pytest.approx(0.005)  # half-way up
    assert lr_at(o, 0.4, 2) == pytest.approx(0.01)  # the peak, at the end of the warm-up
    assert lr_at(o, 1.2, 2) == pytest.approx(0.005)  # half-way down the remaining 1.6 passes
    assert lr_at(o, 2.0, 2) == pytest.approx(0.0)


def test_warmup_then_cosine_and_without_warmup_unchanged():
    o = _optim(lr=0.1, schedule="cosine", warmup=0.5)
    assert lr_at(o, 2.0, 4) == pytest.approx(0.1) and lr_at(o, 3.0, 4) == pytest.approx(0.05)
    plain = _optim(lr=0.1, schedule="cosine")
    assert lr_at(plain, 0.0, 4) == 0.1 and lr_at(plain, 2.0, 4) == pytest.approx(0.05)
    assert math.isclose(lr_at(_optim(lr=0.1, warmup=0.25), 0.5, 4), 0.05)  # constant after a warm-up


def test_max_norm_projects_each_row_onto_the_ball():
    """Rows (a conv filter counts as one row) longer than c come back at norm c in the same direction,
    shorter ones are untouched: what torch.renorm does, as a reference."""
    from nnhw.optim import max_norm_

    gen = torch.Generator().manual_seed(3)
    W = torch.randn(6, 5, generator=gen, dtype=torch.float64) * torch.tensor([0.1, 1, 2, 3, 0.2, 5], dtype=torch.float64)[:, None]
    K = torch.randn(4, 2, 3, 3, generator=gen, dtype=torch.float64)
    c = 1.5
    ref = [torch.renorm(W, 2, 0, c), torch.renorm(K, 2, 0, c)]
    before = W.clone()
    max_norm_([W, K], c)
    for got, want in zip((W, K), ref):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    norms = before.norm(dim=1)
    assert (norms < c).any() and (norms > c).any()  # the sample has rows on both sides of the ball
    torch.testing.assert_close(W[norms < c], before[norms < c], rtol=0, atol=0)
    torch.testing.assert_close(W.norm(dim=1)[norms > c], torch.full_like(norms[norms > c], c))


@pytest.mark.parametrize("make", [lambda p: MomentumSGD(p, 0.9, 0.0, max_norm=0.5), lambda p: Adam(p, max_norm=0.5)])
def test_optimisers_keep_weights_inside_max_norm_and_leave_biases(make):
    params, x = _problem(4)
    params = {n: (p * 3).requires_grad_() for n, p in params.items()}  # rows start far outside the ball
    opt = make(params)
    bias_before = params["b1"].detach().clone()
    g = _grads(params, x)
    opt.step(g, 0.01)
    assert (params["W1"].detach().norm(dim=1) <= 0.5 + 1e-12).all()
    assert params["b1"].detach().norm() > 0.5  # biases are not constrained
    assert not torch.equal(params["b1"].detach(), bias_before)


def test_the_momentum_ramp_climbs_linearly_then_stays():
    o = config.load(None, ["optim.momentum=0.99", "optim.momentum_start=0.5", "optim.momentum_ramp=4"]).optim
    assert [optim.momentum_at(o, d) for d in (0, 1, 2, 4, 9)] == pytest.approx([0.5, 0.6225, 0.745, 0.99, 0.99])
    assert optim.momentum_at(config.load(None, ["optim.momentum=0.9"]).optim, 0) == 0.9  # no ramp: the momentum itself
    assert sharpness.stability_threshold(o, 0.1, momentum=0.5) == pytest.approx(30.0)  # (2 + 2 * 0.5) / 0.1
    with pytest.raises(config.ConfigError, match="optim.momentum_ramp: ramps the heavy-ball momentum of 'sgd'"):
        config.load(None, ['optim.optimizer="adam"', "optim.momentum_ramp=2"])


def test_each_step_takes_the_momentum_of_its_point_on_the_ramp():
    from nnhw.data import Split
    from nnhw.trainer import Trainer
    from nnhw.checkpoint import TrainState

    cfg = config.load(None, ["model.hidden=[4]", "train.batch_size=25", "train.epochs=2", "optim.momentum=0.9",
                             "optim.momentum_start=0.1", "optim.momentum_ramp=1", 'run.device="cpu"'])
    gen = torch.Generator().manual_seed(0)
    trainer = Trainer.start(cfg, torch.device("cpu"), Split(torch.rand(100, 784, generator=gen), torch.randint(0, 10, (100,), generator=gen)))
    state, seen = TrainState(), []
    real_step = trainer.net.opt.step

    def record(grads, lr):
        seen.append(trainer.net.opt.momentum)
        real_step(grads, lr)

    trainer.net.opt.step = record
    for _ in range(6):
        trainer.step(state)
    assert seen == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9, 0.9])  # 25 points a step: a quarter of the ramp each


def test_the_exponential_schedule_multiplies_by_gamma_after_each_pass():
    o = config.load(None, ['optim.schedule="exponential"', "optim.gamma=0.95", "optim.lr=0.001"]).optim
    assert [lr_at(o, d, 35) for d in (0, 0.99, 1, 2.5, 34.9)] == pytest.approx([1e-3, 1e-3, 0.95e-3, 0.95**2 * 1e-3, 0.95**34 * 1e-3])


def test_the_step_schedule_drops_at_each_milestone_not_a_step_later():
    o = config.load(None, ['optim.schedule="step"', "optim.milestones=[2, 5]", "optim.gamma=0.1", "optim.lr=1.0"]).optim
    for done, want in [(0.0, 1.0), (1.999, 1.0), (2.0, 0.1), (2.001, 0.1), (4.999, 0.1), (5.0, 0.01), (7.0, 0.01)]:
        assert optim.lr_at(o, done, 10) == pytest.approx(want), done
    warm = config.load(None, ['optim.schedule="step"', "optim.milestones=[2]", "optim.warmup=0.1", "optim.lr=1.0"]).optim
    assert optim.lr_at(warm, 0.5, 10) == pytest.approx(0.5) and optim.lr_at(warm, 2.0, 10) == pytest.approx(0.1)  # warm-up, then the drop
