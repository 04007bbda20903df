"""What a report is built from, found and checked before anything is written, and kept beside it.

For each committed config the report takes the newest finished run of its recipe as
committed (nnhw.identity: the recipe the run started with, no resume altering it; for a
run made before summaries kept their recipe, the overrides its summary names), the
newest `--seeds` set of that same recipe, and the newest plain learning-rate sweep of it, from the
log folder or from the runs kept under <out>/runs/. Every file it will read is
read here first and checked for the shape the report needs: summaries, histories,
configs, figures (decoded), the weights' read-outs, the seed sets, the sweeps, and
the theory, autodiff, complexity and speed outputs. A file that does not pass stops
the build with one line (InputError) that names it and the command that remakes it,
before anything is written.

`keep` copies what the report read of a run into <out>/runs/<config>/<run id>/
(the checkpoint replaced by readout.json, the sentences read off its weights) through
a temporary folder renamed into place, so a full disk never leaves half a run there.
Each kept folder holds kept.json, the SHA-256 of every file in it: a kept file that was
changed, cut short or deleted afterwards stops the build with one line, where its
contents alone could still look like a run and quietly change the report.
"""

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from . import config as config_mod
from . import identity
from .checkpoint import CHECKPOINT, HISTORY_KEYS, load_checkpoint
from .command import NnhwError
from .config import WHERE_KEYS, ConfigError
from .readout import readout_text
from .rundir import RunError

KEPT = "runs"  # <out>/runs/: the runs the report read, kept beside it (tb_logs/ is not committed)
FIGURES = ["loss", "error", "weights"]
KEPT_FILES = ["summary.json", "config.toml", "history.json", *(f"{fig}.png" for fig in FIGURES)]
DIGESTS = "kept.json"  # in each kept folder: {"sha256": {file name: digest}}

NUM = (int, float)
MAYBE_NUM = (int, float, type(None))
STAT = (dict, type(None))  # a seed set's statistic: mean, std, min, max, n; None when no seed has the number
FIRST = (dict, type(None))  # the first evaluation at an accuracy: epoch and training seconds, or None
SUMMARY = {"status": str, "final": {"train_error": NUM, "test_error": NUM}, "lowest_test_error": NUM, "lowest_test_epoch": NUM,
           "best_dev_error": MAYBE_NUM, "best_dev_epoch": MAYBE_NUM, "test_error_at_best_dev": MAYBE_NUM,
           "train_seconds": NUM, "eval_seconds": NUM, "device": str, "git_commit": str, "seed": int,
           "command?": (str, type(None)), "time_to_accuracy?": {f"{m}?": FIRST for m in ("98%", "99%", "99.5%")}}
SEEDS = {"command": str, "seeds": [int], "git_commits": [str], "runs": [{"seed": int, "final_test_error": NUM}],
         "stats": {"final_test_error": dict, "test_error_at_best_dev": STAT, "lowest_test_error": STAT, "seconds_to_99": STAT,
                   "train_seconds": STAT}}
SWEEP = {"command": str, "rule": str, "start_loss": NUM, "budget_epochs": NUM, "threshold_lr": MAYBE_NUM, "device?": str,
         "diverging_lr": MAYBE_NUM, "rows": [{"lr": NUM, "loss": NUM, "verdict": str}]}
READOUT = {"lines": [str], "summary": str}
THEORY_CLAIM = {"holds": bool, "rows?": [dict]}
AUTODIFF = {"command": str, "w1": NUM, "w2": NUM, "trace": [NUM], "largest_relative_difference": NUM,
            **{mode: {"f": NUM, "df_dw1": NUM, "df_dw2": NUM} for mode in ("reverse", "forward", "autograd")},
            "cost_table": [{"d": int, "forward_s": NUM, "reverse_s": NUM, "ratio": NUM}], "cost_fit?": {"slope": NUM, "r2": NUM},
            "repeats?": int}
COMPLEXITY = {"command": str, "threads": int, "fits": dict, "fits.*": {"seconds_per_multiply_add": NUM, "intercept_s": NUM, "r2": NUM},
              "rows": [{"forward_backward_s": NUM, "top_gradient_s": NUM, "backward_s": NUM, "forward_s": NUM}]}
BENCH = {"command": str, "device": str, "matmul_gflops": NUM, "commit?": str, "loader_s_per_epoch?": MAYBE_NUM,
         "rows": [{"config": str, "batch_size": int, "engine": str, "products_s_per_epoch?": MAYBE_NUM, "fused_s_per_epoch?": MAYBE_NUM,
                   **{k: NUM for k in ("nnhw_s_per_epoch", "autograd_engine_s_per_epoch", "tape_engine_s_per_epoch", "builtin_s_per_epoch",
                                       "floor_s_per_epoch", "ratio_builtin", "ratio_floor")}}],
         "adjoints?": [{"layer": str, "nnhw_s": NUM, "aten_s": NUM, "ratio": NUM}]}


class InputError(NnhwError):
    """A file the report reads is missing, unreadable or of the wrong shape; one line."""


def shape_error(value, spec, where):
    """Why `value` does not have the shape `spec`, or None when it does. A spec is a type or a tuple of
    types; {key: spec} for a table ('key?' where the key may be missing, 'key.*' for every entry of the
    table under key); or [spec] for a non-empty list. Numbers may not be booleans."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return f"{where} is not a table"
        for key, sub in spec.items():
            name = key.removesuffix("?").removesuffix(".*")
            if name not in value:
                if key.endswith("?"):
                    continue
                return f"{where} has no {name!r}"
            entries = value[name].items() if key.endswith(".*") and isinstance(value[name], dict) else [(name, value[name])]
            for k, v in entries:
                if (why := shape_error(v, sub, f"{where}.{k}")) is not None:
                    return why
        return None
    if isinstance(spec, list):
        if not isinstance(value, list) or not value:
            return f"{where} is not a non-empty list"
        return next((why for i, item in enumerate(value) if (why := shape_error(item, spec[0], f"{where}[{i}]")) is not None), None)
    if isinstance(value, bool) and bool not in (spec if isinstance(spec, tuple) else (spec,)):
        return f"{where} is {value!r}, not a number"
    return None if isinstance(value, spec) else f"{where} is a {type(value).__name__}"


def read_json(path, spec, remake):
    """path's JSON, checked against spec; InputError naming the file and the command that remakes it."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path} ({type(e).__name__}); remake it with: {remake}") from None
    if (why := shape_error(value, spec, Path(path).name)) is not None:
        raise InputError(f"{path} is not what {remake.split(' >')[0]} writes ({why}); remake it with: {remake}")
    return value


def check_png(path, remake):
    """InputError unless path is a PNG that decodes (Typst refuses the rest, halfway through the PDF)."""
    from PIL import Image  # matplotlib's own dependency

    try:
        with Image.open(path) as image:
            image.verify()
            ok = image.format == "PNG"
    except Exception:  # Pillow raises many kinds for a broken file
        ok = False
    if not ok:
        raise InputError(f"{path} is missing or not a whole PNG image; remake it with: {remake}")


def run_command_of(name):
    return f"python -m nnhw.train configs/{name}.toml"


def sweep_command_of(name):
    return f"python -m nnhw.sweep configs/{name}.toml"


def is_plain_run_of(summary, name, committed=None):
    """True for a run of configs/<name>.toml as committed: its own config file, no overrides but of
    where it goes (WHERE_KEYS) or ones that set a key to the value the file gives it (`committed`, the
    file's config.flatten; run.seed=0 where the file says 0), nothing changed on a resume. Summaries that
    do not say (made before they did) are judged by their command."""
    if "config" in summary:
        path = Path(summary["config"]) if isinstance(summary["config"], str) else None
        overrides = summary.get("overrides") or []
        return (path is not None and path.name == f"{name}.toml" and path.parent.name == "configs" and isinstance(overrides, list)
                and all(leaves_as_committed(str(o), committed) for o in overrides) and not summary.get("changes"))
    return str(summary.get("command") or "").strip() == run_command_of(name)


def leaves_as_committed(override, committed):
    """True for an override of where a run goes, or one that sets a key to its committed value."""
    try:
        section, key, value = config_mod.parse_override(override)
    except ConfigError:
        return False
    return f"{section}.{key}" in WHERE_KEYS or (committed is not None and committed.get(f"{section}.{key}", object()) == value)


def committed_config(name):
    """configs/<name>.toml (relative to where the report is built) as config.flatten gives it, or None
    when it cannot be read."""
    try:
        return config_mod.flatten(config_mod.load(Path("configs") / f"{name}.toml"))
    except ConfigError:
        return None


def reproduce_command(summary, name):
    """The command that makes this run again from scratch: its config file and overrides when its
    summary says them (a resumed run's too; overrides of where it went, WHERE_KEYS, left out: a path of
    the machine it ran on is no part of what it computes), else the command it was started with."""
    if isinstance(summary.get("config"), str) and isinstance(summary.get("overrides"), list):
        return without_where(" ".join(["python -m nnhw.train", summary["config"], *map(str, summary["overrides"])]))
    return summary.get("command") or run_command_of(name)


def newest(paths):
    """The path whose name sorts last (run ids and seed sets begin with their time); of equal names, the
    first found (the log folder's before its kept copy). None when there is none."""
    by_name = {}
    for path in paths:
        by_name.setdefault(path.name, path)
    return by_name[max(by_name)] if by_name else None


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_digests(folder):
    files = sorted(p.name for p in Path(folder).iterdir() if p.is_file() and p.name != DIGESTS)
    (Path(folder) / DIGESTS).write_text(json.dumps({"sha256": {f: sha256(Path(folder) / f) for f in files}}, indent=1) + "\n")


def check_digests(folder, remake):
    """InputError when a file of a kept folder differs from what was kept (folders without kept.json,
    kept before there was one, pass: keep() writes it)."""
    path = Path(folder) / DIGESTS
    if not path.is_file():
        return
    kept = read_json(path, {"sha256": dict}, remake)["sha256"]
    for name, digest in kept.items():
        if not (Path(folder) / name).is_file() or sha256(Path(folder) / name) != digest:
            raise InputError(f"{Path(folder) / name} is missing or has changed since it was kept (kept.json); "
                             f"put it back (git checkout), or remove the folder and remake the run with: {remake}")


def check_kept_folders(kept, name):
    """InputError for a folder kept for configs/<name>.toml that has lost the file that makes it a run
    (summary.json) or a sweep (sweep.json): without it the report would quietly take an older one."""
    for parent, marker, remake in ((kept / name, "summary.json", run_command_of(name)),
                                   (kept / f"{name}-sweep", "sweep.json", sweep_command_of(name))):
        for d in sorted(parent.glob("*")):
            if d.is_dir() and not d.name.startswith(".") and not (d / marker).is_file():
                raise InputError(f"{d} is kept without its {marker}; put it back (git checkout), "
                                 f"or remove the folder and remake it with: {remake}")


def latest_run(dirs, name):
    """The newest finished run of configs/<name>.toml's recipe as committed, or None; every summary on the
    way is checked. A run that started with another recipe, or that a resume altered, is no run of it."""
    found, committed = [], committed_config(name)
    for d in dirs:
        for path in (Path(d) / name).glob("*/summary.json"):
            summary = read_json(path, {"status": str}, run_command_of(name))
            if summary["status"] == "finished" and is_run_of_committed(summary, name, committed):
                found.append(path.parent)
    return newest(found)


def is_run_of_committed(summary, name, committed):
    """True for a run of configs/<name>.toml as committed (`committed`, its config.flatten): one that
    started with its recipe, judged by the summary's recipe (not its editable config.toml, which read_run
    checks once the run is taken), or for a summary made before summaries kept one, by its config file and
    overrides (is_plain_run_of)."""
    if committed is None:
        return False
    if not isinstance(summary.get("recipe"), dict):
        return is_plain_run_of(summary, name, committed)
    return identity.is_run_of(summary, None, {k: v for k, v in committed.items() if k not in WHERE_KEYS})  # the summary's recipe decides


def is_seed_set_of(command, name):
    """True for `python -m nnhw.train configs/<name>.toml --seeds LIST`, with --reuse or overrides of where
    the runs went (WHERE_KEYS) at most: a seed set of the config as committed."""
    words = command.split()
    if words[:4] != run_command_of(name).split() or len(words) < 5:
        return False
    seeds, rest = 0, words[4:]
    while rest:
        word, rest = rest[0], rest[1:]
        if word == "--seeds" and rest and re.fullmatch(r"[0-9,]+", rest[0]):
            seeds, rest = seeds + 1, rest[1:]
        elif re.fullmatch(r"--seeds=[0-9,]+", word):
            seeds += 1
        elif word != "--reuse" and word.partition("=")[0] not in WHERE_KEYS:
            return False
    return seeds == 1


def without_where(command):
    """A command with its overrides of where the runs went (WHERE_KEYS) left out: a path of the machine
    they ran on is no part of what they compute."""
    return " ".join(w for w in command.split() if w.partition("=")[0] not in WHERE_KEYS)


def latest_seeds(dirs, name, run_dir, recipe):
    """The newest seed set of the run in run_dir, whose recipe is `recipe`: one whose own recipe is that
    one, run.seed aside, or for a set made before sets kept their recipe, one of configs/<name>.toml as
    committed (is_seed_set_of) that holds the run itself. None when there is none."""
    remake = f"{run_command_of(name)} --seeds 0,1,2"

    def of_this_run(path):
        agg = read_json(path, {"command": str}, remake)
        if isinstance(agg.get("recipe"), dict):
            shared = {k: v for k, v in identity.recorded(agg["recipe"]).items() if k != "run.seed"}  # the set's recipe, seeds aside
            return shared == {k: v for k, v in recipe.items() if k != "run.seed"}
        runs = agg.get("runs") if isinstance(agg.get("runs"), list) else []
        return (is_seed_set_of(agg["command"].strip(), name)
                and any(isinstance(r, dict) and Path(str(r.get("run_dir"))).name == run_dir.name for r in runs))

    return newest(p for d in dirs for p in (Path(d) / name).glob("seeds_*.json") if of_this_run(p))


def is_plain_sweep_of(command, name):
    """True for `python -m nnhw.sweep configs/<name>.toml`, with overrides of where its runs went (WHERE_KEYS)
    at most: the sweep of the config as committed, over the default grid and budget."""
    words = command.split()
    return words[:4] == sweep_command_of(name).split() and all(
        w.partition("=")[0] in WHERE_KEYS for w in words[4:])


def latest_sweep(dirs, name):
    """The newest plain sweep of configs/<name>.toml (is_plain_sweep_of): a sweep over another grid, budget or
    config answers another question, and a quick one run to look must not replace the hand-in's."""
    def plain(path):
        try:
            command = json.loads(path.read_text()).get("command")
        except (OSError, ValueError, AttributeError):
            return True  # damaged: taken, so that reading it names the damage and how to remake it
        return not isinstance(command, str) or is_plain_sweep_of(command.strip(), name)

    return newest(p.parent for d in dirs for p in (Path(d) / f"{name}-sweep").glob("*/sweep.json") if plain(p))


def read_run(run_dir, name):
    """Everything the report reads of one finished run, checked: summary, history, config, figures and
    what its pictured weights do (from its checkpoint, or from the readout.json kept in its place)."""
    remake = run_command_of(name)
    check_digests(run_dir, remake)
    summary = read_json(run_dir / "summary.json", SUMMARY, remake)
    if summary["best_dev_error"] is not None and (shape_error(summary["final"], {"dev_error": NUM}, "final") or summary["best_dev_epoch"] is None
                                                  or summary["test_error_at_best_dev"] is None):
        raise InputError(f"{run_dir / 'summary.json'} has a best dev error but no final dev error or no test error there; remake it with: {remake}")
    for first in (summary.get("time_to_accuracy") or {}).values():
        if first is not None and shape_error(first, {"epoch": NUM, "train_seconds": NUM}, "time_to_accuracy"):
            raise InputError(f"{run_dir / 'summary.json'}: time_to_accuracy is not what nnhw.train writes; remake it with: {remake}")
    history = read_json(run_dir / "history.json", [{k: NUM for k in HISTORY_KEYS}], remake)
    try:
        cfg = config_mod.load(run_dir / "config.toml")
    except ConfigError as e:
        raise InputError(f"{e}; remake the run with: {remake}") from None
    for fig in FIGURES:
        check_png(run_dir / f"{fig}.png", remake)
    if (run_dir / CHECKPOINT).is_file():
        try:
            lines, sentence = readout_text(load_checkpoint(run_dir)["params"])
        except RunError as e:
            raise InputError(f"{e}; remake the run with: {remake}") from None
    else:
        kept = read_json(run_dir / "readout.json", READOUT, remake)
        lines, sentence = kept["lines"], kept["summary"]
    return dict(dir=run_dir, summary=summary, history=history, cfg=cfg, readout=(lines, sentence))


def gather(name, log_dir, out):
    """The newest finished plain run of configs/<name>.toml with its seed set and sweep, all checked;
    None when there is no such run."""
    dirs = [Path(log_dir), Path(out) / KEPT]  # the log folder first, then the runs kept beside the report
    check_kept_folders(Path(out) / KEPT, name)
    run_dir = latest_run(dirs, name)
    if run_dir is None:
        return None
    run = read_run(run_dir, name)
    seeds_path = latest_seeds(dirs, name, run_dir, identity.start_recipe(run["summary"], run["cfg"]))
    sweep_dir = latest_sweep(dirs, name)
    run["seeds_path"], run["sweep_dir"] = seeds_path, sweep_dir
    run["seeds"] = None if seeds_path is None else read_json(seeds_path, SEEDS, f"{run_command_of(name)} --seeds 0,1,2")
    run["sweep"] = None
    if sweep_dir is not None:
        remake = sweep_command_of(name)
        check_digests(sweep_dir, remake)
        run["sweep"] = read_json(sweep_dir / "sweep.json", SWEEP, remake)
        check_png(sweep_dir / "sweep.png", remake)
    return run


def read_extras(out):
    """The theory, autodiff, complexity and speed outputs in the report folder, each checked; None
    for one that is not there."""
    out = Path(out)
    theory, autodiff = out / "theory", out / "autodiff.json"
    extras = dict(theory=None, theory_txt=None, autodiff=None, autodiff_txt=None, complexity=None, bench=[])
    if (theory / "theory.json").is_file():
        remake = "python -m nnhw.theory --out reports/theory > reports/theory.txt"
        extras["theory"] = read_json(theory / "theory.json", dict, remake)
        why = next((w for k, c in extras["theory"].items() if (w := shape_error(c, THEORY_CLAIM, f"theory.json[{k!r}]"))), None)
        if why:
            raise InputError(f"{theory / 'theory.json'} is not what nnhw.theory writes ({why}); remake it with: {remake}")
        if (theory / "gd_rates.png").exists():
            check_png(theory / "gd_rates.png", remake)
    if autodiff.is_file():
        remake = "python -m nnhw.autodiff --full --out reports > reports/autodiff.txt"
        extras["autodiff"] = read_json(autodiff, AUTODIFF, remake)
        if (out / "autodiff_cost.png").exists():
            check_png(out / "autodiff_cost.png", remake)
    for key, path in (("theory_txt", out / "theory.txt"), ("autodiff_txt", out / "autodiff.txt")):
        if path.is_file():
            try:
                extras[key] = path.read_text()
            except (OSError, UnicodeDecodeError) as e:
                raise InputError(f"cannot read {path} ({type(e).__name__}); remake it with its command (README)") from None
    if (out / "complexity.json").is_file():
        extras["complexity"] = read_json(out / "complexity.json", COMPLEXITY, "python tools/complexity.py")
    for path in sorted(out.glob("bench-*.json")):
        extras["bench"].append(read_json(path, BENCH, "python tools/bench.py --out 'reports/bench-{device}.json'"))
    return extras


def replace_folder(src, dest):
    """Move the folder src to dest, replacing what is there, with renames only."""
    trash = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    if dest.exists():
        os.replace(dest, trash)
    os.replace(src, dest)
    shutil.rmtree(trash, ignore_errors=True)


def keep(name, run, out):
    """Copy what the report read of a run, its seed set and its sweep into <out>/runs/ (see KEPT), each
    through a temporary folder renamed into place; a copy already there is left as it is."""
    kept = Path(out) / KEPT
    targets = [(run["dir"], kept / name / run["dir"].name, KEPT_FILES)]
    if run["sweep_dir"] is not None:
        targets.append((run["sweep_dir"], kept / f"{name}-sweep" / run["sweep_dir"].name, ["sweep.json", "sweep.png"]))
    for src, dest, files in targets:
        if src.resolve() == dest.resolve():  # read back from where it is kept
            if not (dest / DIGESTS).is_file():
                write_digests(dest)  # kept before folders had digests: checked just now, as it is
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            tmp.mkdir()
            for f in files:
                shutil.copyfile(src / f, tmp / f)
            if src == run["dir"]:
                lines, sentence = run["readout"]
                (tmp / "readout.json").write_text(json.dumps(dict(lines=lines, summary=sentence), indent=1) + "\n")
            write_digests(tmp)
            replace_folder(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    seeds = run["seeds_path"]
    if seeds is not None and seeds.resolve() != (kept / name / seeds.name).resolve():
        tmp = kept / name / f".{seeds.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copyfile(seeds, tmp)
            os.replace(tmp, kept / name / seeds.name)
        finally:
            tmp.unlink(missing_ok=True)
