"""Batch normalisation: by the batch's own statistics in training, by the running averages in evaluation."""

import torch

from .shared import _check_float, _Function, _save
from .transfer import ReLU


def _stat_dims(x):
    """The dims a feature's statistics run over: the batch for (N, d), the batch and the positions for (N, C, H, W)."""
    return (0,) if x.dim() == 2 else (0, 2, 3)


def _per_feature(t, x):
    """A (d,) or (C,) tensor shaped to broadcast against x."""
    return t.view(1, -1) if x.dim() == 2 else t.view(1, -1, 1, 1)


def _statistics(x, eps):
    """(mu, s) per feature, (d,) or (C,): the batch's mean and s = 1 / sqrt(var + eps), var biased over the m values."""
    dims = _stat_dims(x)
    mu = x.mean(dims)
    return mu, torch.rsqrt((x - _per_feature(mu, x)).square().mean(dims) + eps)


class BatchNorm(_Function):
    """Training-mode batch normalisation (Ioffe and Szegedy 2015), per feature of x (N, d) or per channel of
    x (N, C, H, W), over the m = N (or N H W) values that share a feature, and with `relu` the ReLU after it:

        mu = mean(x),  var = mean((x - mu)^2),  s = 1 / sqrt(var + eps),  xh = (x - mu) s,  y = gamma xh + beta
        (with relu: y = max(gamma xh + beta, 0))

    reverse: with relu, g first becomes g sign(y), the ReLU's reverse rule (nnhw.functions.ReLU); then
             dbeta = sum g;  dgamma = sum g xh;  with dxh = g gamma,
             dx = s (dxh - mean(dxh) - xh mean(dxh xh))   (the gradient through the batch's own mean and variance)
                = gamma s (g - dbeta / m - xh dgamma / m)  (the same, from the two sums already taken)
    forward: dy = gamma s (dx - mean(dx) - xh mean(xh dx)) + dgamma xh + dbeta  (times sign(y) with relu)
    Sums and means run over the m values of each feature. Given running averages (state, no derivative),
    the same pass moves them towards the batch's mean and unbiased variance by `momentum`.

    Returns (y, mu, s): the batch's mean and s come back without derivative, so that the reverse rule
    does not take them again. Fusing the ReLU saves a pass over the maps each way and one map held.
    """

    @staticmethod
    def forward(x, gamma, beta, eps, running_mean=None, running_var=None, momentum=0.1, relu=False):
        _check_float("batch_norm input", x)
        if x.dim() not in (2, 4) or gamma.shape != x.shape[1:2] or beta.shape != x.shape[1:2]:
            raise ValueError(f"batch_norm expects x (N, d) or (N, C, H, W) and gamma, beta of one entry per feature, "
                             f"got x {tuple(x.shape)}, gamma {tuple(gamma.shape)}, beta {tuple(beta.shape)}")
        if x.numel() > x.shape[1]:  # y, mu, s and the running averages' move in one fused pass
            y, mu, s = torch.native_batch_norm(x, gamma, beta, running_mean, running_var, True, momentum, eps)
        else:  # one value per feature: its own mean, variance 0, xh = 0
            if running_mean is not None:
                running_mean.lerp_(x.reshape(-1), momentum)
                running_var.lerp_(torch.zeros_like(running_var), momentum)
            y, mu, s = _per_feature(beta, x) + 0 * x, x.reshape(-1), torch.full_like(gamma, eps**-0.5)
        return (y.relu_() if relu else y), mu, s

    @staticmethod
    def setup_context(ctx, inputs, outputs):
        x, gamma, _, ctx.eps = inputs[:4]
        ctx.relu = inputs[7] if len(inputs) > 7 else False
        ctx.mark_non_differentiable(*outputs[1:])
        _save(ctx, x, gamma, *outputs)

    @staticmethod
    def backward(ctx, g, *no_gradients):  # mu and s have no derivative
        x, gamma, y, mu, s = ctx.saved_tensors
        if torch.is_grad_enabled():  # differentiating this rule (a second derivative): mu and s as functions of x
            mu, s = _statistics(x, ctx.eps)
        dims, m = _stat_dims(x), x.numel() // x.shape[1]
        g = g * torch.sign(y) if ctx.relu else g  # through the ReLU first
        dbeta = g.sum(dims)
        dgamma = s * (g * (x - _per_feature(mu, x))).sum(dims)  # sum g xh
        # dx = a g + b (x - mu) + c with a, b, c per feature, one new map (on a CPU a fresh map costs more
        # than the arithmetic on it):  a = gamma s,  b = -a s dgamma / m,  c = -a dbeta / m
        a = gamma * s
        b = -a * s * dgamma / m
        c = -a * dbeta / m - b * mu
        grad_x = (g * _per_feature(a, x)).addcmul_(x, _per_feature(b, x)).add_(_per_feature(c, x))
        return grad_x, dgamma, dbeta, None, None, None, None, None

    @staticmethod
    def jvp(ctx, dx, dgamma, dbeta, *no_tangents):  # eps, the running averages, momentum and relu have none
        x, gamma, y, mu, s = ctx.saved_tensors
        xh = (x - _per_feature(mu, x)) * _per_feature(s, x)
        dims = _stat_dims(xh)
        dy = torch.zeros_like(xh)
        if dx is not None:
            dy = dy + _per_feature(gamma * s, xh) * (dx - dx.mean(dims, keepdim=True) - xh * (xh * dx).mean(dims, keepdim=True))
        if dgamma is not None:
            dy = dy + _per_feature(dgamma, xh) * xh
        if dbeta is not None:
            dy = dy + _per_feature(dbeta, xh)
        return (torch.sign(y) * dy if ctx.relu else dy), None, None


class BatchNormEval(_Function):
    """Evaluation-mode batch normalisation: the running averages stand in for the batch's statistics,
    so the map is affine in x:  s = 1 / sqrt(var + eps),  y = gamma (x - mean) s + beta.
    reverse: dx = g gamma s;  dgamma = sum g (x - mean) s;  dbeta = sum g
    forward: dy = gamma s dx + dgamma (x - mean) s + dbeta   (mean and var are state, held fixed)
    """

    @staticmethod
    def forward(x, gamma, beta, mean, var, eps):
        _check_float("batch_norm input", x)
        a = gamma * torch.rsqrt(var + eps)  # y = a x + (beta - a mean), per feature, in one pass over x
        return torch.addcmul(_per_feature(beta - a * mean, x), x, _per_feature(a, x))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, gamma, _, mean, var, ctx.eps = inputs
        _save(ctx, x, gamma, mean, var)

    @staticmethod
    def _scaled(ctx):
        """(xh, s, gamma): (x - mean) s with s = 1 / sqrt(var + eps), from what was saved."""
        x, gamma, mean, var = ctx.saved_tensors
        s = torch.rsqrt(_per_feature(var, x) + ctx.eps)
        return (x - _per_feature(mean, x)) * s, s, gamma

    @staticmethod
    def backward(ctx, g):
        xh, s, gamma = BatchNormEval._scaled(ctx)
        dims = _stat_dims(xh)
        return g * _per_feature(gamma, xh) * s, (g * xh).sum(dims), g.sum(dims), None, None, None

    @staticmethod
    def jvp(ctx, dx, dgamma, dbeta, d_mean=None, d_var=None, d_eps=None):
        xh, s, gamma = BatchNormEval._scaled(ctx)
        dy = torch.zeros_like(xh)
        if dx is not None:
            dy = dy + _per_feature(gamma, xh) * s * dx
        if dgamma is not None:
            dy = dy + _per_feature(dgamma, xh) * xh
        if dbeta is not None:
            dy = dy + _per_feature(dbeta, xh)
        return dy


def batch_norm(x, gamma, beta, running, training, momentum=0.1, eps=1e-5, call=None, relu=False):
    """Batch normalisation of x with a layer's gamma and beta, and with `relu` the ReLU after it. In
    training, the batch's statistics (BatchNorm), and the running averages in `running` ({'mean', 'var'}:
    state, not parameters) move towards them, mean <- (1 - momentum) mean + momentum mu and var likewise
    with the batch's unbiased variance, as torch.nn.functional.batch_norm does. In evaluation, the running
    averages (BatchNormEval, then ReLU). `call(Function, *inputs)` applies the Function (default: through
    torch.autograd)."""
    call = call or (lambda fn, *inputs: fn.apply(*inputs))  # nnhw.tape.autograd_apply, which this package does not import
    if training:
        return call(BatchNorm, x, gamma, beta, eps, running["mean"], running["var"], momentum, relu)[0]
    y = call(BatchNormEval, x, gamma, beta, running["mean"], running["var"], eps)
    return call(ReLU, y) if relu else y
