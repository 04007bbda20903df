"""Homework 2.1, measured: the cost of the forward pass, of backprop, and of the top layer's gradient.

For MLPs over a grid of mini-batch size m, width and depth (nnhw's Functions, float32, CPU by
default) it times
  - forward: the forward pass and the square loss,
  - backward: the full gradient by backprop (after a forward),
  - top: the gradient of the top layer's weights only, with the lower layers run without a
    graph (forward once, then one (k x d_L) product: no backprop through lower layers),
then fits each against  m * sum_l d(l) d(l+1)  (the matrix-multiply count the homework derives),
reports R^2, and how much cheaper the top-layer gradient is than the full one.

    python tools/complexity.py [--out reports/complexity.json]
"""

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nnhw import functions as nf  # noqa: E402


def make_mlp(d_in, width, depth, k, gen):
    sizes = [d_in] + [width] * depth + [k]
    return [(torch.randn(sizes[i + 1], sizes[i], generator=gen) / sizes[i] ** 0.5).requires_grad_() for i in range(len(sizes) - 1)], sizes


def forward(ws, x):
    z = x
    for w in ws[:-1]:
        z = nf.sigmoid(nf.affine(z, w))
    return nf.affine(z, ws[-1])


def timed(fn, repeats):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(m, width, depth, repeats=3, d_in=784, k=10):
    gen = torch.Generator().manual_seed(0)
    ws, sizes = make_mlp(d_in, width, depth, k, gen)
    x = torch.rand(m, d_in, generator=gen)
    y = torch.rand(m, k, generator=gen)

    def fwd():
        with torch.no_grad():
            nf.squared_error(forward(ws, x), y)

    def full():
        torch.autograd.grad(nf.squared_error(forward(ws, x), y), ws)

    def top():
        with torch.no_grad():
            z = x
            for w in ws[:-1]:
                z = nf.sigmoid(nf.affine(z, w))
        torch.autograd.grad(nf.squared_error(nf.affine(z, ws[-1]), y), ws[-1])

    t_fwd, t_full, t_top = timed(fwd, repeats), timed(full, repeats), timed(top, repeats)
    work = m * sum(sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1))
    return dict(m=m, width=width, depth=depth, work=work, forward_s=t_fwd, forward_backward_s=t_full, backward_s=max(t_full - t_fwd, 0.0), top_gradient_s=t_top)


def fit(xs, ys):
    """Least squares y = a x + b; returns a, b, R^2."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    a = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    b = my - a * mx
    ss_res = sum((y - (a * x + b)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return a, b, 1 - ss_res / ss_tot


def main(argv=None):
    p = argparse.ArgumentParser(description="Homework 2.1: time the forward pass, backprop and the top-layer gradient of MLPs.")
    p.add_argument("--batch", type=int, nargs="+", default=[64, 256, 1024], help="mini-batch sizes m")
    p.add_argument("--width", type=int, nargs="+", default=[128, 512, 1024], help="hidden widths")
    p.add_argument("--depth", type=int, nargs="+", default=[1, 2, 3], help="numbers of hidden layers")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="reports/complexity.json")
    args = p.parse_args(argv)

    rows = []
    print(f"{'m':>5} {'width':>6} {'depth':>5} {'m*sum d d':>12} {'forward ms':>11} {'fwd+bwd ms':>11} {'top-grad ms':>12} {'full/top':>9}")
    for m, width, depth in itertools.product(args.batch, args.width, args.depth):
        r = measure(m, width, depth, args.repeats)
        rows.append(r)
        print(f"{m:>5} {width:>6} {depth:>5} {r['work']:>12.3g} {1e3 * r['forward_s']:>11.2f} {1e3 * r['forward_backward_s']:>11.2f} "
              f"{1e3 * r['top_gradient_s']:>12.2f} {r['forward_backward_s'] / r['top_gradient_s']:>9.2f}", flush=True)
    work = [r["work"] for r in rows]
    fits = {}
    for key in ("forward_s", "forward_backward_s", "backward_s", "top_gradient_s"):
        a, b, r2 = fit(work, [r[key] for r in rows])
        fits[key] = dict(seconds_per_multiply_add=a, intercept_s=b, r2=r2, gflops=2 / a / 1e9 if a > 0 else None)
    print("\nfit: time = a * m * sum_l d(l) d(l+1) + b")
    for key, f in fits.items():
        print(f"  {key:<20} a = {f['seconds_per_multiply_add']:.3e} s   b = {1e3 * f['intercept_s']:7.3f} ms   R^2 = {f['r2']:.4f}   ({f['gflops']:.1f} GFLOP/s)")
    ratios = [r["forward_backward_s"] / r["top_gradient_s"] for r in rows]
    bwd_over_fwd = [r["backward_s"] / r["forward_s"] for r in rows]
    print(f"\nbackward / forward: median {sorted(bwd_over_fwd)[len(rows) // 2]:.2f} (the homework's 'about 2x': two products per layer)")
    print(f"full gradient / top-layer gradient: median {sorted(ratios)[len(rows) // 2]:.2f}, "
          f"from {min(ratios):.2f} (depth 1) to {max(ratios):.2f}: the top gradient costs a forward pass plus m d(L) k")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(command="python tools/complexity.py " + " ".join(argv or sys.argv[1:]), torch=torch.__version__, threads=torch.get_num_threads(), rows=rows, fits=fits), indent=1) + "\n")
    print(out)


if __name__ == "__main__":
    main()
