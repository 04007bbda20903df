"""What a run and a set of seeds come to: summary.json, the closing line, the seeds' aggregate.

A run's summary holds its final, best-dev and lowest errors, the time it took to
reach each test accuracy in ACCURACY_MARKS, its device, its identity (the recipe it
started with and that recipe's digest, the commit that started it, every resume's
commit and changes: nnhw.identity), and the fingerprint of its first steps
(nnhw.replay checks it). `--seeds` sums several
runs up in one aggregate: each seed's numbers, then mean, sample std, min and max.
"""

import statistics

import torch

from . import config as config_mod
from . import identity, sharpness
from .data import effective_epochs, passes
from .device import cuda_numerics, describe_device

ACCURACY_MARKS = (98.0, 99.0, 99.5)  # test accuracies (%) whose first arrival every summary times


def time_to_accuracy(history):
    """'99%' -> the first evaluation at or above 99% test accuracy (its epoch and the training seconds
    spent by then), or None if none was; the same for each mark. How long a model takes to get good,
    not only how good it gets."""
    first = {}
    for mark in ACCURACY_MARKS:
        row = next((r for r in history if r["test_error"] <= 100.0 - mark and "train_seconds" in r), None)
        first[f"{mark:g}%"] = None if row is None else dict(epoch=row["epoch"], train_seconds=row["train_seconds"])
    return first


def fingerprint_of(state):
    """The run's fingerprint for its summary, or None when it has none (a run resumed from a
    checkpoint written before fingerprints)."""
    fp = state.fingerprint
    if not fp.get("checksums"):
        return None
    first = {k: fp[k] for k in ("rounding", "initial_loss") if k in fp}  # runs resumed from older checkpoints lack them
    return dict(steps=len(fp["losses"]), losses=fp["losses"], checksums=fp["checksums"], **first)


def summarize(cfg, state, device, status, command, n_train, processes=1):
    """summary.json of a run that ended (cfg: its config now; the state keeps the one it started with)."""
    hist = state.history
    has_dev = "dev_error" in hist[0]
    best = min(hist, key=lambda r: r["dev_error"]) if has_dev else None
    lowest = min(hist, key=lambda r: r["test_error"])
    last = hist[-1]
    start = cfg if state.start_config is None else config_mod.from_dict(state.start_config)
    return dict(
        name=cfg.run.name,
        status=status,
        command=command,
        best_dev_error=best["dev_error"] if best else None,
        best_dev_epoch=best["epoch"] if best else None,
        test_error_at_best_dev=best["test_error"] if best else None,
        lowest_test_error=lowest["test_error"],
        lowest_test_epoch=lowest["epoch"],
        time_to_accuracy=time_to_accuracy(hist),
        final={k: v for k, v in last.items() if k.endswith(("_loss", "_error"))},
        epochs=effective_epochs(state.points),
        passes=passes(state.points, n_train),
        steps=state.step,
        train_seconds=round(state.train_seconds, 3),
        eval_seconds=round(state.eval_seconds, 3),
        sharpness_seconds=round(state.sharpness_seconds, 3),
        sharpness=sharpness.of_history(hist),
        device=describe_device(device),
        cuda=cuda_numerics(device),
        config=state.config_file,  # with overrides and seed: what this is a run of, through resumes too
        overrides=state.overrides,
        seed=cfg.run.seed,
        **identity.of(start, state.commit),  # recipe, recipe_digest, git_commit: the run's start
        torch=torch.__version__,
        processes=processes,
        changes=state.changes,
        fingerprint=fingerprint_of(state),
    )


def closing_line(summary):
    """The run's result in one line: final errors, best dev and the test error there, times."""
    f = summary["final"]
    final = " ".join(f"{s} {f[f'{s}_error']:.2f}%" for s in ("train", "dev", "test") if f"{s}_error" in f)
    best = ""
    if summary["best_dev_error"] is not None:
        best = (f"; best dev {summary['best_dev_error']:.2f}% at epoch {summary['best_dev_epoch']:.2f}, "
                f"test there {summary['test_error_at_best_dev']:.2f}%")
    first_99 = (summary.get("time_to_accuracy") or {}).get("99%")
    at_99 = f"; 99% test accuracy first after {first_99['train_seconds']:.1f} s of training (epoch {first_99['epoch']:.2f})" if first_99 else ""
    s = summary.get("sharpness")
    sharp = "" if not s else (f" + {summary['sharpness_seconds']:.1f} s sharpness (top Hessian eigenvalue {s['first']['value']:.4g} "
                              f"at the start, {s['peak']['value']:.4g} at its peak, {s['last']['value']:.4g} at the end)")
    return (f"{summary['status']}: final error {final}{best}; lowest test {summary['lowest_test_error']:.2f}% (chosen on the test set)"
            f"{at_99}; {summary['train_seconds']:.1f} s training + {summary['eval_seconds']:.1f} s evaluation{sharp}")


# The numbers a set of seeds is summed up by: (key in the aggregate, how to read it from a summary)
SEED_METRICS = {
    "final_test_error": lambda s: s["final"]["test_error"],
    "test_error_at_best_dev": lambda s: s["test_error_at_best_dev"],
    "lowest_test_error": lambda s: s["lowest_test_error"],
    "seconds_to_99": lambda s: ((s.get("time_to_accuracy") or {}).get("99%") or {}).get("train_seconds"),
    "train_seconds": lambda s: s["train_seconds"],
    "eval_seconds": lambda s: s["eval_seconds"],
}


def aggregate(summaries, command, run_dirs, diverged=(), recipe=None):
    """Several seeds' summaries as one record: the recipe they share (run.seed aside) and its digest, each
    seed's numbers, and per number the mean, the sample standard deviation, min and max over the seeds
    that have it (n counts them; a number a seed lacks, such as the time to 99% of a seed that never got
    there, is left out of its statistics)."""

    per_seed = [dict(seed=s["seed"], run_dir=d, git_commit=s["git_commit"], **{k: get(s) for k, get in SEED_METRICS.items()})
                for s, d in zip(summaries, run_dirs)]
    stats = {}
    for key in SEED_METRICS:
        values = [r[key] for r in per_seed if r[key] is not None]
        stats[key] = None if not values else dict(
            mean=statistics.fmean(values), std=statistics.stdev(values) if len(values) > 1 else 0.0,
            min=min(values), max=max(values), n=len(values))
    shared = None if recipe is None else {k: v for k, v in recipe.items() if k != "run.seed"}
    return dict(name=summaries[0]["name"], command=command, seeds=[r["seed"] for r in per_seed], diverged_seeds=list(diverged),
                recipe=shared, recipe_digest=None if shared is None else config_mod.digest(shared),
                git_commits=sorted({r["git_commit"] for r in per_seed}), runs=per_seed, stats=stats)


def aggregate_lines(agg):
    """The console's account of a set of seeds: one line per seed, then mean +- std (min, max)."""
    st = agg["stats"]
    lines = [f"{agg['name']}, seeds {', '.join(map(str, agg['seeds']))}:"]
    for r in agg["runs"]:
        t99 = "never" if r["seconds_to_99"] is None else f"after {r['seconds_to_99']:.1f} s"
        lines.append(f"  seed {r['seed']}: final test error {r['final_test_error']:.2f}%, lowest {r['lowest_test_error']:.2f}%, 99% test accuracy {t99}")

    def stat(key, unit, digits):
        v = st[key]
        if v is None:
            return "never reached"
        return f"{v['mean']:.{digits}f} +- {v['std']:.{digits}f}{unit} (min {v['min']:.{digits}f}, max {v['max']:.{digits}f}, n {v['n']})"

    lines.append(f"  final test error {stat('final_test_error', '%', 2)}")
    lines.append(f"  lowest test error, chosen on the test set: {stat('lowest_test_error', '%', 2)}")
    lines.append(f"  training seconds to 99% test accuracy {stat('seconds_to_99', ' s', 2)}")
    c = agg.get("committee")
    if c and "error" in c:
        lines.append(f"  no committee of the seeds: {c['error']}")
    elif c:
        lines.append(f"  the seeds' committee (their mean softmax output): test error {c['test_error']:.2f}% on {c['n_images']:,} images")
    if agg["diverged_seeds"]:
        lines.append(f"  diverged, left out: seeds {', '.join(map(str, agg['diverged_seeds']))}")
    return lines
