"""The transfer functions and losses of nnhw, each a torch.autograd.Function with both derivatives by hand.

Every class has the same shape (micrograd, minitorch, and the homework's problem 5):

* ``forward`` computes f from the inputs alone;
* ``setup_context`` saves the least that the derivatives need;
* ``backward`` is the reverse rule: it chains the local derivative with the upstream gradient ``g``
  (the vector-Jacobian product, one reverse-mode line);
* ``jvp`` is the forward rule: it pushes the inputs' tangents through the local derivative
  (the Jacobian-vector product, one forward-mode line).

Each docstring states f, the reverse rule and the forward rule. Nothing runs autograd through
built-in ops to get a derivative, and no aten ``*_backward`` kernel is called: the convolution's
and the pooling's adjoints are written as the (transposed) convolutions they are. The suite checks
both rules with gradcheck (``check_forward_ad``), second derivatives with gradgradcheck, and
``torch.func.vmap`` through them (``generate_vmap_rule``, ``check_batched_grad``).

Public aliases (``sigmoid = Sigmoid.apply`` ...) are what callers use; ``nnhw.tape`` calls
``forward``, ``setup_context`` and ``backward`` itself.
"""

import math

import torch
import torch.nn.functional as F


def _check_float(name, t):
    if not torch.is_floating_point(t):
        raise ValueError(f"{name} expects a floating-point tensor, got dtype {t.dtype}")


def _save(ctx, *tensors):
    """What both rules need, for backward and for jvp."""
    ctx.save_for_backward(*tensors)
    ctx.save_for_forward(*tensors)


class _Function(torch.autograd.Function):
    generate_vmap_rule = True  # torch.func.vmap runs forward, backward and jvp per example


# --------------------------------------------------------------------------- #
# Transfer functions, elementwise                                             #
# --------------------------------------------------------------------------- #


class Sigmoid(_Function):
    """f(a) = 1 / (1 + e^-a);  f'(a) = f(a) (1 - f(a)).
    reverse: da = g f (1 - f);  forward: dz = f (1 - f) da.

    torch.sigmoid never overflows (it picks e^a / (1 + e^a) for a < 0), so the
    output is exactly 0 or 1 far out and the derivative is 0 there, never NaN.
    """

    @staticmethod
    def forward(a):
        _check_float("sigmoid", a)
        return torch.sigmoid(a)

    @staticmethod
    def setup_context(ctx, inputs, y):
        _save(ctx, y)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y * (1 - y)

    @staticmethod
    def jvp(ctx, da):
        (y,) = ctx.saved_tensors
        return da * y * (1 - y)


class Tanh(_Function):
    """f(a) = tanh(a);  f'(a) = 1 - f(a)^2.
    reverse: da = g (1 - f^2);  forward: dz = (1 - f^2) da."""

    @staticmethod
    def forward(a):
        _check_float("tanh", a)
        return torch.tanh(a)

    @staticmethod
    def setup_context(ctx, inputs, y):
        _save(ctx, y)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)

    @staticmethod
    def jvp(ctx, da):
        (y,) = ctx.saved_tensors
        return da * (1 - y * y)


class ReLU(_Function):
    """f(a) = max(a, 0);  f'(a) = 1 if a > 0 else 0 (the homework sets f'(0) = 0).
    reverse: da = sign(z) g;  forward: dz = sign(z) da,  with z = f(a).

    sign(z) is f'(a), since z > 0 exactly where a > 0 and z = 0 elsewhere. Written that way
    the derivative is two float passes, no boolean mask to build and convert."""

    @staticmethod
    def forward(a):
        _check_float("relu", a)
        return a.clamp_min(0)

    @staticmethod
    def setup_context(ctx, inputs, z):
        _save(ctx, z)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return torch.sign(z) * g

    @staticmethod
    def jvp(ctx, da):
        (z,) = ctx.saved_tensors
        return torch.sign(z) * da


class Identity(_Function):
    """f(a) = a;  f'(a) = 1 (the homework's linear transfer).
    reverse: da = g;  forward: dz = da."""

    @staticmethod
    def forward(a):
        _check_float("identity", a)
        return a.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g

    @staticmethod
    def jvp(ctx, da):
        return da.clone()


class Square(_Function):
    """f(a) = a^2;  f'(a) = 2a (the homework's quadratic transfer, 2.3.1b).
    reverse: da = 2 a g;  forward: dz = 2 a da."""

    @staticmethod
    def forward(a):
        _check_float("square", a)
        return a * a

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save(ctx, inputs[0])

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return 2 * a * g

    @staticmethod
    def jvp(ctx, da):
        (a,) = ctx.saved_tensors
        return 2 * a * da


# --------------------------------------------------------------------------- #
# The affine map of a layer                                                   #
# --------------------------------------------------------------------------- #


class Affine(_Function):
    """A = X W^T + b, with X (N, d_in), W (d_out, d_in) like the homework's w(l), b (d_out,).

    reverse: dX = G W (N, d_in);  dW = G^T X (d_out, d_in);  db = sum_n G[n] (d_out,)
    forward: dA = dX W^T + X dW^T + db   (A is bilinear in X and W)
    """

    @staticmethod
    def forward(x, weight, bias=None):
        _check_float("affine input", x)
        _check_float("affine weight", weight)
        if x.dim() != 2 or weight.dim() != 2:
            raise ValueError(
                f"affine expects x (N, d_in) and weight (d_out, d_in), "
                f"got x {tuple(x.shape)} and weight {tuple(weight.shape)}"
            )
        if x.shape[1] != weight.shape[1]:
            raise ValueError(
                f"affine: x has {x.shape[1]} features but weight {tuple(weight.shape)} "
                f"expects {weight.shape[1]}"
            )
        if bias is not None and bias.shape != (weight.shape[0],):
            raise ValueError(
                f"affine: bias {tuple(bias.shape)} does not match weight's {weight.shape[0]} outputs"
            )
        if bias is None:
            return x @ weight.t()
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight = inputs[:2]
        _save(ctx, x, weight)
        ctx.has_bias = len(inputs) > 2 and inputs[2] is not None

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = (tuple(ctx.needs_input_grad) + (False,))[:3]
        grad_x = g @ weight if need_x else None
        grad_w = g.t() @ x if need_w else None
        grad_b = g.sum(0) if (ctx.has_bias and need_b) else None
        return grad_x, grad_w, grad_b

    @staticmethod
    def jvp(ctx, dx, dw, db=None):
        x, weight = ctx.saved_tensors
        da = torch.zeros(x.shape[0], weight.shape[0], dtype=x.dtype, device=x.device)
        if dx is not None:
            da = da + dx @ weight.t()
        if dw is not None:
            da = da + x @ dw.t()
        if db is not None:
            da = da + db
        return da


# --------------------------------------------------------------------------- #
# Losses                                                                      #
# --------------------------------------------------------------------------- #

IGNORE_NONE = -(2**63)  # an index no target can hold: every row counts, and -100 is out of range like any other


def _onehot(target, k, dtype):
    return (torch.arange(k, device=target.device) == target.unsqueeze(-1)).to(dtype)  # (N, k)


class SoftmaxCrossEntropy(_Function):
    """L = -(1/N) sum_n log softmax(A[n])[y_n], with A (N, k) logits and y (N,) int64.

    log softmax(a) = a - logsumexp(a), computed with the max subtracted
    (torch.log_softmax), so logits of any size give a finite loss.
    reverse: dA = g (softmax(A) - onehot(y)) / N
    forward: dL = sum_{n,j} (softmax(A) - onehot(y))[n, j] dA[n, j] / N
    """

    @staticmethod
    def forward(logits, target):
        _check_float("softmax_cross_entropy logits", logits)
        if logits.dim() != 2:
            raise ValueError(f"softmax_cross_entropy expects logits (N, k), got {tuple(logits.shape)}")
        if target.dtype != torch.int64:
            raise ValueError(f"softmax_cross_entropy expects int64 class indices, got dtype {target.dtype}")
        if target.shape != logits.shape[:1]:
            raise ValueError(
                f"softmax_cross_entropy: target {tuple(target.shape)} does not match "
                f"logits {tuple(logits.shape)}; expected ({logits.shape[0]},)"
            )
        log_p = torch.log_softmax(logits, dim=1)  # (N, k)
        try:
            # -(1/N) sum_n log_p[n, y_n] in one op, which also checks every y_n on the CPU for free
            # (on a GPU an index out of range is a device error: nnhw.data checks all labels once).
            # ignore_index: nll_loss would silently drop rows whose target is -100, its default.
            return F.nll_loss(log_p, target, ignore_index=IGNORE_NONE)
        except (IndexError, RuntimeError):
            k = logits.shape[1]
            raise ValueError(
                f"softmax_cross_entropy: targets must lie in [0, {k}), "
                f"got values from {int(target.min())} to {int(target.max())}"
            ) from None

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, target = inputs
        _save(ctx, logits, target)

    @staticmethod
    def _residual(logits, target):
        """(softmax(A) - onehot(y)) / N: the local derivative of L in A."""
        return (torch.softmax(logits, dim=1) - _onehot(target, logits.shape[1], logits.dtype)) / logits.shape[0]

    @staticmethod
    def backward(ctx, g):
        logits, target = ctx.saved_tensors
        return g * SoftmaxCrossEntropy._residual(logits, target), None

    @staticmethod
    def jvp(ctx, d_logits, d_target):
        logits, target = ctx.saved_tensors
        return (SoftmaxCrossEntropy._residual(logits, target) * d_logits).sum()


class SquaredError(_Function):
    """L = (1/(N k)) sum_{n,j} (P[n,j] - T[n,j])^2, both (N, k): the homework's 4.2 average.

    reverse: dP = 2 g (P - T) / (N k),  dT = -dP
    forward: dL = 2 sum (P - T) (dP - dT) / (N k)
    """

    @staticmethod
    def forward(pred, target):
        _check_float("squared_error prediction", pred)
        _check_float("squared_error target", target)
        if pred.shape != target.shape:
            raise ValueError(
                f"squared_error: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape"
            )
        diff = pred - target
        return (diff * diff).mean()  # an empty batch gives nan, as F.mse_loss does

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save(ctx, *inputs)

    @staticmethod
    def backward(ctx, g):
        pred, target = ctx.saved_tensors
        grad = (2.0 / max(pred.numel(), 1)) * g * (pred - target)  # empty for an empty batch
        return (
            grad if ctx.needs_input_grad[0] else None,
            -grad if ctx.needs_input_grad[1] else None,
        )

    @staticmethod
    def jvp(ctx, d_pred, d_target):
        pred, target = ctx.saved_tensors
        d = torch.zeros_like(pred)
        if d_pred is not None:
            d = d + d_pred
        if d_target is not None:
            d = d - d_target
        return (2.0 / max(pred.numel(), 1)) * ((pred - target) * d).sum()


# --------------------------------------------------------------------------- #
# Convolution, pooling and dropout (the CNN and the regularised MLPs of 4.3, 6)
# --------------------------------------------------------------------------- #


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
            return F.pad(spread, (0, w - ow * k, 0, h - oh * k)), None, None  # rows no region reached get 0
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
        zeros = g.new_zeros(*ctx.in_shape[:-2], ctx.in_shape[-2] * ctx.in_shape[-1])  # (..., H W)
        return zeros.scatter_add(-1, _planes(routes), _planes(g)).view(ctx.in_shape), None

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
        routes = F.max_pool2d(last, size, stride, return_indices=True)[1]
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


class Dropout(_Function):
    """y = a * m for a fixed mask m of 0 (dropped) and 1/(1-p) (kept): inverted dropout.
    reverse: da = g m;  forward: dy = m da. The mask is an input, so gradcheck can hold it fixed."""

    @staticmethod
    def forward(a, mask):
        _check_float("dropout", a)
        if mask.shape != a.shape:
            raise ValueError(f"dropout: mask {tuple(mask.shape)} does not match input {tuple(a.shape)}")
        return a * mask

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save(ctx, inputs[1])

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask, None

    @staticmethod
    def jvp(ctx, da, d_mask=None):
        (mask,) = ctx.saved_tensors
        return da * mask


def dropout(a, p, generator, call=None):
    """Drop each entry of a with probability p (a fresh mask from `generator`), scale the rest by 1/(1-p).
    `call(Function, *inputs)` applies the Function (default: through torch.autograd)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must lie in [0, 1), got {p}")
    if p == 0.0:
        return a
    keep = torch.rand(a.shape, generator=generator, device=a.device, dtype=a.dtype) >= p
    mask = keep.to(a.dtype) / (1.0 - p)
    return call(Dropout, a, mask) if call else Dropout.apply(a, mask)


# --------------------------------------------------------------------------- #
# Batch normalisation                                                         #
# --------------------------------------------------------------------------- #


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


sigmoid = Sigmoid.apply
tanh = Tanh.apply
relu = ReLU.apply
identity = Identity.apply
square = Square.apply
affine = Affine.apply
softmax_cross_entropy = SoftmaxCrossEntropy.apply
squared_error = SquaredError.apply
conv2d = Conv2d.apply

# Transfer functions by the names configs use (the classes: models apply them through autograd or nnhw.tape).
TRANSFER_FUNCTIONS = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU, "identity": Identity, "square": Square}
