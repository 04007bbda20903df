"""Homework 5's derivatives by hand and every claim of `python -m nnhw.theory`, as tests."""

import math
import random

import pytest
import torch

from nnhw import autodiff, theory


def points(n=20, seed=0):
    rng = random.Random(seed)
    return [(rng.uniform(-2, 2), rng.choice([-1, 1]) * rng.uniform(0.3, 1.5)) for _ in range(n)]


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


@pytest.mark.parametrize("w1, w2", points())
def test_reverse_mode_equals_autograd(w1, w2):
    f, (g1, g2) = autodiff.reverse_mode(w1, w2)
    f_ag, (a1, a2) = autodiff.autograd_gradient(w1, w2)
    assert rel(f, f_ag) <= 1e-12 and rel(g1, a1) <= 1e-12 and rel(g2, a2) <= 1e-12


@pytest.mark.parametrize("w1, w2", points())
def test_forward_mode_equals_autograd(w1, w2):
    f, d1 = autodiff.forward_mode(w1, w2)
    _, d2 = autodiff.forward_mode(w1, w2, 0.0, 1.0)
    _, (a1, a2) = autodiff.autograd_gradient(w1, w2)
    assert rel(d1, a1) <= 1e-12 and rel(d2, a2) <= 1e-12
    assert f == autodiff.trace(w1, w2)[-1]


def test_trace_is_f():
    w1, w2 = 0.7, -0.4
    f = (math.sin(2 * math.pi * w1 / w2) + 3 * w1 / w2 - math.exp(2 * w2)) * (3 * w1 / w2 - math.exp(2 * w2))
    assert rel(autodiff.trace(w1, w2)[-1], f) <= 1e-14


def test_forward_mode_gradient_equals_reverse_in_high_dimension():
    loss, w = autodiff.mlp_loss(300)
    torch.testing.assert_close(autodiff.gradient_forward_mode(loss, w), autodiff.gradient_reverse_mode(loss, w), rtol=1e-10, atol=1e-14)


def test_forward_mode_takes_d_passes_and_reverse_one():
    loss, w = autodiff.mlp_loss(40)
    calls = []

    def counted(v):
        calls.append(1)
        return loss(v)

    autodiff.gradient_forward_mode(counted, w)
    assert len(calls) == 40
    calls.clear()
    autodiff.gradient_reverse_mode(counted, w)
    assert len(calls) == 1


def test_cost_table_and_loglog_fit():
    rows = autodiff.mode_cost_table(dims=(5, 20), repeats=1)
    assert [r["d"] for r in rows] == [5, 20] and all(r["max_abs_diff"] < 1e-12 for r in rows)
    exact = [dict(d=d, ratio=3.0 * d) for d in (10, 100, 1000)]  # a ratio that is exactly linear in d
    fit = autodiff.loglog_fit(exact)
    assert fit["slope"] == pytest.approx(1.0) and fit["r2"] == pytest.approx(1.0)


def test_hand_answers_check_both_forward_passes(monkeypatch):
    """The comparison with autograd covers df/dw2 from forward mode's second pass, along (0, 1)."""
    good = autodiff.hand_answers(1.5, 0.5)
    assert good["largest_relative_difference"] < 1e-12
    real = autodiff.forward_mode

    def second_pass_off(w1, w2, dw1=1.0, dw2=0.0):
        f, d = real(w1, w2, dw1, dw2)
        return f, d * 1.01 if dw2 else d

    monkeypatch.setattr(autodiff, "forward_mode", second_pass_off)
    bad = autodiff.hand_answers(1.5, 0.5)
    assert bad["forward"]["df_dw1"] == good["forward"]["df_dw1"] and bad["largest_relative_difference"] > 5e-3


@pytest.mark.slow  # the commands end to end
def test_autodiff_cli_writes_the_table_fit_and_figure(tmp_path):
    import json

    from conftest import run_cli

    res = run_cli("nnhw.autodiff", "--dims", "4", "16", "--repeats", "1", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    numbers = json.loads((tmp_path / "autodiff.json").read_text())
    assert [r["d"] for r in numbers["cost_table"]] == [4, 16] and "slope" in numbers["cost_fit"]
    assert (tmp_path / "autodiff_cost.png").read_bytes()[:4] == b"\x89PNG"
    assert f"slope {numbers['cost_fit']['slope']:.3f}" in res.stdout


SLOW_CLAIMS = {"2.2.3"}  # 20,000 gradient steps: the fast tier checks its mechanism on fewer, below


@pytest.mark.parametrize("number, claim, fn", [
    pytest.param(*c, id=c[0], marks=[pytest.mark.slow] if c[0] in SLOW_CLAIMS else []) for c in theory.CLAIMS
])
def test_theory_claim_holds(number, claim, fn):
    result = fn()
    assert result["holds"], result


def test_identical_units_stay_identical_and_a_perturbation_lets_the_loss_fall():
    """2.2.3 over a tenth of its steps: gradient descent keeps the units identical to the last bit, and a
    perturbed copy goes on to less than half the symmetric net's loss. That the symmetric net has come to
    rest (its gradient norm under 1e-3) takes the claim's full run, in the slow tier."""
    result = theory.claim_2_2_3(steps=1000)
    assert result["max_spread_between_units"] == 0.0, result
    assert result["loss_after_perturbation"] < 0.5 * result["loss_symmetric"], result


def test_claims_fail_when_they_should():
    # The claims' checks can fail: a tanh net with biases does not simply flip sign at depth 2,
    # and a non-orthogonal target gives a non-zero gradient at w = 0.
    x = torch.randn(5, 3, dtype=torch.float64)
    ws = [torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64), torch.randn(1, 4, dtype=torch.float64)]
    bs = [torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64), torch.randn(1, dtype=torch.float64)]
    y = theory._net(x, ws, theory.nf.tanh, bs)
    y_flip = theory._net(x, [-w for w in ws], theory.nf.tanh, [-b for b in bs])
    assert (y_flip + y).abs().max() > 1e-3 and (y_flip - y).abs().max() > 1e-3
    assert theory.claim_2_2_1()["grad_norm_generic_y"] > 1e-3


def test_square_net_linear_weights():
    g = torch.Generator().manual_seed(5)
    w1, b1 = torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    w2, b2 = torch.randn(1, 3, generator=g, dtype=torch.float64), torch.randn(1, generator=g, dtype=torch.float64)
    x = torch.randn(7, 2, generator=g, dtype=torch.float64)
    y = ((x @ w1.t() + b1) ** 2) @ w2.t() + b2
    torch.testing.assert_close(theory.quadratic_features(x) @ theory.square_net_as_linear(w1, b1, w2, b2), y[:, 0])


@pytest.mark.slow  # the commands end to end
def test_theory_cli_writes_figure(tmp_path):
    assert theory.main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "gd_rates.png").read_bytes()[:4] == b"\x89PNG"
