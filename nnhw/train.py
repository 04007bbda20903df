"""`python -m nnhw.train CONFIG [section.key=value ...]`: train one model, log it, checkpoint it.

The loop (`run`, at the bottom) is flat: set the learning rate, take the next batch,
step, advance, and every `eval.every` training points evaluate train, dev and test,
log to TensorBoard and write a checkpoint. Everything a checkpoint holds besides
the tensors lives in one `TrainState`. `--resume RUN_DIR` continues a run from its
checkpoint and, on the same device, ends with the same parameters as an
uninterrupted run, bit for bit.

Two ways of counting progress, each with one name:
  effective epochs = training points touched / 50,000 (the homework's x-axis, `epoch` in the history);
  passes           = training points touched / the training split's size (what `train.epochs` counts).
"""

import argparse
import sys

EXIT_CONFIG = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(EXIT_CONFIG, f"nnhw.train: error: {message} (see --help)\n")


def build_parser():
    p = _Parser(
        prog="python -m nnhw.train",
        description="Train one model from a TOML config; logs go to <run.log_dir>/<run.name>/<run id>/.",
    )
    p.add_argument("config", nargs="?", help="the TOML config, for example configs/relu.toml")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides in TOML value syntax, e.g. optim.lr=0.05")
    p.add_argument("--seeds", metavar="LIST", help="train once per seed, e.g. --seeds 0,1,2 (each a run of its own, with run.seed "
                   "set), then write the mean, std, min and max of the results to <run.log_dir>/<run.name>/seeds_<time>_<seeds>.json")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint "
                   "(overrides of the epochs, learning rate, schedule, evaluation and device apply)")
    return p


if __name__ == "__main__":
    import signal as _signal

    def _quit(signum, frame):  # Ctrl-C while the modules below load, before main() runs: no traceback
        print("nnhw.train: interrupted while starting", file=sys.stderr)
        sys.exit(130)

    _signal.signal(_signal.SIGINT, _quit)
    build_parser().parse_intermixed_args()  # --help and usage errors answer at once, before torch loads

import fcntl
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import config as config_mod
from . import data as data_mod
from . import dist as dist_mod
from . import models
from . import runlog
from .config import ConfigError
from .data import DataError
from .optim import Adam, MomentumSGD, lr_at
from .tape import Tape

CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT; SIGTERM gives 143, SIGHUP 129
DIVERGENCE_FACTOR = 10.0  # a training loss above this many times its initial value is divergence
# What the checkpoint's tensors, permutation or meaning depend on: a resume cannot change these.
FROZEN_ON_RESUME = ("model.", "optim.optimizer", "data.train_split", "data.standardize", "run.seed", "run.name", "run.log_dir", "train.batch_size")


class RunError(RuntimeError):
    """The run cannot start or continue; the message is one line."""


class Diverged(RuntimeError):
    pass


def effective_epochs(points):
    return points / data_mod.N_TRAIN


def passes(points, n_train):
    return points / n_train


# --------------------------------------------------------------------------- #
# Run folder: files written atomically, one writer at a time                  #
# --------------------------------------------------------------------------- #


def make_run_dir(log_dir, name, slug=""):
    """<log_dir>/<name>/<run id>, the id a time stamp and the slug of the overrides (if any); mkdir
    is atomic, so two runs started at once never share one."""
    parent = Path(log_dir) / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S") + (f"_{slug}" if slug else "")
        for i in range(1000):
            run_dir = parent / (stamp if i == 0 else f"{stamp}-{i}")
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                continue
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunError(f"cannot write the log folder {parent}: {e.strerror or e}; set run.log_dir to a writable folder") from None
    return run_dir


def atomic_write_bytes(path, write):
    """write(f) into a temporary file of this writer's own, fsync, then rename over path: a crash or a
    full disk leaves the old file whole, and the temporary file is removed on any failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise RunError(f"cannot write {path} in {path.parent}: {(e.strerror or str(e)).lower()}; the last good files stay") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path, text):
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


class RunLock:
    """An exclusive lock on <run_dir>/.lock for the life of the run: a second writer stops at once."""

    def __init__(self, run_dir):
        self.path = None if run_dir is None else Path(run_dir) / LOCK  # None: no lock (torchrun ranks > 0)
        self.file = None

    def __enter__(self):
        if self.path is None:
            return self
        try:
            self.file = open(self.path, "a+")
        except OSError as e:
            raise RunError(f"cannot write the run folder {self.path.parent}: {(e.strerror or str(e)).lower()}") from None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise RunError(f"{self.path.parent} is in use by another nnhw.train; wait for it to end (or stop it) before resuming") from None
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()


def git_commit():
    """HEAD, with '-dirty' when the code or configs that make a result (runlog.result_paths: nnhw/ but
    the report's builders, and configs/) differ from it; edits elsewhere (the README, reports/) do not
    move a result."""
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *runlog.result_paths()],
                               cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"run.device: {name!r} asked for, but CUDA is not available here; use 'auto' or 'cpu'")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"run.device: {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def describe_device(device):
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


# --------------------------------------------------------------------------- #
# Assembling a model: the one way train, sweep, bench and the tests do it     #
# --------------------------------------------------------------------------- #


def check_memory(cfg, device):
    """Stop before allocating a model that cannot fit: parameters, gradients, velocity and the
    checkpoint's copy, 4 bytes each, plus one batch's activations."""
    n_params = sum(math.prod(shape) for shape, _, _ in models.param_shapes(cfg.model).values())
    widths = sum(cfg.model.hidden) + models.N_CLASSES + models.N_PIXELS
    if cfg.model.arch == "cnn":
        widths += sum(c * 28 * 28 for c in cfg.model.conv_channels)
    need = 4 * (4 * n_params + 3 * max(cfg.train.batch_size, cfg.eval.batch_size) * widths)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > free:
        raise ConfigError(
            f"model: {n_params:,} parameters need about {need / 2**30:.1f} GiB (parameters, gradients, velocity, "
            f"a checkpoint copy and a batch's activations), more than the {free / 2**30:.1f} GiB free on {device.type}; "
            "use smaller model.hidden or batch sizes"
        )
    return n_params


def build(cfg, device):
    """(params, forward, loss_fn, opt) for cfg on device."""
    check_memory(cfg, device)
    params = models.init_params(cfg.model, cfg.run.seed, device)
    o = cfg.optim
    if o.optimizer == "adam":
        opt = Adam(params, o.momentum, o.beta2, o.eps, o.l2, o.l2_bias, o.max_norm)
    else:
        opt = MomentumSGD(params, o.momentum, o.l2, o.l2_bias, o.max_norm)
    return params, models.make_forward(cfg.model), models.make_loss(cfg.model), opt


@torch.no_grad()
def evaluate(params, forward, loss_fn, split, batch_size, world=None):
    """Average loss and misclassification % over a whole split, in large batches.
    Under torchrun each process evaluates its shard and one all-reduce adds them up."""
    world = world or dist_mod.World()
    lo, hi = world.shard(len(split))
    totals = torch.zeros(2, device=split.x.device, dtype=torch.float64)  # loss sum, mistakes
    for i in range(lo, hi, batch_size):
        x, y = split.x[i : min(i + batch_size, hi)], split.y[i : min(i + batch_size, hi)]
        out = forward(params, x)
        totals[0] += loss_fn(out, y).double() * len(y)
        totals[1] += (out.argmax(dim=1) != y).sum()
    loss_sum, wrong = world.sum(totals).tolist()
    n = len(split)
    return loss_sum / n, 100.0 * wrong / n


def make_train_step(params, forward, loss_fn, opt, world=None, engine="autograd", compile=False):
    """step(x, y, lr, generator=None, share=1.0) -> loss: forward, hand-written backward, momentum
    update. No host synchronisation: the loss comes back as a tensor. Under torchrun, x is this
    process's shard, `share` its fraction of the global batch, and the gradients are all-reduced.
    engine 'autograd' lets torch.autograd call the Functions' backward; 'tape' calls them itself."""
    tensors = list(params.values())
    world = world or dist_mod.World()

    def forward_loss(x, y, generator):
        return loss_fn(forward(params, x, generator), y)

    if compile:
        forward_loss = torch.compile(forward_loss)

    def step(x, y, lr, generator=None, share=1.0):
        if len(y) and engine == "tape":
            tape = Tape(tensors)
            loss = loss_fn(forward(params, x, generator, tape.apply), y, tape.apply)
            grads = tape.gradients(loss, tensors)
        elif len(y):
            loss = forward_loss(x, y, generator)
            grads = torch.autograd.grad(loss, tensors)
        else:  # an empty shard (a global batch smaller than the world) adds nothing
            loss, grads = None, [torch.zeros_like(t) for t in tensors]
        grads = world.reduce_gradients(grads, share)
        opt.step(grads, lr)
        return loss

    return step


# --------------------------------------------------------------------------- #
# The run's state, and its checkpoint                                         #
# --------------------------------------------------------------------------- #

# key -> the types a checkpoint's value may have
CHECKPOINT_KEYS = {
    "format": int, "config": dict, "params": dict, "velocity": dict, "order_rng": torch.Tensor, "noise_rng": torch.Tensor,
    "perm": torch.Tensor, "points": int, "step": int, "pos": int, "history": list, "train_seconds": (int, float),
    "eval_seconds": (int, float),
}


@dataclass
class TrainState:
    """Where the run is: everything a checkpoint holds besides the tensors and random generators."""

    points: int = 0  # training points touched
    step: int = 0  # updates made
    pos: int = 0  # position in the current pass's permutation
    perm: torch.Tensor | None = None  # the current pass's order (CPU int64); None before the first pass
    history: list = field(default_factory=list)  # one row per evaluation
    changes: list = field(default_factory=list)  # what each resume changed, and at how many points
    overrides: str = ""  # the overrides the run started with, for its HParams row
    train_seconds: float = 0.0
    eval_seconds: float = 0.0

    def to_checkpoint(self, cfg, params, opt, order, noise):
        return dict(
            format=2,
            config=config_mod.to_dict(cfg),
            params={n: p.detach().cpu() for n, p in params.items()},
            velocity={n: v.cpu() for n, v in opt.state_dict().items()},
            order_rng=order.get_state(),
            noise_rng=noise.get_state(),
            noise_device=noise.device.type,
            perm=torch.zeros(0, dtype=torch.int64) if self.perm is None else self.perm,
            points=self.points, step=self.step, pos=self.pos, history=self.history, changes=self.changes, overrides=self.overrides,
            train_seconds=self.train_seconds, eval_seconds=self.eval_seconds,
        )

    @classmethod
    def from_checkpoint(cls, ckpt):
        perm = ckpt["perm"]
        return cls(
            points=ckpt["points"], step=ckpt["step"], pos=ckpt["pos"], perm=perm if perm.numel() else None,
            history=list(ckpt["history"]), changes=list(ckpt.get("changes", [])), overrides=str(ckpt.get("overrides", "")),
            train_seconds=float(ckpt["train_seconds"]), eval_seconds=float(ckpt["eval_seconds"]),
        )


def save_checkpoint(run_dir, ckpt):
    atomic_write_bytes(Path(run_dir) / CHECKPOINT, lambda f: torch.save(ckpt, f))


def load_checkpoint(run_dir):
    """The checkpoint dict, read as data only (weights_only) and checked key by key; RunError otherwise."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise RunError(f"no checkpoint at {path}: --resume takes a run folder that nnhw.train wrote")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RunError(f"cannot read the checkpoint {path}: it holds objects other than tensors and plain values, "
                       "which nnhw never writes; it was not loaded") from None
    except Exception:
        raise RunError(f"cannot read the checkpoint {path}: it is empty, truncated or not a checkpoint") from None
    if not isinstance(ckpt, dict):
        raise RunError(f"cannot read the checkpoint {path}: it holds a {type(ckpt).__name__}, not an nnhw checkpoint")
    for key, types in CHECKPOINT_KEYS.items():
        if key not in ckpt:
            raise RunError(f"cannot read the checkpoint {path}: no {key!r} in it (not written by nnhw.train)")
        if not isinstance(ckpt[key], types) or isinstance(ckpt[key], bool):
            raise RunError(f"cannot read the checkpoint {path}: {key!r} is a {type(ckpt[key]).__name__}")
    for key in ("params", "velocity"):
        if not all(isinstance(t, torch.Tensor) for t in ckpt[key].values()):
            raise RunError(f"cannot read the checkpoint {path}: {key!r} holds something other than tensors")
    if min(ckpt["points"], ckpt["step"], ckpt["pos"]) < 0:
        raise RunError(f"cannot read the checkpoint {path}: negative progress counters")
    return ckpt


def restore(ckpt, path, params, opt, order, noise, seed, state):
    """Load the checkpoint's tensors and random streams into a freshly built run."""
    for name, fresh in (("params", params), ("velocity", opt.state_dict())):
        saved = ckpt[name]
        if set(saved) != set(fresh) or any(saved[n].shape != t.shape for n, t in fresh.items()):
            raise RunError(f"{path}: its {name} do not fit the config's model and optimiser (was the checkpoint edited?)")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(ckpt["params"][n])
    opt.load_state_dict(ckpt["velocity"])
    try:
        order.set_state(ckpt["order_rng"])
    except RuntimeError:
        raise RunError(f"{path}: its data-order random state is not a CPU generator's") from None
    try:
        noise.set_state(ckpt["noise_rng"])
    except RuntimeError:  # written on another kind of device: derive a fresh stream from the seed and the step
        noise.manual_seed(seed + 2 + 1_000_003 * (state.step + 1))
        state.changes.append(dict(points=state.points, change=f"dropout/augmentation random stream re-seeded on {noise.device.type} "
                                                             f"(checkpoint from another device)"))


class Batches:
    """The training split in this pass's shuffled order, one batch after another."""

    def __init__(self, split, order, device):
        self.split, self.order, self.device = split, order, device
        self.x = self.y = None

    def next(self, state, batch_size, total_points):
        n = len(self.split)
        if state.perm is None or state.pos >= n:  # a new pass: a fresh permutation
            state.perm, state.pos, self.x = torch.randperm(n, generator=self.order), 0, None
        if self.x is None:  # this pass's data in its order, gathered once on the device
            idx = state.perm.to(self.device)
            self.x, self.y = self.split.x[idx], self.split.y[idx]
        b = min(batch_size, n - state.pos, total_points - state.points)
        return self.x[state.pos : state.pos + b], self.y[state.pos : state.pos + b]  # (b, 784), (b,)


# --------------------------------------------------------------------------- #
# Logging, evaluation, signals                                                #
# --------------------------------------------------------------------------- #


def evaluate_and_log(state, lr, params, forward, loss_fn, splits, batch_size, log, world):
    """Evaluate every split, log it, add a history row. Diverged if the training loss is not finite
    or is above DIVERGENCE_FACTOR times its first value."""
    t0 = time.perf_counter()
    row = dict(points=state.points, epoch=effective_epochs(state.points), lr=lr, train_seconds=round(state.train_seconds, 3))
    for name, split in splits.items():
        loss, err = evaluate(params, forward, loss_fn, split, batch_size, world)
        row[f"{name}_loss"], row[f"{name}_error"] = loss, err
        log.scalar(name, "loss", loss, state.points)
        log.scalar(name, "error", err, state.points)
    log.scalar("run", "lr", lr, state.points)
    state.history.append(row)
    state.eval_seconds += time.perf_counter() - t0
    log.say(runlog.eval_line(row, splits))
    first = state.history[0]["train_loss"]
    if not math.isfinite(row["train_loss"]) or row["train_loss"] > DIVERGENCE_FACTOR * first:
        why = "became" if not math.isfinite(row["train_loss"]) else f"rose above {DIVERGENCE_FACTOR:g}x its initial {first:.4g}, to"
        raise Diverged(f"the training loss {why} {row['train_loss']:.4g} by step {state.step} (epoch {row['epoch']:.3f}) "
                       f"at learning rate {lr:.6g}; lower optim.lr")
    return row


class Interrupt:
    """SIGINT, SIGTERM and SIGHUP become a flag that the loop reads between steps, so the state stays
    whole; a second signal gives up at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.signum = None
        self._old = {}

    @property
    def requested(self):
        return self.signum is not None

    def __enter__(self):
        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.signum = signum

        try:
            self._old = {s: signal.signal(s, handler) for s in self.SIGNALS}
        except ValueError:  # not the main thread
            self._old = {}
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)


# --------------------------------------------------------------------------- #
# The run                                                                     #
# --------------------------------------------------------------------------- #


def run(cfg, run_dir=None, resume=None, command=None, world=None, overrides=()):
    """Train per `cfg`; returns (run_dir, status, signal number or None). `resume` is the loaded
    checkpoint of run_dir; `overrides` (the command line's) name a new run's folder and HParams row. Raises ConfigError, DataError, RunError, Diverged. Under torchrun
    (`world` with several processes) only rank 0 writes anything."""
    world = world or dist_mod.World()
    device = resolve_device(cfg.run.device)
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    if cfg.train.batch_size % world.size:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} does not split evenly over {world.size} processes; "
                          f"use a multiple of {world.size}")
    commit = git_commit()  # the code that starts the run, whatever is edited while it runs
    params, forward, loss_fn, opt = build(cfg, device)
    splits = data_mod.load_splits(data_mod.resolve_root(cfg.data.root), cfg.data.download, cfg.data.train_split, cfg.data.standardize, device)
    n_train = len(splits["train"])
    order = torch.Generator().manual_seed(cfg.run.seed + 1)  # the data order's own stream
    noise = torch.Generator(device=device).manual_seed(cfg.run.seed + 2 + 1000 * world.rank)  # dropout, augmentation
    state = TrainState(overrides=" ".join(overrides)) if resume is None else TrainState.from_checkpoint(resume)
    if resume is not None:
        restore(resume, Path(run_dir) / CHECKPOINT, params, opt, order, noise, cfg.run.seed + 1000 * world.rank, state)
    train_step = make_train_step(params, forward, loss_fn, opt, world, cfg.train.engine, cfg.train.compile)
    background = -data_mod.PIXEL_MEAN / data_mod.PIXEL_STD if cfg.data.standardize else 0.0
    batches = Batches(splits["train"], order, device)
    B, total_points, every = cfg.train.batch_size, max(1, round(cfg.train.epochs * n_train)), cfg.eval.every

    def checkpoint():
        if world.is_main:
            save_checkpoint(run_dir, state.to_checkpoint(cfg, params, opt, order, noise))

    new_folder = run_dir is None and world.is_main
    run_dir = make_run_dir(cfg.run.log_dir, cfg.run.name, runlog.run_slug(overrides)) if new_folder else (Path(run_dir) if run_dir else None)
    status, stop, interrupt, log = "crashed", False, Interrupt(), None
    try:
        with RunLock(run_dir if world.is_main else None), interrupt:
            if world.is_main:
                atomic_write_text(run_dir / "config.toml", config_mod.to_toml(cfg))
            log = runlog.Log(run_dir, splits, None if resume is None else state.points, total_points, world.is_main)
            summary = runlog.model_summary(cfg.model)
            for line in summary:
                log.say(line)
            if resume is None:
                log.text("model", "```\n" + "\n".join(summary) + "\n```")
            lr = lr_at(cfg.optim, passes(state.points, n_train), cfg.train.epochs)
            if not state.history:
                evaluate_and_log(state, lr, params, forward, loss_fn, splits, cfg.eval.batch_size, log, world)
                checkpoint()
            next_eval = (state.points // every + 1) * every
            t0 = time.perf_counter()
            while state.points < total_points and not stop:
                lr = lr_at(cfg.optim, passes(state.points, n_train), cfg.train.epochs)
                x, y = batches.next(state, B, total_points)
                b, (lo, hi) = len(y), world.shard(len(y))
                x, y = x[lo:hi], y[lo:hi]  # this process's part of the batch (all of it without torchrun)
                if cfg.train.augment != "none":
                    x = models.augment(x, cfg.train, noise, background)
                train_step(x, y, lr, noise, (hi - lo) / b)
                state.step, state.pos, state.points = state.step + 1, state.pos + b, state.points + b
                log.advance(b)
                if state.points >= next_eval or state.points >= total_points:
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    state.train_seconds += time.perf_counter() - t0
                    evaluate_and_log(state, lr, params, forward, loss_fn, splits, cfg.eval.batch_size, log, world)
                    checkpoint()
                    next_eval, t0 = (state.points // every + 1) * every, time.perf_counter()
                    stop = world.any(interrupt.requested, device)  # ranks agree to stop at an evaluation
                elif interrupt.requested and not world.distributed:
                    state.train_seconds += time.perf_counter() - t0
                    checkpoint()
                    stop = True
            status = "interrupted" if stop else "finished"
    except Diverged as e:
        status = "diverged"
        kept = f"the checkpoint of epoch {state.history[-2]['epoch']:.3f} is kept in {run_dir}" if len(state.history) > 1 else "no checkpoint was written"
        raise Diverged(f"{e}. {kept}") from None
    except BaseException:
        if new_folder and not state.history:  # a failed start leaves no folder behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise  # a crash: the last checkpoint stands, and no summary is written for a run that did not end
    finally:
        try:
            if status in ("finished", "diverged", "interrupted") and world.is_main and state.history:
                finish(cfg, run_dir, params, state, device, status, log.writers["run"], command, n_train, commit, world.size)
        finally:
            if log is not None:
                log.close()
    return run_dir, status, interrupt.signum


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


def summarize(cfg, state, device, status, command, n_train, commit, processes=1):
    hist = state.history
    has_dev = "dev_error" in hist[0]
    best = min(hist, key=lambda r: r["dev_error"]) if has_dev else None
    lowest = min(hist, key=lambda r: r["test_error"])
    last = hist[-1]
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
        device=describe_device(device),
        seed=cfg.run.seed,
        git_commit=commit,
        torch=torch.__version__,
        processes=processes,
        changes=state.changes,
    )


def finish(cfg, run_dir, params, state, device, status, writer, command, n_train, commit, processes=1):
    """The run's HParams row; for a run that ended, summary.json and history.json; for a finished run
    also the figures, as PNGs and in TensorBoard."""
    from .plot import save_figures, weight_images

    summary = summarize(cfg, state, device, status, command, n_train, commit, processes)
    runlog.write_hparams(run_dir, runlog.hparams_of(cfg, state.overrides), runlog.metrics_of(summary), status, state.points)
    if status == "interrupted":
        return  # no summary for a run that has not ended
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(run_dir / "history.json", json.dumps(state.history, indent=1) + "\n")
    if status != "finished":
        return
    # 8 hidden units' input weights (softmax regression: the 10 class templates), each in [0, 1].
    writer.add_images("first_layer", weight_images(params).unsqueeze(1), state.points)
    save_figures(run_dir, writer, state.points)


# --------------------------------------------------------------------------- #
# Command line                                                                #
# --------------------------------------------------------------------------- #


def resume_config(saved, overrides):
    """(config, what changed) for a resume: the saved config with the overrides that a resume may
    apply. ConfigError names a key that cannot change, before anything is written."""
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
    return new, ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())


def parse_seeds(text):
    """'0,1,2' -> [0, 1, 2]; ConfigError for anything else. The config check of run.seed bounds each seed."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: expected distinct whole numbers separated by commas, like 0,1,2; got {text!r}")
    return seeds


def train_once(args, command, overrides):
    """One run from the command line (a new one, or --resume): (exit code, run folder or None)."""
    world, status, signum, run_dir = dist_mod.World(), None, None, None
    try:
        if args.resume:
            run_dir = Path(args.resume)
            saved = load_checkpoint(run_dir)
            cfg, change = resume_config(saved["config"], ([args.config] if args.config else []) + overrides)
            if change:  # the history of changes travels in the checkpoint
                saved["changes"] = [*saved.get("changes", []), dict(points=saved["points"], change=change)]
        else:
            if not args.config:
                raise ConfigError("no config given: python -m nnhw.train CONFIG [section.key=value ...]")
            cfg = config_mod.load(args.config, overrides)
            run_dir, saved = None, None
        world = dist_mod.init(cfg.run.device, cfg.run.dist_timeout)
        run_dir, status, signum = run(cfg, run_dir, saved, command, world, [] if args.resume else overrides)
    except (ConfigError, DataError, RunError) as e:
        print(f"nnhw.train: error: {e}", file=sys.stderr)
        return EXIT_CONFIG, None
    except Diverged as e:
        if world.is_main:
            print(f"nnhw.train: diverged: {e}", file=sys.stderr)
        return EXIT_DIVERGED, None
    except KeyboardInterrupt:  # Ctrl-C while starting, while drawing figures, or a second one mid-write
        print("nnhw.train: interrupted; any checkpoint already written is intact", file=sys.stderr)
        return EXIT_INTERRUPTED, None
    except RuntimeError as e:
        if not world.distributed:
            raise  # a bug: keep its traceback
        # A collective timed out or a peer vanished: say so instead of hanging or dumping a trace.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"nnhw.train: error: process {world.rank} of {world.size} lost its peers ({first[:200]}); "
              f"the last checkpoint stands", file=sys.stderr)
        return 1, None
    finally:
        world.close()
    code = 128 + signum if status == "interrupted" else 0
    if world.is_main:
        if status == "interrupted":
            name = signal.Signals(signum).name
            print(f"interrupted by {name}; checkpoint saved. Resume with: python -m nnhw.train --resume {run_dir}", file=sys.stderr)
        else:
            print(runlog.closing_line(json.loads((run_dir / "summary.json").read_text())))
        print(run_dir)
    return code, (run_dir if status == "finished" and world.is_main else None)


def main(argv=None):
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on Ctrl-C is a KeyboardInterrupt that main handles
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_intermixed_args(argv)
    if args.seeds is None:
        return train_once(args, "python -m nnhw.train " + " ".join(argv), args.overrides)[0]
    try:
        seeds = parse_seeds(args.seeds)
        if args.resume or not args.config:
            raise ConfigError("--seeds needs a CONFIG and starts new runs; resume each seed's run on its own with --resume RUN_DIR")
        cfg = config_mod.load(args.config, args.overrides)  # a bad config stops here, before any seed runs
        for seed in seeds:  # and so does a seed that run.seed's own check refuses
            try:
                config_mod.apply_overrides(config_mod.load(args.config, args.overrides), [f"run.seed={seed}"])
            except ConfigError as e:
                raise ConfigError(f"--seeds: {e}") from None
    except ConfigError as e:
        print(f"nnhw.train: error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    runs, worst = [], 0
    for seed in seeds:
        # each seed's command reproduces that seed's run alone; the config's own seed needs no override
        overrides = [*args.overrides, *([f"run.seed={seed}"] if seed != cfg.run.seed else [])]
        code, run_dir = train_once(args, "python -m nnhw.train " + " ".join([args.config, *overrides]), overrides)
        if code not in (0, EXIT_DIVERGED):
            return code  # a config error, or an interrupt: stop here, and write no aggregate of an unfinished set
        worst = max(worst, code)
        runs.append(run_dir)  # None: that seed diverged
    summaries = [json.loads((d / "summary.json").read_text()) for d in runs if d is not None]
    if summaries:
        diverged = [seed for seed, d in zip(seeds, runs) if d is None]
        agg = runlog.aggregate(summaries, "python -m nnhw.train " + " ".join(argv), [str(d) for d in runs if d is not None], diverged)
        path = Path(cfg.run.log_dir) / cfg.run.name / f"seeds_{time.strftime('%Y%m%d-%H%M%S')}_{'-'.join(map(str, seeds))}.json"
        try:
            atomic_write_text(path, json.dumps(agg, indent=2) + "\n")
        except RunError as e:
            print(f"nnhw.train: error: {e}", file=sys.stderr)
            return EXIT_CONFIG
        for line in runlog.aggregate_lines(agg):
            print(line)
        print(path)
    return worst


if __name__ == "__main__":
    sys.exit(main())
