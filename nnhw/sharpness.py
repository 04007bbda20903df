"""Sharpness: the top eigenvalue of the training objective's Hessian where training goes.

Problem 7 takes an L-smooth loss and a step lr <= 1/L; gradient descent on a quadratic diverges past
sharpness 2/lr, (2 + 2 mu)/lr with heavy-ball momentum mu (Cohen et al. 2021). A run with
eval.sharpness_every measures it at its evaluations (nnhw.hessian's Lanczos, on a fixed sample of
training points), beside that threshold and each weight's own block's eigenvalue. Everything about
it lives here: the threshold, the points, the measurement, its console line and TensorBoard charts,
its summary, and what the report says of it.
"""

import time

import torch

from . import hessian
from .data import Split, passes
from .optim import is_weight, momentum_at

# Beyond the homework, after 7.3: full-batch gradient descent at three constant steps, its sharpness measured.
CONFIGS = ["gd_sharpness_lr0.04", "gd_sharpness_lr0.1", "gd_sharpness_lr0.2"]


def stability_threshold(cfg_optim, lr, momentum=None):
    """The largest sharpness (top eigenvalue of the loss's Hessian) at which gradient descent at rate lr
    does not blow up on a quadratic: 2/lr, and (2 + 2 mu)/lr with heavy-ball momentum mu (Cohen et al.
    2021), with the momentum at hand (the config's unless given). None for Adam, whose step is rescaled
    per coordinate, and for a rate of 0 (warm-up's start)."""
    if cfg_optim.optimizer != "sgd" or lr <= 0:
        return None
    return (2 + 2 * (cfg_optim.momentum if momentum is None else momentum)) / lr


def draw_points(split, k, seed):
    """The k training points the sharpness is measured on, drawn once from the seed (in the split's
    order); the whole split when it holds no more than k."""
    if k >= len(split):
        return split
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed + 3))[:k].sort().values.to(split.x.device)
    return Split(split.x[idx], split.y[idx])


def objective(forward, loss_fn, cfg_optim, points):
    """f(params) -> what training minimises on `points`: the loss, plus (l2/2)||W||^2 as the optimiser adds it."""
    o = cfg_optim

    def f(params):
        loss = loss_fn(forward(params, points.x), points.y)
        if o.l2:
            loss = loss + 0.5 * o.l2 * sum((p * p).sum() for name, p in params.items() if o.l2_bias or is_weight(name))
        return loss

    return f


def sharpness(params, forward, loss_fn, cfg, points, lr, step, momentum=None):
    """The sharpness of the training objective on `points` at params, as history entries: the top eigenvalue
    of its Hessian (nnhw.hessian, Lanczos) and its residual, the stability threshold at rate lr, and each
    weight's own block's top eigenvalue. Each Lanczos start is drawn from the seed and the step alone."""
    f = objective(forward, loss_fn, cfg.optim, points)
    iters, seed = cfg.eval.sharpness_iters, cfg.run.seed + 4 + 1_000_003 * step
    top = hessian.top_eigenvalue(f, params, iters, torch.Generator().manual_seed(seed))
    blocks = hessian.layer_eigenvalues(f, params, iters, torch.Generator().manual_seed(seed + 1))
    return dict(sharpness=top.value, sharpness_residual=top.residual, sharpness_threshold=stability_threshold(cfg.optim, lr, momentum),
                sharpness_layers={name: e.value for name, e in blocks.items()})


def measure(state, row, lr, trainer, log):
    """The sharpness at this evaluation into its history row, TensorBoard and the console; its time is
    counted apart from training and evaluation (state.sharpness_seconds)."""
    t0 = time.perf_counter()
    momentum = momentum_at(trainer.cfg.optim, passes(state.points, trainer.n_train))  # on a ramp, where it stands
    net = trainer.net
    row.update(sharpness(net.params, net.forward, net.loss_fn, trainer.cfg, trainer.sharpness_points, lr, state.step, momentum))
    state.sharpness_seconds += time.perf_counter() - t0
    for tag, value in (("lambda_max", row["sharpness"]), ("residual", row["sharpness_residual"]),
                       ("threshold", row["sharpness_threshold"]), *row["sharpness_layers"].items()):
        if value is not None:
            log.scalar("run", f"sharpness/{tag}", value, state.points)
    log.say(line(row))


def line(row):
    """One sharpness measurement, under its evaluation's line."""
    threshold = "" if row["sharpness_threshold"] is None else f" (stability threshold {row['sharpness_threshold']:.4g})"
    layers = "  ".join(f"{k} {v:.4g}" for k, v in row["sharpness_layers"].items())
    return f"{'':16}sharpness {row['sharpness']:.4g}{threshold}, residual {row['sharpness_residual']:.2g}; per weight: {layers}"


def charts(weights):
    """The Custom Scalars layout of a run that measures sharpness: the top eigenvalue of the Hessian,
    then each weight's block's, each with the stability threshold on the same chart."""
    out = {"whole Hessian": ["Multiline", ["sharpness/lambda_max", "sharpness/threshold"]]}
    out.update({f"{w} block": ["Multiline", [f"sharpness/{w}", "sharpness/threshold"]] for w in weights})
    return {"sharpness": out}


def of_history(history):
    """The sharpness measured over a run, for its summary: its first, its peak and its last measurement
    (epoch, step's points, value, stability threshold), or None when none was made."""
    rows = [r for r in history if "sharpness" in r]
    if not rows:
        return None

    def at(r):
        return dict(epoch=r["epoch"], points=r["points"], value=r["sharpness"], threshold=r["sharpness_threshold"])

    return dict(first=at(rows[0]), peak=at(max(rows, key=lambda r: r["sharpness"])), last=at(rows[-1]), measurements=len(rows))


def facts(name, run):
    """What one full-batch run's sharpness measurements show (eval.sharpness_every), as plain numbers:
    the sharpness at the start, at its lowest, at its highest after that (each with its step) and at the
    end, against 1/lr and 2/lr; how many measurements were at or below 1/lr; the last third's mean as a
    fraction of 2/lr; and how often the training loss rose between evaluations. None for a run that
    measured no sharpness."""
    cfg, history = run["cfg"], run["history"]
    rows = [r for r in history if "sharpness" in r]
    if not rows:
        return None
    lr, b = cfg.optim.lr, cfg.train.batch_size
    low = min(range(len(rows)), key=lambda i: rows[i]["sharpness"])
    high = max(rows[low:], key=lambda r: r["sharpness"])
    last_third = [r["sharpness"] for r in rows[len(rows) - max(1, len(rows) // 3):]]
    rises = [r for before, r in zip(history, history[1:]) if r["train_loss"] > before["train_loss"]]
    threshold = rows[0]["sharpness_threshold"]
    return dict(name=name, lr=lr, one_over_lr=1 / lr, threshold=threshold, start=rows[0]["sharpness"],
                low=rows[low]["sharpness"], low_step=round(rows[low]["points"] / b), high=high["sharpness"], high_step=round(high["points"] / b),
                end=rows[-1]["sharpness"], steps=round(history[-1]["points"] / b), measurements=len(rows),
                every_steps=round((rows[1]["points"] - rows[0]["points"]) / b) if len(rows) > 1 else 0,
                below_one_over_lr=sum(r["sharpness"] <= 1 / lr for r in rows),
                last_third_of_threshold=None if threshold is None else sum(last_third) / len(last_third) / threshold,
                loss_rises=len(rises), evaluations=len(history), start_loss=history[0]["train_loss"], end_loss=history[-1]["train_loss"],
                test_error=history[-1]["test_error"])


def sentences(all_facts):
    """A few sentences per run that hold problem 7's step condition lr <= 1/L against the measurements,
    then what the runs say of that condition together; only what the numbers say."""
    out = []
    for f in all_facts:
        head = f"At lr = {f['lr']:g} (1/lr = {f['one_over_lr']:.3g}, 2/lr = {f['threshold']:.3g}), the sharpness started at {f['start']:.3g}"
        if f["below_one_over_lr"] == f["measurements"]:
            cond = f", and stayed at or below 1/lr at all {f['measurements']} measurements: problem 7's lr <= 1/L held locally throughout"
        else:
            where = ("already above 2/lr, where gradient descent on a quadratic diverges" if f["start"] > f["threshold"] else
                     "above 1/lr" if f["start"] > f["one_over_lr"] else "at or below 1/lr")
            cond = (f", {where}; lr <= 1/L held at {f['below_one_over_lr']} of {f['measurements']} measurements")
        if f["high_step"] == f["low_step"]:  # its lowest was its last
            path = f". It fell to {f['end']:.3g} by the end"
        else:
            fell = f" fell to {f['low']:.3g} by step {f['low_step']}, then" if f["low_step"] > 0 else ""
            path = f". It{fell} rose to {f['high']:.3g} (step {f['high_step']}) and ended at {f['end']:.3g}"
        edge = (f", {100 * f['last_third_of_threshold']:.0f}% of 2/lr on average over the last third of the run"
                if f["last_third_of_threshold"] is not None else "")
        loss = ("falling at every evaluation" if f["loss_rises"] == 0 else
                f"rising between {f['loss_rises']} of {f['evaluations'] - 1} pairs of consecutive evaluations")
        out.append(f"{head}{cond}{path}{edge}. The training loss went from {f['start_loss']:.4g} to {f['end_loss']:.4g} in "
                   f"{f['steps']} steps, {loss}.")
    never = [f for f in all_facts if f["below_one_over_lr"] == 0 and f["end_loss"] < f["start_loss"]]
    if never:
        rates = " and ".join(format(f["lr"], "g") for f in never)
        losses = " and ".join(format(f["end_loss"], ".4g") for f in never)
        out.append(f"lr <= 1/L is sufficient, not necessary: at lr = {rates} it held at no measurement, and the training loss still fell, to {losses}.")
    return out
