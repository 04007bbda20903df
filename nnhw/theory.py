"""`python -m nnhw.theory`: the homework's written claims (2.2, 2.3, 7), each computed live.

Every claim is a function that returns the quantities proving it (and a flag
`holds`); the tests call the same functions. Networks are built from nnhw's
Functions (affine, tanh, sigmoid, identity, square, squared_error) in float64.
"""

import json
import math
from pathlib import Path

import torch

from . import functions as nf
from .command import Parser, run_command
from .describe import show

DT = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _net(x, weights, transfer, biases=None):
    """y_hat = W_{L+1} h(... h(W_1 x) ...), biases optional; x (N, d) -> (N, k)."""
    z = x
    for l, w in enumerate(weights):
        b = None if biases is None else biases[l]
        a = nf.affine(z, w, b)
        z = a if l == len(weights) - 1 else transfer(a)
    return z


# --------------------------------------------------------------------------- #
# 2.2 Stationary points, saddle points and symmetries                         #
# --------------------------------------------------------------------------- #


def claim_2_2_1(seed=0):
    """Linear regression (no hidden layer), square loss: w = 0 is stationary iff X^T y = 0.
    The gradient at 0 is -(2/N) X^T y."""
    g = _gen(seed)
    x = torch.randn(50, 4, generator=g, dtype=DT)
    y = torch.randn(50, 1, generator=g, dtype=DT)
    y_orth = y - x @ torch.linalg.lstsq(x, y).solution  # the residual: X^T y_orth = 0

    def grad_at_zero(target):
        w = torch.zeros(1, 4, dtype=DT, requires_grad=True)
        (grad,) = torch.autograd.grad(nf.squared_error(nf.affine(x, w), target), w)
        return grad

    g_generic, g_orth = grad_at_zero(y), grad_at_zero(y_orth)
    formula = -(2 / len(x)) * (x.t() @ y).t()
    return dict(
        grad_norm_generic_y=g_generic.norm().item(),
        formula_error=(g_generic - formula).abs().max().item(),
        xty_norm_orthogonal_y=(x.t() @ y_orth).norm().item(),
        grad_norm_orthogonal_y=g_orth.norm().item(),
        holds=g_generic.norm().item() > 1e-3 and g_orth.norm().item() < 1e-12 and (g_generic - formula).abs().max().item() < 1e-12,
    )


def claim_2_2_2(seed=0, hidden=(5, 3)):
    """tanh MLP (no biases) with every weight 0: the gradient is exactly 0 (tanh(0) = 0 blocks
    the top-layer gradient, the zero top layer blocks every lower one)."""
    g = _gen(seed)
    x = torch.randn(20, 3, generator=g, dtype=DT)
    y = torch.randn(20, 1, generator=g, dtype=DT)
    sizes = [3, *hidden, 1]
    weights = [torch.zeros(sizes[i + 1], sizes[i], dtype=DT, requires_grad=True) for i in range(len(sizes) - 1)]
    grads = torch.autograd.grad(nf.squared_error(_net(x, weights, nf.tanh), y), weights)
    largest = max(gr.abs().max().item() for gr in grads)
    # With an output bias, that bias alone has gradient 2 (mean(y_hat) - mean(y)) = -2 mean(y).
    b_out = torch.zeros(1, dtype=DT, requires_grad=True)
    biases = [None] * (len(weights) - 1) + [b_out]
    (g_bias,) = torch.autograd.grad(nf.squared_error(_net(x, weights, nf.tanh, biases), y), b_out)
    return dict(largest_abs_gradient=largest, output_bias_gradient=g_bias.item(), minus_two_mean_y=-2 * y.mean().item(), holds=largest == 0.0)


def _sigmoid_net_loss(x, y, w1, b1, w2, b2):
    return nf.squared_error(nf.affine(nf.sigmoid(nf.affine(x, w1, b1)), w2, b2), y)


def _gd(x, y, params, steps, lr):
    for _ in range(steps):
        grads = torch.autograd.grad(_sigmoid_net_loss(x, y, *params), params)
        with torch.no_grad():
            for p, gr in zip(params, grads):
                p -= lr * gr
    return params


def claim_2_2_3(seed=0, width=4, steps=10000, lr=0.5):
    """One sigmoid hidden layer, one output, every hidden unit identical at the start: gradient
    descent keeps them identical, so it can only reach a stationary point of the 1-unit model.
    A small perturbation then lets gradient descent lower the loss further: a saddle point."""
    x = torch.linspace(-2, 2, 41, dtype=DT).unsqueeze(1)
    y = torch.exp(-2 * x**2)  # a bump: one sigmoid unit cannot fit it, two can
    g = _gen(seed)
    row = torch.randn(1, 1, generator=g, dtype=DT)
    params = [
        row.repeat(width, 1).requires_grad_(),  # w1: every hidden unit the same
        torch.full((width,), 0.1, dtype=DT).requires_grad_(),
        torch.full((1, width), 0.3, dtype=DT).requires_grad_(),  # w2: the same weight on every unit
        torch.zeros(1, dtype=DT).requires_grad_(),
    ]
    params = _gd(x, y, params, steps, lr)
    w1, b1, w2, _ = params
    spread = max((w1 - w1[0]).abs().max().item(), (b1 - b1[0]).abs().max().item(), (w2 - w2[0, 0]).abs().max().item())
    sym_loss = _sigmoid_net_loss(x, y, *params).item()
    grad_norm = math.sqrt(sum(gr.pow(2).sum().item() for gr in torch.autograd.grad(_sigmoid_net_loss(x, y, *params), params)))
    # Break the symmetry slightly, then let gradient descent go on.
    with torch.no_grad():
        pert = [(p + 1e-3 * torch.randn(p.shape, generator=g, dtype=DT)).requires_grad_() for p in params]
    pert = _gd(x, y, pert, steps, lr)
    pert_loss = _sigmoid_net_loss(x, y, *pert).item()
    return dict(
        max_spread_between_units=spread,
        loss_symmetric=sym_loss,
        grad_norm_symmetric=grad_norm,
        loss_after_perturbation=pert_loss,
        holds=spread < 1e-12 and grad_norm < 1e-3 and pert_loss < 0.5 * sym_loss,
    )


def claim_2_2_4(seed=0, depths=(1, 2, 3, 4)):
    """tanh network without biases: flipping the sign of every weight multiplies y_hat by
    (-1)^(L+1): unchanged for one hidden layer, because tanh is odd."""
    g = _gen(seed)
    x = torch.randn(10, 3, generator=g, dtype=DT)
    rows = []
    for L in depths:
        sizes = [3] + [4] * L + [2]
        ws = [torch.randn(sizes[i + 1], sizes[i], generator=g, dtype=DT) for i in range(L + 1)]
        y = _net(x, ws, nf.tanh)
        y_flip = _net(x, [-w for w in ws], nf.tanh)
        sign = (-1) ** (L + 1)
        rows.append(dict(L=L, expected_sign=sign, max_error=(y_flip - sign * y).abs().max().item(), y_changed=not torch.equal(y_flip, y)))
    return dict(rows=rows, holds=all(r["max_error"] < 1e-12 for r in rows) and rows[0]["expected_sign"] == 1)


# --------------------------------------------------------------------------- #
# 2.3 Representation                                                           #
# --------------------------------------------------------------------------- #


def _fit_gd(loss_fn, params, steps, lr):
    for _ in range(steps):
        grads = torch.autograd.grad(loss_fn(params), params)
        with torch.no_grad():
            for p, gr in zip(params, grads):
                p -= lr * gr
    return loss_fn(params).item()


def claim_2_3_1_identity(seed=0, depth=3, steps=3000, lr=0.05):
    """Identity transfer: an L-layer network is the linear map W_{L+1}...W_1 x. Fitted both ways,
    the network (by gradient descent) reaches least squares' global minimum and never beats it."""
    g = _gen(seed)
    x = torch.randn(60, 3, generator=g, dtype=DT)
    y = x @ torch.randn(3, 2, generator=g, dtype=DT) + 0.3 * torch.randn(60, 2, generator=g, dtype=DT)
    sizes = [3] + [4] * depth + [2]
    ws = [(0.5 * torch.randn(sizes[i + 1], sizes[i], generator=g, dtype=DT)).requires_grad_() for i in range(depth + 1)]
    product = ws[0]
    for w in ws[1:]:
        product = w @ product
    same_function = (_net(x, ws, nf.identity) - x @ product.t()).abs().max().item()
    lstsq = nf.squared_error(x @ torch.linalg.lstsq(x, y).solution, y).item()
    net = _fit_gd(lambda p: nf.squared_error(_net(x, p, nf.identity), y), ws, steps, lr)
    return dict(
        network_minus_product=same_function,
        least_squares_loss=lstsq,
        network_loss=net,
        holds=same_function < 1e-12 and lstsq - 1e-12 <= net <= lstsq * 1.001,
    )


def quadratic_features(x):
    """phi(x) = (x_i x_j for i <= j, x_i, 1)."""
    d = x.shape[1]
    pairs = [x[:, i] * x[:, j] for i in range(d) for j in range(i, d)]
    return torch.stack(pairs + [x[:, i] for i in range(d)] + [torch.ones(len(x), dtype=x.dtype)], dim=1)


def square_net_as_linear(w1, b1, w2, b2):
    """The weights theta on phi(x) with y_hat = phi(x) theta for y_hat = w2 (w1 x + b1)^2 + b2."""
    d = w1.shape[1]
    v = w2[0]  # (m,)
    A = (w1.t() * v) @ w1  # sum_j v_j w_j w_j^T, (d, d)
    quad = [A[i, i] if i == j else 2 * A[i, j] for i in range(d) for j in range(i, d)]
    lin = 2 * (w1.t() @ (v * b1))  # (d,)
    const = (v * b1 * b1).sum() + b2[0]
    return torch.stack([*quad, *lin, const])


def claim_2_3_1_square(seed=0, width=8, steps=6000, lr=0.01):
    """Square transfer, one hidden layer: y_hat is a linear model on quadratic features phi(x).
    Fitted both ways, least squares on phi reaches the global minimum; the network reaches it too
    and never beats it."""
    g = _gen(seed)
    x = torch.randn(80, 2, generator=g, dtype=DT)
    y = (quadratic_features(x) @ torch.randn(6, generator=g, dtype=DT)).unsqueeze(1) + 0.1 * torch.randn(80, 1, generator=g, dtype=DT)
    params = [
        (0.5 * torch.randn(width, 2, generator=g, dtype=DT)).requires_grad_(),
        (0.5 * torch.randn(width, generator=g, dtype=DT)).requires_grad_(),
        (0.5 * torch.randn(1, width, generator=g, dtype=DT)).requires_grad_(),
        torch.zeros(1, dtype=DT).requires_grad_(),
    ]

    def net(p):
        return nf.affine(nf.square(nf.affine(x, p[0], p[1])), p[2], p[3])

    phi = quadratic_features(x)
    same_function = (net(params) - (phi @ square_net_as_linear(*params)).unsqueeze(1)).abs().max().item()
    lstsq = nf.squared_error(phi @ torch.linalg.lstsq(phi, y).solution, y).item()
    net_loss = _fit_gd(lambda p: nf.squared_error(net(p), y), params, steps, lr)
    return dict(
        network_minus_linear_on_phi=same_function,
        least_squares_loss=lstsq,
        network_loss=net_loss,
        holds=same_function < 1e-10 and lstsq - 1e-12 <= net_loss <= lstsq * 1.01,
    )


XOR_X = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=DT)
XOR_Y = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=DT)  # y = 1 iff x[1] = x[2]


def claim_2_3_2():
    """XOR. (a) phi(x) = (x1, x2, x1^2, x2^2, x1 x2) with w = (0, 0, 0, 0, 1): sign(w . phi) = y.
    (b) two tanh units: h = tanh(W1 x + b1), W1 = [[1, 1], [-1, -1]], b1 = [-1, -1];
    y_hat = h1 + h2 + 1. On (1,1) and (-1,-1): tanh(1) + tanh(-3) + 1 > 0; on the others
    2 tanh(-1) + 1 < 0, and never 0."""
    x1, x2 = XOR_X[:, 0], XOR_X[:, 1]
    phi = torch.stack([x1, x2, x1 * x1, x2 * x2, x1 * x2], dim=1)
    w = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0], dtype=DT)
    linear_scores = phi @ w
    w1 = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=DT)
    b1 = torch.tensor([-1.0, -1.0], dtype=DT)
    w2 = torch.tensor([[1.0, 1.0]], dtype=DT)
    b2 = torch.tensor([1.0], dtype=DT)
    y_hat = nf.affine(nf.tanh(nf.affine(XOR_X, w1, b1)), w2, b2)[:, 0]
    return dict(
        inputs=XOR_X.tolist(),
        targets=XOR_Y.tolist(),
        phi_weights=w.tolist(),
        W1=w1.tolist(),
        b1=b1.tolist(),
        W2=w2.tolist(),
        b2=b2.tolist(),
        linear_scores=linear_scores.tolist(),
        network_outputs=y_hat.tolist(),
        holds=torch.equal(torch.sign(linear_scores), XOR_Y) and torch.equal(torch.sign(y_hat), XOR_Y) and bool((y_hat != 0).all()),
    )


# --------------------------------------------------------------------------- #
# 7 Gradient descent on an L-smooth non-convex function                       #
# --------------------------------------------------------------------------- #


def smooth_nonconvex(d=10, seed=0):
    """F(w) = sum_i g((Q w)_i), g(u) = u^2/2 + 2 cos(u), Q orthogonal. g'' = 1 - 2 cos(u) lies in
    [-1, 3], so F is L-smooth with L = 3 and non-convex; F* = d min_u g(u)."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=_gen(seed), dtype=DT))

    def F(w):
        u = q @ w
        return (0.5 * u * u + 2 * torch.cos(u)).sum()

    # min g: g'(u) = u - 2 sin(u) = 0 at u ~ 1.8955; Newton from 2.
    u = torch.tensor(2.0, dtype=DT)
    for _ in range(50):
        u = u - (u - 2 * torch.sin(u)) / (1 - 2 * torch.cos(u))
    f_star = d * (0.5 * u * u + 2 * torch.cos(u)).item()
    return F, 3.0, f_star


def claim_7(d=10, steps=60, seed=0):
    """Gradient descent with eta = 1/L: F(w_{k+1}) <= F(w_k) - ||grad F(w_k)||^2 / (2L) at every step,
    and min_{j<k} ||grad F(w_j)||^2 <= 2L (F(w_0) - F*) / k."""
    F, L, f_star = smooth_nonconvex(d, seed)
    w = (0.3 * torch.randn(d, generator=_gen(seed + 1), dtype=DT)).requires_grad_()  # near the local max at 0
    f0 = F(w).item()
    rows, best_sq = [], math.inf
    for k in range(1, steps + 1):
        f = F(w)
        (grad,) = torch.autograd.grad(f, w)
        sq = grad.pow(2).sum().item()
        best_sq = min(best_sq, sq)
        with torch.no_grad():
            w_next = w - grad / L
        f_next = F(w_next).item()
        rows.append(dict(k=k, decrease=f.item() - f_next, guaranteed=sq / (2 * L), min_grad_sq=best_sq, bound=2 * L * (f0 - f_star) / k))
        w = w_next.requires_grad_()
    return dict(
        L=L,
        F_star=f_star,
        F_0=f0,
        rows=rows,
        holds=all(r["decrease"] >= r["guaranteed"] - 1e-12 and r["min_grad_sq"] <= r["bound"] for r in rows),
    )


def claim_7_figure(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    k = [r["k"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    a.semilogy(k, [r["decrease"] for r in rows], label="F(w_k) - F(w_k+1)")
    a.semilogy(k, [r["guaranteed"] for r in rows], "--", label="||grad F(w_k)||^2 / (2L)")
    a.set_xlabel("step k")
    a.set_title("7.2: the decrease per step and its guarantee", fontsize=10)
    a.legend(fontsize=8)
    b.semilogy(k, [r["min_grad_sq"] for r in rows], label="min_{j<k} ||grad F(w_j)||^2")
    b.semilogy(k, [r["bound"] for r in rows], "--", label="2L (F(w_0) - F*) / k")
    b.set_xlabel("step k")
    b.set_title("7.3: the smallest gradient so far and its bound", fontsize=10)
    b.legend(fontsize=8)
    fig.suptitle(f"Gradient descent, eta = 1/L, on an L-smooth non-convex F (L = {result['L']:g})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


CLAIMS = [
    ("2.2.1", "linear regression: w = 0 is stationary only when X^T y = 0", claim_2_2_1),
    ("2.2.2", "tanh MLP with every weight 0: the gradient is exactly 0", claim_2_2_2),
    ("2.2.3", "identical sigmoid hidden units stay identical; a perturbation lowers the loss (a saddle)", claim_2_2_3),
    ("2.2.4", "flipping every weight's sign in a tanh net multiplies y_hat by (-1)^(L+1)", claim_2_2_4),
    ("2.3.1a", "identity transfer = a linear model, same minimum both ways", claim_2_3_1_identity),
    ("2.3.1b", "square transfer = a linear model on quadratic features, same minimum both ways", claim_2_3_1_square),
    ("2.3.2", "XOR: quadratic features separate it; two tanh units represent it", claim_2_3_2),
    ("7", "GD with eta = 1/L: per-step decrease and the 2L(F0 - F*)/k bound", claim_7),
]


def summarize_7(result):
    """The numbers that confirm 7, without the per-step rows."""
    rows = result["rows"]
    return dict(
        L=result["L"],
        F_0=result["F_0"],
        F_star=result["F_star"],
        steps=len(rows),
        worst_decrease_minus_guarantee=min(r["decrease"] - r["guaranteed"] for r in rows),
        worst_bound_minus_min_grad_sq=min(r["bound"] - r["min_grad_sq"] for r in rows),
        holds=result["holds"],
    )


def theory_command(argv):
    p = Parser(prog="python -m nnhw.theory", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="write the figure of 7 and theory.json, which the report reads, into this folder "
                   "(make report: --out reports/theory); without it the command only prints")
    args = p.parse_args(argv)
    out = None if args.out is None else Path(args.out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    all_hold, results = True, {}
    for number, claim, fn in CLAIMS:
        result = fn()
        all_hold &= result["holds"]
        print(f"[{'holds' if result['holds'] else 'FAILS'}] {number}: {claim}")
        if number == "7":
            if out is not None:
                claim_7_figure(result, out / "gd_rates.png")
            result = summarize_7(result)
            print(f"    L = {result['L']:g}, F(w0) = {result['F_0']:.4g}, F* = {result['F_star']:.4g}, {result['steps']} steps")
            print(f"    smallest (decrease - guarantee) over the steps: {result['worst_decrease_minus_guarantee']:.3g} (>= 0 up to rounding, 1e-12)")
            print(f"    smallest (bound - min ||grad||^2) over the steps: {result['worst_bound_minus_min_grad_sq']:.3g} (>= 0)")
            if out is not None:
                print(f"    figure: {out / 'gd_rates.png'}")
            results[number] = dict(result, claim=claim)
            continue
        results[number] = dict(result, claim=claim)
        for key, value in result.items():
            if key == "holds":
                continue
            if key == "rows":
                for r in value:
                    print("    " + ", ".join(f"{k} = {show(v)}" for k, v in r.items()))
            else:
                print(f"    {key} = {show(value)}")
    if out is not None:  # the same numbers for the hand-in (nnhw.handin reads this file; it never reruns the claims)
        (out / "theory.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all_hold else 1


def main(argv=None):
    """`python -m nnhw.theory`: the exit code (nnhw.command; 1 when a claim fails)."""
    return run_command("nnhw.theory", theory_command, argv)


if __name__ == "__main__":
    raise SystemExit(main())
