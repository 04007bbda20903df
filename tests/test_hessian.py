"""Hessian-vector products through nnhw's own rules, and the top eigenvalue, against exact Hessians.

Everything runs in float64. Each network is written twice: through nnhw's Functions
(nnhw.models' forward pass) and in built-in ops, whose Hessian-vector products torch.autograd
computes from its own derivatives; the two must agree to 1e-10.
"""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nnhw import config, functions as nf, hessian, layers, models, sharpness
from nnhw.data import IMAGE_SIDE, N_CLASSES, N_PIXELS

BUILTIN_TRANSFER = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "identity": lambda a: a, "square": lambda a: a * a}


@pytest.fixture(autouse=True)
def float64():  # this module's tensors, restored after each test
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def model_cfg(**kw):
    base = dict(arch="mlp", hidden=[6], transfer="tanh", output_transfer="identity", loss="cross_entropy", init="xavier")
    if kw.get("arch") == "cnn":
        base.update(hidden=[], conv_channels=[2], conv_kernel=[5], pool=2, pool_stride=2)
    return dataclasses.replace(config.ModelConfig(), **{**base, **kw})


def builtin_forward(m, params, x, generator=None):
    """The same network in built-in ops; dropout draws its masks from `generator` in nnhw's order."""
    f, n_fc = BUILTIN_TRANSFER[m.transfer], len(m.hidden) + 1

    def drop(a, p):
        if generator is None or p == 0:
            return a
        return a * ((torch.rand(a.shape, generator=generator) >= p).to(a.dtype) / (1 - p))

    z = drop(x, m.dropout_input)
    if m.arch == "cnn":
        z = z.view(len(z), 1, IMAGE_SIDE, IMAGE_SIDE)
        for l, stride in enumerate(m.conv_stride or [1] * len(m.conv_channels), 1):
            z = f(F.conv2d(z, params[f"Wc{l}"], params[f"bc{l}"], stride, m.conv_padding))
            if m.pool > 1:
                z = (F.max_pool2d if m.pool_type == "max" else F.avg_pool2d)(z, m.pool, m.pool_stride)
            z = drop(z, m.dropout_conv[l - 1] if m.dropout_conv else 0.0)
        z = z.flatten(1)
    for l in range(1, n_fc):
        z = drop(f(F.linear(z, params[f"W{l}"], params[f"b{l}"])), m.dropout_hidden)
    return BUILTIN_TRANSFER[m.output_transfer](F.linear(z, params[f"W{n_fc}"], params[f"b{n_fc}"]))


def builtin_loss(m, out, y):
    if m.loss == "cross_entropy":
        return F.cross_entropy(out, y)
    return F.mse_loss(out, F.one_hot(y, N_CLASSES).to(out.dtype))


def losses(m, n=5, seed=0):
    """(f_nnhw, f_builtin, params, v): the same loss of one small batch, through nnhw and built-in ops;
    with dropout, each call draws the same masks (a fixed mask)."""
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.rand(n, N_PIXELS, generator=gen), torch.randint(0, N_CLASSES, (n,), generator=gen)
    model = layers.describe(m)
    params = {k: p.detach().double() for k, p in models.init_params(model, m, seed).items()}
    params = {k: p + 0.1 * torch.randn(p.shape, generator=gen) for k, p in params.items()}  # biases off zero too
    v = {k: torch.randn(p.shape, generator=gen) for k, p in params.items()}
    forward = models.make_forward(model, models.init_running(model, "cpu"), m.batch_norm_momentum)
    loss_fn, dropping = models.make_loss(m), bool(m.dropout_input or m.dropout_hidden or any(m.dropout_conv))

    def mask_stream():
        return torch.Generator().manual_seed(123) if dropping else None

    def f_nnhw(p):
        return loss_fn(forward(p, x, mask_stream()), y)

    def f_builtin(p):
        return builtin_loss(m, builtin_forward(m, p, x, mask_stream()), y)

    return f_nnhw, f_builtin, params, v


def builtin_hvp(f, params, v):
    names = list(params)
    _, hv = torch.autograd.functional.hvp(lambda *ts: f(dict(zip(names, ts))), tuple(params[k] for k in names), tuple(v[k] for k in names))
    return dict(zip(names, hv))


def assert_dicts_close(a, b, tol=1e-10):
    assert set(a) == set(b)
    scale = max(t.abs().max().item() for t in b.values())
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol * scale, msg=lambda m: f"{k}: {m}")


NETWORKS = {
    **{f"mlp {t}, cross-entropy": dict(transfer=t) for t in BUILTIN_TRANSFER},
    "mlp sigmoid, squared error, sigmoid outputs": dict(transfer="sigmoid", output_transfer="sigmoid", loss="squared_error"),
    "mlp relu, squared error": dict(transfer="relu", loss="squared_error", hidden=[5, 4]),
    "cnn, average pooling": dict(arch="cnn", transfer="tanh"),
    "cnn, max pooling": dict(arch="cnn", transfer="relu", pool_type="max"),
    "mlp tanh, dropout with a fixed mask": dict(transfer="tanh", hidden=[6, 5], dropout_input=0.2, dropout_hidden=0.5),
    "cnn, strided convolutions, no pooling, dropout on the feature maps": dict(
        arch="cnn", transfer="tanh", conv_channels=[2, 3], conv_kernel=[3, 4], conv_stride=[2, 2], pool=1, dropout_conv=[0.3, 0.2], hidden=[4]),
}


@pytest.mark.parametrize("net", NETWORKS)
def test_both_modes_agree_with_each_other_and_with_builtin_ops(net):
    m = model_cfg(**NETWORKS[net])
    f, f_ref, params, v = losses(m)
    assert f(params).item() == pytest.approx(f_ref(params).item(), rel=1e-12)  # the same loss, so the same Hessian
    forward_over_reverse = hessian.hvp(f, params, v, "forward-over-reverse")
    reverse_over_reverse = hessian.hvp(f, params, v, "reverse-over-reverse")
    assert_dicts_close(forward_over_reverse, reverse_over_reverse)
    assert_dicts_close(forward_over_reverse, builtin_hvp(f_ref, params, v))
    assert max(t.abs().max().item() for t in forward_over_reverse.values()) > 1e-6  # not a vacuous zero


def test_a_wrong_jvp_rule_makes_forward_over_reverse_disagree(monkeypatch):
    f, _, params, v = losses(model_cfg(transfer="tanh"))
    right = hessian.hvp(f, params, v, "forward-over-reverse")

    def wrong_jvp(ctx, da):  # 1 - f^2 would be right; this drops the square
        (y,) = ctx.saved_tensors
        return da * (1 - y)

    monkeypatch.setattr(nf.Tanh, "jvp", staticmethod(wrong_jvp))
    planted = hessian.hvp(f, params, v, "forward-over-reverse")
    with pytest.raises(AssertionError):
        assert_dicts_close(planted, hessian.hvp(f, params, v, "reverse-over-reverse"))
    monkeypatch.undo()
    assert_dicts_close(right, hessian.hvp(f, params, v, "reverse-over-reverse"))


def test_an_unknown_mode_or_a_misshapen_v_is_refused():
    f, _, params, v = losses(model_cfg())
    with pytest.raises(ValueError, match="mode must be one of"):
        hessian.hvp(f, params, v, "reverse-over-forward")
    with pytest.raises(ValueError, match="each parameter's shape"):
        hessian.hvp(f, params, {**v, "W1": v["W1"][:1]})


def test_top_eigenvalue_of_linear_least_squares_is_exact():
    """Identity transfer with squared error, no hidden layer: L = (1/(N k)) sum (X W^T + b - T)^2, whose
    Hessian is (2/(N k)) [X 1]^T [X 1] for each of the k outputs' rows of (W, b)."""
    m = model_cfg(hidden=[], transfer="identity", loss="squared_error")
    n = 40
    f, _, params, _ = losses(m, n=n)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, N_PIXELS, generator=gen)  # the same draw as losses()'s
    design = torch.cat([x, torch.ones(n, 1)], 1)
    exact = 2.0 / (n * N_CLASSES) * torch.linalg.eigvalsh(design.t() @ design)[-1].item()
    for mode in hessian.MODES:
        top = hessian.top_eigenvalue(f, params, iters=20, generator=torch.Generator().manual_seed(1), mode=mode)
        assert top.value == pytest.approx(exact, rel=1e-6), mode
        assert top.residual < 1e-6 * exact


def flat_hessian(f, params):
    names, shapes = list(params), [p.shape for p in params.values()]
    sizes = [math.prod(s) for s in shapes]

    def g(x):
        return f({k: part.view(s) for k, part, s in zip(names, x.split(sizes), shapes)})

    return torch.func.hessian(g)(torch.cat([params[k].reshape(-1) for k in names])), dict(zip(names, sizes))


def test_top_eigenvalue_and_layer_blocks_of_a_tiny_network_equal_the_full_hessians():
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(7, 4, generator=gen), torch.randint(0, 3, (7,), generator=gen)
    params = {"W1": torch.randn(5, 4, generator=gen), "b1": torch.randn(5, generator=gen),
              "W2": torch.randn(3, 5, generator=gen), "b2": torch.randn(3, generator=gen)}

    def f(p):
        return nf.softmax_cross_entropy(nf.affine(nf.tanh(nf.affine(x, p["W1"], p["b1"])), p["W2"], p["b2"]), y)

    H, sizes = flat_hessian(f, params)  # 43 x 43
    top = hessian.top_eigenvalue(f, params, iters=30, generator=torch.Generator().manual_seed(0))
    assert top.value == pytest.approx(torch.linalg.eigvalsh(H)[-1].item(), rel=1e-8)
    blocks = hessian.layer_eigenvalues(f, params, iters=30, generator=torch.Generator().manual_seed(0))
    assert set(blocks) == {"W1", "W2"}  # weights only
    start = 0
    for name, size in sizes.items():
        if name in blocks:
            exact = torch.linalg.eigvalsh(H[start : start + size, start : start + size])[-1].item()
            assert blocks[name].value == pytest.approx(exact, rel=1e-8), name
        start += size


def test_a_negative_dominant_hessian_does_not_fool_it():
    """Eigenvalues {-5, 1, 2}: the largest in magnitude is -5, the largest is 2."""
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))
    a = q @ torch.diag(torch.tensor([-5.0, 1.0, 2.0])) @ q.t()

    def f(p):
        return 0.5 * p["w"] @ a @ p["w"]

    for mode in hessian.MODES:
        top = hessian.top_eigenvalue(f, {"w": torch.randn(3)}, generator=torch.Generator().manual_seed(0), mode=mode)
        assert top.value == pytest.approx(2.0, rel=1e-10), mode
        assert top.products <= 3


def test_a_zero_hessian_has_top_eigenvalue_zero():
    top = hessian.top_eigenvalue(lambda p: (p["w"] * 3.0).sum(), {"w": torch.randn(4)}, generator=torch.Generator().manual_seed(0),
                                 mode="reverse-over-reverse")
    assert top.value == 0.0 and top.residual == 0.0


def test_the_stability_threshold_is_two_over_eta_and_grows_with_momentum():
    o = config.OptimConfig(optimizer="sgd", momentum=0.0)
    assert sharpness.stability_threshold(o, 0.01) == pytest.approx(200.0)
    assert sharpness.stability_threshold(dataclasses.replace(o, momentum=0.9), 0.01) == pytest.approx(380.0)  # (2 + 2 beta)/eta
    assert sharpness.stability_threshold(dataclasses.replace(o, optimizer="adam"), 0.01) is None
    assert sharpness.stability_threshold(o, 0.0) is None


# --------------------------------------------------------------------------- #
# Sharpness in a run (eval.sharpness_every)                                    #
# --------------------------------------------------------------------------- #

SHARP = ["data.train_points=500", "train.batch_size=100", "train.epochs=1", "eval.every=100", "eval.max_points=500",
         "eval.sharpness_every=2", "eval.sharpness_points=200", "eval.sharpness_iters=6", "optim.momentum=0.5"]


REPO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "relu.toml"


def sharp_cfg(log_dir):
    from conftest import REPO

    return config.load(REPO / "configs" / "relu.toml", [*SHARP, f'run.log_dir="{log_dir}"'])


def sharpness_rows(run_dir):
    import json

    return [(r["points"], r["sharpness"], r["sharpness_threshold"], r["sharpness_layers"], r["lr"])
            for r in json.loads((run_dir / "history.json").read_text()) if "sharpness" in r]


def test_a_run_logs_sharpness_and_a_resume_keeps_it(tmp_path, monkeypatch, mnist_root):
    from conftest import killed_after_checkpoint
    from test_train import scalars

    from nnhw import train

    torch.set_default_dtype(torch.float32)  # a run as nnhw.train makes it
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    whole_dir, status, _ = train.run(sharp_cfg(tmp_path / "whole"))
    assert status == "finished"
    rows = sharpness_rows(whole_dir)
    assert [p for p, *_ in rows] == [0, 200, 400]  # 500 points in steps of 100: evaluations 0, 2 and 4 of 0..5
    for _, value, threshold, blocks, lr in rows:
        assert value > 0 and set(blocks) == {"W1", "W2"}
        assert threshold == pytest.approx((2 + 2 * 0.5) / lr)  # momentum 0.5, at that evaluation's rate
    for tag in ("lambda_max", "threshold", "residual", "W1", "W2"):
        assert [s for s, _ in scalars(whole_dir, f"sharpness/{tag}")] == [0, 200, 400], tag
    import json

    s = json.loads((whole_dir / "summary.json").read_text())
    assert s["sharpness"]["measurements"] == 3 and s["sharpness_seconds"] > 0
    assert s["sharpness"]["peak"]["value"] == max(v for _, v, *_ in rows)
    assert s["sharpness"]["first"]["value"] == rows[0][1] and s["sharpness"]["last"]["value"] == rows[-1][1]
    from nnhw import runlog

    assert runlog.metrics_of(s)["hparams/sharpness_peak"] == s["sharpness"]["peak"]["value"]  # on the HParams row too

    killed_after_checkpoint(monkeypatch, 3, lambda: train.run(sharp_cfg(tmp_path / "cut")))  # after the evaluation at 200 points
    (cut_dir,) = (tmp_path / "cut" / "relu").iterdir()
    assert train.main(["--resume", str(cut_dir)]) == 0
    assert sharpness_rows(cut_dir) == rows  # the same measurements, at the same points, to the bit
    assert [s for s, _ in scalars(cut_dir, "sharpness/lambda_max")] == [0, 200, 400]
    assert json.loads((cut_dir / "summary.json").read_text())["sharpness"] == s["sharpness"]


def test_sharpness_config_keys_are_checked():
    with pytest.raises(config.ConfigError, match="eval.sharpness_every: the sharpness of a loss with dropout is random"):
        config.load(None, ["eval.sharpness_every=1", "model.dropout_hidden=0.5"])
    with pytest.raises(config.ConfigError, match="data.train_points: the 'train' split holds 50,000"):
        config.load(None, ["data.train_points=50001"])
    assert config.load(None, ['data.train_split="train+dev"', "data.train_points=60000"]).data.train_points == 60000
    for bad in ("eval.sharpness_every=-1", "eval.sharpness_points=0", "eval.sharpness_iters=0", "eval.sharpness_iters=201"):
        with pytest.raises(config.ConfigError, match=bad.split("=")[0]):
            config.load(None, [bad])


def test_train_points_keeps_the_first_points_of_the_training_split(mnist_root):
    from nnhw import data

    full, cut = data.load_splits(mnist_root), data.load_splits(mnist_root, train_points=123)
    assert len(cut["train"]) == 123 and torch.equal(cut["train"].x, full["train"].x[:123])
    assert len(cut["dev"]) == len(full["dev"]) and len(cut["test"]) == len(full["test"])  # only the training split shrinks


def test_sharpness_facts_and_sentences_say_what_the_history_shows():
    from nnhw.sharpness import facts as sharpness_facts, sentences as sharpness_sentences

    cfg = config.load(None, ["data.train_points=100", "train.batch_size=100", "optim.lr=0.1", "optim.momentum=0", "eval.sharpness_every=1"])

    def row(step, loss, sharp=None):
        r = dict(points=100 * step, epoch=0.0, train_loss=loss, train_error=1.0, test_loss=loss, test_error=2.0)
        return r if sharp is None else {**r, "sharpness": sharp, "sharpness_threshold": 20.0, "sharpness_layers": {}}

    history = [row(0, 1.0, 5.0), row(10, 0.5, 12.0), row(20, 0.6, 19.0), row(30, 0.4, 21.0), row(40, 0.3, 19.5)]
    f = sharpness_facts("gd", dict(cfg=cfg, history=history))
    assert (f["start"], f["low"], f["low_step"], f["high"], f["high_step"], f["end"]) == (5.0, 5.0, 0, 21.0, 30, 19.5)
    assert (f["steps"], f["every_steps"]) == (40, 10)
    assert f["below_one_over_lr"] == 1 and f["measurements"] == 5 and f["loss_rises"] == 1  # 5 <= 1/lr = 10; 0.5 -> 0.6
    assert f["last_third_of_threshold"] == pytest.approx(19.5 / 20)  # the last third of 5 measurements is the last one
    (text,) = sharpness_sentences([f])  # one run, which met lr <= 1/L once: no closing sentence
    assert "started at 5, at or below 1/lr; lr <= 1/L held at 1 of 5 measurements. It rose to 21 (step 30) and ended at 19.5" in text
    assert "98% of 2/lr on average over the last third" in text and "from 1 to 0.3 in 40 steps, rising between 1 of 4 pairs" in text
    calm = sharpness_facts("gd", dict(cfg=cfg, history=[row(0, 1.0, 5.0), row(10, 0.5, 6.0)]))
    steep = sharpness_facts("gd", dict(cfg=cfg, history=[row(0, 1.0, 25.0), row(10, 0.7, 12.0), row(20, 0.5, 19.0)]))
    calm_text, steep_text, closing = sharpness_sentences([calm, steep])
    assert "held locally throughout" in calm_text and "falling at every evaluation" in calm_text
    assert "already above 2/lr, where gradient descent on a quadratic diverges; lr <= 1/L held at 0 of 3" in steep_text
    assert "fell to 12 by step 10, then rose to 19 (step 20)" in steep_text
    assert closing == "lr <= 1/L is sufficient, not necessary: at lr = 0.1 it held at no measurement, and the training loss still fell, to 0.5."
    assert sharpness_facts("gd", dict(cfg=cfg, history=[row(0, 1.0)])) is None


def test_lanczos_keeps_its_basis_orthogonal_past_the_dimension_on_a_clustered_spectrum():
    """40 dimensions, eigenvalues in two tight clusters of 15 and ten apart, 40 products: the exact top
    eigenvalue, a residual of 0 and a basis orthonormal to rounding. Without full reorthogonalisation the
    basis loses orthogonality entirely here (|Q^T Q - I| near 1) and converged eigenvalues come back as ghosts."""
    n = 40
    spectrum = torch.cat([1.0 + 1e-6 * torch.arange(15), 0.5 + 1e-6 * torch.arange(15),
                          torch.tensor([3.0, 2.9999, 2.0, 1.5, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7])]).double()
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    A = Q @ torch.diag(spectrum) @ Q.t()
    top = hessian.top_eigenvalue(lambda p: 0.5 * p["x"] @ A @ p["x"], {"x": torch.zeros(n, dtype=torch.float64)}, n,
                                 torch.Generator().manual_seed(1))
    assert top.value == pytest.approx(3.0, abs=1e-12) and top.residual < 1e-10 and top.products == n
    assert top.orthogonality < 1e-12


def tiny_network(seed=3):
    """f, params and the exact 43 x 43 Hessian of a 4-5-3 tanh network's cross-entropy on 7 points."""
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(7, 4, generator=gen), torch.randint(0, 3, (7,), generator=gen)
    params = {"W1": torch.randn(5, 4, generator=gen), "b1": torch.randn(5, generator=gen),
              "W2": torch.randn(3, 5, generator=gen), "b2": torch.randn(3, generator=gen)}

    def f(p):
        return nf.softmax_cross_entropy(nf.affine(nf.tanh(nf.affine(x, p["W1"], p["b1"])), p["W2"], p["b2"]), y)

    return f, params, flat_hessian(f, params)[0]


@pytest.mark.parametrize("mode", hessian.MODES)
def test_the_top_three_eigenvalues_equal_the_exact_ones(mode):
    f, params, H = tiny_network()
    exact = torch.linalg.eigvalsh(H).flip(0)[:3].tolist()
    top = hessian.top_eigenvalues(f, params, 3, iters=43, generator=torch.Generator().manual_seed(0), mode=mode)
    assert [e.value for e in top] == pytest.approx(exact, abs=1e-8)
    assert exact[0] > exact[1] > exact[2]  # three different eigenvalues, not one found thrice
    assert all(e.residual < 1e-8 for e in top)
    with pytest.raises(ValueError, match="at least as many Lanczos steps"):
        hessian.top_eigenvalues(f, params, 5, iters=4)


@pytest.mark.parametrize("mode", hessian.MODES)
def test_the_trace_is_within_three_standard_errors_and_exact_on_the_basis(mode):
    f, params, H = tiny_network()
    exact = torch.trace(H).item()
    estimate = hessian.trace(f, params, samples=30, generator=torch.Generator().manual_seed(0), mode=mode)
    assert estimate.products == 30 and estimate.stderr > 0
    assert abs(estimate.value - exact) <= 3 * estimate.stderr
    assert estimate.value != pytest.approx(exact, abs=1e-6)  # an estimate, not the exact value by accident
    on_basis = hessian.trace(f, params, samples=43, mode=mode)  # as many samples as entries: the unit vectors
    assert on_basis.value == pytest.approx(exact, abs=1e-10) and on_basis.stderr == 0.0 and on_basis.products == 43


@pytest.mark.parametrize("mode", hessian.MODES)
def test_the_density_weights_sum_to_one_and_its_mean_is_the_trace_over_n(mode):
    f, params, H = tiny_network()
    density = hessian.spectral_density(f, params, iters=10, runs=5, generator=torch.Generator().manual_seed(4), mode=mode)
    assert len(density.nodes) == len(density.weights) == 50 and density.products == 50
    assert sum(density.weights) == pytest.approx(1.0, abs=1e-12)
    mean = sum(w * x for w, x in zip(density.weights, density.nodes))
    same_draws = hessian.trace(f, params, samples=5, generator=torch.Generator().manual_seed(4), mode=mode)
    assert mean == pytest.approx(same_draws.value / 43, abs=1e-12)
    # With as many steps as entries, every node is an eigenvalue of H, the extremes included.
    full = hessian.spectral_density(f, params, iters=43, runs=1, generator=torch.Generator().manual_seed(4), mode=mode)
    eigenvalues = torch.linalg.eigvalsh(H)
    assert max(full.nodes) == pytest.approx(eigenvalues[-1].item(), abs=1e-8)
    assert min(full.nodes) == pytest.approx(eigenvalues[0].item(), abs=1e-8)
    grid = torch.linspace(min(full.nodes) - 1, max(full.nodes) + 1, 2001)
    curve = density.curve(grid, 0.05)
    assert torch.trapezoid(curve, grid).item() == pytest.approx(1.0, abs=1e-3)


def test_the_scaled_operator_is_the_explicitly_built_one():
    """The preconditioned sharpness's operator: S H S, S = diag(s), against the matrix built from the exact H."""
    f, params, H = tiny_network()
    gen = torch.Generator().manual_seed(5)
    scale = {k: 0.5 + torch.rand(p.shape, generator=gen) * 4 for k, p in params.items()}
    s = torch.cat([scale[k].reshape(-1) for k in params])
    exact = torch.linalg.eigvalsh(s[:, None] * H * s[None, :])[-1].item()
    for mode in hessian.MODES:
        top = hessian.top_eigenvalue(f, params, iters=43, generator=torch.Generator().manual_seed(0), mode=mode, scale=scale)
        assert top.value == pytest.approx(exact, abs=1e-8), mode
    assert exact != pytest.approx(torch.linalg.eigvalsh(H)[-1].item(), rel=0.1)  # the scaling matters


def test_a_wrong_jvp_rule_moves_every_forward_over_reverse_value(monkeypatch):
    f, params, _ = tiny_network()

    def values(mode):
        gen = torch.Generator().manual_seed(0)
        top = hessian.top_eigenvalues(f, params, 2, iters=43, generator=gen, mode=mode)
        return ([e.value for e in top], hessian.trace(f, params, samples=43, mode=mode).value,
                hessian.spectral_density(f, params, iters=8, runs=2, generator=gen, mode=mode).nodes)

    right = values("reverse-over-reverse")
    for ours, theirs in zip(values("forward-over-reverse"), right):
        assert ours == pytest.approx(theirs, abs=1e-9)

    def wrong_jvp(ctx, da):  # 1 - f^2 would be right
        (y,) = ctx.saved_tensors
        return da * (1 - y)

    monkeypatch.setattr(nf.Tanh, "jvp", staticmethod(wrong_jvp))
    planted = values("forward-over-reverse")
    for ours, theirs in zip(planted, right):
        assert ours != pytest.approx(theirs, abs=1e-6)


def test_the_preconditioned_sharpness_is_the_top_eigenvalue_of_the_explicitly_built_matrix():
    """An Adam run's preconditioned sharpness: the top eigenvalue of P^(-1/2) H P^(-1/2), P = sqrt(v^) + eps from
    the optimiser's state, against that matrix built from torch.func.hessian and Adam's buffers by hand."""
    from nnhw import trainer
    from nnhw.checkpoint import TrainState
    from nnhw.data import Split

    cfg = config.load(None, ["model.hidden=[3]", 'model.transfer="tanh"', 'model.loss="cross_entropy"', 'model.output_transfer="identity"',
                             'optim.optimizer="adam"', "optim.lr=0.01", "optim.momentum=0.9", "train.batch_size=10",
                             'train.engine="autograd"', 'run.device="cpu"', "eval.sharpness_every=1", "eval.sharpness_iters=40"])
    gen = torch.Generator().manual_seed(0)
    points = Split(torch.rand(10, N_PIXELS, generator=gen) * (torch.rand(1, N_PIXELS, generator=gen) < 0.01),  # 8 or so pixels lit
                   torch.randint(0, N_CLASSES, (10,), generator=gen))
    t = trainer.Trainer.start(cfg, torch.device("cpu"), points)
    state = TrainState()
    for _ in range(3):
        t.step(state)
    net, opt = t.net, t.net.opt
    lit = points.x.abs().sum(0) > 0  # only the lit pixels' weights have a Hessian; the rest of W1 gives zero rows
    row = sharpness.sharpness(net.params, net.forward, net.loss_fn, cfg, points, 0.01, state.step, opt=opt)
    f = sharpness.objective(net.forward, net.loss_fn, cfg.optim, points)
    params = {k: p.detach() for k, p in net.params.items()}
    H, _ = flat_hessian(f, params)
    bias2 = 1 - 0.999**3
    P = torch.cat([((opt.s[i] / bias2).sqrt() + opt.eps).reshape(-1) for i in range(len(opt.names))])
    M = H / P.sqrt()[:, None] / P.sqrt()[None, :]
    exact = torch.linalg.eigvalsh(M)[-1].item()
    assert lit.sum() > 0 and H.shape[0] == sum(p.numel() for p in params.values())
    assert row["preconditioned_sharpness"] == pytest.approx(exact, rel=1e-8)
    assert row["preconditioned_threshold"] == pytest.approx(38 / 0.01)
    assert row["sharpness_threshold"] is None  # 2/lr is gradient descent's, not Adam's
    assert exact > 10 * torch.linalg.eigvalsh(H)[-1].item()  # P < 1 everywhere it matters: the preconditioner matters


def test_an_adam_run_logs_the_preconditioned_sharpness_the_trace_and_the_density(tmp_path, monkeypatch, mnist_root):
    import json

    from test_train import scalars

    from nnhw import train

    torch.set_default_dtype(torch.float32)  # a run as nnhw.train makes it
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    cfg = config.load(REPO_CONFIG, [*SHARP, 'optim.optimizer="adam"', "optim.lr=0.001", "optim.momentum=0.9", "eval.trace_samples=4",
                                    "eval.density_iters=5", f'run.log_dir="{tmp_path}"'])
    run_dir, status, _ = train.run(cfg)
    assert status == "finished"
    rows = [r for r in json.loads((run_dir / "history.json").read_text()) if "sharpness" in r]
    assert [r["points"] for r in rows] == [0, 200, 400]
    assert "preconditioned_sharpness" not in rows[0]  # before the first step Adam has no preconditioner
    for r in rows[1:]:
        assert r["preconditioned_sharpness"] > r["sharpness"] > 0 and r["preconditioned_threshold"] == pytest.approx(38 / r["lr"])
    for r in rows:
        assert r["trace_stderr"] > 0 and len(r["density_nodes"]) == len(r["density_weights"]) == 10  # 5 steps from each of 2 starts
        assert sum(r["density_weights"]) == pytest.approx(1.0, abs=1e-9)
    assert [s for s, _ in scalars(run_dir, "sharpness/preconditioned")] == [200, 400]
    assert [s for s, _ in scalars(run_dir, "sharpness/trace")] == [0, 200, 400]
    s = json.loads((run_dir / "summary.json").read_text())["sharpness"]
    assert s["preconditioned"]["last"]["value"] == rows[-1]["preconditioned_sharpness"]
    assert s["trace"]["first"]["value"] == rows[0]["trace"]
    assert (run_dir / "sharpness.png").is_file() and (run_dir / "density.png").is_file()
    with pytest.raises(config.ConfigError, match="set eval.sharpness_every too"):
        config.load(REPO_CONFIG, ["eval.trace_samples=3"])
