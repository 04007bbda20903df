"""`python -m nnhw.train CONFIG [section.key=value ...]`: train one model, log it, checkpoint it.

`run` reads top to bottom: the device, the data, the model (trainer.Trainer), a checkpoint when
resuming, the loop, the summary. The loop (`train_loop`) is flat: take a step; every `eval.every`
training points evaluate train, dev and test, log them and write a checkpoint; stop at the end of the
schedule or on a signal. `--resume RUN_DIR` continues a run from its checkpoint and, on the same
device, ends with the same parameters as an uninterrupted run, bit for bit. Progress is counted in
effective epochs (points / 50,000, the homework's x-axis) and passes (what train.epochs counts).
"""

import sys

from .command import EXIT_BAD_INPUT as EXIT_CONFIG
from .command import EXIT_DIVERGED
from .command import Parser


def build_parser():
    p = Parser(
        prog="python -m nnhw.train",
        description="Train one model from a TOML config; logs go to <run.log_dir>/<run.name>/<run id>/.",
    )
    p.add_argument("config", nargs="?", help="the TOML config, for example configs/relu.toml")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides in TOML value syntax, e.g. optim.lr=0.05")
    p.add_argument("--seeds", metavar="LIST", help="train once per seed, e.g. --seeds 0,1,2 (each a run of its own, with run.seed "
                   "set), then write the mean, std, min and max of the results to <run.log_dir>/<run.name>/seeds_<time>_<seeds>.json")
    p.add_argument("--reuse", action="store_true", help="with --seeds: take a seed's newest finished run of the same config "
                   "(every key equal but those of where it went: run.log_dir, run.name, data.root, data.download, run.device) "
                   "from <run.log_dir>/<run.name>/ instead of training it again, when it replays as the same "
                   "arithmetic with the code at hand (nnhw.replay); a seed set can then be finished over several sittings")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint "
                   "(overrides of the epochs, learning rate, schedule, evaluation and device apply)")
    return p


if __name__ == "__main__":
    import os
    import signal as _signal

    def _quit(signum, frame):
        # Ctrl-C while the modules below load, before main() runs: nothing is written yet, so leave at
        # once. os._exit, not sys.exit: an import that swallows SystemExit would carry on and train.
        print("nnhw.train: interrupted while starting", file=sys.stderr, flush=True)
        os._exit(130)

    _signal.signal(_signal.SIGINT, _quit)
    build_parser().parse_intermixed_args()  # --help and usage errors answer at once, before torch loads

import json
import math
import shutil
import signal
import time
from pathlib import Path

import torch

from . import config as config_mod
from . import data as data_mod
from . import dist as dist_mod
from . import identity, runlog, sharpness
from .checkpoint import CHECKPOINT, TrainState, load_checkpoint, resume_config, resume_entry, save_checkpoint
from .command import Interrupt, Stopped, one_line, run_command
from .config import ConfigError
from .data import DataError, effective_epochs
from .device import resolve_device
from .evaluate import evaluate
from .optim import is_weight
from .rundir import RunError, RunLock, atomic_write_text, git_commit, make_run_dir
from .seeds import train_seeds
from .summary import closing_line, summarize
from .trainer import Trainer, checksums

EXIT_INTERRUPTED = 130  # 128 + SIGINT; SIGTERM gives 143, SIGHUP 129
DIVERGENCE_FACTOR = 10.0  # a training loss above this many times its initial value is divergence


class Diverged(RuntimeError):
    pass


def evaluate_and_log(state, lr, trainer, splits, log, last=False):
    """Evaluate every split, log it, add a history row: the training split's first eval.train_points
    only, but at the `last` evaluation. Diverged if the training loss is not finite or is above
    DIVERGENCE_FACTOR times its first value."""
    t0 = time.perf_counter()
    e = trainer.cfg.eval
    row = dict(points=state.points, epoch=effective_epochs(state.points), lr=lr, train_seconds=round(state.train_seconds, 3))
    params, forward = trainer.net.evaluated()  # with optim.ema, the weights' moving average
    for name, split in splits.items():
        subset = e.train_points if name == "train" and not last else 0
        points = min((n for n in (e.max_points, subset) if n), default=0)  # the fewer of the two set; 0: the whole split
        loss, err = evaluate(params, forward, trainer.net.loss_fn, split, e.batch_size, trainer.world, points)
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
    if e.sharpness_every and (len(state.history) - 1) % e.sharpness_every == 0:
        sharpness.measure(state, row, lr, trainer, log)


def train_loop(trainer, state, splits, log, interrupt, checkpoint, device):
    """Steps until the end of the schedule ('finished') or a signal ('interrupted')."""
    world, every = trainer.world, trainer.cfg.eval.every

    def seconds_since(t0):  # training time only: the device's queue drained first
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    if not state.history:
        evaluate_and_log(state, trainer.lr(state.points), trainer, splits, log)
        checkpoint()
    next_eval, t0 = (state.points // every + 1) * every, time.perf_counter()
    while state.points < trainer.total_points:
        points, lr = trainer.step(state)
        log.advance(points)
        if state.points >= next_eval or state.points >= trainer.total_points:
            state.train_seconds += seconds_since(t0)
            evaluate_and_log(state, lr, trainer, splits, log, last=state.points >= trainer.total_points)
            checkpoint()
            if world.any(interrupt.requested, device):  # the processes agree to stop at an evaluation
                return "interrupted"
            next_eval, t0 = (state.points // every + 1) * every, time.perf_counter()
        elif interrupt.requested and not world.distributed:  # one process stops at once
            state.train_seconds += seconds_since(t0)
            checkpoint()
            return "interrupted"
    return "finished"


def run(cfg, run_dir=None, resume=None, command=None, world=None, overrides=(), config_file=None, changed=None):
    """Train per `cfg`; returns (run_dir, status, signal number or None). `resume` is the loaded
    checkpoint of run_dir, and `changed` what the resume changes (checkpoint.resume_config); `config_file`
    and `overrides` (the command line's) say what a new run is a run of (its summary keeps them), and the
    overrides name its folder and HParams row. A new run's identity (its config and the commit that
    starts it) is written into its state at once; a resume adds its commit and changes to them.
    Raises ConfigError, DataError, RunError, Diverged. Under torchrun (`world` with several
    processes) only rank 0 writes anything."""
    world = world or dist_mod.World()
    device = resolve_device(cfg.run.device)
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    if cfg.train.batch_size % world.size:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} does not split evenly over {world.size} processes; "
                          f"use a multiple of {world.size}")
    commit = git_commit()  # the code that starts the run, whatever is edited while it runs
    d = cfg.data
    splits = data_mod.load_splits(data_mod.resolve_root(d.root), d.download, d.train_split, d.standardize, device,
                                  d.train_points, d.bag, cfg.run.seed)
    trainer = Trainer.start(cfg, device, splits["train"], world)
    if resume is None:
        state = TrainState(overrides=list(overrides), config_file=config_file, commit=commit, start_config=config_mod.to_dict(cfg))
    else:
        state = TrainState.from_checkpoint(resume)
        before = len(state.changes)
        state.changes.append(resume_entry(state.points, commit, changed or {}))
        trainer.restore(resume, Path(run_dir) / CHECKPOINT, state)
        if identity.altering(state.changes[before:]) and "checksums" not in state.fingerprint:
            state.fingerprint["checksums"] = checksums(trainer.params)  # the fingerprint ends with the steps its recipe made
    on_disk = [state.points] if resume is not None else []  # the points of the checkpoint in the run folder

    def checkpoint():
        if world.is_main:
            save_checkpoint(run_dir, trainer.checkpoint(state))
            on_disk[:] = [state.points]

    new_folder = run_dir is None and world.is_main
    run_dir = make_run_dir(cfg.run.log_dir, cfg.run.name, runlog.run_slug(overrides)) if new_folder else (Path(run_dir) if run_dir else None)
    status, interrupt, log = "crashed", Interrupt(), None
    try:
        with RunLock(run_dir if world.is_main else None), interrupt:
            if world.is_main:
                atomic_write_text(run_dir / "config.toml", config_mod.to_toml(cfg))
            log = runlog.Log(run_dir, splits, None if resume is None else state.points, trainer.total_points, world.is_main)
            summary = runlog.model_summary(trainer.net.model)
            for line in summary:
                log.say(line)
            if resume is None:
                log.text("model", "```\n" + "\n".join(summary) + "\n```")
            if cfg.eval.sharpness_every:  # each eigenvalue on a chart of its own, its threshold beside it
                log.charts(sharpness.charts([k for k in trainer.params if is_weight(k)], cfg.optim, cfg.eval))
            status = train_loop(trainer, state, splits, log, interrupt, checkpoint, device)
    except Diverged as e:
        status = "diverged"
        kept = f"the checkpoint of epoch {effective_epochs(on_disk[0]):.3f} is kept in {run_dir}" if on_disk else "no checkpoint was written"
        raise Diverged(f"{e}. {kept}") from None
    except BaseException as e:
        if new_folder and not state.history:  # a failed start leaves no folder behind
            shutil.rmtree(run_dir, ignore_errors=True)
        elif world.is_main:
            e.run_dir = run_dir  # for the message: the run whose last checkpoint stands
        raise  # a crash: the last checkpoint stands, and no summary is written for a run that did not end
    finally:
        try:
            if status in ("finished", "diverged", "interrupted") and world.is_main and state.history:
                finish(cfg, run_dir, trainer, state, device, status, log.writers["run"], command)
        except BaseException as e:  # a signal while the figures are drawn: no summary yet, the checkpoint stands
            e.run_dir = run_dir
            raise
        finally:
            if log is not None:
                log.close()
    return run_dir, status, interrupt.signum


def finish(cfg, run_dir, trainer, state, device, status, writer, command):
    """The run's HParams row; for a run that ended, history.json, for a finished run the figures (as
    PNGs and in TensorBoard), then summary.json: a summary that says "finished" has its figures."""
    from .plot import save_figures, weight_images

    summary = summarize(cfg, state, device, status, command, trainer.n_train, trainer.world.size)
    runlog.write_hparams(run_dir, runlog.hparams_of(cfg, " ".join(state.overrides)), runlog.metrics_of(summary), status, state.points)
    if status == "interrupted":
        return  # no summary for a run that has not ended
    atomic_write_text(run_dir / "history.json", json.dumps(state.history, indent=1) + "\n")
    if status == "finished":
        # 8 hidden units' input weights (softmax regression: the 10 class templates), each in [0, 1].
        writer.add_images("first_layer", weight_images(trainer.params).unsqueeze(1), state.points)
        save_figures(run_dir, writer, state.points)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def start(cfg, command, overrides=(), config_file=None, run_dir=None, saved=None, changed=None):
    """One run of the resolved `cfg` (a new one, or the resume of run_dir's checkpoint `saved`): (exit
    code, the run folder when it finished). Every way it can end is one line on stderr and its code."""
    world, status, signum = dist_mod.World(), None, None
    try:
        world = dist_mod.init(cfg.run.device, cfg.run.dist_timeout)
        run_dir, status, signum = run(cfg, run_dir, saved, command, world, overrides, config_file, changed)
    except (ConfigError, DataError, RunError) as e:
        print(f"nnhw.train: error: {one_line(e)}", file=sys.stderr)
        return EXIT_CONFIG, None
    except Diverged as e:
        if world.is_main:
            print(f"nnhw.train: diverged: {e}", file=sys.stderr)
        return EXIT_DIVERGED, None
    except (KeyboardInterrupt, Stopped) as e:  # while starting, while drawing figures, or a second signal
        signum = getattr(e, "signum", signal.SIGINT)
        where = getattr(e, "run_dir", None)
        kept = f"its last checkpoint stands: python -m nnhw.train --resume {where}" if where else "no run folder was left"
        print(f"nnhw.train: stopped by {signal.Signals(signum).name}; {kept}", file=sys.stderr)
        return 128 + signum, None
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
    if world.is_main:
        if status == "interrupted":
            name = signal.Signals(signum).name
            print(f"interrupted by {name}; checkpoint saved. Resume with: python -m nnhw.train --resume {run_dir}", file=sys.stderr)
        else:
            print(closing_line(json.loads((run_dir / "summary.json").read_text())))
        print(run_dir)
    code = 128 + signum if status == "interrupted" else 0
    return code, (run_dir if status == "finished" and world.is_main else None)


def train_command(argv):
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_intermixed_args(argv)
    command = "python -m nnhw.train " + " ".join(argv)
    try:
        if args.seeds is not None:
            return train_seeds(args, argv, start)
        if args.reuse:
            raise ConfigError("--reuse takes finished runs into a seed set: use it with --seeds")
        if args.resume:
            if args.config and "=" not in args.config:
                raise ConfigError(f"--resume continues {args.resume} with the config it was started with; leave out {args.config!r} "
                                  "and give only section.key=value overrides")
            saved = load_checkpoint(args.resume)
            cfg, changed = resume_config(saved["config"], ([args.config] if args.config else []) + args.overrides)
            return start(cfg, command, run_dir=Path(args.resume), saved=saved, changed=changed)[0]
        if not args.config:
            raise ConfigError("no config given: python -m nnhw.train CONFIG [section.key=value ...]")
        return start(config_mod.load(args.config, args.overrides), command, args.overrides, args.config)[0]
    except (ConfigError, DataError, RunError) as e:
        print(f"nnhw.train: error: {one_line(e)}", file=sys.stderr)
        return EXIT_CONFIG


def main(argv=None):
    """`python -m nnhw.train`: the exit code (nnhw.command)."""
    return run_command("nnhw.train", train_command, argv)


if __name__ == "__main__":
    sys.exit(main())
