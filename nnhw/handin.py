"""reports/REPORT.pdf: the homework handed in, typeset with Typst from the same runs as REPORT.md.

`nnhw/handin.typ` holds the written answers in the homework's order. This module
gathers every number they quote into one JSON document, which the template reads
through `sys.inputs.data`:
  - each run's parameters, errors and figures (the runs that REPORT.md uses);
  - what the 8 pictured hidden units (or filters) do, read off the run's weights;
  - the learning-rate sweeps, the theory checks (theory/theory.json), the
    reverse/forward-mode values and cost table (autodiff.json), the measured
    costs of 2.1 (complexity.json);
  - problem 0 from reports/student.toml, which only the student writes;
  - the code: every file of nnhw/, configs/ and tools/, and the README's commands.
Typst runs with a fixed timestamp and only its bundled fonts, so the same runs
give a byte-identical PDF.
"""

import datetime
import json
import math
import tomllib
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).with_name("handin.typ")
STUDENT_FILE = "student.toml"
STUDENT_KEYS = ("name", "collaborators", "acknowledgements", "certification")
CERTIFICATION = "I have read and understood these policies"

# The code section: (path pattern, the problems it serves), in an order that runs
# (each module after the ones it imports). Files not listed come last.
CODE = [
    ("nnhw/__init__.py", "the package"),
    ("nnhw/functions.py", "3, 4, 6 (every transfer function and loss, with its hand-written derivative); 2.2, 2.3"),
    ("nnhw/tape.py", "3, 4.1, 4.2 (reverse mode run by nnhw itself); 5"),
    ("nnhw/config.py", "3, 4, 6 (the configs and their checks)"),
    ("nnhw/data.py", "3, 4, 6 (MNIST, the train/dev/test splits)"),
    ("nnhw/models.py", "3, 4, 6 (the forward passes, initialisation, augmentation)"),
    ("nnhw/optim.py", "3, 4, 6 (momentum SGD, L2, learning-rate schedules)"),
    ("nnhw/dist.py", "3, 4, 6 (training over several processes; idle in a plain run)"),
    ("nnhw/plot.py", "3 (b)-(c), 4.1.3-4.1.6, 4.2.3-4.2.6, 4.3.3-4.3.4, 6 (the figures)"),
    ("nnhw/train.py", "3, 4, 6 (the training loop, evaluation, logging)"),
    ("nnhw/sweep.py", "4.1.2, 4.2.2 (the learning-rate threshold)"),
    ("nnhw/theory.py", "2.2, 2.3, 7 (the live checks)"),
    ("nnhw/autodiff.py", "5.1, 5.2, 5.3"),
    ("nnhw/report.py", "the report (REPORT.md)"),
    ("nnhw/handin.py", "the report (this PDF)"),
    ("nnhw/handin.typ", "the report (this PDF's text)"),
    ("configs/softmax.toml", "3"),
    ("configs/sigmoid.toml", "4.1"),
    ("configs/relu.toml", "4.2"),
    ("configs/wide.toml", "4.3 (wide)"),
    ("configs/deep.toml", "4.3 (deep)"),
    ("configs/mlp_aug.toml", "4.3 (augmented)"),
    ("configs/cnn.toml", "6"),
    ("configs/cnn_aug.toml", "6 (augmented)"),
    ("configs/fast.toml", "6 (fast)"),
    ("tools/complexity.py", "2.1 (the measured costs)"),
    ("tools/bench.py", "speed (not a homework question)"),
    ("tools/gpu_check.sh", "speed on a GPU (not a homework question)"),
]
LANGS = {".py": "python", ".toml": "toml", ".sh": "bash", ".typ": "typc"}
POOLING_NAMES = {"avg": "average", "max": "max"}  # model.pool_type -> words, in REPORT.md and the PDF


# --------------------------------------------------------------------------- #
# What the pictured units do, from the run's weights                          #
# --------------------------------------------------------------------------- #


def _centre_share(w):
    """Share of a 28x28 weight picture's |w| mass in the central 20x20 box (51% of the pixels)."""
    a = w.abs().reshape(28, 28)
    return (a[4:24, 4:24].sum() / a.sum().clamp_min(1e-30)).item()


def hidden_unit_readout(params, n=8):
    """For hidden units 1..n of the first layer: where their input weights lie, and (one hidden layer)
    which digits their output weights vote for."""
    w1 = params["W1"].float()
    votes = params["W2"].float() if params["W2"].shape[0] == 10 else None  # only when layer 2 is the output
    units = []
    for j in range(n):
        u = dict(unit=j + 1, centre=_centre_share(w1[j]), positive=(w1[j].clamp_min(0).sum() / w1[j].abs().sum()).item())
        if votes is not None:
            col = votes[:, j]
            u.update(top=int(col.argmax()), top_weight=col.max().item(), bottom=int(col.argmin()), bottom_weight=col.min().item())
        units.append(u)
    return units


def filter_readout(params, n=8):
    """For the first n first-layer filters: the dominant gradient direction (structure tensor) and how
    coherent it is (1: one clean edge, 0: no preferred direction)."""
    out = []
    for j, f in enumerate(params["Wc1"].float().mean(dim=1)[:n]):
        gx, gy = (f[:, 1:] - f[:, :-1])[:-1], (f[1:, :] - f[:-1, :])[:, :-1]
        jxx, jyy, jxy = (gx * gx).sum().item(), (gy * gy).sum().item(), (gx * gy).sum().item()
        angle = math.degrees(0.5 * math.atan2(2 * jxy, jxx - jyy)) % 180  # 0: left-right change, 90: up-down
        coherence = math.hypot(jxx - jyy, 2 * jxy) / max(jxx + jyy, 1e-30)
        edge = ["a vertical edge", "a diagonal edge", "a horizontal edge", "a diagonal edge"][int(((angle + 22.5) % 180) // 45)]
        out.append(dict(unit=j + 1, angle=angle, coherence=coherence, edge=edge, mean_sign=(f.sum() / f.abs().sum()).item()))
    return out


def readout_text(params):
    """Lines describing the pictured weights, and one summary sentence, all from the numbers."""
    if "Wc1" in params:
        rows = filter_readout(params)
        lines = [
            f"filter {r['unit']}: " + (f"{r['edge']} (gradient at {r['angle']:.0f} degrees, coherence {r['coherence']:.2f})"
                                       if r["coherence"] >= 0.5 else f"no single direction (coherence {r['coherence']:.2f})")
            + (f"; {'mostly positive' if r['mean_sign'] > 0 else 'mostly negative'}, a blob detector" if abs(r["mean_sign"]) > 0.5 else "")
            for r in rows
        ]
        oriented = sum(r["coherence"] >= 0.5 for r in rows)
        summary = (f"{oriented} of the {len(rows)} filters have one clear direction (coherence at least 0.5): they respond to stroke edges "
                   f"at that angle, as the first layer of a CNN usually learns; the others respond to blobs or corners.")
        return lines, summary
    if "W2" not in params:  # softmax regression: row l is the template of class l
        w = params["W1"].float()
        shares = [_centre_share(w[l]) for l in range(w.shape[0])]
        lines = [f"digit {l}: {100 * s:.0f}% of |w| in the central 20x20 box" for l, s in enumerate(shares)]
        summary = (f"Row l of W scores class l, so each picture is a template of digit l: bright where the digit's strokes push "
                   f"its score up, dark where strokes of other digits do. Between {100 * min(shares):.0f}% and {100 * max(shares):.0f}% "
                   f"of each template's weight mass lies in the central 20x20 box, where the digits are.")
        return lines, summary
    rows = hidden_unit_readout(params)
    lines = []
    for r in rows:
        text = f"unit {r['unit']}: {100 * r['centre']:.0f}% of |w| in the central 20x20 box, {100 * r['positive']:.0f}% of it positive"
        if "top" in r:
            text += f"; votes for digit {r['top']} ({r['top_weight']:+.2f}) and against digit {r['bottom']} ({r['bottom_weight']:+.2f})"
        lines.append(text)
    centre = [r["centre"] for r in rows]
    summary = (f"The pictures are not whole digits. Each unit weighs {100 * min(centre):.0f}-{100 * max(centre):.0f}% of its input mass "
               f"on the central 20x20 box (51% of the pixels), in bright (positive) and dark (negative) patches: "
               f"it fires for strokes in the bright places and is held back by strokes in the dark ones, a local stroke detector.")
    if "top" in rows[0]:
        summary += (" The output layer turns these detectors into classes: the digit a unit votes for is the one whose strokes "
                    "cover its bright patches, and no unit decides a class on its own.")
    return lines, summary


def run_readout(run_dir):
    """readout_text of a run's weights: from its checkpoint, or, for a run the report keeps without one,
    from the readout.json it wrote in its place (nnhw.report.keep)."""
    if (run_dir / "checkpoint.pt").is_file():
        return readout_text(torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["params"])
    kept = json.loads((run_dir / "readout.json").read_text())
    return kept["lines"], kept["summary"]


# --------------------------------------------------------------------------- #
# The data the template reads                                                 #
# --------------------------------------------------------------------------- #


def _pct(x):
    return None if x is None else f"{x:.2f}%"


def _g(x, digits=4):
    return f"{x:.{digits}g}"


def run_data(name, question, run, out):
    """Everything one question's answer quotes from its run, as strings; `missing` when there is no run."""
    if run is None:
        return dict(name=name, question=question, missing=f"python -m nnhw.train configs/{name}.toml")
    from .plot import LOSS_NAMES, curve_splits, error_threshold
    from .report import parameter_rows, short_commit

    s, cfg = run["summary"], run["cfg"]
    final = s["final"]
    lines, summary = run_readout(run["dir"])
    history = json.loads((run["dir"] / "history.json").read_text())
    first_99 = (s.get("time_to_accuracy") or {}).get("99%")
    d = dict(
        name=name,
        question=question,
        missing=None,
        run_id=run["dir"].name,
        commit=short_commit(s["git_commit"]),
        command=s["command"],
        device=s["device"],
        params=[list(r) for r in parameter_rows(cfg)],
        loss_name=LOSS_NAMES[cfg.model.loss],
        curves=" and ".join(curve_splits(history)),
        error_from=f"{error_threshold(cfg):g}%",
        evaluations=str(len(history)),
        every=f"{cfg.eval.every:,}",
        final_test=_pct(final["test_error"]),
        final_train=_pct(final["train_error"]),
        final_dev=_pct(final.get("dev_error")),
        lowest_test=_pct(s["lowest_test_error"]),
        lowest_epoch=f"{s['lowest_test_epoch']:.2f}",
        test_at_best_dev=_pct(s["test_error_at_best_dev"]),
        best_dev=_pct(s["best_dev_error"]),
        best_dev_epoch=None if s["best_dev_epoch"] is None else f"{s['best_dev_epoch']:.2f}",
        train_minutes=f"{s['train_seconds'] / 60:.1f}",
        eval_minutes=f"{s['eval_seconds'] / 60:.1f}",
        first_99=None if not first_99 else f"epoch {first_99['epoch']:.2f}, after {first_99['train_seconds']:.1f} s of training",
        seeds=seeds_text(run.get("seeds")),
        figures={fig: f"/{name}/{fig}.png" for fig in ("loss", "error", "weights") if (out / name / f"{fig}.png").is_file()},
        readout=lines,
        readout_summary=summary,
        sweep=None,
    )
    if cfg.model.arch == "cnn":
        m = cfg.model
        d["cnn"] = dict(
            channels=", ".join(str(c) for c in m.conv_channels),
            kernels=", ".join(f"{k}x{k}" for k in m.conv_kernel),
            padding=str(m.conv_padding),
            pool=f"{m.pool}x{m.pool}",
            pooling=POOLING_NAMES[m.pool_type],
            order="its transfer, then" if m.pool_type == "avg" else "max pooling, then its transfer (the same as the other way round for a nondecreasing transfer)",
            stride=str(m.pool_stride),
            hidden=", ".join(str(h) for h in m.hidden),
        )
    sw = run.get("sweep")
    if sw is not None:
        d["sweep"] = dict(
            threshold="none on the grid" if sw["threshold_lr"] is None else f"{sw['threshold_lr']:g}",
            diverging="none on the grid" if sw["diverging_lr"] is None else f"{sw['diverging_lr']:g}",
            rule=sw["rule"],
            command=sw["command"],
            figure=f"/{name}/sweep.png" if (out / name / "sweep.png").is_file() else None,
        )
    return d


def _read_json(path):
    return json.loads(path.read_text()) if path.is_file() else None


def theory_data(out):
    t = _read_json(out / "theory" / "theory.json")
    if t is None:
        return None
    fmt = {}
    for number, result in t.items():
        fmt[number] = dict(holds=result["holds"], values=[[k, _show(v)] for k, v in result.items() if k not in ("holds", "claim", "rows")],
                           rows=[[[k, _show(v)] for k, v in r.items()] for r in result.get("rows", [])])
    xor = t.get("2.3.2")
    return dict(claims=fmt, xor=None if xor is None else {k: _show(v) for k, v in xor.items()},
                figure="/theory/gd_rates.png" if (out / "theory" / "gd_rates.png").is_file() else None)


def _show(v):
    """A value as the report prints it: 4 significant digits, lists as [a, b], integers as they are."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "0" if v == 0 else _g(v)
    if isinstance(v, list):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return str(v)


def autodiff_data(out):
    from . import autodiff

    a = _read_json(out / "autodiff.json")
    code = dict(reverse=_function_source(autodiff.reverse_mode), forward=_function_source(autodiff.forward_mode))
    if a is None:
        return dict(code=code, missing="python -m nnhw.autodiff > reports/autodiff.txt")
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
        figure="/autodiff_cost.png" if (out / "autodiff_cost.png").is_file() else None,
    )


def _function_source(fn):
    """The body of fn as it runs (the tests check this code), without its docstring."""
    import inspect

    lines = inspect.getsource(fn).splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().endswith('"""') and i > 1) + 1  # after the docstring
    return "\n".join([lines[0], *lines[start:]])


def complexity_data(out):
    c = _read_json(out / "complexity.json")
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


class StudentFileError(ValueError):
    """reports/student.toml cannot be read; the message is one line."""


def student_data(out):
    """Problem 0 from <out>/student.toml, or marked blanks. Nothing is ever filled in for the student."""
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
    return d


def code_data():
    listed = [p for p, _ in CODE]
    present = sorted(str(p.relative_to(REPO)) for pattern in ("nnhw/*.py", "nnhw/*.typ", "configs/*.toml", "tools/*") for p in REPO.glob(pattern) if p.is_file())
    order = [p for p in listed if p in present] + [p for p in present if p not in listed]
    serves = dict(CODE)
    return [dict(path=p, serves=serves.get(p, "support"), lang=LANGS.get(Path(p).suffix, "text"), text=(REPO / p).read_text())
            for p in order]


def howto_rows():
    """The README's commands table: (command, what it does)."""
    readme = (REPO / "README.md").read_text().splitlines()
    rows, inside = [], False
    for line in readme:
        if line.startswith("## "):
            inside = line.strip() == "## Commands"
        elif inside and line.startswith("| `"):
            command, what = line.strip("| ").split(" | ", 1)
            rows.append([command.strip("`").split("` ")[0].strip("`"), what.rstrip(" |").replace("`", "")])
    return rows


def seeds_text(seeds):
    """One sentence on a --seeds set: mean +- std of the final and lowest test errors, the commits."""
    from .report import mean_std, short_commit

    if seeds is None:
        return None
    st = seeds["stats"]
    text = (f"over seeds {', '.join(map(str, seeds['seeds']))}: final test error {mean_std(st['final_test_error'])}; "
            f"lowest, chosen on the test set, {mean_std(st['lowest_test_error'])}")
    if st["seconds_to_99"]:
        text += f"; 99% test accuracy after {mean_std(st['seconds_to_99'], ' s')} of training"
    return text + f" (commit {', '.join(short_commit(c) for c in seeds['git_commits'])})"


def document_data(runs, out):
    """runs: [(question, name, run or None)] in the homework's order."""
    return dict(
        student=student_data(out),
        runs={name: run_data(name, question, run, out) for question, name, run in runs},
        theory=theory_data(out),
        autodiff=autodiff_data(out),
        complexity=complexity_data(out),
        code=code_data(),
        howto=howto_rows(),
    )


def write_pdf(runs, out):
    """Typeset <out>/REPORT.pdf; returns its path. Needs the `typst` package (a dependency)."""
    import typst

    out = Path(out).resolve()
    data = json.dumps(document_data(runs, out), sort_keys=True)
    pdf = typst.compile(
        TEMPLATE.read_bytes(),
        root=str(out),
        sys_inputs={"data": data},
        ignore_system_fonts=True,  # only typst's bundled fonts: the same PDF on every machine
        timestamp=datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc),
    )
    path = out / "REPORT.pdf"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pdf)
    tmp.replace(path)
    return path
