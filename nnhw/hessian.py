"""Second derivatives of a loss over a parameter dict: Hessian-vector products, and the top eigenvalue.

`f` maps a parameter dict {name: tensor} to a scalar loss; H is its Hessian over every
entry of every parameter. Problem 7's L (the loss is L-smooth: ||H|| <= L) is what
`top_eigenvalue` measures locally, and gradient descent with step eta is stable on a
quadratic only where the largest eigenvalue of H is below 2/eta.

H v is formed two independent ways, each through nnhw's own derivative rules:

* forward over reverse: the directional derivative of the gradient, d/dt grad f(w + t v) at
  t = 0, by `torch.func.jvp` of `torch.func.grad(f)`. The forward pass's tangents come from
  the Functions' hand-written `jvp` rules;
* reverse over reverse: the gradient of <grad f(w), v>, by differentiating the Functions'
  hand-written `backward` rules a second time (the double backward that gradgradcheck checks).

Either costs a small constant times one gradient (tools/hvp_cost.py times them).
"""

import math
import warnings
from dataclasses import dataclass

import torch

MODES = ("forward-over-reverse", "reverse-over-reverse")


def check_params(where, params):
    """ValueError naming `params` unless it is a non-empty dict of floating-point tensors."""
    if not isinstance(params, dict) or not params:
        raise ValueError(f"{where}: params must be a non-empty dict of tensors, got {params!r:.60}")
    bad = next((k for k, p in params.items() if not (torch.is_tensor(p) and torch.is_floating_point(p))), None)
    if bad is not None:
        raise ValueError(f"{where}: params[{bad!r}] is not a floating-point tensor")


def hvp(f, params, v, mode="forward-over-reverse"):
    """H v as a dict like `params`, with H the Hessian of f at params; v is a dict of the same shapes.
    Where f does not depend on a parameter, its part of H v is 0."""
    check_params("hvp", params)
    if mode not in MODES:
        raise ValueError(f"hvp: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(v, dict) or set(v) != set(params) or any(not torch.is_tensor(v[k]) or v[k].shape != p.shape for k, p in params.items()):
        raise ValueError("hvp: v must hold a tensor of each parameter's shape, and nothing else")
    w = {k: p.detach() for k, p in params.items()}
    if mode == "forward-over-reverse":
        with warnings.catch_warnings():  # torch's first forward-mode call loads decompositions through its deprecated torch.jit.script
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
            return torch.func.jvp(torch.func.grad(f), (w,), ({k: v[k] for k in w},))[1]
    if mode == "reverse-over-reverse":
        with torch.enable_grad():
            w = {k: p.requires_grad_() for k, p in w.items()}
            value = f(w)
            if not torch.is_tensor(value) or value.numel() != 1:
                raise ValueError(f"hvp: f must return a scalar tensor, got {type(value).__name__}")
            if not value.requires_grad:  # f does not depend on the parameters at all: H = 0
                return {k: torch.zeros_like(p) for k, p in w.items()}
            grads = torch.autograd.grad(value, list(w.values()), create_graph=True, allow_unused=True)
            dot = sum((g * v[k]).sum() for k, g in zip(w, grads) if g is not None)  # <grad f(w), v>
            hv = torch.autograd.grad(dot, list(w.values()), allow_unused=True) if torch.is_tensor(dot) and dot.requires_grad else [None] * len(w)
        return {k: torch.zeros_like(p) if h is None else h for (k, p), h in zip(w.items(), hv)}  # None: f is linear there


@dataclass
class Eigen:
    """An eigenvalue estimate: the Ritz value, its residual ||H y - value y|| for the unit Ritz vector
    y (0 when the Krylov space is exhausted, small when the estimate has converged), the number of
    products of H it took, and how far the Krylov basis is from orthonormal (the largest
    |q_i . q_j - [i = j]|): at rounding size with full reorthogonalisation; where it grows, Lanczos
    sees converged eigenvalues again as ghost copies and its residual no longer holds."""

    value: float
    residual: float
    products: int
    orthogonality: float = 0.0


def top_eigenvalue(f, params, iters=20, generator=None, mode="forward-over-reverse"):
    """The largest algebraic eigenvalue of f's Hessian at params (not the largest in magnitude), by
    Lanczos with full reorthogonalisation from a random unit start (drawn from `generator`).

    After j products the Krylov basis q_1..q_j and H's tridiagonal projection T_j (alpha on its
    diagonal, beta beside it) are built; T_j's largest eigenvalue is the estimate, and
    beta_j |s_j|, with s the matching eigenvector of T_j, is its residual. Full reorthogonalisation
    keeps the basis orthogonal in floating point, so no ghost copies of an eigenvalue appear."""
    check_params("top_eigenvalue", params)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"top_eigenvalue: iters must be a whole number >= 1 (Hessian-vector products), got {iters!r}")
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [math.prod(s) for s in shapes]
    any_param = params[names[0]]
    k_max = min(iters, sum(sizes))

    def unflat(x):
        return {k: part.view(shape) for k, part, shape in zip(names, x.split(sizes), shapes)}

    def apply_h(x):
        hv = hvp(f, params, unflat(x), mode)
        return torch.cat([hv[k].reshape(-1) for k in names])

    q = torch.randn(sum(sizes), generator=generator, dtype=torch.float64).to(device=any_param.device, dtype=any_param.dtype)
    basis, alphas, betas = [q / torch.linalg.vector_norm(q)], [], []
    for _ in range(k_max):
        w = apply_h(basis[-1])
        alphas.append(torch.dot(w, basis[-1]).item())
        Q = torch.stack(basis, 1)  # (n, j)
        for _ in range(2):  # Gram-Schmidt twice: orthogonal to working precision
            w = w - Q @ (Q.t() @ w)
        betas.append(torch.linalg.vector_norm(w).item())
        if betas[-1] <= 1e-12 * max(abs(a) for a in alphas) or len(alphas) == k_max:
            break  # an invariant subspace (the estimate is exact), or the last product
        basis.append(w / betas[-1])
    j = len(alphas)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if j > 1:
        off = torch.tensor(betas[: j - 1], dtype=torch.float64)
        T += torch.diag(off, 1) + torch.diag(off, -1)
    values, vectors = torch.linalg.eigh(T)
    Q = torch.stack(basis[:j], 1)  # (n, j), in the parameters' precision
    lost = (Q.t() @ Q - torch.eye(j, dtype=Q.dtype, device=Q.device)).abs().max().item()
    return Eigen(values[-1].item(), abs(betas[-1] * vectors[-1, -1].item()), j, lost)


def layer_eigenvalues(f, params, iters=20, generator=None, mode="forward-over-reverse"):
    """{weight name: Eigen} for each weight (W1, Wc1, ...): the top eigenvalue of its own diagonal
    block of H, the Hessian over that weight with every other parameter held where it is."""
    out = {}
    for name in (k for k in params if k.startswith("W")):
        rest = {k: p.detach() for k, p in params.items() if k != name}
        out[name] = top_eigenvalue(lambda one: f({**rest, **one}), {name: params[name]}, iters, generator, mode)
    return out
