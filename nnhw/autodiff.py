"""Homework 5: reverse and forward mode by hand on the homework's evaluation trace.

    f(w1, w2) = (sin(2 pi w1/w2) + 3 w1/w2 - exp(2 w2)) * (3 w1/w2 - exp(2 w2))

    z1 = w1 / w2
    z2 = sin(2 pi z1)
    z3 = exp(2 w2)
    z4 = 3 z1 - z3
    z5 = z2 + z4
    z6 = z4 z5          (= f)

`python -m nnhw.autodiff` prints the trace, both derivatives, the autograd values
they must equal, and (5.3) the cost of a d-dimensional gradient by forward mode
(d passes) against one reverse pass: a short table in seconds by default, the
report's full table (up to d = 2,762) with --full. It writes autodiff.json and
autodiff_cost.png, which nnhw.handin reads.
"""

import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from . import functions as nf
from .command import NnhwError, Parser, run_command

TWO_PI = 2 * math.pi


def trace(w1, w2):
    """The evaluation trace z1..z6, plain floats."""
    z1 = w1 / w2
    z2 = math.sin(TWO_PI * z1)
    z3 = math.exp(2 * w2)
    z4 = 3 * z1 - z3
    z5 = z2 + z4
    z6 = z4 * z5
    return z1, z2, z3, z4, z5, z6


def reverse_mode(w1, w2):
    """f and (df/dw1, df/dw2) by one reverse sweep.

    The adjoint bar_t = dz6/dz_t is written with z1..z6 and the adjoints of later
    lines only, one line per trace line (the input line last).
    """
    z1, z2, z3, z4, z5, z6 = trace(w1, w2)
    bar6 = 1.0
    bar5 = bar6 * z4  # z6 = z4 z5
    bar4 = bar6 * z5 + bar5 * 1.0  # z4 feeds z6 = z4 z5 and z5 = z2 + z4
    bar3 = bar4 * -1.0  # z4 = 3 z1 - z3
    bar2 = bar5 * 1.0  # z5 = z2 + z4
    bar1 = bar2 * TWO_PI * math.cos(TWO_PI * z1) + bar4 * 3.0  # z2 = sin(2 pi z1), z4 = 3 z1 - z3
    # z1 = w1 / w2 and z3 = exp(2 w2): dz1/dw1 = 1/w2, dz1/dw2 = -z1/w2, dz3/dw2 = 2 z3.
    dw1 = bar1 / w2
    dw2 = bar1 * (-z1 / w2) + bar3 * 2.0 * z3
    return z6, (dw1, dw2)


def forward_mode(w1, w2, dw1=1.0, dw2=0.0):
    """f and its directional derivative along (dw1, dw2), in the homework's 12 steps:
    each line's value, then its tangent from earlier values and tangents only.
    With the default direction (1, 0) the tangent is df/dw1.
    """
    z1 = w1 / w2  # 1
    d1 = dw1 / w2 - w1 * dw2 / (w2 * w2)  # 2
    z2 = math.sin(TWO_PI * z1)  # 3
    d2 = TWO_PI * math.cos(TWO_PI * z1) * d1  # 4
    z3 = math.exp(2 * w2)  # 5
    d3 = 2 * z3 * dw2  # 6
    z4 = 3 * z1 - z3  # 7
    d4 = 3 * d1 - d3  # 8
    z5 = z2 + z4  # 9
    d5 = d2 + d4  # 10
    z6 = z4 * z5  # 11
    d6 = d4 * z5 + z4 * d5  # 12
    return z6, d6


def f_torch(w1, w2):
    z1 = w1 / w2
    return (torch.sin(TWO_PI * z1) + 3 * z1 - torch.exp(2 * w2)) * (3 * z1 - torch.exp(2 * w2))


def autograd_gradient(w1, w2):
    """(f, (df/dw1, df/dw2)) from torch.autograd in float64, for comparison."""
    a = torch.tensor(w1, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(w2, dtype=torch.float64, requires_grad=True)
    f = f_torch(a, b)
    g1, g2 = torch.autograd.grad(f, (a, b))
    return f.item(), (g1.item(), g2.item())


# --------------------------------------------------------------------------- #
# 5.3: forward mode needs d passes for a gradient in R^d, reverse mode one     #
# --------------------------------------------------------------------------- #

MLP_SHAPES = [(64, 32), (64,), (10, 64), (10,)]  # W1, b1, W2, b2: 2,762 parameters


def mlp_loss(d, n=256, seed=0):
    """(loss, w0): an MLP's average cross-entropy (nnhw's Functions: affine, tanh, affine, softmax
    cross-entropy) as a function R^d -> R of its first d parameters (W1 flattened, then b1, ...),
    the others held fixed; and the point w0. The cost T of one evaluation is the same for every d."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, MLP_SHAPES[0][1], generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (n,), generator=gen)
    flat = torch.cat([torch.randn(shape, generator=gen, dtype=torch.float64).flatten() * 0.3 for shape in MLP_SHAPES])
    if not 1 <= d <= len(flat):
        raise ValueError(f"d must lie in [1, {len(flat)}], got {d}")
    sizes = [math.prod(shape) for shape in MLP_SHAPES]

    def loss(w):  # w (d,)
        w1, b1, w2, b2 = (p.view(shape) for p, shape in zip(torch.cat([w, flat[d:]]).split(sizes), MLP_SHAPES))
        return nf.softmax_cross_entropy(nf.affine(nf.tanh(nf.affine(x, w1, b1)), w2, b2), y)

    return loss, flat[:d].clone()


def gradient_forward_mode(loss, w):
    """d forward-mode passes, pass i along e_i: torch.func.jvp through nnhw's hand-written jvp rules."""
    grad = torch.empty_like(w)
    basis = torch.eye(len(w), dtype=w.dtype)
    for i in range(len(w)):
        _, grad[i] = torch.func.jvp(loss, (w,), (basis[i],))
    return grad


def gradient_reverse_mode(loss, w):
    """One reverse pass: torch.autograd.grad through nnhw's hand-written backward rules."""
    w = w.detach().requires_grad_()
    (grad,) = torch.autograd.grad(loss(w), w)
    return grad


def _median_time(fn, repeats):
    fn()  # warm-up: first calls pay for allocation and dispatch caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def mode_cost_table(dims=(10, 30, 100, 300, 1000, 2762), repeats=5):
    """For each d: the median seconds of the forward-mode gradient (d jvps) and of the reverse-mode
    one, their ratio, and the largest difference between the two gradients."""
    rows = []
    for d in dims:
        loss, w = mlp_loss(d)
        g_fwd, g_rev = gradient_forward_mode(loss, w), gradient_reverse_mode(loss, w)
        t_fwd = _median_time(lambda: gradient_forward_mode(loss, w), repeats)
        t_rev = _median_time(lambda: gradient_reverse_mode(loss, w), max(repeats, 20))
        rows.append(dict(d=d, forward_s=t_fwd, reverse_s=t_rev, ratio=t_fwd / t_rev, max_abs_diff=(g_fwd - g_rev).abs().max().item()))
    return rows


def loglog_fit(rows):
    """Least squares of log(ratio) on log(d): the slope (1 for linear growth) and R^2."""
    xs = [math.log(r["d"]) for r in rows]
    ys = [math.log(r["ratio"]) for r in rows]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return dict(slope=slope, intercept=intercept, r2=1 - ss_res / ss_tot)


def cost_figure(rows, fit, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = [r["d"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.loglog(d, [r["ratio"] for r in rows], "o", label="measured: forward-mode time / reverse-mode time")
    ax.loglog(d, [math.exp(fit["intercept"]) * x ** fit["slope"] for x in d], "-",
              label=f"fit: slope {fit['slope']:.2f}, R^2 {fit['r2']:.3f}")
    ax.set_xlabel("d (parameters the gradient is taken in)")
    ax.set_ylabel("cost ratio")
    ax.set_title("5.3: d forward-mode passes against one reverse pass", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def hand_answers(w1, w2):
    """5.1 and 5.2 at (w1, w2) beside autograd: f and both partial derivatives by the reverse sweep,
    by two forward passes (along (1, 0), then (0, 1)), and by torch.autograd, and the largest
    relative difference of any hand-computed value from autograd's."""
    f_rev, (g1, g2) = reverse_mode(w1, w2)
    f_fwd, d1 = forward_mode(w1, w2)
    f_fwd2, d2 = forward_mode(w1, w2, 0.0, 1.0)
    f_ag, (a1, a2) = autograd_gradient(w1, w2)
    pairs = [(f_rev, f_ag), (g1, a1), (g2, a2), (f_fwd, f_ag), (f_fwd2, f_ag), (d1, a1), (d2, a2)]
    rel = max(abs(x - ref) / max(abs(ref), 1e-300) for x, ref in pairs)
    return dict(reverse=dict(f=f_rev, df_dw1=g1, df_dw2=g2), forward=dict(f=f_fwd, df_dw1=d1, df_dw2=d2),
                autograd=dict(f=f_ag, df_dw1=a1, df_dw2=a2), largest_relative_difference=rel)


SHORT_DIMS, FULL_DIMS = (10, 30, 100), (10, 30, 100, 300, 1000, 2762)


def check_point(w1, w2):
    """NnhwError unless every line of the trace, and f, are finite numbers at (w1, w2)."""
    if not (math.isfinite(w1) and math.isfinite(w2)) or w2 == 0:
        raise NnhwError(f"--w1, --w2: need finite numbers with w2 != 0, got ({w1}, {w2})")
    try:
        finite = all(math.isfinite(z) for z in trace(w1, w2)) and all(math.isfinite(x) for x in reverse_mode(w1, w2)[1])
    except (OverflowError, ValueError):
        finite = False
    if not finite:
        raise NnhwError(f"--w1, --w2: f or its derivatives overflow at ({w1}, {w2}); exp(2 w2) needs w2 below about 350, and w1/w2 must stay moderate")


def autodiff_command(argv):
    p = Parser(prog="python -m nnhw.autodiff", description=__doc__.splitlines()[0])
    p.add_argument("--w1", type=float, default=1.5, help="the point (w1, w2) (default 1.5, 0.5)")
    p.add_argument("--w2", type=float, default=0.5)
    p.add_argument("--full", action="store_true", help=f"the report's 5.3 table: d = {', '.join(map(str, FULL_DIMS))}, 5 repeats "
                   f"(minutes on a laptop CPU); without it d = {', '.join(map(str, SHORT_DIMS))}, 3 repeats (seconds)")
    p.add_argument("--dims", type=int, nargs="+", default=None, help="d for the 5.3 table (1 to 2762), in place of either set")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per d, after a warm-up; the table gives medians")
    p.add_argument("--out", default=None, help="write autodiff.json and autodiff_cost.png, which the report reads, into this folder "
                   "(make report: --out reports); without it the command only prints")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")  # raised inside torch.func
    w1, w2 = args.w1, args.w2
    dims = args.dims or (FULL_DIMS if args.full else SHORT_DIMS)
    repeats = args.repeats or (5 if args.full else 3)
    n_params = sum(math.prod(shape) for shape in MLP_SHAPES)
    if any(not 1 <= d <= n_params for d in dims) or len(set(dims)) < 2 or not 1 <= repeats <= 1000:
        raise NnhwError(f"--dims needs at least two different values in [1, {n_params}] (the fit needs two), --repeats 1 to 1000")
    check_point(w1, w2)

    print(f"Evaluation trace at (w1, w2) = ({w1}, {w2}):")
    for t, z in enumerate(trace(w1, w2), 1):
        print(f"  z{t} = {z:.12g}")
    ans = hand_answers(w1, w2)
    print("\n              f                    df/dw1               df/dw2")
    for mode in ("reverse", "forward", "autograd"):
        v = ans[mode]
        note = "  (df/dw2: a second pass along (0, 1))" if mode == "forward" else ""
        print(f"  {mode:<8} {v['f']:<20.14g} {v['df_dw1']:<20.14g} {v['df_dw2']:<20.14g}{note}")
    print(f"  largest relative difference from autograd: {ans['largest_relative_difference']:.2e}")

    print(f"\n5.3: the gradient of an MLP's loss (nnhw's Functions, {n_params} parameters) in its first d parameters")
    print("     forward mode: d passes of torch.func.jvp along e_1..e_d; reverse mode: one torch.autograd.grad")
    print(f"     medians of {repeats} timed repeats after a warm-up")
    print(f"  {'d':>6} {'forward (s)':>12} {'reverse (s)':>12} {'ratio':>9} {'ratio / d':>10} {'max |diff|':>11}")
    table = mode_cost_table(dims, repeats)
    for r in table:
        print(f"  {r['d']:>6} {r['forward_s']:>12.5f} {r['reverse_s']:>12.6f} {r['ratio']:>9.1f} {r['ratio'] / r['d']:>10.3f} {r['max_abs_diff']:>11.1e}")
    fit = loglog_fit(table)
    print(f"  log-log fit of the ratio against d: slope {fit['slope']:.3f}, R^2 {fit['r2']:.4f}")
    print("  expected: slope 1, the ratio growing as O(d) (forward mode costs about d x T, reverse mode about 5 T)")
    if args.out is None:
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cost_figure(table, fit, out / "autodiff_cost.png")
    numbers = dict(
        command="python -m nnhw.autodiff " + " ".join(argv if argv is not None else sys.argv[1:]),
        w1=w1, w2=w2, trace=list(trace(w1, w2)),
        **ans,
        repeats=repeats,
        cost_table=table,
        cost_fit=fit,
    )
    (out / "autodiff.json").write_text(json.dumps(numbers, indent=1) + "\n")
    return 0


def main(argv=None):
    """`python -m nnhw.autodiff`: the exit code (nnhw.command)."""
    return run_command("nnhw.autodiff", autodiff_command, argv)


if __name__ == "__main__":
    sys.exit(main())
