"""The CNN's layers: the convolution, average and max pooling, and flattening the maps."""

import math

import torch
import torch.nn.functional as F

from .shared import _check_float, _Function, _save


def _output_padding(size, kernel, stride, padding):
    """The rows (and columns) a strided window leaves unread at the end, which the adjoint must restore."""
    return tuple((s + 2 * padding - k) % stride for s, k in zip(size, kernel))


class Conv2d(_Function):
    """A = K * X + c: cross-correlation of X (N, C_in, H, W) with K (C_out, C_in, kh, kw), plus c (C_out,).

    reverse: dX = the transposed convolution of G with K (each output's gradient sent back
                  through the kernel to the inputs it read);
             dK = the correlation of X with G (for each kernel tap, inputs times output
                  gradients, summed over the batch and the positions; the stride becomes a dilation);
             dc = G summed over N, H and W
    forward: dA = K * dX + dK * X + dc   (A is bilinear in X and K)
    """

    @staticmethod
    def forward(x, weight, bias=None, stride=1, padding=0):
        _check_float("conv2d input", x)
        if x.dim() != 4 or weight.dim() != 4 or x.shape[1] != weight.shape[1]:
            raise ValueError(
                f"conv2d expects x (N, C_in, H, W) and weight (C_out, C_in, kh, kw), "
                f"got x {tuple(x.shape)} and weight {tuple(weight.shape)}"
            )
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, stride, padding = (tuple(inputs) + (None, 1, 0)[len(inputs) - 2:])[:5]
        _save(ctx, x, weight)
        ctx.has_bias, ctx.stride, ctx.padding = bias is not None, stride, padding

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = (tuple(ctx.needs_input_grad) + (False,))[:3]
        s, p, (kh, kw) = ctx.stride, ctx.padding, weight.shape[2:]
        grad_x = grad_w = grad_b = None
        if need_x:  # (N, C_in, H, W)
            out_pad = _output_padding(x.shape[2:], (kh, kw), s, p)
            grad_x = F.conv_transpose2d(g, weight, None, s, p, out_pad)
        if need_w:  # channels and batch swap places: the batch is what the correlation sums over
            grad_w = F.conv2d(x.transpose(0, 1), g.transpose(0, 1), None, 1, p, s).transpose(0, 1)
            if grad_w.shape[2:] != (kh, kw):  # a stride that leaves inputs unread reaches taps past the kernel
                grad_w = grad_w[:, :, :kh, :kw]
        if ctx.has_bias and need_b:
            grad_b = g.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None

    @staticmethod
    def jvp(ctx, dx, dw, db=None, d_stride=None, d_padding=None):
        x, weight = ctx.saved_tensors
        s, p = ctx.stride, ctx.padding
        da = None
        if dx is not None:
            da = F.conv2d(dx, weight, None, s, p)
        if dw is not None:
            term = F.conv2d(x, dw, None, s, p)
            da = term if da is None else da + term
        if da is None:
            da = torch.zeros_like(F.conv2d(x, weight, None, s, p))
        if db is not None:
            da = da + db[:, None, None]
        return da


class AvgPool2d(_Function):
    """Average pooling: each output is the mean of a p x p region of X (N, C, H, W), regions `stride` apart.

    reverse: dX = each output's gradient spread as 1/p^2 over its region: a copy onto the region
             when regions lie side by side (stride p), else the transposed convolution of G with a
             p x p kernel of 1/p^2 per channel, which adds up where regions overlap
    forward: dA = the average pooling of dX (the map is linear)
    """

    @staticmethod
    def forward(x, size, stride):
        _check_float("avg_pool2d input", x)
        return F.avg_pool2d(x, size, stride)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.size, ctx.stride = inputs
        ctx.in_shape = x.shape

    @staticmethod
    def backward(ctx, g):
        k, s, (c, h, w) = ctx.size, ctx.stride, ctx.in_shape[1:]
        if k == s:  # regions side by side: copy each output's gradient / p^2 onto its p x p region
            n, _, oh, ow = g.shape
            spread = (g / (k * k))[:, :, :, None, :, None].expand(n, c, oh, k, ow, k).reshape(n, c, oh * k, ow * k)
            if (oh * k, ow * k) == (h, w):
                return spread, None, None
            return F.pad(spread, (0, w - ow * k, 0, h - oh * k)), None, None  # rows no region reached get 0 (F.pad copies)
        kernel = torch.full((c, 1, k, k), 1.0 / (k * k), dtype=g.dtype, device=g.device)  # overlapping regions add up
        out_pad = _output_padding((h, w), (k, k), s, 0)
        return F.conv_transpose2d(g, kernel, None, s, 0, out_pad, groups=c), None, None

    @staticmethod
    def jvp(ctx, dx, d_size=None, d_stride=None):
        return F.avg_pool2d(dx, ctx.size, ctx.stride)


def _planes(t):
    """(..., H, W) -> (..., H W): each feature map as one row."""
    return t.reshape(*t.shape[:-2], t.shape[-2] * t.shape[-1])


class MaxPool2d(_Function):
    """Max pooling as a selection: y[n, c, j] = x[n, c, r_j], where the route r_j is the position of
    the largest entry of region j (found by the caller, `max_pool2d`, and held fixed like a dropout mask).

    reverse: dX = each output's gradient sent back to the one input its region chose (added up where
             overlapping regions chose the same input), zero elsewhere
    forward: dY = dX at the chosen positions (the map is linear in X for fixed routes)
    """

    @staticmethod
    def forward(x, routes):
        _check_float("max_pool2d input", x)
        return _planes(x).gather(-1, _planes(routes)).view(routes.shape)  # (..., H' W') -> (..., H', W')

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, routes = inputs
        _save(ctx, routes)
        ctx.in_shape = x.shape

    @staticmethod
    def backward(ctx, g):
        (routes,) = ctx.saved_tensors
        grad_x = g.new_zeros(*ctx.in_shape[:-2], ctx.in_shape[-2] * ctx.in_shape[-1])  # (..., H W)
        return grad_x.scatter_add_(-1, _planes(routes), _planes(g)).view(ctx.in_shape), None

    @staticmethod
    def jvp(ctx, dx, d_routes=None):
        (routes,) = ctx.saved_tensors
        return _planes(dx).gather(-1, _planes(routes)).view(routes.shape)


def max_pool2d(x, size, stride, call=None):
    """The largest entry of each size x size region of x (N, C, H, W), regions `stride` apart. The
    routes are chosen without gradient (they are piecewise constant in x); MaxPool2d then selects."""
    with torch.no_grad():  # (N, C, H', W'): flat positions in H x W. On a CPU, max_pool2d runs far faster on
        # channels-last maps (channels innermost) than on plain ones: one copy into that layout pays for itself
        last = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and x.device.type == "cpu" else x
        routes = F.max_pool2d(last, size, stride, return_indices=True)[1].contiguous()  # once, not in each rule's reshape
    return call(MaxPool2d, x, routes) if call else MaxPool2d.apply(x, routes)


class Flatten(_Function):
    """(N, C, H, W) -> (N, C*H*W).  reverse: dX = G reshaped back;  forward: dA = dX flattened."""

    @staticmethod
    def forward(x):
        return x.reshape(len(x), math.prod(x.shape[1:]))  # also for N = 0

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.shape = inputs[0].shape

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape)

    @staticmethod
    def jvp(ctx, dx):
        return dx.reshape(len(dx), math.prod(dx.shape[1:]))

conv2d = Conv2d.apply
