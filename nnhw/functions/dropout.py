"""Dropout: a fixed mask of 0 and 1/(1-p), drawn from a generator, as an input of its Function."""

import torch

from .shared import _check_float, _Function, _save

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
    mask = keep.to(a.dtype).div_(1.0 - p)  # in place: on a CPU a fresh map costs more than the division
    return call(Dropout, a, mask) if call else Dropout.apply(a, mask)
