"""`python -m nnhw.report`: reports/REPORT.md and reports/REPORT.pdf, built from finished runs.

For each homework question it takes the newest finished run of the committed
config's recipe (a run that started with what configs/<name>.toml says, no resume
altering it: nnhw.identity) from the log folder, the newest set of seeds of that
recipe (`--seeds`, its seeds_*.json), and the newest learning-rate sweep, copies their PNGs beside the
report, and writes every number from their summary.json, seeds_*.json and
sweep.json. It keeps what it read of those runs under reports/runs/ (summaries,
histories, figures, and the sentences read from the weights, not the checkpoints),
where later builds find them too: the newest run of the two places wins, so the
committed report can be rebuilt without tb_logs/ (nnhw.inputs).

Everything is read and checked before anything is written: a file of the wrong shape
stops the build with one line that names it and the command that remakes it. The
report is then put together in a temporary folder beside it and moved into place
only when the whole build has succeeded, so REPORT.md and REPORT.pdf are either the
old ones or the new ones, never half of each.

Every number names the commit it came from, and every run and sweep is replayed
with the code at hand (nnhw.replay): a number is flagged only when its run's first
steps no longer replay to the same arithmetic, or cannot be replayed here. A run of a
recipe that configs/<name>.toml no longer gives (the file was edited after the run)
is no run of it: the report names the command that makes one. The
same runs always give the same files. REPORT.pdf is the hand-in: every question
in the homework's order, then the code (nnhw/handin.py).
"""

import os
import shutil
import sys
import uuid
from pathlib import Path

from . import handin, sharpness
from .command import NnhwError, Parser, run_command
from .describe import (QUESTIONS, committee_text, question_label, mean_std, minutes, parameter_rows, pct, seed_time, timed_label,
                       short_commit, sweep_rates)
from .inputs import FIGURES, KEPT, gather, keep, read_extras, replace_folder, reproduce_command, sha256, without_where
from .replay import BY_ITS_COMMIT, ReplayError, replay

# Published MNIST test errors (%), for the summary table.
PUBLISHED = [
    ("Linear classifier (1-layer NN)", 12.0, "LeCun et al. 1998, the MNIST table"),
    ("Softmax (logistic) regression, tuned", 7.49, "deeplearning.net logistic-regression tutorial"),
    ("1 hidden layer, 300 units, squared error", 4.7, "LeCun et al. 1998, the MNIST table"),
    ("1 hidden layer, 800 units, cross-entropy", 1.6, "Simard et al. 2003"),
    ("1 hidden layer, 800 units, affine distortions", 1.1, "Simard et al. 2003"),
    ("1 hidden layer, 800 units, elastic distortions", 0.7, "Simard et al. 2003"),
    ("3x1024 ReLU, dropout and max-norm", 1.06, "Srivastava et al. 2014"),
    ("2x8192 ReLU, dropout and max-norm", 0.95, "Srivastava et al. 2014"),
    ("LeNet-5", 0.95, "LeCun et al. 1998"),
    ("Best single CNN, elastic distortions", 0.35, "Ciresan et al. 2011"),
]

_REPLAYED = {}  # (folder, its files and their digests) -> the flag: a build replays a folder once per process
_SAME = set()  # the files and digests of the folders that replayed as the same: a copy of one replays as it did
_BY_ITS_COMMIT = set()  # ... of those, the ones whose own commit, run here, decided (recorded where rounding differs)


def _digests(folder):
    """The folder's JSON files and config.toml, each with its digest: what a replay reads."""
    return tuple((f.name, sha256(f)) for f in sorted(Path(folder).glob("*.json")) + [Path(folder) / "config.toml"] if f.is_file())


def replay_check(folder):
    """'' when the run (or sweep) in folder replays to the same arithmetic with the code at hand,
    else the flag to print beside its numbers."""
    if folder is None:
        return ""
    files = _digests(folder)
    if files in _SAME:
        return ""
    key = (str(Path(folder).resolve()), files)
    if key not in _REPLAYED:
        try:
            same, what = replay(folder)
            _REPLAYED[key] = "" if same else f"its replay {what}: rerun it"
            if same and what.startswith(BY_ITS_COMMIT):
                _BY_ITS_COMMIT.add(files)
        except ReplayError as e:
            _REPLAYED[key] = f"not replay-checked here: {e}"  # may name the folder: kept by folder
        if not _REPLAYED[key]:
            _SAME.add(files)
    return _REPLAYED[key]


def replayed_by_its_commit(folder):
    """Whether the folder replayed as the same through its own commit, run here (replay_check first)."""
    return _digests(folder) in _BY_ITS_COMMIT


def commit_text(commit, flag=""):
    """The commit behind a number, with the replay's flag when there is one."""
    return f"`{short_commit(commit)}`" + (f" (**flagged**: {flag})" if flag else "")


def time_per_seed(summary, seeds):
    """'3.6 + 1.4 min': the mean training time per seed over the seed set (the run's own without one),
    and the evaluation time (the seeds' mean where the set has it, else the run's)."""
    st = (seeds or {}).get("stats", {})
    train = st["train_seconds"]["mean"] if st.get("train_seconds") else summary["train_seconds"]
    evaluation = st["eval_seconds"]["mean"] if st.get("eval_seconds") else summary["eval_seconds"]
    return f"{minutes(train)} + {minutes(evaluation)}"


def replay_line(run):
    if run["flag"]:
        return f"**Flagged**: {run['flag']}."
    if replayed_by_its_commit(run["dir"]):
        return ("Its first steps, as recorded where it was made, part from the code that built this report by the rounding of that "
                "machine: the code of its own commit, run on this report's machine, computes the same arithmetic as the code at hand "
                "(`python -m nnhw.replay`), so its numbers, and its seed set's (the same config and code, other seeds), stand.")
    return ("Replayed with the code that built this report: its first steps compute the same arithmetic (`python -m nnhw.replay`), "
            "so its numbers, and its seed set's (the same config and code, other seeds), stand.")


def section(question, name, what, run):
    lines = [f"## {question} ({name}): {what}", ""]
    if run is None:
        return lines + [f"No finished run of `configs/{name}.toml` yet: `python -m nnhw.train configs/{name}.toml`.", ""]
    run_dir, summary, cfg, sw = run["dir"], run["summary"], run["cfg"], run["sweep"]
    lines += [f"Config `configs/{name}.toml`; run `{run_dir.name}` at commit {commit_text(summary['git_commit'])}. {replay_line(run)}", ""]
    seeds = run.get("seeds")
    if seeds is not None:
        st = seeds["stats"]
        lines += [f"**Over seeds {', '.join(map(str, seeds['seeds']))}** (`{without_where(seeds['command'])}`, at "
                  f"{', '.join(commit_text(c) for c in seeds['git_commits'])}): final test error {mean_std(st['final_test_error'])}"
                  + (f"; test error at best dev {mean_std(st['test_error_at_best_dev'])}" if st["test_error_at_best_dev"] else "")
                  + f"; lowest test error, chosen on the test set as the homework asks, {mean_std(st['lowest_test_error'])}"
                  + (f"; 99% test accuracy after {mean_std(st['seconds_to_99'], ' s')} of training" if st["seconds_to_99"] else "")
                  + (f"; the seeds' committee (their mean softmax output) {committee_text(seeds)}" if committee_text(seeds) != "n/a" else "")
                  + ". Each seed's final test error" + timed_label(seeds) + ": "
                  + "; ".join(f"seed {r['seed']} {pct(r['final_test_error'])}" + seed_time(r) for r in seeds["runs"]) + ".", ""]
    lines += ["| parameter | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in parameter_rows(cfg)] + [""]
    if sw is not None:
        thr, div = sweep_rates(sw)
        flag = f" **Flagged**: {run['sweep_flag']}." if run["sweep_flag"] else ""
        lines += [
            f"**Learning-rate threshold.** The smallest rate with a non-trivial decrease is **{thr}**; "
            f"training diverges from **{div}** ({sw['rule']}). Command: `{sw['command']}`.{flag}",
            "",
            f"![{name} sweep]({name}/sweep.png)",
            "",
        ]
    has_dev = summary["best_dev_error"] is not None
    lines += [
        "| result | value |",
        "|---|---|",
        f"| final test error | {pct(summary['final']['test_error'])} (the last evaluation of the fixed schedule) |",
        f"| lowest test error, chosen on the test set | {pct(summary['lowest_test_error'])} (effective epoch {summary['lowest_test_epoch']:.2f}) |",
    ]
    if has_dev:
        lines += [
            f"| test error at best dev | {pct(summary['test_error_at_best_dev'])} (best dev {pct(summary['best_dev_error'])} at effective epoch {summary['best_dev_epoch']:.2f}) |",
        ]
    final = summary["final"]
    lines += [
        f"| final errors | train {pct(final['train_error'])}" + (f", dev {pct(final['dev_error'])}" if has_dev else "") + f", test {pct(final['test_error'])} |",
        f"| training time | {summary['train_seconds'] / 60:.1f} min ({summary['train_seconds']:.0f} s; evaluation {summary['eval_seconds']:.0f} s more) |",
    ]
    for mark, first in (summary.get("time_to_accuracy") or {}).items():
        if first:
            lines.append(f"| first test accuracy >= {mark} | effective epoch {first['epoch']:.2f}, after {first['train_seconds']:.1f} s of training |")
    lines += [
        f"| device | {summary['device']} |",
        f"| reproduce | `{reproduce_command(summary, name)}` |",
        "",
    ]
    for fig in FIGURES:
        lines += [f"![{name} {fig}]({name}/{fig}.png)", ""]
    return lines


def _measured(sharp, facts_of):
    """(a line for each config without a finished run, [(facts, name, run)] for each run whose facts_of(name, run)
    is not None): what a 7.4 section shows of the runs [(name, run or None)]."""
    missing = [f"No finished run of `configs/{name}.toml` yet: `python -m nnhw.train configs/{name}.toml`." for name, run in sharp if run is None]
    return missing, [(f, name, run) for name, run in sharp if run is not None and (f := facts_of(name, run)) is not None]


def _commit_and_flag(run):
    return commit_text(run["summary"]["git_commit"]) + (" (flagged: " + run["flag"] + ")" if run["flag"] else "")


def sharpness_section(sharp):
    """7.4, beyond the homework: the sharpness that full-batch gradient descent meets, from the runs of
    sharpness.CONFIGS ([(name, run or None)])."""
    lines = ["## 7.4, beyond the homework: how smooth is the loss that gradient descent meets?", "",
             "Problem 7 takes an L-smooth loss and a step lr <= 1/L. These runs measure L where training goes: the sharpness, the "
             "largest eigenvalue of the training loss's Hessian, by Lanczos over Hessian-vector products through nnhw's own "
             "second derivatives (`nnhw/hessian.py`), on the same 2,000 training images that each full-batch step descends. "
             "Cohen et al. (2021) report that gradient descent drives the sharpness up to 2/lr and holds it there, the edge of stability.", ""]
    missing, measured = _measured(sharp, sharpness.facts)
    lines += missing
    if not measured:
        return lines + [""]
    facts = [f for f, _, _ in measured]
    lines += ["![sharpness against step](sharpness.png)", "",
              "| config | lr | 1/lr | 2/lr | sharpness at the start | lowest (step) | highest after that (step) | at the end | measurements <= 1/lr | final training loss | final test error | commit |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for f, name, run in measured:
        lines.append(f"| `{name}` | {f['lr']:g} | {f['one_over_lr']:.3g} | {f['threshold']:.3g} | {f['start']:.3g} | {f['low']:.3g} ({f['low_step']}) | {f['high']:.3g} ({f['high_step']}) | "
                     f"{f['end']:.3g} | {f['below_one_over_lr']} of {f['measurements']} | {f['end_loss']:.4g} | {pct(f['test_error'])} | "
                     f"{_commit_and_flag(run)} |")
    lines += ["", f"Each run: `python -m nnhw.train configs/<config>.toml`, {facts[0]['steps']} steps, the sharpness every "
              f"{facts[0]['every_steps']} steps. " + " ".join(sharpness.sentences(facts)), ""]
    return lines


def adam_section(adam):
    """7.4 continued: full-batch Adam's preconditioned sharpness against 38/lr, from the runs of
    sharpness.ADAM_CONFIGS ([(name, run or None)])."""
    lines = ["### Adam: the preconditioned sharpness", "",
             "Adam divides each step by P = sqrt(v^) + eps, so a quadratic is stable under it where the top eigenvalue of "
             "P^(-1/2) H P^(-1/2), the preconditioned sharpness, stays below (2 + 2 beta1) / (lr (1 - beta1)) = 38/lr at beta1 = 0.9. "
             "Cohen et al. (2022) report that full-batch Adam drives it to that threshold, as gradient descent drives the plain "
             "sharpness to 2/lr. These runs train the same network on the same 2,000 images with Adam at three rates and measure "
             "both, P taken from the optimiser's state at each measurement.", ""]
    missing, measured = _measured(adam, sharpness.adam_facts)
    lines += missing
    if not measured:
        return lines + [""]
    facts = [f for f, _, _ in measured]
    lines += ["![preconditioned sharpness against step](adam_sharpness.png)", "",
              "| config | lr | 38/lr | preconditioned, first measured (step) | first within 10% of 38/lr (step) | last third, mean / 38/lr | at the end | "
              "plain sharpness at the start | at the end | trace at the start | at the end | final training loss | commit |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for f, name, run in measured:
        trace = [f"{t['value']:.4g} +- {t['stderr']:.2g}" if t else "n/a" for t in (f["trace_first"], f["trace_last"])]
        lines.append(f"| `{name}` | {f['lr']:g} | {f['threshold']:.4g} | {f['start']:.3g} ({f['start_step']}) | {f['near_step'] if f['near_step'] is not None else 'never'} | "
                     f"{f['last_third_of_threshold']:.2f} | {f['end']:.3g} | {f['plain_start']:.3g} | {f['plain_end']:.3g} | {trace[0]} | {trace[1]} | "
                     f"{f['end_loss']:.4g} | {_commit_and_flag(run)} |")
    lines += ["", f"Each run: `python -m nnhw.train configs/<config>.toml`, {facts[0]['steps']} steps, measured every "
              f"{facts[0]['every_steps']} steps. " + " ".join(sharpness.adam_sentences(facts)), ""]
    if any("density_nodes" in r for _, _, run in measured for r in run["history"]):
        lines += ["![the Hessian's eigenvalue density at the start and at the end](adam_density.png)", ""]
    return lines


def extras_sections(extras, out):
    """Sections built from what the theory and speed commands left in the report folder (inputs.read_extras),
    with 7.4 (the sharpness runs, extras['sharpness']) after the claims of 7."""
    lines = []
    if extras["theory_txt"] is not None:
        lines += ["## 2.2, 2.3 and 7: the claims, computed", "", "`python -m nnhw.theory` (each claim is also a test):", "",
                  "```", extras["theory_txt"].rstrip(), "```", ""]
        if (out / "theory" / "gd_rates.png").is_file():
            lines += ["![gradient descent rates](theory/gd_rates.png)", ""]
    lines += sharpness_section(extras.get("sharpness") or [])
    lines += adam_section(extras.get("adam") or [])
    if extras["autodiff_txt"] is not None:
        lines += ["## 5: reverse and forward mode by hand", "", "`python -m nnhw.autodiff`:", "", "```", extras["autodiff_txt"].rstrip(), "```", ""]
        if (out / "autodiff_cost.png").is_file():
            lines += ["![5.3: forward-mode against reverse-mode cost](autodiff_cost.png)", ""]
    c = extras["complexity"]
    if c is not None:
        lines += ["## 2.1: measured cost against m * sum d(l) d(l+1)", "", f"`{c['command'].strip()}` ({c['threads']} CPU threads):", "",
                  "| quantity | seconds per multiply-add | intercept | R^2 |", "|---|---|---|---|"]
        for key, f in c["fits"].items():
            lines.append(f"| {key} | {f['seconds_per_multiply_add']:.3e} | {1e3 * f['intercept_s']:.3f} ms | {f['r2']:.4f} |")
        rows = c["rows"]
        ratios = sorted(r["forward_backward_s"] / r["top_gradient_s"] for r in rows)
        lines += ["", f"The full gradient costs {ratios[len(ratios) // 2]:.2f}x the top layer's alone (median over the grid, "
                  f"{ratios[0]:.2f}x to {ratios[-1]:.2f}x).", ""]
    for b in extras["bench"]:
        lines += [f"## Speed: {b['device']}", "", f"`{b['command'].strip()}`" + (f" at commit `{b['commit'][:12]}`" if b.get("commit") else "") + "; seconds per 50,000 training images; "
                  f"large float32 matmul {b['matmul_gflops']:.0f} GFLOP/s.", "",
                  "| config | batch | engine | nnhw | autograd engine | tape engine | built-in ops | matmul floor | products alone | hand-fused | nnhw / built-in | nnhw / floor |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in b["rows"]:
            lines.append(f"| {r['config']} | {r['batch_size']} | {r['engine']} | {r['nnhw_s_per_epoch']:.3f} | {r['autograd_engine_s_per_epoch']:.3f} | "
                         f"{r['tape_engine_s_per_epoch']:.3f} | {r['builtin_s_per_epoch']:.3f} | {r['floor_s_per_epoch']:.3f} | "
                         f"{_seconds(r.get('products_s_per_epoch'))} | {_seconds(r.get('fused_s_per_epoch'))} | "
                         f"{r['ratio_builtin']:.3f} | {r['ratio_floor']:.2f} |")
        lines += ["", "Products alone: only the step's matrix products, at their own shapes. Hand-fused: the same step in raw "
                  "tensor ops with no autograd and no Functions, gradients accumulated straight into the velocities "
                  "(MLPs with cross-entropy and no dropout). Both come from `tools/bench.py`; n/a where they do not apply."]
        if b.get("adjoints"):
            lines += ["", "The backward of the CNN's layers at batch 128: nnhw's written-out adjoints (transposed convolutions, "
                      "the correlation of X with G, pooling's spread) against aten's kernels, median ms of one backward pass:", "",
                      "| layer | nnhw | aten | nnhw / aten |", "|---|---|---|---|"]
            lines += [f"| {a['layer']} | {1e3 * a['nnhw_s']:.2f} | {1e3 * a['aten_s']:.2f} | {a['ratio']:.2f} |" for a in b["adjoints"]]
        if b.get("loader_s_per_epoch"):
            lines += ["", f"The DataLoader way (a Module, a DataLoader over torchvision MNIST with ToTensor/Normalize, PyTorch's own SGD) for the sigmoid model: {b['loader_s_per_epoch']:.2f} s per epoch."]
        lines.append("")
    return lines


def _seconds(v):
    return "n/a" if v is None else f"{v:.3f}"


def build(log_dir="tb_logs", out="reports", pdf=True):
    """Write <out>/REPORT.md (and, with pdf, <out>/REPORT.pdf) from the runs in log_dir and those kept
    in <out>/runs/; returns the Markdown file's path. Reads and checks everything first (nnhw.inputs),
    then builds in a temporary folder and moves the result into place."""
    out = Path(out)
    student = handin.student_data(out) if pdf else None  # a bad student.toml stops the build before anything is written
    runs = [(question, name, gather(name, log_dir, out)) for question, name, _ in QUESTIONS]
    extras = read_extras(out)
    extras["sharpness"] = [(name, gather(name, log_dir, out)) for name in sharpness.CONFIGS]
    extras["adam"] = [(name, gather(name, log_dir, out)) for name in sharpness.ADAM_CONFIGS]
    for name, run in [(name, run) for _, name, run in runs] + extras["sharpness"] + extras["adam"]:
        if run is not None:
            run["flag"] = replay_check(run["dir"])
            run["sweep_flag"] = replay_check(run["sweep_dir"])
    text = markdown(runs, extras, out)
    out.mkdir(parents=True, exist_ok=True)
    stage = out / f".build-{uuid.uuid4().hex[:8]}"
    try:
        stage.mkdir()
        stage_figures(runs, out, stage)
        drawn = [name for name, sharp, title in (("sharpness", extras["sharpness"], "Full-batch gradient descent"),
                                                 ("adam_sharpness", extras["adam"], "Full-batch Adam"))
                 if sharpness_figure(sharp, stage, name, title)]
        drawn += ["adam_density"] if density_figure(extras["adam"], stage) else []
        (stage / "REPORT.md").write_text(text)
        if pdf:
            (stage / "REPORT.pdf").write_bytes(handin.render_pdf(runs, extras, student, stage))
        for name, run in [(name, run) for _, name, run in runs] + extras["sharpness"] + extras["adam"]:
            if run is not None:
                keep(name, run, out)
        for _, name, run in runs:  # the whole build is there: move it into place, renames only
            if run is not None:
                replace_folder(stage / name, out / name)
        for name in ("REPORT.md", "REPORT.pdf") if pdf else ("REPORT.md",):
            os.replace(stage / name, out / name)
        for name in drawn:
            os.replace(stage / f"{name}.png", out / f"{name}.png")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out / "REPORT.md"


def stage_figures(runs, out, stage):
    """Each run's figures (and its sweep's) under stage/<config>/, and the theory and autodiff figures,
    where REPORT.pdf's template looks for them; only the chosen runs' own figures."""
    for _, name, run in runs:
        if run is None:
            continue
        (stage / name).mkdir()
        for fig in FIGURES:
            shutil.copyfile(run["dir"] / f"{fig}.png", stage / name / f"{fig}.png")
        if run["sweep_dir"] is not None:
            shutil.copyfile(run["sweep_dir"] / "sweep.png", stage / name / "sweep.png")
    for path in (Path("theory") / "gd_rates.png", Path("autodiff_cost.png")):
        if (out / path).is_file():
            (stage / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / path, stage / path)


def sharpness_figure(sharp, stage, name="sharpness", title="Full-batch gradient descent"):
    """stage/<name>.png: the sharpness runs side by side (plot.sharpness_figure); False when there is none."""
    from .plot import plt, sharpness_figure as figure

    runs = [(f"lr {run['cfg'].optim.lr:g}", run["cfg"], run["history"]) for _, run in sharp
            if run is not None and any("sharpness" in r for r in run["history"])]
    if not runs:
        return False
    points = {run[1].data.train_points for run in runs}
    on = f"{points.pop():,} MNIST training images" if len(points) == 1 and 0 not in points else "MNIST"
    fig = figure(runs, f"{title} on {on}: the sharpness it meets")
    fig.savefig(stage / f"{name}.png", metadata={"Software": None})
    plt.close(fig)
    return True


def density_figure(adam, stage):
    """stage/adam_density.png: the eigenvalue density at the start and at the end of the first Adam run
    that measured it (plot.density_figure); False when none did."""
    from .plot import density_figure as figure, plt

    run = next((run for _, run in adam if run is not None and any("density_nodes" in r for r in run["history"])), None)
    if run is None:
        return False
    fig = figure(run["cfg"], run["history"], f"Full-batch Adam at lr {run['cfg'].optim.lr:g}: the Hessian's eigenvalue density")
    fig.savefig(stage / "adam_density.png", metadata={"Software": None})
    plt.close(fig)
    return True


def markdown(runs, extras, out):
    """REPORT.md's text."""
    body, table = [], []
    for (question, name, what), (_, _, run) in zip(QUESTIONS, runs):
        if run is None and question in ("4.3", "6"):
            continue  # extra credit not run yet: leave it out rather than list an empty section
        body += section(question, name, what, run)
        if run is not None:
            table.append((f"nnhw `{name}` ({question_label(question, what)})", name, run))
    head = [
        "# nnhw report: homework 4 on MNIST",
        "",
        "Built by `python -m nnhw.report` from the newest finished run of each committed config's recipe, its newest seed",
        "set and learning-rate sweep, and the theory, autodiff, complexity and benchmark outputs; every number below is",
        "copied from the file it comes from (a run's `summary.json`, a seed set's `seeds_*.json`, a sweep's `sweep.json`, the",
        "outputs' JSON). `make report` makes the runs, seed sets, sweeps, theory, autodiff and complexity outputs again,",
        "then builds this file; the sharpness runs of 7.4 and the speed tables have commands of their own, given beside them.",
        "",
        "## Summary beside published MNIST test errors",
        "",
        "The final test error is the last evaluation of each fixed schedule, as mean +- sample std over the seeds of the",
        "newest `--seeds` set where there is one (else the one run's); the lowest test error is chosen on the test set, as",
        "the homework asks, and flatters the model. Every run is replayed with the code that built this report",
        "(`python -m nnhw.replay`): a number is flagged only when its run no longer replays to the same arithmetic. A run",
        "counts only when it started with the recipe its committed config gives, and a seed set only when it shares it.",
        "",
        "Epochs are effective epochs of 50,000 training images, the homework's x-axis; a run's length is given in passes",
        "over its training split (train.epochs), 60,000 images for the configs trained on train+dev.",
        "",
        "| model | final test error | the seeds' committee | test error at best dev | lowest test error (chosen on the test set) | training + evaluation per seed | commit | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, name, run in table:
        s, seeds = run["summary"], run.get("seeds")
        if seeds is not None:
            st = seeds["stats"]
            cells = [mean_std(st["final_test_error"]), committee_text(seeds), mean_std(st["test_error_at_best_dev"]), mean_std(st["lowest_test_error"])]
            commits = ", ".join(commit_text(c, run["flag"]) for c in seeds["git_commits"])
        else:
            cells = [pct(s["final"]["test_error"]) + " (1 seed)", "n/a", pct(s["test_error_at_best_dev"]), pct(s["lowest_test_error"])]
            commits = commit_text(s["git_commit"], run["flag"])
        head.append(f"| {label} | {' | '.join(cells)} | {time_per_seed(s, seeds)} | {commits} | this report |")
    for label, err, source in PUBLISHED:
        head.append(f"| {label} | | | | {err:.2f}% | | | {source} |")
    head += ["", "Runs on train+dev have no dev split: n/a at best dev. The committee is the test error of the seeds' mean softmax "
             "output from their final checkpoints; n/a for a seed set made before `--seeds` reported it, or for one run.", ""]
    return "\n".join(head + body + extras_sections(extras, out)).rstrip() + "\n"


def report_command(argv):
    p = Parser(prog="python -m nnhw.report", description=__doc__.splitlines()[0])
    p.add_argument("--log-dir", default="tb_logs", help="folder with the runs (default tb_logs)")
    p.add_argument("--out", default="reports", help="folder for REPORT.md, REPORT.pdf and their PNGs; problem 0 is read from student.toml there (default reports)")
    args = p.parse_args(argv)
    if not Path(args.log_dir).is_dir() and not (Path(args.out) / KEPT).is_dir():
        raise NnhwError(f"no log folder {args.log_dir} and no kept runs in {Path(args.out) / KEPT}; train the configs first (make report does it all)")
    try:
        md = build(args.log_dir, args.out)
    except ModuleNotFoundError as e:
        raise NnhwError(f"{e.name} is not installed; `pip install -e .` (or make report-only) installs it") from None
    print(md)
    print(Path(args.out) / "REPORT.pdf")
    return 0


def main(argv=None):
    """`python -m nnhw.report`: the exit code (nnhw.command)."""
    return run_command("nnhw.report", report_command, argv)


if __name__ == "__main__":
    sys.exit(main())
