"""`python -m nnhw.plot RUN_DIR`: the homework's figures for one run, as PNGs in the run folder.

- loss.png: average loss on train and dev (or test) against effective epochs
  (training points touched / 50,000), one point per evaluation;
- error.png: misclassification % on the same splits, from the first evaluation
  where every plotted error is below 20% (15% for softmax regression);
- weights.png: the input weights of 8 hidden units as 28x28 images (the class
  templates for softmax regression), or a CNN's first-layer filters, each
  scaled to [0, 1] by its own minimum and maximum;
- sharpness.png, for a run that measured it (eval.sharpness_every): the top
  eigenvalue of the Hessian against the step, its stability threshold dashed,
  for Adam the preconditioned sharpness against its own threshold, and the
  training loss below;
- density.png, for a run that measured it (eval.density_iters): the Hessian's
  eigenvalue density at the first and the last measurement.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from . import config as config_mod  # noqa: E402
from . import hessian  # noqa: E402
from .checkpoint import HISTORY_KEYS, load_checkpoint  # noqa: E402
from .command import Parser, one_line, run_command  # noqa: E402
from .data import IMAGE_SIDE  # noqa: E402
from .rundir import RunError  # noqa: E402

LOSS_NAMES = {"cross_entropy": "average cross-entropy", "squared_error": "average squared error"}
COLORS = {"train": "tab:blue", "dev": "tab:orange", "test": "tab:green"}


def curve_splits(history):
    """train and dev, or train and test when dev is merged into training (train+dev)."""
    return ["train", "dev"] if "dev_loss" in history[0] else ["train", "test"]


def error_threshold(cfg):
    return 15.0 if cfg.model.arch == "mlp" and not cfg.model.hidden else 20.0  # softmax regression: 15%, as 3 asks


def loss_figure(history, cfg, title):
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    x = [r["epoch"] for r in history]
    for s in curve_splits(history):
        ax.plot(x, [r[f"{s}_loss"] for r in history], marker=".", ms=3, lw=1, color=COLORS[s], label=s)
    ax.set_xlabel("effective epoch (training points touched / 50,000)")
    ax.set_ylabel(LOSS_NAMES[cfg.model.loss])
    ax.set_yscale("log")
    ax.set_title(f"{title}: loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig


def error_figure(history, cfg, title):
    splits = curve_splits(history)
    limit = error_threshold(cfg)
    start = next((i for i, r in enumerate(history) if all(r[f"{s}_error"] < limit for s in splits)), None)
    shown = history if start is None else history[start:]  # never below it: show everything
    note = f"never below {limit:g}%" if start is None else f"from the first evaluation below {limit:g}%"

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for s in splits:
        ax.plot([r["epoch"] for r in shown], [r[f"{s}_error"] for r in shown], marker=".", ms=3, lw=1, color=COLORS[s], label=s)
    ax.set_xlabel("effective epoch (training points touched / 50,000)")
    ax.set_ylabel("misclassification error (%)")
    ax.set_title(f"{title}: error ({note})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def weight_images(params, n=8):
    """(n, h, w) images, each scaled to [0, 1]: 8 hidden units' input weights, the class templates of
    softmax regression, or a CNN's first-layer filters (averaged over input channels)."""
    if "Wc1" in params:  # CNN: first-layer filters (out, in, kh, kw)
        w = params["Wc1"].detach().float().cpu().mean(dim=1)[:n]
    else:
        w1 = params["W1"].detach().float().cpu()
        w = w1[: (n if "W2" in params else w1.shape[0])].reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    flat = w.reshape(len(w), -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).reshape(w.shape)


def weights_figure(params, title):
    imgs = weight_images(params)
    what = "first-layer filters" if "Wc1" in params else ("class templates (W rows)" if "W2" not in params else "input weights of hidden units 1-8")
    fig, axes = plt.subplots(1, len(imgs), figsize=(1.3 * len(imgs), 1.9), dpi=100)
    for i, (ax, img) in enumerate(zip(axes, imgs)):
        ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(str(i if "W2" not in params and "Wc1" not in params else i + 1), fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{title}: {what}; each image scaled to [0, 1] by its own min and max", fontsize=8)
    fig.tight_layout()
    return fig


def sharpness_figure(runs, title):
    """runs: [(label, cfg, history)]. Above, each run's sharpness against the step, with its stability
    threshold (2/lr, or (2 + 2 momentum)/lr) dashed in the same colour; for Adam runs, a panel of the
    preconditioned sharpness with its threshold (2 + 2 beta1)/(lr (1 - beta1)); below, the training loss."""
    adam = any("preconditioned_sharpness" in r for _, _, history in runs for r in history)
    fig, axes = plt.subplots(3 if adam else 2, 1, figsize=(6.5, 8.5 if adam else 6), dpi=100, sharex=True,
                             gridspec_kw=dict(height_ratios=[3, 3, 2] if adam else [3, 2]))
    top, bottom = axes[0], axes[-1]
    for i, (label, cfg, history) in enumerate(runs):
        rows, b, color = [r for r in history if "sharpness" in r], cfg.train.batch_size, f"C{i}"
        panels = [(top, "sharpness", "sharpness_threshold")] + ([(axes[1], "preconditioned_sharpness", "preconditioned_threshold")] if adam else [])
        for ax, key, threshold in panels:
            shown = [r for r in rows if key in r]
            ax.plot([r["points"] / b for r in shown], [r[key] for r in shown], color=color, lw=1.3, marker=".", ms=3, label=label)
            limit = [(r["points"] / b, r[threshold]) for r in shown if r.get(threshold) is not None]
            if limit:
                ax.plot(*zip(*limit), color=color, lw=1, ls="--")
        bottom.plot([r["points"] / b for r in history], [r["train_loss"] for r in history], color=color, lw=1.3, label=label)
    top.set_ylabel("sharpness (top Hessian eigenvalue)", fontsize=8)
    top.set_title(f"{title}\n" + ("dashed: the stability threshold 2/lr ((2 + 2 momentum)/lr with momentum)" if not adam else
                                  "the plain sharpness, whose threshold 2/lr is gradient descent's, not Adam's"), fontsize=9)
    if adam:
        axes[1].set_yscale("log")
        axes[1].set_ylabel("preconditioned sharpness\n(top eigenvalue of P^-1/2 H P^-1/2)", fontsize=8)
        axes[1].set_title("Adam: dashed, (2 + 2 beta1) / (lr (1 - beta1)) = 38/lr at beta1 = 0.9", fontsize=8)
    for ax in axes[:-1]:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    bottom.set_yscale("log")
    bottom.set_ylabel(f"training {LOSS_NAMES[runs[0][1].model.loss]}", fontsize=8)
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def density_figure(cfg, history, title):
    """The Hessian's eigenvalue density (stochastic Lanczos quadrature) at the first and the last
    measurement that has one, each smoothed by a Gaussian of 1/200 of the nodes' range, on a log scale
    (most of the mass sits near 0, the outliers far from it)."""
    rows = [r for r in history if "density_nodes" in r]
    firsts = [rows[0], rows[-1]] if len(rows) > 1 else rows
    nodes = [x for r in firsts for x in r["density_nodes"]]
    lo, hi = min(nodes), max(nodes)
    width = max(hi - lo, 1e-12) / 200
    grid = torch.linspace(lo - 10 * width, hi + 10 * width, 2000)
    fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=100)
    b = cfg.train.batch_size
    for r, color in zip(firsts, ("C0", "C3")):
        curve = hessian.Density(r["density_nodes"], r["density_weights"], 0).curve(grid, width)
        ax.plot(grid.numpy(), curve.clamp_min(1e-12).numpy(), color=color, lw=1.2, label=f"step {round(r['points'] / b)}")
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-6 / width)
    ax.set_xlabel("eigenvalue of the Hessian")
    ax.set_ylabel("density")
    ax.set_title(f"{title}\nstochastic Lanczos quadrature, {cfg.eval.density_iters} steps from " + (f"each of {cfg.eval.density_runs} random starts" if cfg.eval.density_runs > 1 else "one random start"), fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def read_history(run_dir):
    """A run's history.json: a list of evaluation rows; RunError (one line) when it is not one."""
    path = Path(run_dir) / "history.json"
    try:
        history = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read {path}: {one_line(e)}") from None
    if not isinstance(history, list) or not history or not all(isinstance(r, dict) and all(k in r for k in HISTORY_KEYS) for r in history):
        raise RunError(f"{path} is not a run's history: a list of evaluations, each with {', '.join(HISTORY_KEYS)}")
    return history


def figures(run_dir):
    """name -> matplotlib figure for a run folder that holds history.json and checkpoint.pt."""
    run_dir = Path(run_dir)
    cfg = config_mod.load(run_dir / "config.toml")
    history = read_history(run_dir)
    params = load_checkpoint(run_dir)["params"]  # read as data, checked key by key
    title = cfg.run.name
    figs = {
        "loss": loss_figure(history, cfg, title),
        "error": error_figure(history, cfg, title),
        "weights": weights_figure(params, title),
    }
    if any("sharpness" in r for r in history):
        figs["sharpness"] = sharpness_figure([(f"lr {cfg.optim.lr:g}", cfg, history)], f"{title}: sharpness")
    if any("density_nodes" in r for r in history):
        figs["density"] = density_figure(cfg, history, f"{title}: the Hessian's eigenvalue density")
    return figs


def save_figures(run_dir, writer=None, step=0):
    """Write loss.png, error.png, weights.png (and sharpness.png, density.png) into run_dir, and to TensorBoard when
    given a writer."""
    paths = []
    for name, fig in figures(run_dir).items():
        path = Path(run_dir) / f"{name}.png"
        fig.savefig(path, metadata={"Software": None})
        if writer is not None:
            writer.add_figure(f"figures/{name}", fig, step)  # closes the figure
        plt.close(fig)
        paths.append(path)
    return paths


def plot_command(argv):
    p = Parser(prog="python -m nnhw.plot", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a run folder written by nnhw.train")
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir)
    missing = [f for f in ("config.toml", "history.json", "checkpoint.pt") if not (run_dir / f).is_file()]
    if missing:
        raise RunError(f"{run_dir} is not a finished run folder (missing {', '.join(missing)})")
    for path in save_figures(run_dir):
        print(path)
    return 0


def main(argv=None):
    """`python -m nnhw.plot`: the exit code (nnhw.command)."""
    return run_command("nnhw.plot", plot_command, argv)


if __name__ == "__main__":
    sys.exit(main())
