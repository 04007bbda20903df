"""What a Hessian-vector product costs against a gradient, measured side by side.

    python tools/hvp_cost.py [--device cpu] [--repeats 5] [--out reports/hvp-cpu.json]

For the relu MLP and the CNN, on the same 1,000 training points and weights: the median seconds of
one gradient of the training objective and of one Hessian-vector product of each mode of
nnhw.hessian (forward over reverse, reverse over reverse), and their ratios; then what each of its
estimators (top_eigenvalues, trace, spectral_density) costs at 10 products, in gradients. With --out it writes
JSON (the committed one: reports/hvp-<device>.json).
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import time_steps, write_json  # noqa: E402

from nnhw import PROJECT_ROOT  # noqa: E402
from nnhw import config as config_mod  # noqa: E402
from nnhw import data as data_mod  # noqa: E402
from nnhw import hessian  # noqa: E402
from nnhw.command import NnhwError, Parser, run_command  # noqa: E402
from nnhw.data import Split  # noqa: E402
from nnhw.device import resolve_device  # noqa: E402
from nnhw.sharpness import objective  # noqa: E402
from nnhw.trainer import build  # noqa: E402


PRODUCTS = 10
CURVATURE = {  # at PRODUCTS products each
    "top_eigenvalues(k=3, iters=10)": lambda f, params, gen: hessian.top_eigenvalues(f, params, 3, PRODUCTS, gen),
    "trace(samples=10)": lambda f, params, gen: hessian.trace(f, params, PRODUCTS, gen),
    "spectral_density(iters=10, runs=1)": lambda f, params, gen: hessian.spectral_density(f, params, PRODUCTS, 1, gen),
}


def hvp_rows(train, device, repeats, configs=("relu", "cnn"), n=1000):
    """For each config: median seconds of one gradient of the training objective on the first n
    training points, and of one Hessian-vector product of each mode at the same weights, and the ratios."""
    rows = []
    for name in configs:
        cfg = config_mod.load(PROJECT_ROOT / "configs" / f"{name}.toml", [f'run.device="{device.type}"'])
        net = build(cfg, device)
        params = net.params
        f = objective(net.forward, net.loss_fn, cfg.optim, Split(train.x[:n], train.y[:n]))
        gen = torch.Generator().manual_seed(0)
        v = {k: torch.randn(p.shape, generator=gen).to(device) for k, p in params.items()}
        seconds = {"gradient": time_steps(lambda: torch.autograd.grad(f(params), list(params.values())), [()] * 3, device, 2, repeats)}
        for mode in hessian.MODES:
            seconds[mode] = time_steps(lambda: hessian.hvp(f, params, v, mode), [()] * 3, device, 2, repeats)
        curvature = {}  # each of nnhw.hessian's estimators at PRODUCTS Hessian-vector products (forward over reverse)
        for what, estimate in CURVATURE.items():
            curvature[what] = time_steps(lambda: estimate(f, params, torch.Generator().manual_seed(0)), [()], device, 1, repeats)
        rows.append(dict(config=name, points=n, gradient_s=seconds["gradient"], **{f"{m}_s": seconds[m] for m in hessian.MODES},
                         **{f"{m}_over_gradient": seconds[m] / seconds["gradient"] for m in hessian.MODES},
                         curvature=[dict(function=what, products=PRODUCTS, seconds=t, gradients=t / seconds["gradient"],
                                         gradients_per_product=t / seconds["gradient"] / PRODUCTS) for what, t in curvature.items()]))
    return rows


def print_hvp(rows):
    print(f"{'config':<8} {'points':>6} {'gradient ms':>11} {'fwd-over-rev ms':>15} {'rev-over-rev ms':>15} {'fwd/grad':>8} {'rev/grad':>8}")
    for r in rows:
        print(f"{r['config']:<8} {r['points']:>6} {1e3 * r['gradient_s']:>11.2f} {1e3 * r['forward-over-reverse_s']:>15.2f} "
              f"{1e3 * r['reverse-over-reverse_s']:>15.2f} {r['forward-over-reverse_over_gradient']:>8.2f} {r['reverse-over-reverse_over_gradient']:>8.2f}")


def print_curvature(rows):
    print(f"\n{'config':<8} {'function':<36} {'products':>8} {'ms':>9} {'gradients':>9} {'per product':>11}")
    for r in rows:
        for c in r["curvature"]:
            print(f"{r['config']:<8} {c['function']:<36} {c['products']:>8} {1e3 * c['seconds']:>9.1f} {c['gradients']:>9.1f} {c['gradients_per_product']:>11.2f}")


def hvp_command(argv=None):
    p = Parser(prog="tools/hvp_cost.py", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats; each result is their median")
    p.add_argument("--out", default=None, help="write the JSON here (the committed one: reports/hvp-<device>.json); without it the benchmark only prints")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    if not 1 <= args.repeats <= 1000:
        raise NnhwError(f"--repeats: need 1 to 1000 timed repeats, got {args.repeats}")
    train = data_mod.load_splits(data_mod.resolve_root("data"), device=device)["train"]
    rows = hvp_rows(train, device, args.repeats)
    print_hvp(rows)
    print_curvature(rows)
    command = "python tools/hvp_cost.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(args.out, command, device, rows=rows)
    return 0


def main(argv=None):
    """`python tools/hvp_cost.py`: the exit code (nnhw.command)."""
    return run_command("tools/hvp_cost.py", hvp_command, argv)


if __name__ == "__main__":
    sys.exit(main())
