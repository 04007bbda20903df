"""`python -m nnhw.report`: reports/REPORT.md and reports/REPORT.pdf, built from finished runs.

For each homework question it takes the newest finished run of the committed
config (a run started as `python -m nnhw.train configs/<name>.toml`, with no
overrides) from the log folder, the newest set of seeds of it (`--seeds`, its
seeds_*.json), and the newest learning-rate sweep, copies their PNGs beside the
report, and writes every number from their summary.json, seeds_*.json and
sweep.json. It keeps what it read of those runs under reports/runs/ (summaries,
histories, figures, and the sentences read from the weights, not the checkpoints),
where later builds find them too: the newest run of the two places wins, so the
committed report can be rebuilt without tb_logs/.

Every number names the commit it came from, and every run and sweep is replayed
with the code at hand (nnhw.replay): a number is flagged only when its run's first
steps no longer replay to the same arithmetic, or cannot be replayed here. The
same runs always give the same files. REPORT.pdf is the hand-in: every question
in the homework's order, then the code (nnhw/handin.py).
"""

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from . import config as config_mod
from . import handin
from .describe import QUESTIONS, mean_std, parameter_rows, pct, short_commit, sweep_rates
from .readout import run_readout
from .replay import ReplayError, replay

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

FIGURES = ["loss", "error", "weights"]


# <out>/runs/: what the report read of each run, kept beside it (tb_logs/ is not committed), so that a later
# build, on another machine or after tb_logs/ is gone, finds the same runs. The weights are kept only as
# the sentences read from them (readout.json): checkpoints are megabytes.
KEPT = "runs"
KEPT_FILES = ["summary.json", "config.toml", "history.json", *(f"{fig}.png" for fig in FIGURES)]


def search_dirs(log_dir, out):
    """Where runs are looked for: the log folder first, then the runs kept beside the report."""
    return [Path(log_dir), Path(out) / KEPT]


def newest(paths):
    """The path whose name sorts last (run ids and seed sets begin with their time); of equal names, the
    first found (the log folder's before its kept copy). None when there is none."""
    by_name = {}
    for path in paths:
        by_name.setdefault(path.name, path)
    return by_name[max(by_name)] if by_name else None


def latest_run(dirs, name):
    """The newest finished run of configs/<name>.toml without overrides, or None."""
    want = f"python -m nnhw.train configs/{name}.toml"
    found = []
    for d in dirs:
        for summary_path in (Path(d) / name).glob("*/summary.json"):
            s = json.loads(summary_path.read_text())
            if s.get("status") == "finished" and s.get("command", "").strip() == want:
                found.append(summary_path.parent)
    return newest(found)


def latest_seeds(dirs, name):
    """The newest `python -m nnhw.train configs/<name>.toml --seeds ...` aggregate file (no other overrides), or None."""
    want = re.compile(rf"python -m nnhw\.train configs/{re.escape(name)}\.toml --seeds[ =][0-9,]+")
    return newest(p for d in dirs for p in (Path(d) / name).glob("seeds_*.json")
                  if want.fullmatch(json.loads(p.read_text())["command"].strip()))


def latest_sweep(dirs, name):
    return newest(p.parent for d in dirs for p in (Path(d) / f"{name}-sweep").glob("*/sweep.json"))


def copy_into(src, dest, names):
    """Copy the files `names` that src holds into the folder dest, unless dest is src (a kept run read back)."""
    if Path(src).resolve() == Path(dest).resolve():
        return False
    dest.mkdir(parents=True, exist_ok=True)
    for f in names:
        if (src / f).is_file():
            shutil.copyfile(src / f, dest / f)
    return True


def keep(name, run_dir, seeds_path, sweep_dir, out):
    """Copy what the report reads of a run, its seed set and its sweep into <out>/runs/ (see KEPT)."""
    kept = Path(out) / KEPT
    if copy_into(run_dir, kept / name / run_dir.name, KEPT_FILES):
        lines, summary = run_readout(run_dir)
        (kept / name / run_dir.name / "readout.json").write_text(json.dumps(dict(lines=lines, summary=summary), indent=1) + "\n")
    if seeds_path is not None:
        copy_into(seeds_path.parent, kept / name, [seeds_path.name])
    if sweep_dir is not None:
        copy_into(sweep_dir, kept / f"{name}-sweep" / sweep_dir.name, ["sweep.json", "sweep.png"])


def replay_check(folder):
    """'' when the run (or sweep) in folder replays to the same arithmetic with the code at hand,
    else the flag to print beside its numbers."""
    try:
        same, what = replay(folder)
    except ReplayError as e:
        return f"not replay-checked here: {e}"
    return "" if same else f"its replay {what}: rerun it"


def commit_text(commit, flag=""):
    """The commit behind a number, with the replay's flag when there is one."""
    return f"`{short_commit(commit)}`" + (f" (**flagged**: {flag})" if flag else "")


def collect(name, log_dir, out):
    """The newest finished run of configs/<name>.toml, its seed set and its sweep, from the log folder or
    the kept runs, kept beside the report, with their figures copied into <out>/<name>/; None when there
    is no such run."""
    dirs = search_dirs(log_dir, out)
    run_dir, seeds_path, sweep_dir = latest_run(dirs, name), latest_seeds(dirs, name), latest_sweep(dirs, name)
    if run_dir is None:
        return None
    keep(name, run_dir, seeds_path, sweep_dir, out)
    dest = out / name
    dest.mkdir(parents=True, exist_ok=True)
    run = dict(dir=run_dir, summary=json.loads((run_dir / "summary.json").read_text()), cfg=config_mod.load(run_dir / "config.toml"), sweep=None,
               seeds=None if seeds_path is None else json.loads(seeds_path.read_text()), flag=replay_check(run_dir))
    if sweep_dir is not None:
        run["sweep"] = json.loads((sweep_dir / "sweep.json").read_text())
        run["sweep_flag"] = replay_check(sweep_dir)
        shutil.copyfile(sweep_dir / "sweep.png", dest / "sweep.png")
    for fig in FIGURES:
        if (run_dir / f"{fig}.png").is_file():
            shutil.copyfile(run_dir / f"{fig}.png", dest / f"{fig}.png")
    return run


def minutes(seconds):
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


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
    return ("Replayed with the code that built this report: its first steps compute the same arithmetic (`python -m nnhw.replay`), "
            "so its numbers, and its seed set's (the same config and code, other seeds), stand.")


def section(question, name, what, run, out):
    lines = [f"## {question} ({name}): {what}", ""]
    if run is None:
        return lines + [f"No finished run of `configs/{name}.toml` yet: `python -m nnhw.train configs/{name}.toml`.", ""]
    run_dir, summary, cfg, sw = run["dir"], run["summary"], run["cfg"], run["sweep"]
    lines += [f"Config `configs/{name}.toml`; run `{run_dir.name}` at commit {commit_text(summary['git_commit'])}. {replay_line(run)}", ""]
    seeds = run.get("seeds")
    if seeds is not None:
        st = seeds["stats"]
        lines += [f"**Over seeds {', '.join(map(str, seeds['seeds']))}** (`{seeds['command']}`, at "
                  f"{', '.join(commit_text(c) for c in seeds['git_commits'])}): final test error {mean_std(st['final_test_error'])}"
                  + (f"; test error at best dev {mean_std(st['test_error_at_best_dev'])}" if st["test_error_at_best_dev"] else "")
                  + f"; lowest test error, chosen on the test set as the homework asks, {mean_std(st['lowest_test_error'])}"
                  + (f"; 99% test accuracy after {mean_std(st['seconds_to_99'], ' s')} of training" if st["seconds_to_99"] else "")
                  + ". Each seed: " + "; ".join(f"seed {r['seed']} final {pct(r['final_test_error'])}" for r in seeds["runs"]) + ".", ""]
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
        f"| lowest test error, chosen on the test set | {pct(summary['lowest_test_error'])} (epoch {summary['lowest_test_epoch']:.2f}) |",
    ]
    if has_dev:
        lines += [
            f"| test error at best dev | {pct(summary['test_error_at_best_dev'])} (best dev {pct(summary['best_dev_error'])} at epoch {summary['best_dev_epoch']:.2f}) |",
        ]
    final = summary["final"]
    lines += [
        f"| final errors | train {pct(final['train_error'])}" + (f", dev {pct(final['dev_error'])}" if has_dev else "") + f", test {pct(final['test_error'])} |",
        f"| training time | {summary['train_seconds'] / 60:.1f} min ({summary['train_seconds']:.0f} s; evaluation {summary['eval_seconds']:.0f} s more) |",
    ]
    for mark, first in (summary.get("time_to_accuracy") or {}).items():
        if first:
            lines.append(f"| first test accuracy >= {mark} | epoch {first['epoch']:.2f}, after {first['train_seconds']:.1f} s of training |")
    lines += [
        f"| device | {summary['device']} |",
        f"| reproduce | `{summary['command']}` |",
        "",
    ]
    for fig in FIGURES:
        if (out / name / f"{fig}.png").is_file():
            lines += [f"![{name} {fig}]({name}/{fig}.png)", ""]
    return lines


def extras(out):
    """Sections built from what the theory and speed commands left in the report folder, if anything."""
    lines = []
    theory, autodiff, gd = out / "theory.txt", out / "autodiff.txt", out / "theory" / "gd_rates.png"
    if theory.is_file():
        lines += ["## 2.2, 2.3 and 7: the claims, computed", "", "`python -m nnhw.theory` (each claim is also a test):", "",
                  "```", theory.read_text().rstrip(), "```", ""]
        if gd.is_file():
            lines += ["![gradient descent rates](theory/gd_rates.png)", ""]
    if autodiff.is_file():
        lines += ["## 5: reverse and forward mode by hand", "", "`python -m nnhw.autodiff`:", "", "```", autodiff.read_text().rstrip(), "```", ""]
        if (out / "autodiff_cost.png").is_file():
            lines += ["![5.3: forward-mode against reverse-mode cost](autodiff_cost.png)", ""]
    complexity = out / "complexity.json"
    if complexity.is_file():
        c = json.loads(complexity.read_text())
        lines += ["## 2.1: measured cost against m * sum d(l) d(l+1)", "", f"`{c['command'].strip()}` ({c['threads']} CPU threads):", "",
                  "| quantity | seconds per multiply-add | intercept | R^2 |", "|---|---|---|---|"]
        for key, f in c["fits"].items():
            lines.append(f"| {key} | {f['seconds_per_multiply_add']:.3e} | {1e3 * f['intercept_s']:.3f} ms | {f['r2']:.4f} |")
        rows = c["rows"]
        ratios = sorted(r["forward_backward_s"] / r["top_gradient_s"] for r in rows)
        lines += ["", f"The full gradient costs {ratios[len(ratios) // 2]:.2f}x the top layer's alone (median over the grid, "
                  f"{ratios[0]:.2f}x to {ratios[-1]:.2f}x).", ""]
    for bench in sorted(out.glob("bench-*.json")):
        b = json.loads(bench.read_text())
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
    """Write <out>/REPORT.md (and, with pdf, <out>/REPORT.pdf) from the runs in log_dir; returns the
    Markdown file's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if pdf:
        handin.student_data(out)  # a bad student.toml stops the build before anything is written
    body, table, runs = [], [], []
    for question, name, what in QUESTIONS:
        run = collect(name, log_dir, out)
        runs.append((question, name, run))
        if run is None and question in ("4.3", "6"):
            continue  # extra credit not run yet: leave it out rather than list an empty section
        body += section(question, name, what, run, out)
        if run is not None:
            table.append((f"nnhw `{name}` ({question})", name, run))
    head = [
        "# nnhw report: homework 4 on MNIST",
        "",
        "Built by `python -m nnhw.report` from the newest finished run of each committed config; every number",
        "below is copied from that run's `summary.json` (and the sweep's `sweep.json`). Regenerate everything",
        "with `make report` (trains each config, runs the sweeps, then builds this file).",
        "",
        "## Summary beside published MNIST test errors",
        "",
        "The final test error is the last evaluation of each fixed schedule, as mean +- sample std over the seeds of the",
        "newest `--seeds` set where there is one (else the one run's); the lowest test error is chosen on the test set, as",
        "the homework asks, and flatters the model. Every run is replayed with the code that built this report",
        "(`python -m nnhw.replay`); a number is flagged only when its run no longer replays to the same arithmetic.",
        "",
        "| model | final test error | test error at best dev | lowest test error (chosen on the test set) | training + evaluation per seed | commit | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, name, run in table:
        s, seeds = run["summary"], run.get("seeds")
        if seeds is not None:
            st = seeds["stats"]
            cells = [mean_std(st["final_test_error"]), mean_std(st["test_error_at_best_dev"]), mean_std(st["lowest_test_error"])]
            commits = ", ".join(commit_text(c, run["flag"]) for c in seeds["git_commits"])
        else:
            cells = [pct(s["final"]["test_error"]) + " (1 seed)", pct(s["test_error_at_best_dev"]), pct(s["lowest_test_error"])]
            commits = commit_text(s["git_commit"], run["flag"])
        head.append(f"| {label} | {' | '.join(cells)} | {time_per_seed(s, seeds)} | {commits} | this report |")
    for label, err, source in PUBLISHED:
        head.append(f"| {label} | | | {err:.2f}% | | | {source} |")
    head += ["", "Runs on train+dev have no dev split: n/a at best dev.", ""]
    text = "\n".join(head + body + extras(out)).rstrip() + "\n"
    (out / "REPORT.md").write_text(text)
    if pdf:
        handin.write_pdf(runs, out)
    return out / "REPORT.md"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m nnhw.report", description=__doc__.splitlines()[0])
    p.add_argument("--log-dir", default="tb_logs", help="folder with the runs (default tb_logs)")
    p.add_argument("--out", default="reports", help="folder for REPORT.md, REPORT.pdf and their PNGs; problem 0 is read from student.toml there (default reports)")
    args = p.parse_args(argv)
    if not Path(args.log_dir).is_dir() and not (Path(args.out) / KEPT).is_dir():
        print(f"nnhw.report: error: no log folder {args.log_dir} and no kept runs in {Path(args.out) / KEPT}; train the configs first (make report does it all)", file=sys.stderr)
        return 2
    try:
        md = build(args.log_dir, args.out)
    except handin.StudentFileError as e:
        print(f"nnhw.report: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        print(f"nnhw.report: error: {e.name} is not installed; `pip install -e .` (or make report-only) installs it", file=sys.stderr)
        return 2
    print(md)
    print(Path(args.out) / "REPORT.pdf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
