"""`python -m nnhw.train CONFIG [section.key=value ...]`: train one model, log it, checkpoint it.

The loop is flat: set the learning rate, forward, backward, step, and every
`eval.every` training points evaluate train, dev and test, log to TensorBoard
and write a checkpoint. `--resume RUN_DIR` continues a run from its checkpoint
and ends with the same parameters as an uninterrupted run (same device).
"""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import config as config_mod
from . import data as data_mod
from . import dist as dist_mod
from . import models
from .config import ConfigError
from .data import DataError
from .optim import MomentumSGD, lr_at
from .plot import save_figures, weight_images
from .tape import Tape

CHECKPOINT = "checkpoint.pt"
EXIT_CONFIG = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


class RunError(RuntimeError):
    """The run cannot start or continue; the message is one line."""


class Diverged(RuntimeError):
    pass


# --------------------------------------------------------------------------- #
# Run folder, checkpoints, provenance                                         #
# --------------------------------------------------------------------------- #


def make_run_dir(log_dir, name):
    """<log_dir>/<name>/<run id>; mkdir is atomic, so two runs started at once never share one."""
    parent = Path(log_dir) / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for i in range(1000):
            run_dir = parent / (stamp if i == 0 else f"{stamp}-{i}")
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                continue
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunError(f"cannot write the log folder {parent}: {e.strerror or e}; set run.log_dir to a writable folder") from None
    return run_dir


def atomic_write_bytes(path, write):
    """write(f) into path.tmp, flush, fsync, then rename: a crash leaves the old file whole."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path, text):
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def save_checkpoint(run_dir, state):
    atomic_write_bytes(run_dir / CHECKPOINT, lambda f: torch.save(state, f))


def load_checkpoint(run_dir):
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise RunError(f"no checkpoint at {path}: --resume takes a run folder that nnhw.train wrote")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RunError(f"cannot read the checkpoint {path}: {str(e).splitlines()[0]}") from None


def git_commit():
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device: {name!r} asked for, but CUDA is not available here; use 'auto' or 'cpu'")
    return device


def describe_device(device):
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


# --------------------------------------------------------------------------- #
# Evaluation                                                                  #
# --------------------------------------------------------------------------- #


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
# The run                                                                     #
# --------------------------------------------------------------------------- #


class Interrupt:
    """Turns SIGINT into a flag that the loop reads between steps, so the state stays whole."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        def handler(signum, frame):
            if self.requested:  # a second Ctrl-C: give up at once
                raise KeyboardInterrupt
            self.requested = True

        try:
            self._old = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _say(bar, text):
    if bar is not None:
        bar.write(text)
    else:
        print(text, flush=True)


class _NoWriter:
    """Stands in for a SummaryWriter on the processes that do not log (torchrun ranks > 0)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def run(cfg, run_dir=None, resume_state=None, command=None, world=None):
    """Train per `cfg`; returns (run_dir, status). Raises ConfigError, DataError, RunError, Diverged.
    Under torchrun (`world` with several processes) only rank 0 writes anything."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    world = world or dist_mod.World()
    main_rank = world.is_main
    device = resolve_device(cfg.run.device)
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    if cfg.train.batch_size % world.size:
        raise ConfigError(
            f"train.batch_size: {cfg.train.batch_size} does not split evenly over {world.size} processes; "
            f"use a multiple of {world.size}"
        )
    commit = git_commit()  # the code that starts the run, whatever is edited while it runs
    if run_dir is None and main_rank:
        run_dir = make_run_dir(cfg.run.log_dir, cfg.run.name)
    run_dir = Path(run_dir) if run_dir is not None else None
    if main_rank:
        atomic_write_text(run_dir / "config.toml", config_mod.to_toml(cfg))

    root = data_mod.resolve_root(cfg.data.root)
    splits = data_mod.load_splits(root, cfg.data.download, cfg.data.train_split, cfg.data.standardize, device)
    train = splits["train"]
    n_train = len(train)

    torch.manual_seed(cfg.run.seed)
    params = models.init_params(cfg.model, cfg.run.seed, device)
    forward = models.make_forward(cfg.model)
    loss_fn = models.make_loss(cfg.model)
    opt = MomentumSGD(params, cfg.optim.momentum, cfg.optim.l2, cfg.optim.l2_bias)
    train_step = make_train_step(params, forward, loss_fn, opt, world, cfg.train.engine, cfg.train.compile)
    order = torch.Generator().manual_seed(cfg.run.seed + 1)  # the data order's own stream
    noise = torch.Generator(device=device).manual_seed(cfg.run.seed + 2 + 1000 * world.rank)  # dropout, augmentation
    background = -data_mod.PIXEL_MEAN / data_mod.PIXEL_STD if cfg.data.standardize else 0.0
    augmenting = cfg.train.augment != "none"

    B = cfg.train.batch_size
    total_points = max(1, round(cfg.train.epochs * n_train))
    every = cfg.eval.every
    state = dict(points=0, step=0, pos=0, epoch=0, history=[], train_seconds=0.0, eval_seconds=0.0)
    perm = None
    if resume_state is not None:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(resume_state["params"][name])
        opt.load_state_dict(resume_state["velocity"])
        order.set_state(resume_state["order_rng"])
        noise.set_state(resume_state["noise_rng"])
        perm = resume_state["perm"]
        for key in state:
            state[key] = resume_state[key]

    purge = state["points"] + 1 if resume_state is not None else None
    if main_rank:
        writers = {s: SummaryWriter(str(run_dir / s), purge_step=purge) for s in splits}
        root_writer = SummaryWriter(str(run_dir), purge_step=purge)
    else:
        writers, root_writer = {s: _NoWriter() for s in splits}, _NoWriter()
    if resume_state is None:
        root_writer.add_text("config", "```\n" + config_mod.to_toml(cfg) + "\n```", 0)

    def checkpoint():
        if not main_rank:
            return
        save_checkpoint(
            run_dir,
            dict(
                format=1,
                config=config_mod.to_dict(cfg),
                params={n: p.detach().cpu() for n, p in params.items()},
                velocity={n: v.cpu() for n, v in opt.state_dict().items()},
                order_rng=order.get_state(),
                noise_rng=noise.get_state(),
                perm=perm.cpu() if perm is not None else torch.zeros(0, dtype=torch.int64),
                **state,
            ),
        )

    # A progress bar on a terminal; one line per evaluation otherwise.
    bar = None
    if sys.stderr.isatty() and main_rank:
        bar = tqdm(total=total_points, initial=state["points"], unit="pt", unit_scale=True, dynamic_ncols=True)
    lr = lr_at(cfg.optim, state["points"] / n_train, cfg.train.epochs)

    def do_eval():
        t0 = time.perf_counter()
        row = dict(points=state["points"], epoch=state["points"] / data_mod.N_TRAIN, lr=lr, train_seconds=round(state["train_seconds"], 3))
        for name, split in splits.items():
            loss, err = evaluate(params, forward, loss_fn, split, cfg.eval.batch_size, world)
            row[f"{name}_loss"], row[f"{name}_error"] = loss, err
            writers[name].add_scalar("loss", loss, state["points"])
            writers[name].add_scalar("error", err, state["points"])
        root_writer.add_scalar("lr", lr, state["points"])
        state["history"].append(row)
        state["eval_seconds"] += time.perf_counter() - t0
        text = f"epoch {row['epoch']:7.3f}  lr {lr:.3g}  " + "  ".join(
            f"{s} loss {row[f'{s}_loss']:.4f} err {row[f'{s}_error']:5.2f}%" for s in splits
        )
        if main_rank:
            _say(bar, text)
        if not math.isfinite(row["train_loss"]):
            raise Diverged(
                f"the training loss became {row['train_loss']} by step {state['step']} "
                f"(epoch {row['epoch']:.3f}) at learning rate {lr:.6g}; lower optim.lr. "
                f"The last good checkpoint is kept in {run_dir}"
            )
        checkpoint()

    status = "finished"
    try:
        with Interrupt() as interrupt:
            if not state["history"]:
                do_eval()
            next_eval = (state["points"] // every + 1) * every
            x_epoch = None
            t_start = time.perf_counter()
            while state["points"] < total_points:
                if perm is None or state["pos"] >= n_train:
                    perm = torch.randperm(n_train, generator=order)
                    state["pos"] = 0
                    state["epoch"] += 1
                    x_epoch = None
                if x_epoch is None:  # this epoch's data in its shuffled order
                    idx = perm.to(device)
                    x_epoch, y_epoch = train.x[idx], train.y[idx]
                pos = state["pos"]
                b = min(B, n_train - pos, total_points - state["points"])
                x, y = x_epoch[pos : pos + b], y_epoch[pos : pos + b]  # (b, 784), (b,)
                lo, hi = 0, b
                if world.distributed:  # this process's part of the global batch
                    lo, hi = world.shard(b)
                    x, y = x[lo:hi], y[lo:hi]

                lr = lr_at(cfg.optim, state["points"] / n_train, cfg.train.epochs)
                if augmenting:
                    x = models.augment(x, cfg.train, noise, background)
                train_step(x, y, lr, noise, (hi - lo) / b)

                state["step"] += 1
                state["pos"] += b
                state["points"] += b
                if bar is not None:
                    bar.update(b)
                if state["points"] >= next_eval or state["points"] >= total_points:
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    state["train_seconds"] += time.perf_counter() - t_start
                    do_eval()
                    next_eval = (state["points"] // every + 1) * every
                    t_start = time.perf_counter()
                    stop = world.any(interrupt.requested, device)  # ranks agree to stop at an evaluation
                else:
                    stop = interrupt.requested and not world.distributed
                if stop:
                    state["train_seconds"] += time.perf_counter() - t_start
                    checkpoint()
                    status = "interrupted"
                    break
    except Diverged:
        status = "diverged"
        raise
    except BaseException:
        status = "crashed"  # the last checkpoint stands; no summary for a run that did not end
        raise
    finally:
        if bar is not None:
            bar.close()
        if status in ("finished", "diverged") and state["history"] and main_rank:
            finish(cfg, run_dir, params, state, device, status, root_writer, command, n_train, commit, world.size)
        for w in [*writers.values(), root_writer]:
            w.close()
    return run_dir, status


def summarize(cfg, state, device, status, command, n_train, commit, processes=1):
    hist = state["history"]
    has_dev = "dev_error" in hist[0]
    best = min(hist, key=lambda r: r["dev_error"]) if has_dev else None
    lowest = min(hist, key=lambda r: r["test_error"])
    last = hist[-1]
    # the first evaluation at 99% test accuracy: how long a model takes to get good, not only how good it gets
    first_99 = next((r for r in hist if r["test_error"] <= 1.0 and "train_seconds" in r), None)
    return dict(
        name=cfg.run.name,
        status=status,
        command=command,
        best_dev_error=best["dev_error"] if best else None,
        best_dev_epoch=best["epoch"] if best else None,
        test_error_at_best_dev=best["test_error"] if best else None,
        lowest_test_error=lowest["test_error"],
        lowest_test_epoch=lowest["epoch"],
        test_accuracy_99=dict(epoch=first_99["epoch"], train_seconds=first_99["train_seconds"]) if first_99 else None,
        final={k: v for k, v in last.items() if k.endswith(("_loss", "_error"))},
        epochs=state["points"] / data_mod.N_TRAIN,
        passes=state["points"] / n_train,
        steps=state["step"],
        train_seconds=round(state["train_seconds"], 3),
        eval_seconds=round(state["eval_seconds"], 3),
        device=describe_device(device),
        seed=cfg.run.seed,
        git_commit=commit,
        torch=torch.__version__,
        processes=processes,
    )


def finish(cfg, run_dir, params, state, device, status, root_writer, command, n_train, commit, processes=1):
    summary = summarize(cfg, state, device, status, command, n_train, commit, processes)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(run_dir / "history.json", json.dumps(state["history"], indent=1) + "\n")
    if status != "finished":
        return
    # 8 hidden units' input weights (softmax regression: the 10 class templates), each in [0, 1].
    root_writer.add_images("first_layer", weight_images(params).unsqueeze(1), state["points"])
    save_figures(run_dir, root_writer, state["points"])


# --------------------------------------------------------------------------- #
# Command line                                                                #
# --------------------------------------------------------------------------- #


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
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint (overrides still apply)")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    command = "python -m nnhw.train " + " ".join(argv)
    world = dist_mod.World()
    try:
        if args.resume:
            saved = load_checkpoint(args.resume)
            cfg = config_mod.apply_overrides(config_mod.from_dict(saved["config"]), ([args.config] if args.config else []) + args.overrides)
            run_dir = Path(args.resume)
        else:
            if not args.config:
                raise ConfigError("no config given: python -m nnhw.train CONFIG [section.key=value ...]")
            cfg = config_mod.load(args.config, args.overrides)
            run_dir, saved = None, None
        world = dist_mod.init(cfg.run.device, cfg.run.dist_timeout)
        run_dir, status = run(cfg, run_dir, saved, command, world)
    except (ConfigError, DataError, RunError) as e:
        print(f"nnhw.train: error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except Diverged as e:
        if world.is_main:
            print(f"nnhw.train: diverged: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except RuntimeError as e:
        if not world.distributed:
            raise  # a bug: keep its traceback
        # A collective timed out or a peer vanished: say so instead of hanging or dumping a trace.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"nnhw.train: error: process {world.rank} of {world.size} lost its peers ({first[:200]}); "
              f"the last checkpoint stands", file=sys.stderr)
        return 1
    finally:
        world.close()
    if not world.is_main:
        return EXIT_INTERRUPTED if status == "interrupted" else 0
    if status == "interrupted":
        print(f"interrupted; checkpoint saved. Resume with: python -m nnhw.train --resume {run_dir}", file=sys.stderr)
        print(run_dir)
        return EXIT_INTERRUPTED
    print(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
