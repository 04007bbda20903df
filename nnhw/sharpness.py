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

# Beyond the homework, after 7.3: full-batch gradient descent at three constant steps, its sharpness measured,
# and full-batch Adam at three constant rates on the same images and network, its preconditioned sharpness measured.
CONFIGS = ["gd_sharpness_lr0.04", "gd_sharpness_lr0.1", "gd_sharpness_lr0.2"]
ADAM_CONFIGS = ["adam_sharpness_lr0.0005", "adam_sharpness_lr0.001", "adam_sharpness_lr0.002"]


def stability_threshold(cfg_optim, lr, momentum=None):
    """The largest sharpness (top eigenvalue of the loss's Hessian) at which gradient descent at rate lr
    does not blow up on a quadratic: 2/lr, and (2 + 2 mu)/lr with heavy-ball momentum mu (Cohen et al.
    2021), with the momentum at hand (the config's unless given). None for Adam, whose step is rescaled
    per coordinate, and for a rate of 0 (warm-up's start)."""
    if cfg_optim.optimizer != "sgd" or lr <= 0:
        return None
    return (2 + 2 * (cfg_optim.momentum if momentum is None else momentum)) / lr


def adaptive_threshold(cfg_optim, lr):
    """Adam's stability threshold for the preconditioned sharpness (the top eigenvalue of P^(-1/2) H P^(-1/2)):
    (2 + 2 beta1) / (lr (1 - beta1)), 38/lr at beta1 = 0.9 (Cohen et al. 2022, "Adaptive gradient methods
    at the edge of stability"). None for SGD and for a rate of 0."""
    if cfg_optim.optimizer != "adam" or lr <= 0:
        return None
    b1 = cfg_optim.momentum
    return (2 + 2 * b1) / (lr * (1 - b1))


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


def sharpness(params, forward, loss_fn, cfg, points, lr, step, momentum=None, opt=None):
    """The sharpness of the training objective on `points` at params, as history entries: the top eigenvalue
    of its Hessian (nnhw.hessian, Lanczos) and its residual, the stability threshold at rate lr, and each
    weight's own block's top eigenvalue. With Adam's optimiser `opt` past its first step, the preconditioned
    sharpness and its threshold too; with eval.trace_samples the trace and its standard error; with
    eval.density_iters the eigenvalue density's nodes and weights. Each random draw comes from the seed and
    the step alone."""
    e = cfg.eval
    f = objective(forward, loss_fn, cfg.optim, points)
    iters, seed = e.sharpness_iters, cfg.run.seed + 4 + 1_000_003 * step
    top = hessian.top_eigenvalue(f, params, iters, torch.Generator().manual_seed(seed))
    blocks = hessian.layer_eigenvalues(f, params, iters, torch.Generator().manual_seed(seed + 1))
    row = dict(sharpness=top.value, sharpness_residual=top.residual, sharpness_threshold=stability_threshold(cfg.optim, lr, momentum),
               sharpness_layers={name: b.value for name, b in blocks.items()})
    p = opt.preconditioner() if cfg.optim.optimizer == "adam" and opt is not None else None
    if p is not None:  # the eigenvalues of P^(-1/2) H P^(-1/2) are those of P^(-1) H, the Hessian of Adam's step
        adam = hessian.top_eigenvalue(f, params, iters, torch.Generator().manual_seed(seed + 2), scale={k: v.rsqrt() for k, v in p.items()})
        row.update(preconditioned_sharpness=adam.value, preconditioned_threshold=adaptive_threshold(cfg.optim, lr))
    if e.trace_samples:
        tr = hessian.trace(f, params, e.trace_samples, torch.Generator().manual_seed(seed + 3))
        row.update(trace=tr.value, trace_stderr=tr.stderr)
    if e.density_iters:
        density = hessian.spectral_density(f, params, e.density_iters, e.density_runs, torch.Generator().manual_seed(seed + 4))
        row.update(density_nodes=density.nodes, density_weights=density.weights)
    return row


def measure(state, row, lr, trainer, log):
    """The sharpness at this evaluation into its history row, TensorBoard and the console; its time is
    counted apart from training and evaluation (state.sharpness_seconds)."""
    t0 = time.perf_counter()
    momentum = momentum_at(trainer.cfg.optim, passes(state.points, trainer.n_train))  # on a ramp, where it stands
    net = trainer.net
    row.update(sharpness(net.params, net.forward, net.train_loss_fn, trainer.cfg, trainer.sharpness_points, lr, state.step, momentum, net.opt))
    state.sharpness_seconds += time.perf_counter() - t0
    for tag, value in (("lambda_max", row["sharpness"]), ("residual", row["sharpness_residual"]),
                       ("threshold", row["sharpness_threshold"]), *row["sharpness_layers"].items(),
                       ("preconditioned", row.get("preconditioned_sharpness")), ("adaptive_threshold", row.get("preconditioned_threshold")),
                       ("trace", row.get("trace"))):
        if value is not None:
            log.scalar("run", f"sharpness/{tag}", value, state.points)
    log.say(line(row))


def line(row):
    """One sharpness measurement, under its evaluation's line."""
    threshold = "" if row["sharpness_threshold"] is None else f" (stability threshold {row['sharpness_threshold']:.4g})"
    layers = "  ".join(f"{k} {v:.4g}" for k, v in row["sharpness_layers"].items())
    adam = (f"; preconditioned {row['preconditioned_sharpness']:.4g} (threshold {row['preconditioned_threshold']:.4g})"
            if "preconditioned_sharpness" in row else "")
    trace = f"; trace {row['trace']:.4g} +- {row['trace_stderr']:.2g}" if "trace" in row else ""
    return f"{'':16}sharpness {row['sharpness']:.4g}{threshold}, residual {row['sharpness_residual']:.2g}; per weight: {layers}{adam}{trace}"


def charts(weights, cfg_optim=None, cfg_eval=None):
    """The Custom Scalars layout of a run that measures sharpness: the top eigenvalue of the Hessian,
    then each weight's block's, each with the stability threshold on the same chart; for Adam, the
    preconditioned sharpness with its threshold; the trace, where it is measured."""
    out = {"whole Hessian": ["Multiline", ["sharpness/lambda_max", "sharpness/threshold"]]}
    out.update({f"{w} block": ["Multiline", [f"sharpness/{w}", "sharpness/threshold"]] for w in weights})
    if cfg_optim is not None and cfg_optim.optimizer == "adam":
        out["preconditioned (Adam)"] = ["Multiline", ["sharpness/preconditioned", "sharpness/adaptive_threshold"]]
    if cfg_eval is not None and cfg_eval.trace_samples:
        out["trace"] = ["Multiline", ["sharpness/trace"]]
    return {"sharpness": out}


def of_history(history):
    """The sharpness measured over a run, for its summary: its first, its peak and its last measurement
    (epoch, step's points, value, stability threshold), or None when none was made."""
    rows = [r for r in history if "sharpness" in r]
    if not rows:
        return None

    def at(r, key="sharpness", threshold="sharpness_threshold"):
        return dict(epoch=r["epoch"], points=r["points"], value=r[key], threshold=r[threshold])

    out = dict(first=at(rows[0]), peak=at(max(rows, key=lambda r: r["sharpness"])), last=at(rows[-1]), measurements=len(rows))
    adam = [r for r in rows if "preconditioned_sharpness" in r]
    if adam:
        key, threshold = "preconditioned_sharpness", "preconditioned_threshold"
        out["preconditioned"] = dict(first=at(adam[0], key, threshold), peak=at(max(adam, key=lambda r: r[key]), key, threshold),
                                     last=at(adam[-1], key, threshold))
    traced = [r for r in rows if "trace" in r]
    if traced:
        out["trace"] = {end: dict(epoch=r["epoch"], points=r["points"], value=r["trace"], stderr=r["trace_stderr"])
                        for end, r in (("first", traced[0]), ("last", traced[-1]))}
    return out


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


def adam_facts(name, run):
    """What one full-batch Adam run's measurements show, as plain numbers: the preconditioned sharpness at
    its first measurement (the first after a step: before one, Adam has no P), its peak, at the end, the first step within 10% of its threshold (2 + 2 beta1)/(lr (1 - beta1)),
    its last third's mean, lowest and highest as fractions of that threshold; the plain sharpness at the first
    measurement (step 0) and at the end, with its last third's mean as a fraction of 2/lr; the trace at the first and the last
    measurement (with standard errors). None for a run without preconditioned measurements."""
    cfg, history = run["cfg"], run["history"]
    rows = [r for r in history if "preconditioned_sharpness" in r]
    if not rows:
        return None
    lr, b, key = cfg.optim.lr, cfg.train.batch_size, "preconditioned_sharpness"
    threshold = adaptive_threshold(cfg.optim, lr)
    third = rows[len(rows) - max(1, len(rows) // 3):]
    near = next((r for r in rows if r[key] >= 0.9 * threshold), None)
    traced = [r for r in history if "trace" in r]

    def trace_at(r):
        return None if r is None else dict(value=r["trace"], stderr=r["trace_stderr"], step=round(r["points"] / b))

    return dict(name=name, lr=lr, threshold=threshold, start=rows[0][key], start_step=round(rows[0]["points"] / b), peak=max(r[key] for r in rows), end=rows[-1][key],
                near_step=None if near is None else round(near["points"] / b),
                last_third_of_threshold=sum(r[key] for r in third) / len(third) / threshold,
                last_third_low=min(r[key] for r in third) / threshold, last_third_high=max(r[key] for r in third) / threshold,
                plain_start=next(r["sharpness"] for r in history if "sharpness" in r), plain_end=rows[-1]["sharpness"],
                plain_last_third_of_two_over_lr=sum(r["sharpness"] for r in third) / len(third) * lr / 2,
                trace_first=trace_at(traced[0] if traced else None), trace_last=trace_at(traced[-1] if traced else None),
                steps=round(history[-1]["points"] / b), measurements=len(rows),
                every_steps=round((rows[1]["points"] - rows[0]["points"]) / b) if len(rows) > 1 else 0,
                start_loss=history[0]["train_loss"], end_loss=history[-1]["train_loss"], test_error=history[-1]["test_error"])


def adam_sentences(all_facts):
    """A few sentences per Adam run on the preconditioned sharpness against its threshold and the plain
    sharpness beside it, then what the runs say together; only what the numbers say."""
    out = []
    for f in all_facts:
        reach = (f"first came within 10% of it at step {f['near_step']}" if f["near_step"] is not None else "never came within 10% of it")
        trace = ""
        if f["trace_first"] is not None:
            t0, t1 = f["trace_first"], f["trace_last"]
            trace = (f" The Hessian's trace went from {t0['value']:.4g} +- {t0['stderr']:.2g} (step {t0['step']}) to "
                     f"{t1['value']:.4g} +- {t1['stderr']:.2g} (step {t1['step']}).")
        out.append(f"At lr = {f['lr']:g} (threshold 38/lr = {f['threshold']:.4g}), the preconditioned sharpness was {f['start']:.3g} at step {f['start_step']}, "
                   f"{reach}, and over the last third of the run averaged {100 * f['last_third_of_threshold']:.0f}% of it "
                   f"(from {100 * f['last_third_low']:.0f}% to {100 * f['last_third_high']:.0f}%). The plain sharpness went from "
                   f"{f['plain_start']:.3g} to {f['plain_end']:.3g}, {100 * f['plain_last_third_of_two_over_lr']:.2g}% of 2/lr over the last third."
                   f"{trace} The training loss went from {f['start_loss']:.4g} to {f['end_loss']:.4g} in {f['steps']} steps.")
    if len(all_facts) > 1:
        settled = [f for f in all_facts if 0.8 <= f["last_third_of_threshold"] <= 1.2]
        lrs = sorted(all_facts, key=lambda f: f["lr"])
        plain_ratio = lrs[0]["plain_end"] / lrs[-1]["plain_end"]
        pre_ratio = lrs[0]["end"] / lrs[-1]["end"]
        out.append(f"The preconditioned sharpness settled within 20% of 38/lr at {len(settled)} of {len(all_facts)} rates. From lr = "
                   f"{lrs[0]['lr']:g} to lr = {lrs[-1]['lr']:g} (x{lrs[-1]['lr'] / lrs[0]['lr']:.3g}) the preconditioned sharpness at the end "
                   f"fell by x{pre_ratio:.3g}, the plain sharpness by x{plain_ratio:.3g}.")
    return out
