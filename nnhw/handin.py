"""reports/REPORT.pdf: the homework handed in, typeset with Typst from the same runs as REPORT.md.

`nnhw/handin.typ` holds the written answers in the homework's order. This module
gathers every number they quote, from what nnhw.inputs read and checked, into one
JSON document, which the template reads through `sys.inputs.data`:
  - each run's parameters, errors and figures (the runs that REPORT.md uses);
  - what the 8 pictured hidden units (or filters) do, read off the run's weights;
  - the learning-rate sweeps, the theory checks (theory/theory.json), the
    reverse/forward-mode values and cost table (autodiff.json), the measured
    costs of 2.1 (complexity.json);
  - problem 0 from reports/student.toml, which only the student writes;
  - the code: every file of nnhw/, configs/, tools/ and examples/, and the table of
    commands (nnhw.describe.COMMANDS, which the README's table equals).
Typst runs with a fixed timestamp and only its bundled fonts (and the font files a
student puts in reports/fonts/ for a name in a script those lack: student.toml is
checked for characters no font at hand draws), so the same runs give a
byte-identical PDF.
"""

import datetime
import inspect
import json
import tomllib
import unicodedata
from pathlib import Path

from . import PROJECT_ROOT, layers, sharpness
from .describe import COMMANDS, QUESTIONS, parameter_rows, pct, seeds_text, short_commit, show, sweep_rates
from .command import NnhwError
from .inputs import reproduce_command

TEMPLATE = Path(__file__).with_name("handin.typ")
STUDENT_FILE = "student.toml"
STUDENT_KEYS = ("name", "collaborators", "acknowledgements", "certification")
CERTIFICATION = "I have read and understood these policies"

# The code section: (path, the problems it serves), in an order that runs (each module after the
# ones it imports). Files not listed come last.
CODE = [
    ("nnhw/__init__.py", "the package"),
    ("nnhw/command.py", "every command (how it ends: one line for bad input, the exit codes, signals)"),
    ("nnhw/functions/__init__.py", "3, 4, 6 (every transfer function, loss and layer, with both hand-written derivatives); 2.2, 2.3"),
    ("nnhw/functions/shared.py", "3, 4, 6 (what every Function shares)"),
    ("nnhw/functions/transfer.py", "3, 4, 6 (sigmoid, tanh, ReLU, identity, square); 2.2, 2.3"),
    ("nnhw/functions/affine.py", "3, 4 (a layer's affine map)"),
    ("nnhw/functions/losses.py", "3, 4 (softmax cross-entropy, squared error)"),
    ("nnhw/functions/convolution.py", "6 (convolution, pooling, flattening)"),
    ("nnhw/functions/dropout.py", "4.3, 6 (dropout)"),
    ("nnhw/functions/batch_norm.py", "6 and beyond (batch normalisation)"),
    ("nnhw/tape.py", "3, 4.1, 4.2 (reverse mode run by nnhw itself); 5"),
    ("nnhw/data.py", "3, 4, 6 (MNIST, the train/dev/test splits)"),
    ("nnhw/layers.py", "4, 6 (the model described once: its layers)"),
    ("nnhw/config.py", "3, 4, 6 (the configs and their checks)"),
    ("nnhw/models.py", "3, 4, 6 (the forward passes, initialisation, augmentation)"),
    ("nnhw/optim.py", "3, 4, 6 (momentum SGD, Adam, L2, max-norm, learning-rate schedules)"),
    ("nnhw/hessian.py", "7.4, beyond the homework (Hessian-vector products, the sharpness)"),
    ("nnhw/dist.py", "3, 4, 6 (training over several processes; idle in a plain run)"),
    ("nnhw/device.py", "3, 4, 6 (the device, how it rounds, and whether a model fits)"),
    ("nnhw/rundir.py", "3, 4, 6 (run folders, atomic writes, the lock, the commit)"),
    ("nnhw/checkpoint.py", "3, 4, 6 (checkpoints and resuming)"),
    ("nnhw/evaluate.py", "3, 4, 6 (evaluation)"),
    ("nnhw/sharpness.py", "7.4, beyond the homework (the sharpness where training goes)"),
    ("nnhw/trainer.py", "3, 4, 6 (assembling a run, one training step, the run's state)"),
    ("nnhw/identity.py", "every number (what a run is a run of)"),
    ("nnhw/summary.py", "3 (d), 4.1.5, 4.2.5, 4.3.5, 6 (a run's results, the seeds' mean +- std)"),
    ("nnhw/runlog.py", "3, 4, 6 (the console, TensorBoard, the HParams row)"),
    ("nnhw/plot.py", "3 (b)-(c), 4.1.3-4.1.6, 4.2.3-4.2.6, 4.3.3-4.3.4, 6 (the figures)"),
    ("nnhw/committee.py", "4.3, 6 and beyond (several runs' softmax outputs averaged: the seeds' committee)"),
    ("nnhw/sweep.py", "4.1.2, 4.2.2 (the learning-rate threshold)"),
    ("nnhw/at_commit.py", "every number (a run's first steps as its own commit computes them here)"),
    ("nnhw/replay.py", "every number (does the code at hand still compute each run?)"),
    ("nnhw/seeds.py", "every number (seed sets: mean +- std, the committee)"),
    ("nnhw/train.py", "3, 4, 6 (the training loop and its command line)"),
    ("nnhw/describe.py", "the report (how numbers and configs are written)"),
    ("nnhw/theory.py", "2.2, 2.3, 7 (the live checks)"),
    ("nnhw/autodiff.py", "5.1, 5.2, 5.3"),
    ("nnhw/readout.py", "4.1.6, 4.2.6, 6 (what the pictured weights do)"),
    ("nnhw/inputs.py", "the report (the runs and outputs it reads, checked first, and kept)"),
    ("nnhw/tables.py", "the README's results tables, from the runs"),
    ("nnhw/handin.py", "the report (this PDF)"),
    ("nnhw/handin.typ", "the report (this PDF's text)"),
    ("nnhw/report.py", "the report (REPORT.md)"),
    *((f"configs/{name}.toml", question) for question, name, _ in QUESTIONS),
    *((f"configs/{name}.toml", "7.4, beyond the homework") for name in sharpness.CONFIGS + sharpness.ADAM_CONFIGS),
    ("examples/minimal.py", "4 (the whole idea in one short script)"),
    ("tools/complexity.py", "2.1 (the measured costs)"),
    ("tools/fingerprint_at.py", "every number (the fingerprints of runs made before runs recorded one)"),
    ("tools/replay_tolerance.py", "every number (the replay's tolerance, measured)"),
    ("tools/timing.py", "speed (not a homework question): what the benchmarks share"),
    ("tools/twin.py", "speed (not a homework question): the model in built-in layers, that nnhw is timed against"),
    ("tools/bench.py", "speed (not a homework question)"),
    ("tools/time_to_99.py", "speed (not a homework question): seconds to 99% test accuracy"),
    ("tools/hvp_cost.py", "7.4, beyond the homework (what a Hessian-vector product costs)"),
    ("tools/gpu_check.sh", "speed on a GPU (not a homework question)"),
]
LANGS = {".py": "python", ".toml": "toml", ".sh": "bash", ".typ": "typc"}


# --------------------------------------------------------------------------- #
# The data the template reads                                                 #
# --------------------------------------------------------------------------- #


def _g(x, digits=4):
    return f"{x:.{digits}g}"


def run_data(name, question, run, root):
    """Everything one question's answer quotes from its run, as strings; `missing` when there is no run."""
    if run is None:
        return dict(name=name, question=question, missing=f"python -m nnhw.train configs/{name}.toml")
    from .plot import LOSS_NAMES, curve_splits, error_threshold

    s, cfg = run["summary"], run["cfg"]
    final = s["final"]
    lines, summary = run["readout"]
    history = run["history"]
    first_99 = (s.get("time_to_accuracy") or {}).get("99%")
    d = dict(
        name=name,
        question=question,
        missing=None,
        run_id=run["dir"].name,
        commit=short_commit(s["git_commit"]),
        flag=run.get("flag") or None,  # nnhw.report's replay check: None when the run replays as the same
        command=reproduce_command(s, name),
        device=s["device"],
        params=[list(r) for r in parameter_rows(cfg)],
        loss_name=LOSS_NAMES[cfg.model.loss],
        curves=" and ".join(curve_splits(history)),
        error_from=f"{error_threshold(cfg):g}%",
        evaluations=str(len(history)),
        every=f"{cfg.eval.every:,}",
        final_test=pct(final["test_error"], None),
        final_train=pct(final["train_error"], None),
        final_dev=pct(final.get("dev_error"), None),
        lowest_test=pct(s["lowest_test_error"], None),
        lowest_epoch=f"{s['lowest_test_epoch']:.2f}",
        test_at_best_dev=pct(s["test_error_at_best_dev"], None),
        best_dev=pct(s["best_dev_error"], None),
        best_dev_epoch=None if s["best_dev_epoch"] is None else f"{s['best_dev_epoch']:.2f}",
        train_minutes=f"{s['train_seconds'] / 60:.1f}",
        eval_minutes=f"{s['eval_seconds'] / 60:.1f}",
        first_99=None if not first_99 else f"epoch {first_99['epoch']:.2f}, after {first_99['train_seconds']:.1f} s of training",
        seeds=seeds_text(run.get("seeds")),
        figures={fig: f"/{name}/{fig}.png" for fig in ("loss", "error", "weights") if (root / name / f"{fig}.png").is_file()},
        readout=lines,
        readout_summary=summary,
        sweep=None,
    )
    if cfg.model.arch == "cnn":
        d["cnn"] = dict(layers=cnn_sentence(layers.describe(cfg.model)))
    sw = run.get("sweep")
    if sw is not None:
        threshold, diverging = sweep_rates(sw)
        d["sweep"] = dict(
            threshold=threshold,
            diverging=diverging,
            rule=sw["rule"],
            command=sw["command"],
            figure=f"/{name}/sweep.png" if (root / name / "sweep.png").is_file() else None,
        )
    return d


def cnn_sentence(model):
    """The CNN's layers in one sentence, in the forward pass's order (layers.operations)."""
    convs = [layer for layer in model.layers if layer.kind == "conv"]
    hidden = [layer.width for layer in model.layers if layer.kind == "fc"][:-1]
    steps = "; ".join(f"{layer.name}: {' -> '.join(layers.operations(layer))}" for layer in convs)
    return (f"{len(convs)} convolution layers with {', '.join(str(layer.width) for layer in convs)} output channels ({steps}); then fully "
            f"connected hidden layers of {', '.join(map(str, hidden)) or 'no'} units and 10 outputs.")


def theory_data(t, root):
    if t is None:
        return None
    fmt = {}
    for number, result in t.items():
        fmt[number] = dict(holds=result["holds"], values=[[k, show(v)] for k, v in result.items() if k not in ("holds", "claim", "rows")],
                           rows=[[[k, show(v)] for k, v in r.items()] for r in result.get("rows", [])])
    xor = t.get("2.3.2")
    return dict(claims=fmt, xor=None if xor is None else {k: show(v) for k, v in xor.items()},
                figure="/theory/gd_rates.png" if (root / "theory" / "gd_rates.png").is_file() else None)


def autodiff_data(a, root):
    from . import autodiff

    code = dict(reverse=_function_source(autodiff.reverse_mode), forward=_function_source(autodiff.forward_mode))
    if a is None:
        return dict(code=code, missing="python -m nnhw.autodiff --full --out reports > reports/autodiff.txt")
    rows = [dict(d=str(r["d"]), forward=f"{r['forward_s']:.5f}", reverse=f"{r['reverse_s']:.6f}", ratio=f"{r['ratio']:.1f}",
                 per_d=f"{r['ratio'] / r['d']:.3f}") for r in a["cost_table"]]
    return dict(
        code=code,
        missing=None,
        command=a["command"].strip(),
        point=f"({_g(a['w1'])}, {_g(a['w2'])})",
        trace=[_g(z, 10) for z in a["trace"]],
        reverse=[_g(a["reverse"][k], 12) for k in ("f", "df_dw1", "df_dw2")],
        forward=[_g(a["forward"][k], 12) for k in ("f", "df_dw1", "df_dw2")],
        autograd=[_g(a["autograd"][k], 12) for k in ("f", "df_dw1", "df_dw2")],
        largest_relative_difference=f"{a['largest_relative_difference']:.1e}",
        cost_table=rows,
        repeats=str(a.get("repeats", 1)),
        slope=f"{a['cost_fit']['slope']:.2f}" if "cost_fit" in a else None,
        r2=f"{a['cost_fit']['r2']:.3f}" if "cost_fit" in a else None,
        figure="/autodiff_cost.png" if (root / "autodiff_cost.png").is_file() else None,
    )


def _function_source(fn):
    """The body of fn as it runs (the tests check this code), without its docstring."""
    lines = inspect.getsource(fn).splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().endswith('"""') and i > 1) + 1  # after the docstring
    return "\n".join([lines[0], *lines[start:]])


def complexity_data(c):
    if c is None:
        return None
    fits = {k: dict(ps=f"{1e12 * f['seconds_per_multiply_add']:.2f}", r2=f"{f['r2']:.4f}") for k, f in c["fits"].items()}
    ratios = sorted(r["forward_backward_s"] / r["top_gradient_s"] for r in c["rows"])
    backward_over_forward = sorted(r["backward_s"] / r["forward_s"] for r in c["rows"])
    return dict(
        command=c["command"].strip(),
        threads=str(c["threads"]),
        points=str(len(c["rows"])),
        fits=fits,
        full_over_top=f"{ratios[len(ratios) // 2]:.2f}",
        full_over_top_range=f"{ratios[0]:.2f}-{ratios[-1]:.2f}",
        backward_over_forward=f"{backward_over_forward[len(backward_over_forward) // 2]:.2f}",
    )


class StudentFileError(NnhwError, ValueError):
    """reports/student.toml cannot be read; the message is one line."""


FONTS = "fonts"  # <out>/fonts/: font files the student adds for a name in a script the bundled fonts lack
# What Typst's bundled fonts draw, measured by tools/bundled_glyphs.py: {ranges: [[first, last], ...] of code
# points, skipped_categories: the Unicode categories it did not measure (spaces, controls, combining marks)}
BUNDLED = json.loads(Path(__file__).with_name("bundled_glyphs.json").read_text())


def covered_by_fonts(folder):
    """The code points the font files (.ttf, .otf, .ttc) in `folder` draw, read from their character maps."""
    from fontTools.ttLib import TTCollection, TTFont  # matplotlib's own dependency

    points = set()
    for path in sorted(Path(folder).glob("*")):
        if path.suffix.lower() not in (".ttf", ".otf", ".ttc"):
            continue
        try:
            fonts = TTCollection(path).fonts if path.suffix.lower() == ".ttc" else [TTFont(path, lazy=True)]
            for font in fonts:
                points |= set(font.getBestCmap() or {})
        except Exception:  # noqa: BLE001 - fontTools raises many kinds for a file that is no font
            raise StudentFileError(f"{path} is not a font file that can be read; remove it from {folder}") from None
    return points


def check_glyphs(student, out):
    """StudentFileError naming the characters of student.toml that neither Typst's bundled fonts nor a
    font in <out>/fonts/ draw: the PDF would show empty boxes for them."""
    text = "".join(v for k, v in student.items() if k in STUDENT_KEYS and v)
    missing = sorted({c for c in text if unicodedata.category(c) not in BUNDLED["skipped_categories"]
                      and not any(lo <= ord(c) <= hi for lo, hi in BUNDLED["ranges"])})
    if missing and (Path(out) / FONTS).is_dir():
        drawn = covered_by_fonts(Path(out) / FONTS)
        missing = [c for c in missing if ord(c) not in drawn]
    if missing:
        shown = " ".join(f"{c} (U+{ord(c):04X})" for c in missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise StudentFileError(f"{Path(out) / STUDENT_FILE}: the PDF's fonts have no glyph for {shown}; put a font that has them "
                               f"(a .ttf or .otf file, such as Noto Sans CJK for Chinese, Japanese or Korean) into {Path(out) / FONTS}/")


def student_data(out):
    """Problem 0 from <out>/student.toml, or marked blanks. Nothing is ever filled in for the student.
    StudentFileError (one line) for a file that cannot be read, or a character no font at hand draws."""
    path = out / STUDENT_FILE
    if not path.is_file():
        return dict(present=False, file=str(path), **{k: None for k in STUDENT_KEYS})
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StudentFileError(f"{path} is not valid TOML ({e})") from None
    unknown = sorted(set(raw) - set(STUDENT_KEYS))
    if unknown:
        raise StudentFileError(f"{path}: unknown key {unknown[0]!r}; the keys are {', '.join(STUDENT_KEYS)}")
    d = dict(present=True, file=str(path))
    for key in STUDENT_KEYS:
        v = raw.get(key)
        if isinstance(v, list):
            v = "; ".join(str(x) for x in v)
        d[key] = None if v is None or str(v).strip() == "" else str(v).strip()
    check_glyphs(d, out)
    d["fonts"] = str((Path(out) / FONTS).resolve()) if (Path(out) / FONTS).is_dir() else None
    return d


def code_data():
    listed = [p for p, _ in CODE]
    patterns = ("nnhw/*.py", "nnhw/functions/*.py", "nnhw/*.typ", "configs/*.toml", "examples/*.py", "tools/*")
    present = sorted(str(p.relative_to(PROJECT_ROOT)) for pattern in patterns for p in PROJECT_ROOT.glob(pattern) if p.is_file())
    order = [p for p in listed if p in present] + [p for p in present if p not in listed]
    serves = dict(CODE)
    return [dict(path=p, serves=serves.get(p, "support"), lang=LANGS.get(Path(p).suffix, "text"), text=(PROJECT_ROOT / p).read_text())
            for p in order]


def sharpness_data(sharp, root):
    """7.4: the sharpness runs' table, sentences and figure; the commands of those not run yet."""
    facts = [(f, run) for name, run in sharp if run is not None and (f := sharpness.facts(name, run)) is not None]
    return dict(
        missing=[f"python -m nnhw.train configs/{name}.toml" for name, run in sharp if run is None],
        rows=[[f["name"], _g(f["lr"]), _g(f["one_over_lr"], 3), _g(f["threshold"], 3), _g(f["start"], 3), f"{_g(f['low'], 3)} ({f['low_step']})", f"{_g(f['high'], 3)} ({f['high_step']})",
               _g(f["end"], 3), f"{f['below_one_over_lr']} of {f['measurements']}", _g(f["end_loss"]), short_commit(run["summary"]["git_commit"])]
              for f, run in facts],
        sentences=sharpness.sentences([f for f, _ in facts]),
        steps=facts[0][0]["steps"] if facts else None, every=facts[0][0]["every_steps"] if facts else None,
        figure="/sharpness.png" if (root / "sharpness.png").is_file() else None,
    )


def adam_data(adam, root):
    """7.4 continued: the Adam runs' table, sentences and figures; the commands of those not run yet."""
    facts = [(f, run) for name, run in adam if run is not None and (f := sharpness.adam_facts(name, run)) is not None]

    def trace(t):
        return "n/a" if t is None else f"{_g(t['value'])} ± {_g(t['stderr'], 2)}"

    return dict(
        missing=[f"python -m nnhw.train configs/{name}.toml" for name, run in adam if run is None],
        rows=[[f["name"], _g(f["lr"]), _g(f["threshold"]), f"{_g(f['start'], 3)} ({f['start_step']})", "never" if f["near_step"] is None else str(f["near_step"]),
               f"{f['last_third_of_threshold']:.2f}", _g(f["end"], 3), _g(f["plain_start"], 3), _g(f["plain_end"], 3),
               trace(f["trace_first"]), trace(f["trace_last"]), short_commit(run["summary"]["git_commit"])] for f, run in facts],
        sentences=sharpness.adam_sentences([f for f, _ in facts]),
        steps=facts[0][0]["steps"] if facts else None, every=facts[0][0]["every_steps"] if facts else None,
        figure="/adam_sharpness.png" if (root / "adam_sharpness.png").is_file() else None,
        density="/adam_density.png" if (root / "adam_density.png").is_file() else None,
    )


def document_data(runs, extras, student, root):
    """runs: [(question, name, run or None)] in the homework's order."""
    return dict(
        student=student,
        runs={name: run_data(name, question, run, root) for question, name, run in runs},
        theory=theory_data(extras["theory"], root),
        autodiff=autodiff_data(extras["autodiff"], root),
        complexity=complexity_data(extras["complexity"]),
        sharpness=sharpness_data(extras.get("sharpness") or [(name, None) for name in sharpness.CONFIGS], root),
        adam=adam_data(extras.get("adam") or [(name, None) for name in sharpness.ADAM_CONFIGS], root),
        code=code_data(),
        howto=[list(row) for row in COMMANDS],
        questions=[dict(question=q, name=name, what=what) for q, name, what in QUESTIONS],
    )


def render_pdf(runs, extras, student, root):
    """REPORT.pdf's bytes, typeset with Typst; the figures are read from the folder `root` (the report's
    build folder). Needs the `typst` package (a dependency)."""
    import typst

    root = Path(root).resolve()
    data = json.dumps(document_data(runs, extras, student, root), sort_keys=True)
    try:
        return typst.compile(
            TEMPLATE.read_bytes(),
            root=str(root),
            sys_inputs={"data": data},
            font_paths=[student["fonts"]] if student and student.get("fonts") else [],  # <out>/fonts/, when the student added one
            ignore_system_fonts=True,  # only typst's bundled fonts (and those): the same PDF on every machine
            timestamp=datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc),
        )
    except typst.TypstError as e:  # the inputs were checked; this is nnhw's template or Typst itself
        raise RuntimeError(f"Typst could not build REPORT.pdf: {' '.join(str(e).split())[:300]}") from None
