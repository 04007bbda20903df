"""`python -m nnhw.sweep CONFIG [section.key=value ...]`: the learning-rate threshold.

The homework asks (4.1.2, 4.2.2) "for what learning rate do you start observing a
non-trivial decrease". For every rate on a log-spaced grid, train with the config's
optimiser from the same initialisation and the same data order (a fresh permutation
each pass, as nnhw.train draws them) for a fixed budget (a quarter epoch by
default) at that constant rate, then measure the average training loss.

- non-trivial decrease: the loss after the budget is at least 10% below the
  loss at initialisation;
- diverged: the loss after the budget is NaN, infinite, or above the loss at
  initialisation.

It prints the table, the smallest rate with a non-trivial decrease and the
smallest rate that diverges, and writes sweep.json, sweep.png and the resolved
config.toml into <run.log_dir>/<run.name>-sweep/<time>/.
"""

import json
import math
import shutil
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from . import config as config_mod  # noqa: E402
from . import data as data_mod  # noqa: E402
from . import runlog  # noqa: E402
from .checkpoint import TrainState  # noqa: E402
from .command import Parser, run_command  # noqa: E402
from .config import ConfigError  # noqa: E402
from .rundir import atomic_write_text, make_run_dir  # noqa: E402
from .device import resolve_device  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .trainer import Batches, build, make_train_step, random_streams  # noqa: E402

DECREASE = 0.10  # "non-trivial": at least 10% below the starting loss


def log_grid(lo, hi, per_decade):
    n = round(math.log10(hi / lo) * per_decade)
    return [float(f"{lo * 10 ** (i / per_decade):.3g}") for i in range(n + 1)]


def loss_after_budget(cfg, splits, lr, budget_points, device):
    """Average training loss after `budget_points` at the constant rate lr from the config's init,
    one batch after another in the run's data order, pass after pass (no dropout or augmentation)."""
    train = splits["train"]
    net = build(cfg, device)
    step = make_train_step(net, engine=cfg.train.engine)
    order, _ = random_streams(cfg.run.seed, device)
    batches, state = Batches(train, order, device), TrainState()
    while state.points < budget_points:
        x, y = batches.next(state, cfg.train.batch_size, budget_points)
        step(x, y, lr)
        state.pos, state.points = state.pos + len(y), state.points + len(y)
    return evaluate(net.params, net.forward, net.loss_fn, train, cfg.eval.batch_size)[0]


def classify(start, end):
    if not math.isfinite(end) or end > start:
        return "diverged"
    return "decrease" if end <= (1 - DECREASE) * start else "flat"


def sweep(cfg, lrs, budget_epochs=0.25):
    device = resolve_device(cfg.run.device)
    root = data_mod.resolve_root(cfg.data.root)
    splits = data_mod.load_splits(root, cfg.data.download, cfg.data.train_split, cfg.data.standardize, device,
                                  cfg.data.train_points, cfg.data.bag, cfg.run.seed)
    budget = max(1, round(budget_epochs * data_mod.N_TRAIN))
    net = build(cfg, device)
    start = evaluate(net.params, net.forward, net.loss_fn, splits["train"], cfg.eval.batch_size)[0]
    def trial(lr):
        t0 = time.perf_counter()
        end = loss_after_budget(cfg, splits, lr, budget, device)
        print(f"lr {lr:<9.3g} loss after {budget_epochs:g} epoch {end:<10.4g} {classify(start, end)}", flush=True)
        return dict(lr=lr, loss=end, verdict=classify(start, end), seconds=round(time.perf_counter() - t0, 2))

    rows = [trial(lr) for lr in lrs]
    # When even the smallest rate decreases the loss, the threshold lies below the grid: extend it
    # a decade at a time (up to 4) until a rate leaves the loss flat.
    for _ in range(4):
        if rows[0]["verdict"] != "decrease":
            break
        rows.insert(0, trial(float(f"{rows[0]['lr'] / 10:.3g}")))
    threshold = next((r["lr"] for r in rows if r["verdict"] == "decrease"), None)
    diverges = next((r["lr"] for r in rows if r["verdict"] == "diverged" and threshold is not None and r["lr"] > threshold), None)
    return dict(
        name=cfg.run.name,
        budget_epochs=budget_epochs,
        start_loss=start,
        rule=f"non-trivial decrease: training loss after {budget_epochs:g} epoch at a constant rate <= {1 - DECREASE:.2f} x its initial value; "
        "diverged: NaN, infinite, or above the initial value",
        threshold_lr=threshold,
        diverging_lr=diverges,
        batch_size=cfg.train.batch_size,
        momentum=cfg.optim.momentum,
        rows=rows,
        device=str(device),
    )


def sweep_figure(result):
    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    finite = [r for r in rows if math.isfinite(r["loss"])]
    ax.plot([r["lr"] for r in finite], [r["loss"] for r in finite], marker="o", color="tab:blue", label="training loss after budget")
    for r in rows:
        if not math.isfinite(r["loss"]):
            ax.axvline(r["lr"], color="tab:red", alpha=0.3)
    ax.axhline(result["start_loss"], color="gray", ls="--", lw=1, label="loss at initialisation")
    ax.axhline((1 - DECREASE) * result["start_loss"], color="gray", ls=":", lw=1, label=f"{1 - DECREASE:.0%} of it")
    if result["threshold_lr"]:
        ax.axvline(result["threshold_lr"], color="tab:green", lw=1, label=f"threshold {result['threshold_lr']:g}")
    if result["diverging_lr"]:
        ax.axvline(result["diverging_lr"], color="tab:red", lw=1, label=f"diverges at {result['diverging_lr']:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate (constant)")
    ax.set_ylabel("training loss")
    ax.set_title(f"{result['name']}: loss after {result['budget_epochs']:g} epoch vs learning rate", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_rows(out, cfg, result):
    """One TensorBoard HParams row per learning rate: <out>/lr_<rate>/, with the loss after the budget."""
    for r in result["rows"]:
        hparams = {**runlog.hparams_of(cfg, "sweep"), "optim.lr": r["lr"], "train.epochs": result["budget_epochs"], "optim.schedule": "constant"}
        metrics = {"hparams/loss_after_budget": r["loss"]} if math.isfinite(r["loss"]) else {}
        row_dir = out / f"lr_{r['lr']:g}"
        row_dir.mkdir(exist_ok=True)
        runlog.write_hparams(row_dir, hparams, metrics, r["verdict"])


MAX_GRID = 200  # rates on one grid: more is hours of training, and a typo's likely sign


def build_parser():
    p = Parser(prog="python -m nnhw.sweep", description="Find the learning rate at which the loss starts to fall non-trivially, and where it diverges.")
    p.add_argument("config", help="the TOML config whose model, optimiser, batch size and init are swept")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--lo", type=float, default=1e-4, help="smallest rate of the grid (default 1e-4)")
    p.add_argument("--hi", type=float, default=100.0, help="largest rate of the grid (default 100)")
    p.add_argument("--per-decade", type=int, default=2, help="grid points per decade (default 2)")
    p.add_argument("--budget", type=float, default=0.25, help="training budget per rate in effective epochs of 50,000 points, "
                   "up to 10 (default 0.25)")
    return p


def check_grid(lo, hi, per_decade, budget):
    """ConfigError unless 0 < lo < hi are finite, the grid has at most MAX_GRID rates and 0 < budget <= 10."""
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise ConfigError(f"--lo and --hi: need finite rates with 0 < lo < hi, got {lo:g} and {hi:g}")
    if not 1 <= per_decade or math.log10(hi / lo) * per_decade > MAX_GRID:
        raise ConfigError(f"--per-decade: need >= 1 and at most {MAX_GRID} rates on the grid, got {per_decade} per decade "
                          f"over {math.log10(hi / lo):.3g} decades")
    if not (math.isfinite(budget) and 0 < budget <= 10):
        raise ConfigError(f"--budget: need 0 < budget <= 10 effective epochs, got {budget:g}")


def sweep_command(argv):
    args = build_parser().parse_intermixed_args(argv)
    check_grid(args.lo, args.hi, args.per_decade, args.budget)
    cfg = config_mod.load(args.config, args.overrides)
    out = make_run_dir(cfg.run.log_dir, cfg.run.name + "-sweep")
    try:
        result = sweep(cfg, log_grid(args.lo, args.hi, args.per_decade), args.budget)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # a sweep that did not end leaves no folder behind
        raise
    result["command"] = "python -m nnhw.sweep " + " ".join(argv if argv is not None else sys.argv[1:])
    atomic_write_text(out / "config.toml", config_mod.to_toml(cfg))
    atomic_write_text(out / "sweep.json", json.dumps(result, indent=2) + "\n")
    fig = sweep_figure(result)
    fig.savefig(out / "sweep.png", metadata={"Software": None})
    plt.close(fig)
    write_rows(out, cfg, result)
    print(f"threshold: {result['threshold_lr']}  diverges from: {result['diverging_lr']}  ({result['rule']})")
    print(out)
    return 0


def main(argv=None):
    """`python -m nnhw.sweep`: the exit code (nnhw.command)."""
    return run_command("nnhw.sweep", sweep_command, argv)


if __name__ == "__main__":
    sys.exit(main())
