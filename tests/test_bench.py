"""The benchmark's references must compute what they claim, or their timings mean nothing."""

import pytest
import torch

from nnhw import config, layers
from nnhw.trainer import build, make_train_step

from conftest import REPO, tool


bench, twin, time_to_99, hvp_cost = tool("bench"), tool("twin"), tool("time_to_99"), tool("hvp_cost")
timing = tool("timing")
CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.toml"))


def test_steps_compared_are_timed_in_turns():
    """Each repeat times one pass of every step, starting with the next one each time: a machine that
    slows down during the benchmark slows them alike."""
    calls = []
    steps = {label: (lambda label=label: calls.append(label), [()] * 2) for label in "abc"}
    timed = timing.time_side_by_side(steps, torch.device("cpu"), warmup=1, repeats=4)
    assert set(timed) == set("abc") and all(t >= 0 for t in timed.values())
    assert "".join(calls) == "abc" + "aabbcc" + "bbccaa" + "ccaabb" + "aabbcc"  # the warm-up, then four turns


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model.hidden=[30, 20]", "model.transfer=tanh", "optim.l2=1e-3"],
        ["model.hidden=[25]", "model.transfer=relu", "model.init=he"],
    ],
)
def test_fused_reference_makes_the_same_updates_as_nnhw(overrides):
    # the fused reference has no dropout: take sigmoid.toml's model without it
    cfg = config.load(REPO / "configs" / "sigmoid.toml", ['run.device="cpu"', "model.dropout_input=0.0", "model.dropout_hidden=0.0", *overrides])
    gen = torch.Generator().manual_seed(3)
    batches = [(torch.randn(16, 784, generator=gen), torch.randint(0, 10, (16,), generator=gen)) for _ in range(5)]
    net = build(cfg, torch.device("cpu"))
    params, start = net.params, {n: p.detach().clone() for n, p in net.params.items()}
    fused = bench.fused_step_fn(cfg, params)
    ours = make_train_step(net, engine="tape")
    for x, y in batches:
        ours(x, y, cfg.optim.lr)
        fused(x, y)
    assert set(fused.params) == set(params)
    for name, p in params.items():
        assert not torch.equal(p.detach(), start[name])  # the steps moved it
        torch.testing.assert_close(fused.params[name], p.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["relu", "deep", "cnn"])
def test_fused_reference_declines_what_it_does_not_implement(name):
    # relu: squared error; deep: dropout; cnn: convolutions
    cfg = config.load(REPO / "configs" / f"{name}.toml", ['run.device="cpu"'])
    assert bench.fused_step_fn(cfg, build(cfg, torch.device("cpu")).params) is None


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


def twins_after_the_same_steps(overrides, check_start=False):
    """nnhw's model and its built-in twin (tools/twin.py) on configs/fast.toml with `overrides`, from the
    same weights, after the same four Adam steps: (nnhw's Net, the twin, the first batch's inputs)."""
    cfg = config.load(REPO / "configs" / "fast.toml", ['run.device="cpu"', "model.conv_channels=[4, 6]", "model.hidden=[12]", *overrides])
    gen = torch.Generator().manual_seed(5)
    batches = [(torch.randn(16, 784, generator=gen), torch.randint(0, 10, (16,), generator=gen)) for _ in range(4)]
    net = build(cfg, torch.device("cpu"))
    builtin, builtin_opt = twin.twin(cfg, net.params, torch.device("cpu"))
    if check_start:
        torch.testing.assert_close(builtin(batches[0][0]), net.forward(net.params, batches[0][0]).detach(), rtol=1e-5, atol=1e-6)
    ours = make_train_step(net)
    for x, y in batches:
        ours(x, y, 0.003)
        for group in builtin_opt.param_groups:
            group["lr"] = 0.003
        builtin_opt.zero_grad()
        twin.loss_fn(cfg)(builtin(x), y).backward()  # the loss trained, label smoothing and all
        builtin_opt.step()
    return net, builtin, batches[0][0]


def test_builtin_twin_of_an_unnormalised_cnn_makes_the_same_updates_as_nnhw():
    """The built-in twin of configs/fast.toml's net without batch normalisation: the same outputs and the
    same Adam updates from the same weights, so the comparison is of implementations, not recipes."""
    net, builtin, x = twins_after_the_same_steps(["model.batch_norm=false", "model.batch_norm_after_pool=false"], check_start=True)
    torch.testing.assert_close(builtin(x), net.forward(net.params, x).detach(), rtol=1e-4, atol=1e-5)


def small(name):
    """configs/<name>.toml with narrower layers, so that a float64 comparison takes a moment."""
    cfg = config.load(REPO / "configs" / f"{name}.toml", ['run.device="cpu"'])
    narrow = ([f"model.hidden={[min(h, 24) for h in cfg.model.hidden]}"] +
              ([f"model.conv_channels={[min(c, 6) for c in cfg.model.conv_channels]}"] if cfg.model.arch == "cnn" else []))
    return config.apply_overrides(cfg, narrow)


def twinned(name):
    """(nnhw's Net, its built-in twin, the twin's optimiser) of configs/<name>.toml, small, in float64."""
    cfg = small(name)
    net = build(cfg, torch.device("cpu"))
    with torch.no_grad():
        for t in [*net.params.values(), *net.running.values()]:
            t.data = t.data.double()
    builtin, opt = twin.twin(cfg, net.params, torch.device("cpu"))
    return cfg, net, builtin.double(), opt


TWINNED = [c for c in CONFIGS if c not in ("mlp_maxnorm", "mlp_vat")]  # max-norm and VAT have no built-in twin (refused below)


@pytest.mark.parametrize("name", TWINNED)
def test_the_twin_has_nnhws_layers_in_the_forward_passs_order(name):
    """The twin is built layer by layer from the description nnhw's forward pass loops over: its modules
    follow each layer's operations (nnhw.layers.operations), one for one."""
    cfg = small(name)
    kinds = {"W z + b": "Linear", "conv": "Conv2d", "batch norm": "BatchNorm", "maxpool": "MaxPool2d", "avgpool": "AvgPool2d",
             "dropout": "Dropout", "relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "Tanh", "identity": "Identity"}
    for layer in layers.describe(cfg.model).layers:
        mine = [type(module).__name__ for module, of in twin.modules(cfg, build(cfg, torch.device("cpu")).params) if of == layer]
        mine = [k for k in mine if k not in ("Unflatten", "Flatten")]
        want = [kinds[next(k for k in kinds if op.startswith(k))] for op in layers.operations(layer)]
        assert [k.removesuffix("1d").removesuffix("2d") if k.startswith("BatchNorm") else k for k in mine] == want, layer.name


@pytest.mark.parametrize("name", TWINNED)
def test_the_twin_computes_what_nnhw_computes_for_every_committed_config(name):
    """For every committed config but the refused one: the same outputs from the same weights in float64,
    in evaluation (running averages) and in training (the batch's statistics, dropout off on both sides),
    and the same objective and gradients."""
    cfg, net, builtin, _ = twinned(name)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 784, generator=gen, dtype=torch.float64), torch.randint(0, 10, (12,), generator=gen)
    builtin.eval()
    with torch.no_grad():
        torch.testing.assert_close(builtin(x), net.forward(net.params, x))
    builtin.train()
    for module in builtin:
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    ours = net.train_loss_fn(net.forward(net.params, x, training=True), y)
    theirs = twin.loss_fn(cfg)(builtin(x), y)
    torch.testing.assert_close(theirs, ours)
    grads = dict(zip(net.params, torch.autograd.grad(ours, list(net.params.values()))))
    theirs.backward()
    weights = [m for m in builtin if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    names = [layer.weight.name for layer in layers.describe(cfg.model).layers]
    for name_, module in zip(names, weights):
        torch.testing.assert_close(module.weight.grad, grads[name_].view(module.weight.shape))


@pytest.mark.parametrize("overrides, what", [(["optim.max_norm=3.0"], "max-norm"), (['model.transfer="square"'], "'square'"),
                                             (["optim.momentum_ramp=5.0"], "momentum ramp"),
                                             (['train.adversarial="vat"', 'train.engine="autograd"'], "adversarial term")])
def test_a_model_without_a_builtin_twin_is_refused_in_one_line(overrides, what):
    with pytest.raises(twin.TwinError, match=what):
        twin.check(config.load(REPO / "configs" / "relu.toml", overrides))


def test_bench_refuses_a_config_without_a_twin_before_timing_anything(capsys):
    code = bench.main(["--configs", "relu", "mlp_maxnorm", "--device", "cpu", "--repeats", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "tools/bench.py: error: --configs mlp_maxnorm: the built-in twin: torch.optim has no max-norm projection (optim.max_norm)"


def test_until_accuracy_times_training_only_and_stops_where_asked():
    errors = iter([5.0, 0.9, 1.2, 0.5, 0.4])  # one per evaluation: 99% at the 2nd, 99.5% at the 4th
    taken = []

    def steps():
        for _ in range(100):
            taken.append(1)
            yield 2500  # images per step: an evaluation every 4 steps

    def test_error():
        import time

        time.sleep(0.05)  # evaluation time must not count
        return next(errors)

    r = time_to_99.until_accuracy(steps(), test_error, torch.device("cpu"), 50000, max_seconds=60, stop_at=0.5)
    assert len(taken) == 16 and r["passes_99"] == 20000 / 50000 and r["passes_99.5"] == 40000 / 50000 and r["final_test_error"] == 0.5
    assert r["seconds_99"] <= r["seconds_99.5"] == r["train_seconds"] < 0.05 and r["passes"] == 40000 / 50000
    assert r["seconds_per_pass"] == r["train_seconds"] / r["passes"]


def test_until_accuracy_runs_to_the_end_and_gives_none_where_never_reached():
    steps = iter([10000] * 3)
    r = time_to_99.until_accuracy(steps, lambda: 1.5, torch.device("cpu"), 60000, max_seconds=60)
    assert r["seconds_99"] is r["passes_99"] is r["seconds_99.5"] is None and r["final_test_error"] == 1.5 and r["passes"] == 0.5


def test_time_to_99_runs_nnhw_and_the_builtin_recipe_in_turns_and_keeps_each_ones_median_run(monkeypatch, capsys):
    """Minutes pass between the runs: each is on the screen before the next starts. nnhw and the built-in
    recipe alternate; each row is the median run, every run's seconds beside it, and the ratios are to
    nnhw's row."""
    def row(seconds_99, per_pass):
        return dict(final_test_error=1.0, train_seconds=per_pass, passes=1.0, seconds_per_pass=per_pass,
                    seconds_99=seconds_99, passes_99=seconds_99 and 0.5, **{"seconds_99.5": None, "passes_99.5": None})

    order, seen = [], []

    def measured(name, results):
        results = iter(results)

        def measure(*args):
            order.append(name)
            seen.append(capsys.readouterr().out)  # what was printed before this run started
            return next(results)

        return measure

    monkeypatch.setattr(time_to_99, "nnhw_time_to_accuracy", measured("nnhw", [row(5.0, 2.5), row(3.0, 1.5), row(4.0, 2.0)]))
    monkeypatch.setattr(time_to_99, "builtin_time_to_accuracy", measured("builtin", [row(12.0, 8.0), row(20.0, 9.0), row(10.0, 7.0)]))
    monkeypatch.setattr(time_to_99, "examples_time_to_99", measured("examples", [row(40.0, 16.0)]))
    rows = time_to_99.time_to_99_rows(torch.device("cpu"), 60, REPO / "configs" / "fast.toml", repeats=3)
    assert order == ["nnhw", "builtin", "examples", "nnhw", "builtin", "nnhw", "builtin"]
    assert "run 1 of 3: 99% after 5.00 s, 2.50 s a pass" in seen[1] and "run 1 of 1" in seen[3] and "run 2 of 3" in seen[4]
    assert [r["seconds_99"] for r in rows] == [4.0, 12.0, 40.0] and rows[0]["runs_seconds_99"] == [5.0, 3.0, 4.0]
    assert [r["ratio_99"] for r in rows] == [1.0, 3.0, 10.0] and [r["pass_ratio"] for r in rows] == [1.0, 4.0, 8.0]
    assert time_to_99.median_run([row(None, 3.0), row(2.0, 1.0)])["seconds_per_pass"] == 1.0  # by seconds a pass where one never got there


@pytest.mark.parametrize("recipe", [
    ["model.conv_kernel=[3, 4]", "model.conv_stride=[1, 2]", "model.pool=1", "model.batch_norm_after_pool=false"],  # strided, no pooling
    [],  # configs/fast.toml as committed: max pooling, then the normalisation
])
def test_builtin_twin_of_a_batch_normalised_cnn_trains_as_nnhw(recipe):
    """The twin of a recipe with batch normalisation (after stride-2 convolutions, or after max pooling):
    the same outputs on a batch's own statistics, the same weights and the same running variances after
    the same Adam updates. The biases just before a normalisation are left out: their gradient is 0 but for
    rounding, which Adam scales up to steps of the rate's size, and the batch's mean takes them out."""
    net, builtin, x = twins_after_the_same_steps(recipe)
    params = net.params
    with torch.no_grad():
        torch.testing.assert_close(builtin(x), net.forward(params, x, training=True), rtol=1e-4, atol=1e-5)
    norms = dict(zip(["c1", "c2", "1"], [m for m in builtin if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]))
    for tag, bn in norms.items():
        torch.testing.assert_close(bn.running_var, net.running[f"var.{tag}"], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(bn.weight.detach(), params[f"g{tag}"].detach(), rtol=1e-4, atol=1e-6)
    weights = [m.weight for m in builtin if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for name, w in zip(["Wc1", "Wc2", "W1", "W2"], weights):
        torch.testing.assert_close(w.detach(), params[name].detach().view(w.shape), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("override", ["optim.max_norm=3.0", "optim.momentum_ramp=4.0"])
def test_time_to_99_refuses_a_recipe_without_a_builtin_twin_in_one_line(override, tmp_path, capsys):
    text = (REPO / "configs" / "cnn.toml").read_text()
    key, value = override.split("=", 1)
    section, name = key.split(".")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(text.replace(f"[{section}]", f"[{section}]\n{name} = {value}"))
    code = time_to_99.main(["--recipe", str(recipe), "--device", "cpu", "--out", str(tmp_path / "t.json")])
    err = capsys.readouterr().err
    assert code == 2 and "--recipe: the built-in twin" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("overrides", [[], ["model.pool=1", "model.pool_stride=2"], ["model.conv_padding=2", "model.pool=3"]],
                         ids=["cnn", "no-pooling-stride-2", "padded-pool-3"])
def test_multiply_adds_are_the_model_summarys(overrides):
    """One count of a forward pass's multiply-adds, the model summary's, whatever the pooling."""
    cfg = config.load(REPO / "configs" / "cnn.toml", overrides)
    assert bench.multiply_adds(cfg) == sum(row[3] for row in layers.summary_rows(layers.describe(cfg.model)))
    if overrides[:1] == ["model.pool=1"]:  # no pooling, whatever its stride: 28 -> 24 -> 20
        assert bench.multiply_adds(cfg) == 32 * 25 * 24**2 + 64 * 32 * 25 * 20**2 + 64 * 20**2 * 256 + 256 * 10


@pytest.mark.parametrize("name", ["relu", pytest.param("cnn", marks=pytest.mark.slow)])  # the CNN's 130 products take seconds
def test_hvp_rows_time_a_gradient_and_both_modes_on_the_same_points(name):
    from nnhw.data import Split

    gen = torch.Generator().manual_seed(0)
    train = Split(torch.rand(8, 784, generator=gen), torch.randint(0, 10, (8,), generator=gen))
    rows = hvp_cost.hvp_rows(train, torch.device("cpu"), repeats=1, configs=(name,), n=4)
    assert [r["config"] for r in rows] == [name] and all(r["points"] == 4 for r in rows)
    for r in rows:
        for mode in ("forward-over-reverse", "reverse-over-reverse"):
            assert r[f"{mode}_s"] > 0 and r[f"{mode}_over_gradient"] == pytest.approx(r[f"{mode}_s"] / r["gradient_s"])
        assert [c["function"] for c in r["curvature"]] == list(hvp_cost.CURVATURE)
        for c in r["curvature"]:
            assert c["products"] == 10 and c["gradients"] == pytest.approx(c["seconds"] / r["gradient_s"])
            assert c["gradients_per_product"] == pytest.approx(c["gradients"] / 10)


@pytest.mark.parametrize("x_shape, w_shape, stride", [((3, 1, 9, 9), (4, 1, 3, 3), 1), ((3, 2, 10, 10), (5, 2, 4, 4), 2),
                                                      ((2, 3, 11, 11), (4, 3, 3, 3), 2)])  # the last leaves a row unread
def test_the_unfolded_weight_gradient_is_the_convolutions(x_shape, w_shape, stride):
    """The candidate form the benchmark times computes dK, in float64: what torch's convolution gives."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(x_shape, generator=gen, dtype=torch.float64), torch.randn(w_shape, generator=gen, dtype=torch.float64)
    w.requires_grad_()
    out = torch.nn.functional.conv2d(x, w, None, stride)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (expected,) = torch.autograd.grad(out, (w,), g)
    got = bench.unfolded_weight_gradient(x, g, w_shape[2:], stride).reshape(w_shape)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(bench.unfolded_weight_gradient(x, g.flip(0), w_shape[2:], stride).reshape(w_shape), expected)
