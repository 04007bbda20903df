"""Batch normalisation: by the batch's own statistics in training, by the running averages in evaluation."""

import torch
import torch.nn.functional as F

from .shared import _check_float, _Function, _save


def _stat_dims(x):
    """The dims a feature's statistics run over: the batch for (N, d), the batch and the positions for (N, C, H, W)."""
    return (0,) if x.dim() == 2 else (0, 2, 3)


def _per_feature(t, x):
    """A (d,) or (C,) tensor shaped to broadcast against x."""
    return t.view(1, -1) if x.dim() == 2 else t.view(1, -1, 1, 1)


def _normalised(x, eps):
    """((x - mu) s, s) with the batch's mean mu and s = 1 / sqrt(var + eps) per feature (var biased, over m
    values). Plain means: on a CPU, torch.var_mean over (N, H, W) runs many times slower."""
    dims = _stat_dims(x)
    centred = x - x.mean(dims, keepdim=True)
    s = torch.rsqrt(centred.square().mean(dims, keepdim=True) + eps)
    return centred * s, s


class BatchNorm(_Function):
    """Training-mode batch normalisation (Ioffe and Szegedy 2015), per feature of x (N, d) or per channel of
    x (N, C, H, W), over the m = N (or N H W) values that share a feature:

        mu = mean(x),  var = mean((x - mu)^2),  s = 1 / sqrt(var + eps),  xh = (x - mu) s,  y = gamma xh + beta

    reverse: dbeta = sum g;  dgamma = sum g xh;  with dxh = g gamma,
             dx = s (dxh - mean(dxh) - xh mean(dxh xh))   (the gradient through the batch's own mean and variance)
                = gamma s (g - dbeta / m - xh dgamma / m)  (the same, from the two sums already taken)
    forward: dy = gamma s (dx - mean(dx) - xh mean(xh dx)) + dgamma xh + dbeta
    Sums and means run over the m values of each feature. Given running averages (state, no derivative),
    the same pass moves them towards the batch's mean and unbiased variance by `momentum`.
    """

    @staticmethod
    def forward(x, gamma, beta, eps, running_mean=None, running_var=None, momentum=0.1):
        _check_float("batch_norm input", x)
        if x.dim() not in (2, 4) or gamma.shape != x.shape[1:2] or beta.shape != x.shape[1:2]:
            raise ValueError(f"batch_norm expects x (N, d) or (N, C, H, W) and gamma, beta of one entry per feature, "
                             f"got x {tuple(x.shape)}, gamma {tuple(gamma.shape)}, beta {tuple(beta.shape)}")
        if x.numel() > x.shape[1]:  # the value and the running averages' move in F.batch_norm's one fused pass
            return F.batch_norm(x, running_mean, running_var, gamma, beta, True, momentum, eps)
        if running_mean is not None:  # one value per feature (F.batch_norm refuses it): its own mean, variance 0
            running_mean.lerp_(x.reshape(-1), momentum)
            running_var.lerp_(torch.zeros_like(running_var), momentum)
        return _per_feature(beta, x) + 0 * x  # xh = 0

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, gamma, _, ctx.eps = inputs[:4]
        _save(ctx, x, gamma)  # xh and s are recomputed from x: saved, they would carry no second derivative

    @staticmethod
    def backward(ctx, g):
        x, gamma = ctx.saved_tensors
        dims, m = _stat_dims(x), x.numel() // x.shape[1]
        centred = x - x.mean(dims, keepdim=True)  # x - mu
        s = torch.rsqrt(centred.square().mean(dims) + ctx.eps)
        dbeta, dgamma = g.sum(dims), s * (g * centred).sum(dims)  # sum g, sum g xh with xh = (x - mu) s
        # dx = gamma s (g - dbeta / m - xh dgamma / m) = a g + b (x - mu) + c with a, b, c per feature:
        # two fused passes over x instead of five (on a CPU, each pass with a per-feature factor costs ~3 plain ones)
        a = gamma * s
        b, c = -a * s * dgamma / m, -a * dbeta / m
        grad_x = torch.addcmul(torch.addcmul(_per_feature(c, x), centred, _per_feature(b, x)), g, _per_feature(a, x))
        return grad_x, dgamma, dbeta, None, None, None, None

    @staticmethod
    def jvp(ctx, dx, dgamma, dbeta, *no_tangents):  # eps, the running averages and momentum have none
        x, gamma = ctx.saved_tensors
        xh, s = _normalised(x, ctx.eps)
        dims = _stat_dims(xh)
        dy = torch.zeros_like(xh)
        if dx is not None:
            dy = dy + _per_feature(gamma, xh) * s * (dx - dx.mean(dims, keepdim=True) - xh * (xh * dx).mean(dims, keepdim=True))
        if dgamma is not None:
            dy = dy + _per_feature(dgamma, xh) * xh
        if dbeta is not None:
            dy = dy + _per_feature(dbeta, xh)
        return dy


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


def batch_norm(x, gamma, beta, running, training, momentum=0.1, eps=1e-5, call=None):
    """Batch normalisation of x with a layer's gamma and beta. In training, the batch's statistics
    (BatchNorm), and the running averages in `running` ({'mean', 'var'}: state, not parameters) move
    towards them, mean <- (1 - momentum) mean + momentum mu and var likewise with the batch's unbiased
    variance, as torch.nn.functional.batch_norm does. In evaluation, the running averages (BatchNormEval).
    `call(Function, *inputs)` applies the Function (default: through torch.autograd)."""
    fn, inputs = ((BatchNorm, (x, gamma, beta, eps, running["mean"], running["var"], momentum)) if training else
                  (BatchNormEval, (x, gamma, beta, running["mean"], running["var"], eps)))
    return call(fn, *inputs) if call else fn.apply(*inputs)
