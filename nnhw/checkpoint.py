"""What a checkpoint holds, and how a run is saved, loaded and resumed.

A checkpoint is data, never code: a dict of tensors and plain values written with
torch.save and read back with torch.load(weights_only=True), then checked key by key.
Everything in it besides the tensors and the random generators' states lives in one
`TrainState`; the tensors and the random streams are the trainer's, which saves and
restores them (trainer.Trainer.checkpoint and .restore). A resume on the same device ends
with the same parameters as an uninterrupted run, bit for bit.

A run's identity is fixed when it starts and only added to: the recipe it started with
(TrainState.start_config), the commit that started it (TrainState.commit), and for every
resume its commit, the keys it changed and how (TrainState.changes).
"""

import io
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import config as config_mod
from .config import ConfigError
from .rundir import RunError, atomic_write_bytes

CHECKPOINT = "checkpoint.pt"
FORMAT = 3  # 3: the optimiser's state under "optimizer" (2 called it "velocity"), and the fingerprint
# What the checkpoint's tensors, permutation or meaning depend on: a resume cannot change these.
FROZEN_ON_RESUME = ("model.", "optim.optimizer", "optim.ema", "data.train_split", "data.standardize", "data.train_points", "data.bag", "run.seed", "run.name", "run.log_dir", "train.batch_size")
# key -> the types a checkpoint's value may have
CHECKPOINT_KEYS = {
    "format": int, "config": dict, "params": dict, "optimizer": dict, "order_rng": torch.Tensor, "noise_rng": torch.Tensor,
    "perm": torch.Tensor, "points": int, "step": int, "pos": int, "history": list, "train_seconds": (int, float),
    "eval_seconds": (int, float),
}
HISTORY_KEYS = ("points", "epoch", "train_loss", "train_error", "test_loss", "test_error")  # in every history row


@dataclass
class TrainState:
    """Where the run is: everything a checkpoint holds besides the tensors and random generators."""

    points: int = 0  # training points touched
    step: int = 0  # updates made
    pos: int = 0  # position in the current pass's permutation
    perm: torch.Tensor | None = None  # the current pass's order (CPU int64); None before the first pass
    history: list = field(default_factory=list)  # one row per evaluation
    changes: list = field(default_factory=list)  # what each resume changed, and at how many points
    overrides: list = field(default_factory=list)  # the command line's section.key=value: with config_file, what the run is a run of
    config_file: str | None = None  # the config file the run started from, as given; None for a run made through the API
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    sharpness_seconds: float = 0.0  # eval.sharpness_every's measurements
    fingerprint: dict = field(default_factory=dict)  # the first steps' losses, then checksums (trainer.Trainer)
    commit: str = "unknown"  # the code that started the run; each resume's commit goes into its entry of `changes`
    start_config: dict | None = None  # config.to_dict of the config that made the first steps; None in checkpoints made before

    def fields(self):
        """The bookkeeping as a checkpoint keeps it, beside the trainer's tensors."""
        return dict(
            perm=torch.zeros(0, dtype=torch.int64) if self.perm is None else self.perm,
            points=self.points, step=self.step, pos=self.pos, history=self.history, changes=self.changes, overrides=self.overrides,
            train_seconds=self.train_seconds, eval_seconds=self.eval_seconds, sharpness_seconds=self.sharpness_seconds,
            fingerprint=self.fingerprint, config_file=self.config_file, commit=self.commit, start_config=self.start_config,
        )

    @classmethod
    def from_checkpoint(cls, ckpt):
        perm = ckpt["perm"]
        # a checkpoint written before fingerprints, past its first step, cannot start one now
        fingerprint = ckpt.get("fingerprint") or ({} if ckpt["step"] == 0 else {"checksums": None})
        return cls(
            points=ckpt["points"], step=ckpt["step"], pos=ckpt["pos"], perm=perm if perm.numel() else None,
            history=list(ckpt["history"]), changes=list(ckpt.get("changes", [])), overrides=as_list(ckpt.get("overrides", [])),
            train_seconds=float(ckpt["train_seconds"]), eval_seconds=float(ckpt["eval_seconds"]), fingerprint=dict(fingerprint),
            sharpness_seconds=float(ckpt["sharpness_seconds"]) if isinstance(ckpt.get("sharpness_seconds"), (int, float)) else 0.0,
            config_file=ckpt.get("config_file") if isinstance(ckpt.get("config_file"), str) else None,
            commit=ckpt["commit"] if isinstance(ckpt.get("commit"), str) else "unknown",
            # made before checkpoints kept it: the config it holds, when no resume has changed that since
            start_config=ckpt["start_config"] if isinstance(ckpt.get("start_config"), dict) else None if ckpt.get("changes") else ckpt["config"],
        )


def as_list(overrides):
    """A checkpoint's overrides: a list of 'section.key=value'; format 2 kept them joined by spaces."""
    if isinstance(overrides, str):
        return overrides.split() if overrides else []
    return [str(o) for o in overrides] if isinstance(overrides, list) else []


def save_checkpoint(run_dir, ckpt):
    """Serialised in memory first, then written whole (rundir.atomic_write_bytes)."""
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    atomic_write_bytes(Path(run_dir) / CHECKPOINT, buffer.getvalue())


def load_checkpoint(run_dir):
    """The checkpoint dict, read as data only (weights_only) and checked key by key; RunError otherwise."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise RunError(f"no checkpoint at {path}: --resume takes a run folder that nnhw.train wrote")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle before refusing it: the refusal is the message
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RunError(f"cannot read the checkpoint {path}: it holds objects other than tensors and plain values, "
                       "which nnhw never writes; it was not loaded") from None
    except Exception:
        raise RunError(f"cannot read the checkpoint {path}: it is empty, truncated or not a checkpoint") from None
    if not isinstance(ckpt, dict):
        raise RunError(f"cannot read the checkpoint {path}: it holds a {type(ckpt).__name__}, not an nnhw checkpoint")
    fmt = ckpt.get("format")
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise RunError(f"cannot read the checkpoint {path}: its format is a {type(fmt).__name__}, not a number; it was not written by nnhw")
    if fmt == 2 and "velocity" in ckpt:  # the one earlier format: its optimiser state had another name
        ckpt["optimizer"], ckpt["format"] = ckpt.pop("velocity"), FORMAT
    if ckpt.get("format") != FORMAT:
        raise RunError(f"cannot read the checkpoint {path}: its format is {ckpt.get('format')!r}, and this nnhw reads "
                       f"format {FORMAT} (and 2); it was written by another version of nnhw")
    for key, types in CHECKPOINT_KEYS.items():
        if key not in ckpt:
            raise RunError(f"cannot read the checkpoint {path}: no {key!r} in it (not written by nnhw.train)")
        if not isinstance(ckpt[key], types) or isinstance(ckpt[key], bool):
            raise RunError(f"cannot read the checkpoint {path}: {key!r} is a {type(ckpt[key]).__name__}")
    ckpt.setdefault("running", {})  # written before batch normalisation: no running averages
    if not isinstance(ckpt["running"], dict):
        raise RunError(f"cannot read the checkpoint {path}: 'running' is a {type(ckpt['running']).__name__}")
    for key in ("params", "optimizer", "running"):
        if not all(isinstance(t, torch.Tensor) for t in ckpt[key].values()):
            raise RunError(f"cannot read the checkpoint {path}: {key!r} holds something other than tensors")
    average = ckpt.get("average")  # optim.ema: {'params': ..., 'running': ...}
    if average is not None and not (isinstance(average, dict) and all(
            isinstance(average.get(part), dict) and all(isinstance(t, torch.Tensor) for t in average[part].values()) for part in ("params", "running"))):
        raise RunError(f"cannot read the checkpoint {path}: 'average' is not a weight average's parameters and running averages")
    if min(ckpt["points"], ckpt["step"], ckpt["pos"]) < 0:
        raise RunError(f"cannot read the checkpoint {path}: negative progress counters")
    if not all(isinstance(row, dict) and all(k in row for k in HISTORY_KEYS) for row in ckpt["history"]):
        raise RunError(f"cannot read the checkpoint {path}: its history has rows without {', '.join(HISTORY_KEYS)}")
    return ckpt


def evaluated_weights(ckpt):
    """(params, running) that evaluation reads from a checkpoint: the weight average's when the run kept
    one (optim.ema), else the trained ones."""
    weights = ckpt.get("average") or ckpt
    return weights["params"], weights["running"]


def resume_config(saved, overrides):
    """(config, {key: (before, after)} of what changed) for a resume: the saved config with the overrides
    that a resume may apply. ConfigError names a key that cannot change, before anything is written."""
    try:
        old = config_mod.from_dict(saved)
    except ConfigError as e:
        raise RunError(f"the checkpoint's config is not valid: {e}") from None
    new = config_mod.apply_overrides(config_mod.from_dict(saved), overrides)
    before, after = config_mod.flatten(old), config_mod.flatten(new)
    changed = {k: (before[k], after[k]) for k in after if after[k] != before[k]}
    for key in changed:
        if key.startswith(FROZEN_ON_RESUME):
            raise ConfigError(f"{key}: cannot change on --resume (the checkpoint's tensors, data order or run folder depend on it); "
                              "start a new run with it instead")
    return new, changed


def resume_entry(points, commit, changed):
    """A resume as the run's `changes` keep it: where it resumed, the code that resumed it, the keys it
    changed, and how, in words."""
    return dict(points=points, commit=commit, keys=sorted(changed), change=", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()))
