"""Second derivatives of a loss over a parameter dict: Hessian-vector products, the top eigenvalues,
the trace and the eigenvalue density.

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


def _operator(f, params, mode, scale=None):
    """(apply, n, like): apply(x) = H x for x (n,), one flat vector over every entry of params in their
    order; with `scale` (a dict of positive tensors shaped like params, s), the operator S H S, S = diag(s).
    `like` is the tensor whose device and dtype the vectors take."""
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [math.prod(s) for s in shapes]
    s = None if scale is None else torch.cat([scale[k].reshape(-1) for k in names])

    def apply(x):
        x = x if s is None else s * x
        hv = hvp(f, params, {k: part.view(shape) for k, part, shape in zip(names, x.split(sizes), shapes)}, mode)
        hx = torch.cat([hv[k].reshape(-1) for k in names])
        return hx if s is None else s * hx

    return apply, sum(sizes), params[names[0]]


def _lanczos(apply, q, steps):
    """Lanczos with full reorthogonalisation from the unit vector q, for at most `steps` products:
    (alphas, betas, basis), the diagonal and the off-diagonal of H's tridiagonal projection T_j and the
    Krylov basis q_1..q_j. It stops early at an invariant subspace, where T_j's eigenvalues are exact."""
    basis, alphas, betas = [q], [], []
    for _ in range(steps):
        w = apply(basis[-1])
        alphas.append(torch.dot(w, basis[-1]).item())
        Q = torch.stack(basis, 1)  # (n, j)
        for _ in range(2):  # Gram-Schmidt twice: orthogonal to working precision
            w = w - Q @ (Q.t() @ w)
        betas.append(torch.linalg.vector_norm(w).item())
        if betas[-1] <= 1e-12 * max(abs(a) for a in alphas) or len(alphas) == steps:
            break  # an invariant subspace (the estimate is exact), or the last product
        basis.append(w / betas[-1])
    return alphas, betas, basis[: len(alphas)]


def _ritz(alphas, betas):
    """T_j's eigenvalues (ascending) and eigenvectors, in float64."""
    j = len(alphas)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if j > 1:
        off = torch.tensor(betas[: j - 1], dtype=torch.float64)
        T += torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigh(T)


def _check_count(where, name, value, least=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{where}: {name} must be a whole number >= {least}, got {value!r}")


def _rademacher(n, generator, like):
    """n independent entries +-1, each with probability 1/2, drawn on the CPU (the same on every device)."""
    return (torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64) * 2 - 1).to(device=like.device, dtype=like.dtype)


def top_eigenvalues(f, params, k, iters=20, generator=None, mode="forward-over-reverse", scale=None):
    """The k largest algebraic eigenvalues of f's Hessian at params (not the largest in magnitude), largest
    first, as Eigen; with `scale` (s, a dict like params), those of S H S, S = diag(s). Lanczos with full
    reorthogonalisation from a random unit start (drawn from `generator`), for iters products.

    After j products the Krylov basis q_1..q_j and H's tridiagonal projection T_j (alpha on its diagonal,
    beta beside it) are built; T_j's largest eigenvalues are the estimates, and beta_j |s_j|, with s the
    matching eigenvector of T_j, is each one's residual. Full reorthogonalisation keeps the basis
    orthogonal in floating point, so no ghost copies of an eigenvalue appear. Fewer than k come back where
    the Krylov space runs out first (H has fewer distinct eigenvalues that the start sees)."""
    check_params("top_eigenvalues", params)
    _check_count("top_eigenvalues", "iters", iters)
    _check_count("top_eigenvalues", "k", k)
    if k > iters:
        raise ValueError(f"top_eigenvalues: k = {k} eigenvalues need at least as many Lanczos steps, got iters = {iters}")
    apply, n, like = _operator(f, params, mode, scale)
    q = torch.randn(n, generator=generator, dtype=torch.float64).to(device=like.device, dtype=like.dtype)
    alphas, betas, basis = _lanczos(apply, q / torch.linalg.vector_norm(q), min(iters, n))
    values, vectors = _ritz(alphas, betas)
    j = len(alphas)
    Q = torch.stack(basis, 1)  # (n, j), in the parameters' precision
    lost = (Q.t() @ Q - torch.eye(j, dtype=Q.dtype, device=Q.device)).abs().max().item()
    return [Eigen(values[-i].item(), abs(betas[-1] * vectors[-1, -i].item()), j, lost) for i in range(1, min(k, j) + 1)]


def top_eigenvalue(f, params, iters=20, generator=None, mode="forward-over-reverse", scale=None):
    """The largest algebraic eigenvalue of f's Hessian at params (with `scale`, of S H S), as top_eigenvalues."""
    check_params("top_eigenvalue", params)
    _check_count("top_eigenvalue", "iters", iters)
    return top_eigenvalues(f, params, 1, iters, generator, mode, scale)[0]


@dataclass
class Trace:
    """Hutchinson's estimate of tr H, its standard error, and the products of H it took."""

    value: float
    stderr: float
    products: int


def trace(f, params, samples=100, generator=None, mode="forward-over-reverse"):
    """tr H by Hutchinson's estimator: E[z^T H z] = tr H for z with independent entries +-1. `value` is
    the mean over `samples` draws (from `generator`), `stderr` their standard deviation / sqrt(samples).
    Where samples >= n, the number of entries, the n unit vectors e_i replace the draws: sum_i e_i^T H e_i
    is tr H exactly, and the standard error is 0."""
    check_params("trace", params)
    _check_count("trace", "samples", samples, least=2)
    apply, n, like = _operator(f, params, mode)
    if samples >= n:
        basis = torch.eye(n, dtype=like.dtype, device=like.device)
        return Trace(sum(apply(basis[i])[i].item() for i in range(n)), 0.0, n)
    values = []
    for _ in range(samples):
        z = _rademacher(n, generator, like)
        values.append(torch.dot(z, apply(z)).item())
    t = torch.tensor(values, dtype=torch.float64)
    return Trace(t.mean().item(), (t.std() / math.sqrt(samples)).item(), samples)


@dataclass
class Density:
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature: nodes (Ritz values) and their
    weights, which sum to 1; `products` of H it took."""

    nodes: list
    weights: list
    products: int

    def curve(self, grid, width):
        """The density smoothed by a Gaussian of std `width` at the points of `grid` (a 1-D tensor):
        sum_i w_i N(x; node_i, width^2), which integrates to 1."""
        nodes, weights = torch.tensor(self.nodes, dtype=torch.float64), torch.tensor(self.weights, dtype=torch.float64)
        gauss = torch.exp(-0.5 * ((grid.double().unsqueeze(1) - nodes) / width) ** 2) / (width * math.sqrt(2 * math.pi))
        return gauss @ weights


def spectral_density(f, params, iters=30, runs=2, generator=None, mode="forward-over-reverse"):
    """The eigenvalue density of f's Hessian, (1/n) sum_i delta(x - lambda_i), by stochastic Lanczos
    quadrature (Ghorbani et al. 2019): for each of `runs` starts v = z / sqrt(n), z with entries +-1
    (Hutchinson's draws, in trace's order), `iters` Lanczos steps give T = U diag(theta) U^T; the nodes
    are theta and the weights U[0, i]^2 / runs. sum_i w_i theta_i = mean_r v_r^T H v_r: trace(...) / n
    for the same draws."""
    check_params("spectral_density", params)
    _check_count("spectral_density", "iters", iters)
    _check_count("spectral_density", "runs", runs)
    apply, n, like = _operator(f, params, mode)
    nodes, weights, products = [], [], 0
    for _ in range(runs):
        z = _rademacher(n, generator, like)
        alphas, betas, _ = _lanczos(apply, z / math.sqrt(n), min(iters, n))
        values, vectors = _ritz(alphas, betas)
        nodes += values.tolist()
        weights += (vectors[0] ** 2 / runs).tolist()
        products += len(alphas)
    return Density(nodes, weights, products)


def layer_eigenvalues(f, params, iters=20, generator=None, mode="forward-over-reverse"):
    """{weight name: Eigen} for each weight (W1, Wc1, ...): the top eigenvalue of its own diagonal
    block of H, the Hessian over that weight with every other parameter held where it is."""
    out = {}
    for name in (k for k in params if k.startswith("W")):
        rest = {k: p.detach() for k, p in params.items() if k != name}
        out[name] = top_eigenvalue(lambda one: f({**rest, **one}), {name: params[name]}, iters, generator, mode)
    return out
