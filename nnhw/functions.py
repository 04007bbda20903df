"""The transfer functions and losses of nnhw, each a torch.autograd.Function.

Every class has the same shape (micrograd, minitorch):

* ``forward`` computes f and saves the least that the derivative needs;
* ``backward`` states the local derivative f' and chains it with the upstream
  gradient ``g``. No autograd runs through built-in ops to get the first
  derivative: it is written out here.

Double backward: where ``backward`` is itself written in differentiable ops of
saved *inputs or outputs*, autograd can differentiate it again, and the test
suite proves that with ``gradgradcheck``. ``SoftmaxCrossEntropy`` saves the
softmax it computed on the way forward (a saving on every step), so it is
marked ``@once_differentiable``.

Public aliases (``sigmoid = Sigmoid.apply`` ...) are what callers use.
"""

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def _check_float(name, t):
    if not torch.is_floating_point(t):
        raise ValueError(f"{name} expects a floating-point tensor, got dtype {t.dtype}")


# --------------------------------------------------------------------------- #
# Transfer functions, elementwise                                             #
# --------------------------------------------------------------------------- #


class Sigmoid(torch.autograd.Function):
    """f(a) = 1 / (1 + e^-a);  f'(a) = f(a) (1 - f(a)).

    torch.sigmoid never overflows (it picks e^a / (1 + e^a) for a < 0), so the
    output is exactly 0 or 1 far out and the gradient is 0 there, never NaN.
    """

    @staticmethod
    def forward(ctx, a):
        _check_float("sigmoid", a)
        y = torch.sigmoid(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y * (1 - y)


class Tanh(torch.autograd.Function):
    """f(a) = tanh(a);  f'(a) = 1 - f(a)^2."""

    @staticmethod
    def forward(ctx, a):
        _check_float("tanh", a)
        y = torch.tanh(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


class ReLU(torch.autograd.Function):
    """f(a) = max(a, 0);  f'(a) = 1 if a > 0 else 0 (the homework sets f'(0) = 0).

    With z = f(a): f'(a) = sign(z), since z > 0 exactly where a > 0 and z = 0 elsewhere.
    Written that way the backward is two float passes, no boolean mask to build and convert
    (3x faster on the CNN's 2.4M-entry activations)."""

    @staticmethod
    def forward(ctx, a):
        _check_float("relu", a)
        z = a.clamp_min(0)
        ctx.save_for_backward(z)
        return z

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return torch.sign(z).mul_(g)  # f'(a) g


class Identity(torch.autograd.Function):
    """f(a) = a;  f'(a) = 1 (the homework's linear transfer)."""

    @staticmethod
    def forward(ctx, a):
        _check_float("identity", a)
        return a.clone()

    @staticmethod
    def backward(ctx, g):
        return g


class Square(torch.autograd.Function):
    """f(a) = a^2;  f'(a) = 2a (the homework's quadratic transfer, 2.3.1b)."""

    @staticmethod
    def forward(ctx, a):
        _check_float("square", a)
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return 2 * a * g


# --------------------------------------------------------------------------- #
# The affine map of a layer                                                   #
# --------------------------------------------------------------------------- #


class Affine(torch.autograd.Function):
    """A = X W^T + b, with X (N, d_in), W (d_out, d_in) like the homework's w(l), b (d_out,).

    dA/dX: G W          (N, d_in)
    dA/dW: G^T X        (d_out, d_in)
    dA/db: sum_n G[n]   (d_out,)
    """

    @staticmethod
    def forward(ctx, x, weight, bias=None):
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
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        if bias is None:
            return x @ weight.t()
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = (tuple(ctx.needs_input_grad) + (False,))[:3]
        grad_x = g @ weight if need_x else None
        grad_w = g.t() @ x if need_w else None
        grad_b = g.sum(0) if (ctx.has_bias and need_b) else None
        return grad_x, grad_w, grad_b


# --------------------------------------------------------------------------- #
# Losses                                                                      #
# --------------------------------------------------------------------------- #


IGNORE_NONE = -(2**63)  # an index no target can hold: every row counts, and -100 is out of range like any other


class SoftmaxCrossEntropy(torch.autograd.Function):
    """L = -(1/N) sum_n log softmax(A[n])[y_n], with A (N, k) logits and y (N,) int64.

    log softmax(a) = a - logsumexp(a), computed with the max subtracted
    (torch.log_softmax), so logits of any size give a finite loss.
    dL/dA = (softmax(A) - onehot(y)) / N.
    """

    @staticmethod
    def forward(ctx, logits, target):
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
            # -(1/N) sum_n log_p[n, y_n] in one op, which also checks every y_n on the CPU for free.
            # (On a GPU an index out of range is a device error: nnhw.data checks all labels once.)
            # ignore_index: nll_loss would silently drop rows whose target is -100, its default.
            loss = F.nll_loss(log_p, target, ignore_index=IGNORE_NONE)
        except (IndexError, RuntimeError):
            k = logits.shape[1]
            raise ValueError(
                f"softmax_cross_entropy: targets must lie in [0, {k}), "
                f"got values from {int(target.min())} to {int(target.max())}"
            ) from None
        ctx.save_for_backward(log_p, target)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        log_p, target = ctx.saved_tensors
        grad = log_p.exp()  # softmax(A), (N, k)
        grad.scatter_add_(1, target.unsqueeze(1), torch.full((len(target), 1), -1.0, dtype=grad.dtype, device=grad.device))
        return grad.mul_(g / len(target)), None


class SquaredError(torch.autograd.Function):
    """L = (1/(N k)) sum_{n,j} (P[n,j] - T[n,j])^2, both (N, k): the homework's 4.2 average.

    dL/dP = 2 (P - T) / (N k),  dL/dT = -dL/dP.
    """

    @staticmethod
    def forward(ctx, pred, target):
        _check_float("squared_error prediction", pred)
        _check_float("squared_error target", target)
        if pred.shape != target.shape:
            raise ValueError(
                f"squared_error: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape"
            )
        ctx.save_for_backward(pred, target)
        diff = pred - target
        return (diff * diff).mean()  # an empty batch gives nan, as F.mse_loss does

    @staticmethod
    def backward(ctx, g):
        pred, target = ctx.saved_tensors
        grad = (2.0 / max(pred.numel(), 1)) * g * (pred - target)  # empty for an empty batch
        return (
            grad if ctx.needs_input_grad[0] else None,
            -grad if ctx.needs_input_grad[1] else None,
        )


# --------------------------------------------------------------------------- #
# Convolution and dropout (the CNN and the regularised MLPs of 4.3 and 6)     #
# --------------------------------------------------------------------------- #


class Conv2d(torch.autograd.Function):
    """A = K * X + c: cross-correlation of X (N, C_in, H, W) with K (C_out, C_in, kh, kw), plus c (C_out,).

    dA/dX: the transposed convolution of G with K
    dA/dK: the correlation of X with G
    dA/dc: G summed over N, H and W
    """

    @staticmethod
    def forward(ctx, x, weight, bias=None, stride=1, padding=0):
        _check_float("conv2d input", x)
        if x.dim() != 4 or weight.dim() != 4 or x.shape[1] != weight.shape[1]:
            raise ValueError(
                f"conv2d expects x (N, C_in, H, W) and weight (C_out, C_in, kh, kw), "
                f"got x {tuple(x.shape)} and weight {tuple(weight.shape)}"
            )
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.stride, ctx.padding = bias is not None, stride, padding
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = (tuple(ctx.needs_input_grad) + (False,))[:3]
        # Both adjoint convolutions in one call: the kernels share the layout work (torch.nn.grad's
        # conv2d_input and conv2d_weight are this call with one output each, on stand-in tensors).
        s, p = [ctx.stride] * 2, [ctx.padding] * 2
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            g, x, weight, None, s, p, [1, 1], False, [0, 0], 1, [need_x, need_w, False])
        grad_b = g.sum((0, 2, 3)) if (ctx.has_bias and need_b) else None
        return grad_x, grad_w, grad_b, None, None


class AvgPool2d(torch.autograd.Function):
    """Average pooling: each output is the mean of a p x p region of X (N, C, H, W), regions `stride` apart.
    dA/dX: every input of a region gets 1/p^2 of that output's gradient (summed where regions overlap)."""

    @staticmethod
    def forward(ctx, x, size, stride):
        _check_float("avg_pool2d input", x)
        ctx.save_for_backward(x)
        ctx.size, ctx.stride = size, stride
        return F.avg_pool2d(x, size, stride)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        k, s = [ctx.size] * 2, [ctx.stride] * 2
        grad = torch.ops.aten.avg_pool2d_backward(g, x, k, s, [0, 0], False, True, None)
        return grad, None, None


class Flatten(torch.autograd.Function):
    """(N, C, H, W) -> (N, C*H*W); the gradient is reshaped back."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.reshape(len(x), math.prod(x.shape[1:]))  # (N, C*H*W), also for N = 0

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape)


class Dropout(torch.autograd.Function):
    """y = a * m for a fixed mask m of 0 (dropped) and 1/(1-p) (kept): inverted dropout.
    dy/da = m. The mask is an input, so gradcheck can hold it fixed."""

    @staticmethod
    def forward(ctx, a, mask):
        _check_float("dropout", a)
        if mask.shape != a.shape:
            raise ValueError(f"dropout: mask {tuple(mask.shape)} does not match input {tuple(a.shape)}")
        ctx.save_for_backward(mask)
        return a * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask, None


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
