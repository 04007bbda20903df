"""`python -m nnhw.train CONFIG [section.key=value ...]`: train one model, log it, checkpoint it.

`run` reads top to bottom: the device, the data, the model (step.Trainer), a checkpoint when
resuming, the loop, the summary. The loop (`train_loop`) is flat: take a step; every `eval.every`
training points evaluate train, dev and test, log them and write a checkpoint; stop at the end of the
schedule or on a signal. `--resume RUN_DIR` continues a run from its checkpoint and, on the same
device, ends with the same parameters as an uninterrupted run, bit for bit. Progress is counted in
effective epochs (points / 50,000, the homework's x-axis) and passes (what train.epochs counts).
"""

import sys

from .command import EXIT_BAD_INPUT as EXIT_CONFIG
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
from . import runlog
from .committee import committee
from .checkpoint import CHECKPOINT, TrainState, load_checkpoint, restore, resume_config, save_checkpoint
from .config import ConfigError
from .data import DataError, effective_epochs, passes
from .command import Interrupt, NnhwError, Stopped, one_line, run_command
from .optim import is_weight, momentum_at
from .replay import replay_run
from .rundir import RunError, RunLock, atomic_write_text, git_commit, make_run_dir
from .step import Trainer, evaluate, resolve_device, sharpness
from .summary import aggregate, aggregate_lines, closing_line, summarize

EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT; SIGTERM gives 143, SIGHUP 129
DIVERGENCE_FACTOR = 10.0  # a training loss above this many times its initial value is divergence


class Diverged(RuntimeError):
    pass


def evaluate_and_log(state, lr, trainer, splits, log):
    """Evaluate every split, log it, add a history row. Diverged if the training loss is not finite
    or is above DIVERGENCE_FACTOR times its first value."""
    t0 = time.perf_counter()
    e = trainer.cfg.eval
    row = dict(points=state.points, epoch=effective_epochs(state.points), lr=lr, train_seconds=round(state.train_seconds, 3))
    for name, split in splits.items():
        loss, err = evaluate(trainer.params, trainer.forward, trainer.loss_fn, split, e.batch_size, trainer.world, e.max_points)
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
        measure_sharpness(state, row, lr, trainer, log)


def measure_sharpness(state, row, lr, trainer, log):
    """The sharpness at this evaluation (step.sharpness) into its history row, TensorBoard and the
    console; its time is counted apart from training and evaluation."""
    t0 = time.perf_counter()
    momentum = momentum_at(trainer.cfg.optim, passes(state.points, trainer.n_train))  # on a ramp, where it stands
    row.update(sharpness(trainer.params, trainer.forward, trainer.loss_fn, trainer.cfg, trainer.sharpness_points, lr, state.step, momentum))
    state.sharpness_seconds += time.perf_counter() - t0
    for tag, value in (("lambda_max", row["sharpness"]), ("residual", row["sharpness_residual"]),
                       ("threshold", row["sharpness_threshold"]), *row["sharpness_layers"].items()):
        if value is not None:
            log.scalar("run", f"sharpness/{tag}", value, state.points)
    log.say(runlog.sharpness_line(row))


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
            evaluate_and_log(state, lr, trainer, splits, log)
            checkpoint()
            if world.any(interrupt.requested, device):  # the processes agree to stop at an evaluation
                return "interrupted"
            next_eval, t0 = (state.points // every + 1) * every, time.perf_counter()
        elif interrupt.requested and not world.distributed:  # one process stops at once
            state.train_seconds += seconds_since(t0)
            checkpoint()
            return "interrupted"
    return "finished"


def run(cfg, run_dir=None, resume=None, command=None, world=None, overrides=(), config_file=None):
    """Train per `cfg`; returns (run_dir, status, signal number or None). `resume` is the loaded
    checkpoint of run_dir; `config_file` and `overrides` (the command line's) say what a new run is a
    run of (its summary keeps them), and the overrides name its folder and HParams row.
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
    splits = data_mod.load_splits(data_mod.resolve_root(d.root), d.download, d.train_split, d.standardize, device, d.train_points)
    trainer = Trainer.start(cfg, device, splits["train"], world)
    state = TrainState(overrides=list(overrides), config_file=config_file) if resume is None else TrainState.from_checkpoint(resume)
    if resume is not None:
        restore(resume, Path(run_dir) / CHECKPOINT, trainer.params, trainer.opt, trainer.order, trainer.noise, cfg.run.seed, world.rank, state,
                trainer.forward.running)
    on_disk = [state.points] if resume is not None else []  # the points of the checkpoint in the run folder

    def checkpoint():
        if world.is_main:
            save_checkpoint(run_dir, state.to_checkpoint(cfg, trainer.params, trainer.opt, trainer.order, trainer.noise, trainer.forward.running))
            on_disk[:] = [state.points]

    new_folder = run_dir is None and world.is_main
    run_dir = make_run_dir(cfg.run.log_dir, cfg.run.name, runlog.run_slug(overrides)) if new_folder else (Path(run_dir) if run_dir else None)
    status, interrupt, log = "crashed", Interrupt(), None
    try:
        with RunLock(run_dir if world.is_main else None), interrupt:
            if world.is_main:
                atomic_write_text(run_dir / "config.toml", config_mod.to_toml(cfg))
            log = runlog.Log(run_dir, splits, None if resume is None else state.points, trainer.total_points, world.is_main)
            summary = runlog.model_summary(cfg.model)
            for line in summary:
                log.say(line)
            if resume is None:
                log.text("model", "```\n" + "\n".join(summary) + "\n```")
            if cfg.eval.sharpness_every:  # each eigenvalue on a chart of its own, its threshold beside it
                log.charts(runlog.sharpness_charts([k for k in trainer.params if is_weight(k)]))
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
                finish(cfg, run_dir, trainer, state, device, status, log.writers["run"], command, commit)
        except BaseException as e:  # a signal while the figures are drawn: no summary yet, the checkpoint stands
            e.run_dir = run_dir
            raise
        finally:
            if log is not None:
                log.close()
    return run_dir, status, interrupt.signum


def finish(cfg, run_dir, trainer, state, device, status, writer, command, commit):
    """The run's HParams row; for a run that ended, history.json, for a finished run the figures (as
    PNGs and in TensorBoard), then summary.json: a summary that says "finished" has its figures."""
    from .plot import save_figures, weight_images

    summary = summarize(cfg, state, device, status, command, trainer.n_train, commit, trainer.world.size)
    runlog.write_hparams(run_dir, runlog.hparams_of(cfg, " ".join(state.overrides)), runlog.metrics_of(summary), status, state.points)
    if status == "interrupted":
        return  # no summary for a run that has not ended
    atomic_write_text(run_dir / "history.json", json.dumps(state.history, indent=1) + "\n")
    if status == "finished":
        # 8 hidden units' input weights (softmax regression: the 10 class templates), each in [0, 1].
        writer.add_images("first_layer", weight_images(trainer.params).unsqueeze(1), state.points)
        save_figures(run_dir, writer, state.points)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


# --------------------------------------------------------------------------- #
# Command line                                                                #
# --------------------------------------------------------------------------- #


def parse_seeds(text):
    """'0,1,2' -> [0, 1, 2]; ConfigError for anything else. The config check of run.seed bounds each seed."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: expected distinct whole numbers separated by commas, like 0,1,2; got {text!r}")
    return seeds


def seeds_label(seeds):
    """'0-1-2' for a short list; '0-to-99_100-seeds' where the whole list would not fit a file name."""
    label = "-".join(map(str, seeds))
    return label if len(label) <= 40 else f"{seeds[0]}-to-{seeds[-1]}_{len(seeds)}-seeds"


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
        run_dir, status, signum = run(cfg, run_dir, saved, command, world, [] if args.resume else overrides, args.config)
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
    code = 128 + signum if status == "interrupted" else 0
    if world.is_main:
        if status == "interrupted":
            name = signal.Signals(signum).name
            print(f"interrupted by {name}; checkpoint saved. Resume with: python -m nnhw.train --resume {run_dir}", file=sys.stderr)
        else:
            print(closing_line(json.loads((run_dir / "summary.json").read_text())))
        print(run_dir)
    return code, (run_dir if status == "finished" and world.is_main else None)


def finished_run_of(cfg):
    """The newest finished run in cfg's own log folder whose config.toml is cfg, every key but those of
    where it went (config.WHERE_KEYS: a run copied in from another log folder, or trained on another
    device, is the same run), and which replays as the same arithmetic with the code at hand on this
    device; None when there is none (--seeds --reuse)."""
    want = config_mod.recipe(cfg)
    for path in sorted((Path(cfg.run.log_dir) / cfg.run.name).glob("*/summary.json"), reverse=True):  # run ids start with their time
        try:
            summary = json.loads(path.read_text())
            if summary.get("status") != "finished" or summary.get("processes", 1) != 1:
                continue
            if config_mod.recipe(config_mod.load(path.parent / "config.toml")) == want and replay_run(path.parent, summary)[0]:
                return path.parent
        except (OSError, ValueError, NnhwError):  # unreadable, from an older config, or not replayable here: train it
            continue
    return None


def train_seeds(args, argv):
    """--seeds: one run per seed, then their aggregate; the exit code."""
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
        print(f"nnhw.train: error: {one_line(e)}", file=sys.stderr)
        return EXIT_CONFIG
    runs, worst = [], 0
    for seed in seeds:
        # each seed's command reproduces that seed's run alone; the config's own seed needs no override
        overrides = [*args.overrides, *([f"run.seed={seed}"] if seed != cfg.run.seed else [])]
        kept = finished_run_of(config_mod.load(args.config, overrides)) if args.reuse else None
        if kept:
            print(f"seed {seed}: {kept} finished and replays as the same arithmetic; taken as it is")
            runs.append(kept)
            continue
        code, run_dir = train_once(args, "python -m nnhw.train " + " ".join([args.config, *overrides]), overrides)
        if code not in (0, EXIT_DIVERGED):
            return code  # a config error, or an interrupt: stop here, and write no aggregate of an unfinished set
        worst = max(worst, code)
        runs.append(run_dir)  # None: that seed diverged
    summaries = [json.loads((d / "summary.json").read_text()) for d in runs if d is not None]
    if not summaries:
        return worst
    diverged = [seed for seed, d in zip(seeds, runs) if d is None]
    agg = aggregate(summaries, "python -m nnhw.train " + " ".join(argv), [str(d) for d in runs if d is not None], diverged)
    try:
        agg["committee"] = committee([d for d in runs if d is not None], resolve_device(cfg.run.device))
    except NnhwError as e:  # the seeds' own results still go into the aggregate
        print(f"nnhw.train: no committee of the seeds: {one_line(e)}", file=sys.stderr)
    path = Path(cfg.run.log_dir) / cfg.run.name / f"seeds_{time.strftime('%Y%m%d-%H%M%S')}_{seeds_label(seeds)}.json"
    try:
        atomic_write_text(path, json.dumps(agg, indent=2) + "\n")
    except RunError as e:
        print(f"nnhw.train: error: {one_line(e)}", file=sys.stderr)
        return EXIT_CONFIG
    for line in aggregate_lines(agg):
        print(line)
    print(path)
    return worst


def train_command(argv):
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_intermixed_args(argv)
    if args.seeds is not None:
        return train_seeds(args, argv)
    if args.reuse:
        print("nnhw.train: error: --reuse takes finished runs into a seed set: use it with --seeds", file=sys.stderr)
        return EXIT_CONFIG
    return train_once(args, "python -m nnhw.train " + " ".join(argv), args.overrides)[0]


def main(argv=None):
    """`python -m nnhw.train`: the exit code (nnhw.command)."""
    return run_command("nnhw.train", train_command, argv)


if __name__ == "__main__":
    sys.exit(main())
