"""The affine map of a fully connected layer, A = X W^T + b."""

import torch

from .shared import _check_float, _Function, _save


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


affine = Affine.apply
