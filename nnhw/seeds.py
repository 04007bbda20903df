"""`python -m nnhw.train CONFIG --seeds 0,1,2`: one run per seed, then their mean, spread and committee.

A seed set is one recipe: the config is read and resolved once, and each seed's run is that config
with run.seed set, whatever happens to the file while the seeds train. `--reuse` takes a seed's
finished run instead of training it again when it started with the same recipe, no resume altered
it (nnhw.identity), and it replays as the same arithmetic with the code at hand (nnhw.replay). The
aggregate, seeds_<time>_<seeds>.json, records the recipe the seeds share and its digest, each seed's
numbers, their statistics and the seeds' committee.
"""

import json
import os
import sys
import time
from pathlib import Path

from . import config as config_mod
from . import identity
from .command import EXIT_DIVERGED, NnhwError, one_line
from .committee import committee
from .config import ConfigError
from .device import resolve_device
from .replay import replay_run
from .rundir import atomic_write_text
from .summary import aggregate, aggregate_lines


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


def finished_run_of(cfg):
    """The newest finished run in cfg's own log folder that started with cfg's recipe, no resume altering
    it (nnhw.identity: a run copied in from another log folder, or trained on another device, is the same
    run), and which replays as the same arithmetic with the code at hand on this device; None when there
    is none (--seeds --reuse)."""
    want = config_mod.recipe(cfg)
    for path in sorted((Path(cfg.run.log_dir) / cfg.run.name).glob("*/summary.json"), reverse=True):  # run ids start with their time
        try:
            summary = json.loads(path.read_text())
            if summary.get("status") != "finished" or summary.get("processes", 1) != 1:
                continue
            if identity.is_run_of(summary, config_mod.load(path.parent / "config.toml"), want) and replay_run(path.parent, summary)[0]:
                return path.parent
        except (OSError, ValueError, TypeError, AttributeError, KeyError, NnhwError):  # unreadable, or not replayable here: train it
            continue
    return None


def seed_configs(cfg, seeds):
    """{seed: cfg with run.seed set}, all from the one resolved cfg: a seed set is one recipe, whatever
    happens to its config file while it trains. ConfigError for a seed run.seed's own check refuses."""
    try:
        return {seed: config_mod.with_recipe(cfg, {"run.seed": seed}) for seed in seeds}
    except ConfigError as e:
        raise ConfigError(f"--seeds: {e}") from None


def train_seeds(args, argv, start):
    """--seeds: one run per seed, each by `start` (nnhw.train's: (exit code, run folder) of one resolved
    config), then their aggregate; the exit code. ConfigError before any seed runs."""
    seeds = parse_seeds(args.seeds)
    if args.resume or not args.config:
        raise ConfigError("--seeds needs a CONFIG and starts new runs; resume each seed's run on its own with --resume RUN_DIR")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: each seed would need the process group set up anew
        raise ConfigError("--seeds does not run under torchrun; start one torchrun per seed (run.seed=N), "
                          "then python -m nnhw.committee RUN_DIR ... for their committee")
    cfg = config_mod.load(args.config, args.overrides)  # read once: a bad config or seed stops here, before any seed runs
    configs = seed_configs(cfg, seeds)
    runs, worst = [], 0
    for seed, seed_cfg in configs.items():
        # each seed's command reproduces that seed's run alone; the config's own seed needs no override
        overrides = [*args.overrides, *([f"run.seed={seed}"] if seed != cfg.run.seed else [])]
        kept = finished_run_of(seed_cfg) if args.reuse else None
        if kept:
            print(f"seed {seed}: {kept} finished and replays as the same arithmetic; taken as it is")
            runs.append(kept)
            continue
        code, run_dir = start(seed_cfg, "python -m nnhw.train " + " ".join([args.config, *overrides]), overrides, args.config)
        if code not in (0, EXIT_DIVERGED):
            return code  # a config error, or an interrupt: stop here, and write no aggregate of an unfinished set
        worst = max(worst, code)
        runs.append(run_dir)  # None: that seed diverged
    summaries = [json.loads((d / "summary.json").read_text()) for d in runs if d is not None]
    if not summaries:
        return worst
    diverged = [seed for seed, d in zip(seeds, runs) if d is None]
    agg = aggregate(summaries, "python -m nnhw.train " + " ".join(argv), [str(d) for d in runs if d is not None], diverged,
                    config_mod.recipe(cfg))
    try:
        agg["committee"] = committee([d for d in runs if d is not None], resolve_device(cfg.run.device))
    except Exception as e:  # noqa: BLE001 - whatever the committee does, the seeds' own results are written
        agg["committee"] = dict(error=one_line(e))
        print(f"nnhw.train: no committee of the seeds: {one_line(e)}", file=sys.stderr)
    path = Path(cfg.run.log_dir) / cfg.run.name / f"seeds_{time.strftime('%Y%m%d-%H%M%S')}_{seeds_label(seeds)}.json"
    atomic_write_text(path, json.dumps(agg, indent=2) + "\n")
    for line in aggregate_lines(agg):
        print(line)
    print(path)
    return worst
