"""The losses: softmax cross-entropy on the outputs, and the squared error against targets."""

import torch
import torch.nn.functional as F

from .shared import _check_float, _Function, _save


IGNORE_NONE = -(2**63)  # an index no target can hold: every row counts, and -100 is out of range like any other


def _onehot(target, k, dtype):
    return (torch.arange(k, device=target.device) == target.unsqueeze(-1)).to(dtype)  # (N, k)


class SoftmaxCrossEntropy(_Function):
    """L = -(1/N) sum_n sum_j t[n, j] log softmax(A[n])[j], with A (N, k) logits, y (N,) int64 and the
    target distribution t = (1 - smoothing) onehot(y) + smoothing / k (label smoothing, Szegedy et al.
    2016; smoothing = 0: L = -(1/N) sum_n log softmax(A[n])[y_n]).

    log softmax(a) = a - logsumexp(a), computed with the max subtracted
    (torch.log_softmax), so logits of any size give a finite loss.
    reverse: dA = g (softmax(A) - t) / N
    forward: dL = sum_{n,j} (softmax(A) - t)[n, j] dA[n, j] / N
    """

    @staticmethod
    def forward(logits, target, smoothing=0.0):
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
            nll = F.nll_loss(log_p, target, ignore_index=IGNORE_NONE)
        except (IndexError, RuntimeError):
            k = logits.shape[1]
            raise ValueError(
                f"softmax_cross_entropy: targets must lie in [0, {k}), "
                f"got values from {int(target.min())} to {int(target.max())}"
            ) from None
        if not smoothing:
            return nll
        return (1 - smoothing) * nll - smoothing * log_p.mean()  # log_p.mean() = (1/N) sum_n (1/k) sum_j log_p[n, j]

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, target = inputs[:2]
        ctx.smoothing = inputs[2] if len(inputs) > 2 else 0.0
        _save(ctx, logits, target)

    @staticmethod
    def _residual(logits, target, smoothing):
        """(softmax(A) - t) / N: the local derivative of L in A."""
        k = logits.shape[1]
        t = _onehot(target, k, logits.dtype)
        if smoothing:
            t = (1 - smoothing) * t + smoothing / k
        return (torch.softmax(logits, dim=1) - t) / logits.shape[0]

    @staticmethod
    def backward(ctx, g):
        logits, target = ctx.saved_tensors
        return g * SoftmaxCrossEntropy._residual(logits, target, ctx.smoothing), None, None

    @staticmethod
    def jvp(ctx, d_logits, d_target, d_smoothing=None):
        logits, target = ctx.saved_tensors
        return (SoftmaxCrossEntropy._residual(logits, target, ctx.smoothing) * d_logits).sum()


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


class SoftmaxKL(_Function):
    """L = (1/N) sum_n KL(p_n || q_n) = (1/N) sum_{n,j} p[n,j] (log p[n,j] - log q[n,j]), with p = softmax(A)
    and q = softmax(B) row by row, A and B (N, k) logits: how far the outputs B have moved from A's
    (virtual adversarial training's divergence, Miyato et al. 2018).

    log softmax is computed with the max subtracted, so logits of any size give a finite loss.
    reverse: dB = g (q - p) / N;  dA = g p (log p - log q - KL_n) / N, with KL_n = sum_j p[n,j] (log p - log q)[n,j]
    forward: dL = sum_{n,j} ((q - p) dB + p (log p - log q - KL_n) dA)[n,j] / N
    """

    @staticmethod
    def forward(a, b):
        _check_float("softmax_kl logits", a)
        _check_float("softmax_kl logits", b)
        if a.dim() != 2 or a.shape != b.shape:
            raise ValueError(f"softmax_kl expects two (N, k) logits of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        log_p, log_q = torch.log_softmax(a, dim=1), torch.log_softmax(b, dim=1)  # (N, k) each
        return (log_p.exp() * (log_p - log_q)).sum() / max(len(a), 1)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save(ctx, *inputs)

    @staticmethod
    def _residuals(a, b):
        """((q - p) / N, p (log p - log q - KL_n) / N): the local derivatives of L in B and in A."""
        log_p, log_q = torch.log_softmax(a, dim=1), torch.log_softmax(b, dim=1)
        p, gap, n = log_p.exp(), log_p - log_q, max(len(a), 1)
        kl = (p * gap).sum(1, keepdim=True)  # (N, 1): KL_n
        return (log_q.exp() - p) / n, p * (gap - kl) / n

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        d_b, d_a = SoftmaxKL._residuals(a, b)
        return (g * d_a if ctx.needs_input_grad[0] else None), (g * d_b if ctx.needs_input_grad[1] else None)

    @staticmethod
    def jvp(ctx, d_a, d_b):
        a, b = ctx.saved_tensors
        r_b, r_a = SoftmaxKL._residuals(a, b)
        total = torch.zeros((), dtype=a.dtype, device=a.device)
        if d_a is not None:
            total = total + (r_a * d_a).sum()
        if d_b is not None:
            total = total + (r_b * d_b).sum()
        return total


softmax_cross_entropy = SoftmaxCrossEntropy.apply
softmax_kl = SoftmaxKL.apply
squared_error = SquaredError.apply
