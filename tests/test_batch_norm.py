"""Batch normalisation in a model (model.batch_norm): the same network as built-in F.batch_norm, in
training and evaluation; its state checkpointed and resumed bit for bit; left out of L2 and max-norm."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from nnhw import checkpoint, config, hessian, layers, models, optim, runlog, train
from nnhw.data import IMAGE_SIDE, N_CLASSES, N_PIXELS
from nnhw.tape import Tape

from conftest import REPO, killed_after_checkpoint


@pytest.fixture(autouse=True)
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def model_cfg(**kw):
    base = dict(arch="mlp", hidden=[7, 6], transfer="relu", loss="cross_entropy", batch_norm=True, batch_norm_momentum=0.2)
    if kw.get("arch") == "cnn":
        base.update(hidden=[8], conv_channels=[3, 4], conv_kernel=[5, 3], pool=2, pool_stride=2)
    return dataclasses.replace(config.ModelConfig(), **{**base, **kw})


def builtin_forward(m, params, running, x, training):
    """The same network with F.batch_norm, moving `running` ({'mean.<tag>', 'var.<tag>'}) in training; the
    layers that batch normalisation follows have no bias (beta is theirs)."""
    f = torch.relu if m.transfer == "relu" else torch.tanh

    def bn(z, tag):
        return F.batch_norm(z, running[f"mean.{tag}"], running[f"var.{tag}"], params[f"g{tag}"], params[f"bn{tag}"],
                            training=training, momentum=m.batch_norm_momentum, eps=1e-5)

    z = x
    if m.arch == "cnn":
        z = z.view(len(z), 1, IMAGE_SIDE, IMAGE_SIDE)
        for l in range(1, len(m.conv_channels) + 1):
            z = F.conv2d(z, params[f"Wc{l}"], params.get(f"bc{l}"))
            if m.batch_norm_after_pool:  # convolution, pooling, normalisation, transfer
                z = f(bn(F.max_pool2d(z, m.pool, m.pool_stride), f"c{l}"))
            else:
                z = (F.max_pool2d if m.pool_type == "max" else F.avg_pool2d)(f(bn(z, f"c{l}")), m.pool, m.pool_stride)
        z = z.flatten(1)
    for l in range(1, len(m.hidden) + 1):
        z = f(bn(F.linear(z, params[f"W{l}"], params.get(f"b{l}")), str(l)))
    n = len(m.hidden) + 1
    return F.linear(z, params[f"W{n}"], params[f"b{n}"])


def forward_of(m, running=None):
    """nnhw's forward pass of the model config m, with `running` (fresh ones when not given)."""
    model = layers.describe(m)
    return models.make_forward(model, models.init_running(model, "cpu") if running is None else running, m.batch_norm_momentum)


def fresh(m, seed=0):
    params = {k: p.detach().double().requires_grad_() for k, p in models.init_params(layers.describe(m), m, seed).items()}
    with torch.no_grad():  # gamma and beta off their identity start, so that both matter
        gen = torch.Generator().manual_seed(seed)
        for k, p in params.items():
            if k.startswith(("g", "bn")):
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return params


@pytest.mark.parametrize("net", [dict(), dict(arch="cnn"), dict(arch="cnn", pool_type="max", transfer="relu"),
                                 dict(arch="cnn", pool_type="max", transfer="relu", batch_norm_after_pool=True)],
                         ids=["mlp", "cnn avg", "cnn max", "cnn max, normalised after pooling"])
def test_a_batch_normalised_model_is_the_builtin_network_in_training_and_evaluation(net):
    m = model_cfg(**net)
    params = fresh(m)
    ours_running = {k: t.double() for k, t in models.init_running(layers.describe(m), "cpu").items()}
    ref_running = {k: t.clone() for k, t in ours_running.items()}
    forward = forward_of(m, ours_running)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):  # three training batches: outputs, gradients and running averages agree
        x, y = torch.rand(6, N_PIXELS, generator=gen), torch.randint(0, N_CLASSES, (6,), generator=gen)
        ours = forward(params, x, training=True)
        ref = builtin_forward(m, params, ref_running, x, training=True)
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
        for a, b in zip(torch.autograd.grad(F.cross_entropy(ours, y), list(params.values())),
                        torch.autograd.grad(F.cross_entropy(ref, y), list(params.values()))):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
        for k in ref_running:
            torch.testing.assert_close(ours_running[k], ref_running[k], rtol=1e-10, atol=1e-12)
    before = {k: t.clone() for k, t in ours_running.items()}
    x = torch.rand(5, N_PIXELS, generator=gen)
    torch.testing.assert_close(forward(params, x), builtin_forward(m, params, ref_running, x, training=False), rtol=1e-10, atol=1e-12)
    assert all(torch.equal(before[k], ours_running[k]) for k in before)  # evaluation moves nothing


def test_the_tape_engine_gives_autograds_gradients_through_batch_normalisation():
    m = model_cfg(arch="cnn")
    params = fresh(m)
    x, y = torch.rand(4, N_PIXELS, generator=torch.Generator().manual_seed(2)), torch.tensor([1, 2, 3, 4])
    loss_fn = models.make_loss(m)
    auto = torch.autograd.grad(loss_fn(forward_of(m)(params, x, training=True), y), list(params.values()))
    tape = Tape(list(params.values()))
    loss = loss_fn(forward_of(m)(params, x, call=tape.apply, training=True), y, tape.apply)
    for a, b in zip(auto, tape.gradients(loss, list(params.values()))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_hessian_vector_products_through_batch_normalisation_agree_in_both_modes():
    """Through the running averages (BatchNormEval, as a run's sharpness is measured), and through a
    batch's own statistics (BatchNorm; written out here, as no running averages may move under torch.func)."""
    from nnhw import functions as nf

    m = model_cfg(transfer="tanh")
    params = fresh(m)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.rand(6, N_PIXELS, generator=gen), torch.randint(0, N_CLASSES, (6,), generator=gen)
    forward, loss_fn = forward_of(m, {k: t.double() + 0.5 for k, t in models.init_running(layers.describe(m), "cpu").items()}), models.make_loss(m)

    def batch_statistics(p):
        z = nf.tanh(nf.BatchNorm.apply(nf.affine(x, p["W1"]), p["g1"], p["bn1"], 1e-5)[0])
        z = nf.tanh(nf.BatchNorm.apply(nf.affine(z, p["W2"]), p["g2"], p["bn2"], 1e-5)[0])
        return loss_fn(nf.affine(z, p["W3"], p["b3"]), y)

    v = {k: torch.randn(p.shape, generator=gen) for k, p in params.items()}
    for f in (lambda p: loss_fn(forward(p, x), y), batch_statistics):
        a, b = hessian.hvp(f, params, v, "forward-over-reverse"), hessian.hvp(f, params, v, "reverse-over-reverse")
        assert max(t.abs().max().item() for t in a.values()) > 1e-6
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-10, atol=1e-12)


def test_gamma_beta_and_the_running_averages_are_left_out_of_l2_and_max_norm():
    m = model_cfg()
    params = {k: p.detach() for k, p in models.init_params(layers.describe(m), m, 0).items()}
    assert {k for k in params if k.startswith(("g", "bn"))} == {"g1", "bn1", "g2", "bn2"}
    assert all(torch.equal(params[f"g{l}"], torch.ones(w)) and torch.equal(params[f"bn{l}"], torch.zeros(w)) for l, w in ((1, 7), (2, 6)))
    with torch.no_grad():
        params["g1"].fill_(10.0)  # far past any max-norm
    before = {k: p.clone() for k, p in params.items()}
    for opt in (optim.MomentumSGD(params, momentum=0.0, l2=0.5, max_norm=0.01), optim.Adam(params, l2=0.5, max_norm=0.01)):
        opt.step([torch.zeros_like(p) for p in params.values()], lr=0.1)
        for k, p in params.items():
            if k.startswith("W"):
                assert not torch.equal(p, before[k]), k  # decayed and constrained
            else:
                assert torch.equal(p, before[k]), k  # biases, gamma and beta: untouched
    assert set(layers.describe(m).running) == {"mean.1", "var.1", "mean.2", "var.2"}  # state, not among the parameters


def test_the_model_summary_shows_batch_normalisation_and_its_running_averages():
    cfg = config.load(REPO / "configs" / "cnn.toml", ["model.batch_norm=true"])
    lines = runlog.model_summary(layers.describe(cfg.model))
    assert any(line.startswith("conv1: conv 5x5 -> batch norm -> relu -> avgpool 2x2 stride 2 ") for line in lines)
    assert any(line.startswith("fc1: W z + b -> batch norm -> relu -> dropout 0.5 ") for line in lines)
    assert lines[-1].endswith(f"(and {2 * (32 + 64 + 256):,} running averages)")
    after_pool = runlog.model_summary(layers.describe(config.load(REPO / "configs" / "fast.toml").model))
    assert any(line.startswith("conv1: conv 5x5 -> maxpool 2x2 stride 2 -> batch norm -> relu ") for line in after_pool)
    plain = config.load(REPO / "configs" / "cnn.toml")
    extra = sum(cfg.model.conv_channels) + sum(cfg.model.hidden)  # gamma and beta per feature, in place of the bias
    assert not {"bc1", "bc2", "b1"} & {p.name for p in layers.describe(cfg.model).params}  # beta is their bias
    total = lambda c: sum(r[2] for r in layers.summary_rows(layers.describe(c.model)))  # noqa: E731
    assert total(cfg) == total(plain) + extra
    assert sum(p.numel() for p in models.init_params(layers.describe(cfg.model), cfg.model, 0).values()) == total(cfg)


def test_a_resumed_batch_normalised_run_ends_as_an_uninterrupted_one(tmp_path, monkeypatch, mnist_root):
    torch.set_default_dtype(torch.float32)  # a run as nnhw.train makes it
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    extra = ["train.epochs=0.04", "eval.every=500", "train.batch_size=50", "eval.max_points=1000", "model.batch_norm=true"]

    def cfg(where):
        return config.load(REPO / "configs" / "relu.toml", [*extra, f'run.log_dir="{tmp_path / where}"'])

    whole_dir, status, _ = train.run(cfg("whole"))
    assert status == "finished"
    killed_after_checkpoint(monkeypatch, 3, lambda: train.run(cfg("cut")))
    (cut_dir,) = (tmp_path / "cut" / "relu").iterdir()
    assert train.main(["--resume", str(cut_dir)]) == 0
    whole, cut = checkpoint.load_checkpoint(whole_dir), checkpoint.load_checkpoint(cut_dir)
    assert set(whole["running"]) == {"mean.1", "var.1"}
    for key in ("params", "running"):
        for k in whole[key]:
            assert torch.equal(whole[key][k], cut[key][k]), (key, k)
    assert not torch.equal(whole["running"]["mean.1"], torch.zeros(200))  # training moved them
    finals = [json.loads((d / "summary.json").read_text())["final"] for d in (whole_dir, cut_dir)]
    assert finals[0] == finals[1]
