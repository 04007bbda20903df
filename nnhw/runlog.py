"""What a run shows: the console, TensorBoard's curves, the model summary, and the HParams row.

Every run folder is one row on TensorBoard's HParams page. The row's summaries
(experiment, session start and end) and its metrics are written through the run's
own folder, into one event file, `events.out.tfevents.hparams`, which is replaced
whole when a resumed run ends: the row is updated, never doubled, and no extra
sub-run is made (torch's SummaryWriter.add_hparams makes one per call).
"""

import os
import re
import sys
import tempfile
from pathlib import Path

from . import config as config_mod
from . import layers
from .data import IMAGE_SIDE

HPARAMS_FILE = "events.out.tfevents.hparams"  # sorts after the run's timestamped event files


class Log:
    """TensorBoard writers (one per split, with the same tags, and one for the run) and the console:
    a progress bar on a terminal, one line per evaluation otherwise. Silent on torchrun ranks > 0."""

    def __init__(self, run_dir, splits, resumed_at, total, active):
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.active = active
        purge = resumed_at + 1 if resumed_at is not None else None  # TensorBoard hides what came after the checkpoint
        self.writers = {s: SummaryWriter(str(run_dir / s), purge_step=purge) for s in splits} if active else {}
        if active:
            self.writers["run"] = SummaryWriter(str(run_dir), purge_step=purge)
        self.bar = None
        if active and sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=resumed_at or 0, unit="pt", unit_scale=True, dynamic_ncols=True)

    def scalar(self, writer, tag, value, step):
        if self.active:
            self.writers[writer].add_scalar(tag, value, step)

    def text(self, tag, text):
        if self.active:
            self.writers["run"].add_text(tag, text, 0)

    def charts(self, layout):
        """TensorBoard's Custom Scalars page: charts that each hold several tags."""
        if self.active:
            self.writers["run"].add_custom_scalars(layout)

    def say(self, text):
        if self.active:
            self.bar.write(text) if self.bar is not None else print(text, flush=True)

    def advance(self, n):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        for w in self.writers.values():
            w.close()


def eval_line(row, splits):
    """One evaluation, in fixed-width columns."""
    return f"epoch {row['epoch']:8.3f}  lr {row['lr']:9.3e}  " + "  ".join(
        f"{s} loss {row[f'{s}_loss']:7.4f} err {row[f'{s}_error']:6.2f}%" for s in splits)


def model_summary(model):
    """The model summary as text lines: each layer (layers.summary_rows), then the totals."""
    rows = layers.summary_rows(model)
    total_params, total_macs = sum(r[2] for r in rows), sum(r[3] for r in rows)
    w = max(len(r[0]) for r in rows) + 2
    lines = [f"{'layer':<{w}}{'output':>12}{'parameters':>14}{'multiply-adds':>16}  (per 1x{IMAGE_SIDE}x{IMAGE_SIDE} image)"]
    lines += [f"{name:<{w}}{shape:>12}{n:>14,}{macs:>16,}" for name, shape, n, macs in rows]
    running = sum(model.running.values())
    lines.append(f"{'total':<{w}}{'':>12}{total_params:>14,}{total_macs:>16,}" + (f"  (and {running:,} running averages)" if running else ""))
    return lines


def run_slug(overrides):
    """A run id's suffix that says which overrides ran: 'model.transfer=tanh optim.lr=0.05' ->
    'transfer-tanh_lr-0.05' (letters, digits, '.', '_', '-' only; the whole overrides that fit in 60
    characters, none cut in the middle)."""
    parts = []
    for text in overrides:
        key, _, value = text.partition("=")
        key = key.strip().rsplit(".", 1)[-1]
        if key in ("log_dir", "root", "name"):
            continue  # where the run goes, not what it is
        value = "".join(c if c.isalnum() or c in "._-" else "-" for c in value.strip().strip("\"'"))
        parts.append(f"{key}-{re.sub('-+', '-', value).strip('-')}")
    slug = ""
    for part in parts:  # whole key-value parts only, as many as fit in 60 characters
        if len(slug) + len(part) + bool(slug) > 60:
            break
        slug += ("_" if slug else "") + part
    return (slug or (parts[0][:60] if parts else "")).strip("_-.")  # one override longer than all: its start


def hparams_of(cfg, overrides=""):
    """The run's HParams row: every key of its recipe (config.recipe: what makes it the run it is; lists
    as text), its config's name, its overrides and the model in one line (layers.one_line)."""
    hp = dict(config=cfg.run.name, overrides=overrides or "none", model=layers.one_line(layers.describe(cfg.model)))
    for key, value in config_mod.recipe(cfg).items():
        hp[key] = (",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "none") if isinstance(value, list) else value
    return hp


def metrics_of(summary):
    """The summary's results, as the HParams row's metrics (tags under hparams/)."""
    f = summary["final"]
    metrics = {f"hparams/final_{k}": v for k, v in f.items()}
    metrics.update({
        "hparams/lowest_test_error": summary["lowest_test_error"],
        "hparams/train_seconds": summary["train_seconds"],
        "hparams/eval_seconds": summary["eval_seconds"],
    })
    if summary["best_dev_error"] is not None:
        metrics["hparams/best_dev_error"] = summary["best_dev_error"]
        metrics["hparams/test_error_at_best_dev"] = summary["test_error_at_best_dev"]
    if summary.get("sharpness"):
        metrics["hparams/sharpness_peak"] = summary["sharpness"]["peak"]["value"]
        metrics["hparams/sharpness_seconds"] = summary["sharpness_seconds"]
    if (summary.get("time_to_accuracy") or {}).get("99%"):
        metrics["hparams/seconds_to_99"] = summary["time_to_accuracy"]["99%"]["train_seconds"]
    return metrics


def write_hparams(run_dir, hparams, metrics, status, step=0):
    """The run's HParams row in <run_dir>/events.out.tfevents.hparams, replaced whole."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    run_dir = Path(run_dir)
    exp, ssi, sei = hparams_summaries(dict(status=status, **hparams), metrics)
    with tempfile.TemporaryDirectory(dir=run_dir, prefix=".hparams-") as tmp:
        with SummaryWriter(tmp) as w:
            for summary in (exp, ssi, sei):
                w.file_writer.add_summary(summary)
            for tag, value in metrics.items():
                w.add_scalar(tag, value, step)
        (events,) = Path(tmp).glob("events.out.tfevents.*")
        os.replace(events, run_dir / HPARAMS_FILE)
