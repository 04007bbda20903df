"""nnhw.tape runs the same Functions' backward as torch.autograd: the gradients must agree."""

import pytest
import torch

from nnhw import config
from nnhw.tape import Tape
from nnhw.trainer import build, make_train_step

from conftest import REPO


def grads_both_ways(cfg, x, y, seed=0):
    net = build(config.with_recipe(cfg, {"run.seed": seed}), torch.device("cpu"))
    params, forward, loss_fn = net.params, net.forward, net.loss_fn
    tensors = list(params.values())
    gen = torch.Generator().manual_seed(7)
    loss_a = loss_fn(forward(params, x, gen), y)
    ga = torch.autograd.grad(loss_a, tensors)
    gen = torch.Generator().manual_seed(7)  # the same dropout masks
    tape = Tape(tensors)
    loss_t = loss_fn(forward(params, x, gen, tape.apply), y, tape.apply)
    gt = tape.gradients(loss_t, tensors)
    return loss_a, ga, loss_t, gt


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("softmax", []),
        ("sigmoid", ["model.hidden=[20, 15]", "model.transfer=tanh"]),
        ("relu", []),
        ("cnn", ["model.conv_channels=[4, 6]", "model.hidden=[12]", "model.dropout_hidden=0.5", "model.dropout_input=0.2"]),
        ("fast", ["model.conv_channels=[4, 6]", "model.hidden=[12]"]),
        ("sigmoid", ["model.transfer=square", "model.output_transfer=sigmoid", "model.loss=squared_error"]),
    ],
)
def test_tape_gradients_equal_autograd(name, overrides):
    cfg = config.load(REPO / "configs" / f"{name}.toml", overrides)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(8, 784, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    loss_a, ga, loss_t, gt = grads_both_ways(cfg, x, y)
    assert torch.equal(loss_a.detach(), loss_t)
    for a, t in zip(ga, gt):
        torch.testing.assert_close(t, a, rtol=1e-6, atol=1e-9)


def test_tape_zero_gradient_for_unused_parameter():
    w, unused = torch.ones(2, 3, requires_grad=True), torch.ones(4, requires_grad=True)
    from nnhw import functions as nf

    tape = Tape([w, unused])
    loss = tape.apply(nf.SquaredError, tape.apply(nf.Affine, torch.ones(5, 3), w), torch.zeros(5, 2))
    gw, gu = tape.gradients(loss, [w, unused])
    assert torch.equal(gu, torch.zeros(4)) and gw.abs().sum() > 0


def test_a_tensor_used_twice_gets_the_sum_of_both_uses():
    """W used by two layers (h = W x, out = W h): reverse mode adds the gradients from both uses, as
    torch.autograd does."""
    from nnhw import functions as nf

    gen = torch.Generator().manual_seed(3)
    x, target = torch.rand(6, 4, generator=gen, dtype=torch.float64), torch.rand(6, 4, generator=gen, dtype=torch.float64)
    w = torch.rand(4, 4, generator=gen, dtype=torch.float64).requires_grad_()
    expected = torch.autograd.grad(nf.SquaredError.apply(nf.Affine.apply(nf.Affine.apply(x, w), w), target), w)[0]
    tape = Tape([w])
    loss = tape.apply(nf.SquaredError, tape.apply(nf.Affine, tape.apply(nf.Affine, x, w), w), target)
    (got,) = tape.gradients(loss, [w])
    torch.testing.assert_close(got, expected)


def test_training_steps_match_between_engines():
    cfg = config.load(REPO / "configs" / "softmax.toml")
    gen = torch.Generator().manual_seed(2)
    x, y = torch.rand(50, 784, generator=gen), torch.randint(0, 10, (50,), generator=gen)
    finals = []
    for engine in ("autograd", "tape"):
        net = build(config.apply_overrides(cfg, ["optim.momentum=0.5", "optim.l2=1e-3"]), torch.device("cpu"))
        params, step = net.params, make_train_step(net, engine=engine)
        for i in range(50):
            step(x[i : i + 1], y[i : i + 1], 0.05)
        finals.append(params)
    for n in finals[0]:
        torch.testing.assert_close(finals[0][n], finals[1][n], rtol=1e-6, atol=1e-8)


@pytest.mark.slow  # torch.compile takes tens of seconds
def test_a_compiled_step_stops_at_each_function_and_matches_eager():
    """train.compile: torch.compile's tracer stops at nnhw's Functions, whose forward-mode rule (jvp) it
    does not trace (what train.compile's help says), and the step computes what the eager one does."""
    from torch._dynamo.utils import counters

    cfg = config.load(REPO / "configs" / "sigmoid.toml", ["model.hidden=[16]"])
    gen = torch.Generator().manual_seed(3)
    x, y = torch.rand(20, 784, generator=gen), torch.randint(0, 10, (20,), generator=gen)
    finals = []
    counters.clear()
    for compile in (False, True):
        net = build(config.apply_overrides(cfg, ["optim.momentum=0.9", "optim.l2=0"]), torch.device("cpu"))
        params, step = net.params, make_train_step(net, compile=compile)
        for i in range(0, 20, 10):
            step(x[i : i + 10], y[i : i + 10], 0.1)
        finals.append(params)
    breaks = list(counters["graph_break"])
    assert breaks and all("jvp" in reason for reason in breaks), breaks
    for n in finals[0]:
        torch.testing.assert_close(finals[0][n], finals[1][n], rtol=1e-5, atol=1e-6)
