"""The gradcheck suite: every Function in nnhw.functions, driven from one registry.

Each case names the Function, the built-in expression it must equal, and a
sampler that draws inputs (away from relu's kink, instead of loosening any
tolerance). gradcheck and gradgradcheck run in float64 with default tolerances;
the comparison with the built-ins runs in float32 to 1e-6 relative.
"""

import re
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from nnhw import functions as nf


def _away_from_zero(shape, gen, dtype):
    """Uniform on [-2, -0.1] U [0.1, 2]: no sample near a kink."""
    mag = torch.rand(shape, generator=gen, dtype=dtype) * 1.9 + 0.1
    sign = torch.randint(0, 2, shape, generator=gen).to(dtype) * 2 - 1
    return mag * sign


@dataclass
class Case:
    name: str
    fn: Callable  # nnhw's Function (its .apply alias)
    reference: Callable  # the same math through built-ins
    sample: Callable  # (batch, generator, dtype) -> tuple of inputs
    constant_args: tuple = ()  # inputs held fixed (dropout's mask), not differentiated
    function: type | None = None  # the Function, where fn is not its .apply (BatchNorm's: y of (y, mu, s))


def _x(n, gen, dtype):
    return (torch.randn(n, 5, generator=gen, dtype=dtype),)


def _affine_inputs(bias):
    def sample(n, gen, dtype):
        x = torch.randn(n, 4, generator=gen, dtype=dtype)
        w = torch.randn(3, 4, generator=gen, dtype=dtype)
        return (x, w, torch.randn(3, generator=gen, dtype=dtype)) if bias else (x, w)

    return sample


def _ce_inputs(n, gen, dtype):
    return (torch.randn(n, 6, generator=gen, dtype=dtype), torch.randint(0, 6, (n,), generator=gen))


def _kl_inputs(n, gen, dtype):
    return (torch.randn(n, 6, generator=gen, dtype=dtype), torch.randn(n, 6, generator=gen, dtype=dtype))


def _kl_ref(a, b):
    return F.kl_div(torch.log_softmax(b, 1), torch.log_softmax(a, 1), reduction="batchmean", log_target=True)


def _se_inputs(n, gen, dtype):
    return (torch.randn(n, 6, generator=gen, dtype=dtype), torch.randn(n, 6, generator=gen, dtype=dtype))


# --------------------------------------------------------------------------- #
# Conv2d and Dropout                                                          #
# --------------------------------------------------------------------------- #


def _conv_inputs(stride, padding, bias=True):
    def sample(n, gen, dtype):
        x = torch.randn(n, 2, 6, 6, generator=gen, dtype=dtype)
        w = torch.randn(3, 2, 3, 3, generator=gen, dtype=dtype)
        b = torch.randn(3, generator=gen, dtype=dtype)
        return (x, w, b, stride, padding) if bias else (x, w, None, stride, padding)

    return sample


def _conv_ref(x, w, b, stride, padding):
    return F.conv2d(x, w, b, stride, padding)


def _max_pool_inputs(size, stride, side):
    """x and the routes F.max_pool2d picks in it (held fixed, like dropout's mask); random normals have no ties."""

    def sample(n, gen, dtype):
        x = torch.randn(n, 2, side, side, generator=gen, dtype=dtype)
        return (x, F.max_pool2d(x, size, stride, return_indices=True)[1])

    return sample


def _max_pool_ref(size, stride):
    return lambda x, routes: F.max_pool2d(x, size, stride)


def _dropout_inputs(n, gen, dtype):
    a = torch.randn(n, 5, generator=gen, dtype=dtype)
    mask = (torch.rand(n, 5, generator=gen) >= 0.4).to(dtype) / 0.6  # a fixed mask
    return (a, mask)


def _batch_norm_inputs(shape, evaluation):
    """x of at least three rows (with two, each normalised value is +-1 whatever x is), gamma and beta per feature, and in
    evaluation the running mean and a positive running variance (state, held fixed); eps last."""

    def sample(n, gen, dtype):
        x = torch.randn(n + 2, *shape, generator=gen, dtype=dtype) * 2 + 0.5
        d = shape[0]
        gamma, beta = torch.randn(d, generator=gen, dtype=dtype), torch.randn(d, generator=gen, dtype=dtype)
        if not evaluation:
            return (x, gamma, beta, 1e-5)
        return (x, gamma, beta, torch.randn(d, generator=gen, dtype=dtype), torch.rand(d, generator=gen, dtype=dtype) + 0.5, 1e-5)

    return sample


def _batch_norm_ref(x, gamma, beta, eps):
    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)


def _batch_norm(x, gamma, beta, eps):
    return nf.BatchNorm.apply(x, gamma, beta, eps)[0]  # (y, mu, s): the statistics carry no derivative


def _batch_norm_relu(x, gamma, beta, eps):
    return nf.BatchNorm.apply(x, gamma, beta, eps, None, None, 0.1, True)[0]


def _batch_norm_relu_ref(x, gamma, beta, eps):
    return F.relu(_batch_norm_ref(x, gamma, beta, eps))


def _batch_norm_eval_ref(x, gamma, beta, mean, var, eps):
    return F.batch_norm(x, mean, var, gamma, beta, training=False, eps=eps)


CASES = [
    Case("sigmoid", nf.sigmoid, torch.sigmoid, _x),
    Case("tanh", nf.tanh, torch.tanh, _x),
    Case("relu", nf.relu, torch.relu, lambda n, g, d: (_away_from_zero((n, 5), g, d),)),
    Case("identity", nf.identity, lambda a: a * 1, _x),
    Case("square", nf.square, lambda a: a * a, _x),
    Case("affine", nf.affine, F.linear, _affine_inputs(bias=True)),
    Case("affine_no_bias", nf.affine, F.linear, _affine_inputs(bias=False)),
    Case("softmax_cross_entropy", nf.softmax_cross_entropy, F.cross_entropy, _ce_inputs),
    Case("softmax_cross_entropy_smoothed", nf.softmax_cross_entropy, lambda a, y, s: F.cross_entropy(a, y, label_smoothing=s),
         lambda n, g, d: (*_ce_inputs(n, g, d), 0.1)),
    Case("squared_error", nf.squared_error, F.mse_loss, _se_inputs),
    Case("softmax_kl", nf.softmax_kl, _kl_ref, _kl_inputs),
    Case("conv2d", nf.conv2d, _conv_ref, _conv_inputs(1, 0)),
    Case("conv2d_stride2_pad1", nf.conv2d, _conv_ref, _conv_inputs(2, 1)),
    Case("conv2d_no_bias", nf.conv2d, _conv_ref, _conv_inputs(1, 1, bias=False)),
    Case("avg_pool2d", nf.AvgPool2d.apply, F.avg_pool2d, lambda n, g, d: (torch.randn(n, 2, 6, 6, generator=g, dtype=d), 2, 2)),
    Case("avg_pool2d_overlap", nf.AvgPool2d.apply, F.avg_pool2d, lambda n, g, d: (torch.randn(n, 2, 7, 7, generator=g, dtype=d), 3, 2)),
    Case("avg_pool2d_remainder", nf.AvgPool2d.apply, F.avg_pool2d, lambda n, g, d: (torch.randn(n, 2, 6, 6, generator=g, dtype=d), 3, 2)),
    Case("avg_pool2d_side_by_side_remainder", nf.AvgPool2d.apply, F.avg_pool2d, lambda n, g, d: (torch.randn(n, 2, 7, 7, generator=g, dtype=d), 2, 2)),
    Case("max_pool2d", nf.MaxPool2d.apply, _max_pool_ref(2, 2), _max_pool_inputs(2, 2, 6), constant_args=(1,)),
    Case("max_pool2d_overlap", nf.MaxPool2d.apply, _max_pool_ref(3, 2), _max_pool_inputs(3, 2, 7), constant_args=(1,)),
    Case("max_pool2d_remainder", nf.MaxPool2d.apply, _max_pool_ref(2, 2), _max_pool_inputs(2, 2, 7), constant_args=(1,)),
    Case("flatten", nf.Flatten.apply, lambda x: x.flatten(1), lambda n, g, d: (torch.randn(n, 2, 3, 3, generator=g, dtype=d),)),
    Case("dropout_fixed_mask", nf.Dropout.apply, lambda a, m: a * m, _dropout_inputs, constant_args=(1,)),
    Case("batch_norm_features", _batch_norm, _batch_norm_ref, _batch_norm_inputs((5,), evaluation=False), function=nf.BatchNorm),
    Case("batch_norm_channels", _batch_norm, _batch_norm_ref, _batch_norm_inputs((2, 3, 3), evaluation=False), function=nf.BatchNorm),
    Case("batch_norm_relu_features", _batch_norm_relu, _batch_norm_relu_ref, _batch_norm_inputs((5,), evaluation=False),
         function=nf.BatchNorm),
    Case("batch_norm_relu_channels", _batch_norm_relu, _batch_norm_relu_ref, _batch_norm_inputs((2, 3, 3), evaluation=False),
         function=nf.BatchNorm),
    Case("batch_norm_eval_features", nf.BatchNormEval.apply, _batch_norm_eval_ref, _batch_norm_inputs((5,), evaluation=True),
         constant_args=(3, 4)),
    Case("batch_norm_eval_channels", nf.BatchNormEval.apply, _batch_norm_eval_ref, _batch_norm_inputs((2, 3, 3), evaluation=True),
         constant_args=(3, 4)),
]
IDS = [c.name for c in CASES]


def _requiring_grad(inputs, constant_args=()):
    """Floating tensors become leaves that require grad; other arguments pass through."""
    return tuple(
        t.clone().requires_grad_(t.is_floating_point() and i not in constant_args) if torch.is_tensor(t) else t
        for i, t in enumerate(inputs)
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("batch", [1, 7])
def test_gradcheck_float64(case, batch):
    """Both hand-written rules against finite differences: backward (reverse mode), jvp (forward
    mode, check_forward_ad), and backward under vmap (check_batched_grad)."""
    gen = torch.Generator().manual_seed(0)
    inputs = _requiring_grad(case.sample(batch, gen, torch.float64), case.constant_args)
    assert gradcheck(case.fn, inputs, check_forward_ad=True, check_batched_grad=True)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_double_backward(case):
    gen = torch.Generator().manual_seed(1)
    inputs = _requiring_grad(case.sample(4, gen, torch.float64), case.constant_args)
    assert gradgradcheck(case.fn, inputs)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jvp_matches_builtin_jvp(case):
    """The forward rule against torch.func.jvp of the built-in expression, along random tangents."""
    gen = torch.Generator().manual_seed(4)
    inputs = case.sample(5, gen, torch.float64)
    diff = [i for i, t in enumerate(inputs) if torch.is_tensor(t) and t.is_floating_point() and i not in case.constant_args]

    def along(fn):
        def f(*primals):
            args = list(inputs)
            for i, p in zip(diff, primals):
                args[i] = p
            return fn(*args)

        return f

    primals = tuple(inputs[i] for i in diff)
    tangents = tuple(torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in primals)
    out, tangent = torch.func.jvp(along(case.fn), primals, tangents)
    ref_out, ref_tangent = torch.func.jvp(along(case.reference), primals, tangents)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tangent, ref_tangent, rtol=1e-10, atol=1e-12)


def _rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _values_and_grads(fn, inputs, upstream, constant_args):
    """fn's output and the gradients of <output, upstream> with respect to its floating inputs."""
    inputs = _requiring_grad(inputs, constant_args)
    out = fn(*inputs)
    grads = torch.autograd.grad(out, [t for t in inputs if torch.is_tensor(t) and t.requires_grad], upstream.to(out.dtype))
    return [out.detach(), *grads]


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("batch", [1, 64])
def test_matches_builtin_float32(case, batch):
    """In float32, each Function's output and gradients are as close to the exact ones (the built-in expression
    in float64) as 1e-6 of the largest entry, or as 2x the built-in's own float32 error where a long sum makes
    that larger: how a CPU's kernels round such sums differs by machine."""
    gen = torch.Generator().manual_seed(2)
    raw = case.sample(batch, gen, torch.float32)
    ref = case.reference(*raw)
    upstream = torch.randn(ref.shape, generator=gen)  # a fixed random upstream gradient exercises every entry of backward
    ours = _values_and_grads(case.fn, raw, upstream, case.constant_args)
    builtin = _values_and_grads(case.reference, raw, upstream, case.constant_args)
    raw64 = tuple(t.double() if torch.is_tensor(t) and t.is_floating_point() else t for t in raw)
    exact = _values_and_grads(case.reference, raw64, upstream, case.constant_args)
    assert ours[0].shape == exact[0].shape and len(ours) == len(exact)
    for mine, theirs, truth in zip(ours, builtin, exact):
        assert _rel_err(mine.double(), truth) <= max(1e-6, 2 * _rel_err(theirs.double(), truth))


def test_two_hidden_layer_mlp_gradient_matches_builtins():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(32, 784, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (32,), generator=gen)
    shapes = [(64, 784), (32, 64), (10, 32)]
    params = []
    for out, inp in shapes:
        params += [torch.randn(out, inp, generator=gen, dtype=torch.float64) / inp**0.5, torch.randn(out, generator=gen, dtype=torch.float64) * 0.1]
    ours = [p.clone().requires_grad_() for p in params]
    ref = [p.clone().requires_grad_() for p in params]

    h = nf.tanh(nf.affine(x, ours[0], ours[1]))
    h = nf.relu(nf.affine(h, ours[2], ours[3]))
    loss_ours = nf.softmax_cross_entropy(nf.affine(h, ours[4], ours[5]), y)

    h = torch.tanh(F.linear(x, ref[0], ref[1]))
    h = torch.relu(F.linear(h, ref[2], ref[3]))
    loss_ref = F.cross_entropy(F.linear(h, ref[4], ref[5]), y)

    torch.testing.assert_close(loss_ours, loss_ref, rtol=1e-12, atol=0)
    for g_ours, g_ref in zip(torch.autograd.grad(loss_ours, ours), torch.autograd.grad(loss_ref, ref)):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------- #
# torch.func through an nnhw network: grad, jvp, vmap                         #
# --------------------------------------------------------------------------- #


def _mlp_params(gen, dtype=torch.float64):
    shapes = [(16, 20), (12, 16), (5, 12)]
    return {f"{k}{l}": (torch.randn(o, i, generator=gen, dtype=dtype) / i**0.5 if k == "W" else torch.randn(o, generator=gen, dtype=dtype) * 0.1)
            for l, (o, i) in enumerate(shapes, 1) for k in ("W", "b")}


def _mlp_loss_nnhw(params, x, y):
    h = nf.tanh(nf.affine(x, params["W1"], params["b1"]))
    h = nf.relu(nf.affine(h, params["W2"], params["b2"]))
    return nf.softmax_cross_entropy(nf.affine(h, params["W3"], params["b3"]), y)


def _mlp_loss_builtin(params, x, y):
    h = torch.tanh(F.linear(x, params["W1"], params["b1"]))
    h = torch.relu(F.linear(h, params["W2"], params["b2"]))
    return F.cross_entropy(F.linear(h, params["W3"], params["b3"]), y)


def _mlp_data(gen, n=9):
    return torch.randn(n, 20, generator=gen, dtype=torch.float64), torch.randint(0, 5, (n,), generator=gen)


def test_func_grad_and_jvp_through_an_mlp_match_builtins():
    gen = torch.Generator().manual_seed(5)
    params, (x, y) = _mlp_params(gen), _mlp_data(gen)
    ours, ref = torch.func.grad(_mlp_loss_nnhw)(params, x, y), torch.func.grad(_mlp_loss_builtin)(params, x, y)
    for k in params:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-10, atol=1e-14)
    tangent = {k: torch.randn(p.shape, generator=gen, dtype=p.dtype) for k, p in params.items()}
    (v, dv), (rv, rdv) = (torch.func.jvp(lambda p: f(p, x, y), (params,), (tangent,)) for f in (_mlp_loss_nnhw, _mlp_loss_builtin))
    torch.testing.assert_close(v, rv, rtol=1e-12, atol=0)
    torch.testing.assert_close(dv, rdv, rtol=1e-10, atol=1e-14)
    # forward mode's directional derivative is the reverse-mode gradient dotted with the tangent
    torch.testing.assert_close(dv, sum((ours[k] * tangent[k]).sum() for k in params), rtol=1e-10, atol=1e-14)


def test_per_example_gradients_by_vmap_equal_a_loop():
    gen = torch.Generator().manual_seed(6)
    params, (x, y) = _mlp_params(gen), _mlp_data(gen)

    def one(p, xi, yi):  # one example as a batch of one
        return _mlp_loss_nnhw(p, xi.unsqueeze(0), yi.unsqueeze(0))

    batched = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(params, x, y)
    builtin = torch.func.vmap(torch.func.grad(lambda p, xi, yi: _mlp_loss_builtin(p, xi.unsqueeze(0), yi.unsqueeze(0))),
                              in_dims=(None, 0, 0))(params, x, y)
    for i in range(len(x)):
        looped = torch.func.grad(one)(params, x[i], y[i])
        for k in params:
            torch.testing.assert_close(batched[k][i], looped[k], rtol=1e-12, atol=1e-15)
            torch.testing.assert_close(batched[k][i], builtin[k][i], rtol=1e-10, atol=1e-14)


def test_vmap_through_a_cnn_layer_matches_builtin():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(4, 1, 2, 8, 8, generator=gen, dtype=torch.float64)  # 4 independent batches of one image
    w = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64)

    def ours(xi):
        return nf.Flatten.apply(nf.AvgPool2d.apply(nf.relu(nf.conv2d(xi, w, None, 1, 0)), 2, 2)).sum()

    def ref(xi):
        return F.avg_pool2d(torch.relu(F.conv2d(xi, w)), 2, 2).flatten(1).sum()

    torch.testing.assert_close(torch.func.vmap(torch.func.grad(ours))(x), torch.func.vmap(torch.func.grad(ref))(x), rtol=1e-10, atol=1e-14)


def test_max_pool2d_routes_each_gradient_to_its_regions_maximum():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(3, 4, 9, 9, generator=gen, dtype=torch.float64)
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, ref = nf.max_pool2d(ours_x, 3, 2), F.max_pool2d(ref_x, 3, 2)
    assert torch.equal(ours, ref)
    upstream = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    ours.backward(upstream)
    ref.backward(upstream)
    torch.testing.assert_close(ours_x.grad, ref_x.grad, rtol=1e-12, atol=0)


def test_no_aten_backward_kernels_in_functions():
    import inspect

    import pkgutil
    import importlib

    modules = [importlib.import_module(f"nnhw.functions.{m.name}") for m in pkgutil.iter_modules(nf.__path__)]
    source = "".join(inspect.getsource(m) for m in [nf, *modules]).replace("save_for_backward(", "")
    assert len(modules) >= 6
    assert "torch.ops" not in source and not re.findall(r"\w+_backward\(", source)


# --------------------------------------------------------------------------- #
# Numerical stability at |a| = 1e4                                            #
# --------------------------------------------------------------------------- #

BIG = torch.tensor([-1e4, -1e3, -50.0, 0.0, 50.0, 1e3, 1e4], dtype=torch.float32)


@pytest.mark.parametrize("fn", [nf.sigmoid, nf.tanh, nf.relu, nf.identity], ids=["sigmoid", "tanh", "relu", "identity"])
def test_transfer_finite_at_large_inputs(fn):
    a = BIG.clone().requires_grad_()
    y = fn(a)
    (g,) = torch.autograd.grad(y.sum(), a)
    assert torch.isfinite(y).all() and torch.isfinite(g).all()


def test_sigmoid_saturates_exactly():
    y = nf.sigmoid(torch.tensor([-1e4, 1e4]))
    assert y.tolist() == [0.0, 1.0]


def test_relu_derivative_at_zero_is_zero():
    # the homework's convention f'(0) = 0; negative and positive sides give 0 and the incoming gradient
    a = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([5.0, 5.0, 5.0, 5.0, 5.0], dtype=torch.float64)
    (grad,) = torch.autograd.grad(nf.relu(a), a, g)
    assert grad.tolist() == [0.0, 0.0, 0.0, 5.0, 5.0]


@pytest.mark.parametrize("scale", [1e3, 1e4])
def test_cross_entropy_finite_at_large_logits(scale):
    logits = (torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, 0.0]]) * scale).requires_grad_()
    target = torch.tensor([1, 1])  # the first row is confidently wrong
    loss = nf.softmax_cross_entropy(logits, target)
    (g,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss) and torch.isfinite(g).all()
    torch.testing.assert_close(loss, F.cross_entropy(logits.detach(), target))
    # The first row's loss is the margin 2*scale: huge but exact.
    assert loss.item() == pytest.approx(scale, rel=1e-6)


@pytest.mark.parametrize("scale", [1e3, 1e4])
def test_softmax_kl_finite_at_large_logits_and_zero_at_equal_ones(scale):
    a = (torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, 0.0]]) * scale).requires_grad_()
    b = a.detach().flip(1).requires_grad_()  # each row's winner moved elsewhere
    loss = nf.softmax_kl(a, b)
    ga, gb = torch.autograd.grad(loss, (a, b))
    assert torch.isfinite(loss) and torch.isfinite(ga).all() and torch.isfinite(gb).all()
    torch.testing.assert_close(loss, _kl_ref(a.detach(), b.detach()))
    same = nf.softmax_kl(a, a.detach().clone().requires_grad_())
    assert same.item() == 0.0  # KL(p || p) = 0, and its gradient in either argument too
    assert not torch.autograd.grad(same, a)[0].any()


# --------------------------------------------------------------------------- #
# Bad input                                                                   #
# --------------------------------------------------------------------------- #


def test_cross_entropy_rejects_targets_out_of_range():
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\).*-1 to 3"):
        nf.softmax_cross_entropy(torch.zeros(2, 3), torch.tensor([-1, 3]))


def test_cross_entropy_rejects_integer_logits():
    with pytest.raises(ValueError, match="floating-point.*int64"):
        nf.softmax_cross_entropy(torch.zeros(2, 3, dtype=torch.int64), torch.tensor([0, 1]))


def test_cross_entropy_rejects_non_int64_targets():
    with pytest.raises(ValueError, match="int64 class indices"):
        nf.softmax_cross_entropy(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))


def test_cross_entropy_rejects_mismatched_batch():
    with pytest.raises(ValueError, match=r"target \(3,\) does not match logits \(2, 3\)"):
        nf.softmax_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1, 2]))


def test_squared_error_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        nf.squared_error(torch.zeros(2, 3), torch.zeros(2, 4))


def test_affine_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="x has 5 features"):
        nf.affine(torch.zeros(2, 5), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="bias"):
        nf.affine(torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(2))


@pytest.mark.parametrize("fn", [nf.sigmoid, nf.tanh, nf.relu, nf.square, nf.identity])
def test_transfers_reject_integer_input(fn):
    with pytest.raises(ValueError, match="floating-point"):
        fn(torch.tensor([1, 2]))


def test_dropout_keeps_expectation_and_rate():
    gen = torch.Generator().manual_seed(0)
    a = torch.ones(200, 500)
    y = nf.dropout(a, 0.3, gen)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.02
    assert nf.dropout(a, 0.0, gen) is a


@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 5, 5)], ids=["features", "channels"])
def test_batch_norm_running_averages_and_evaluation_match_builtin(shape):
    """nf.batch_norm in training moves the running averages as F.batch_norm does (the batch's unbiased
    variance), and in evaluation normalises by them; both rules then agree with autograd's."""
    gen = torch.Generator().manual_seed(0)
    d = shape[1]
    gamma, beta = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
    running = {"mean": torch.zeros(d, dtype=torch.float64), "var": torch.ones(d, dtype=torch.float64)}
    ref_mean, ref_var = torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)
    for _ in range(3):
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 1
        out = nf.batch_norm(x, gamma, beta, running, training=True)
        ref = F.batch_norm(x, ref_mean, ref_var, gamma, beta, training=True, momentum=0.1, eps=1e-5)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(running["mean"], ref_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(running["var"], ref_var, rtol=1e-12, atol=1e-12)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).requires_grad_()
    g, b = gamma.clone().requires_grad_(), beta.clone().requires_grad_()
    before = {k: v.clone() for k, v in running.items()}
    ours = nf.batch_norm(x, g, b, running, training=False)
    ref = F.batch_norm(x, ref_mean, ref_var, g, b, training=False, eps=1e-5)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(shape, generator=gen, dtype=torch.float64)
    for mine, theirs in zip(torch.autograd.grad(ours, (x, g, b), upstream), torch.autograd.grad(ref, (x, g, b), upstream)):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    assert all(torch.equal(running[k], before[k]) for k in running)  # evaluation leaves the running averages alone
