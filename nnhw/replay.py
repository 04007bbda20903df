"""`python -m nnhw.replay RUN_DIR...`: does the code at hand still compute these runs?

A result holds at a commit when that commit computes the run's arithmetic again,
not when its files happen to be unchanged. Every run records a fingerprint in its
summary.json (trainer.Trainer): the loss of the initial weights on the first batch,
the loss of each of its first 20 steps and two checksums of the parameters after
them. Replay builds the run again under the recipe that made those steps (its
summary's; a run made before summaries kept it, its config.toml's), takes the same
steps with the code at hand, and compares:

  same arithmetic  the initial loss, both checksums, and the losses of the first
                   LOSS_STEPS steps, agree within REL_TOL;
  parted           the initial loss, or the first step whose loss differs by more,
                   or the checksum.

A run records with its fingerprint a digest of how its machine rounds (nnhw.device.rounding_probe).
Where that digest is not this machine's (another CPU, or a run made before runs recorded it), a
parted fingerprint may be that machine's rounding: in the batch-normalised CNNs trained with Adam it
grows past the tolerance within the steps compared, as far as a learning rate 1% off moves them. Then
the run's own commit decides: its code, taken from git and run here (nnhw.at_commit), rounds as the
code at hand does, and the run is the same arithmetic when the code at hand computes what that commit
computes here, and that commit still computes the run's recorded first loss (`first_loss`: the initial
weights on the first batch, one forward pass, which rounds alike to 1e-7 everywhere).

The tolerance is set by measurement (tools/replay_tolerance.py, over every committed
config): rounding alone (one CPU thread against two, the same code) moves the
checksums by at most 2e-6 and the first ten losses by at most 5e-6, while a learning
rate or an initialisation changed by 1% moves the checksums by 4e-4 or more and the
first ten losses by 5e-4 or more. Later losses are not compared: in the CNNs a
rounding difference grows tenfold every step or two once training is under way, to
1e-3 by step 20.

A sweep folder (sweep.json) is replayed at its threshold rate: the loss at
initialisation and the loss after the budget. A run made before runs recorded
fingerprints cannot be replayed until one is recorded with the code of its own
commit (tools/fingerprint_at.py).

Exit code 0 when every folder replays as the same, 1 when one parts, 2 when one
cannot be replayed here (no MNIST, a CUDA run on a CPU, no fingerprint, a folder
that is not a run).
"""

import json
import shlex
import sys
from pathlib import Path

import torch

from . import PROJECT_ROOT
from . import config as config_mod
from . import data as data_mod
from .at_commit import CommitCodeError, first_steps_at
from .checkpoint import TrainState
from .command import NnhwError, Parser, run_command
from .config import ConfigError
from .data import DataError
from .device import rounding_probe
from .evaluate import evaluate
from .trainer import Trainer

BY_ITS_COMMIT = "same arithmetic as its commit"  # how a run decided by its own commit, run here, is told (nnhw.report reads it)
REL_TOL = 1e-4  # how far a replayed number may lie from the recorded one, relative to the larger
LOSS_STEPS = 10  # the losses compared: the first steps, before rounding differences grow (see above)


class ReplayError(NnhwError, RuntimeError):
    """This folder cannot be replayed here; the message is one line."""


def rel_diff(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def device_of(summary_device):
    """The device kind a run used ('cpu (2 threads)' -> cpu); ReplayError when this machine has none."""
    if summary_device is not None and not isinstance(summary_device, str):
        raise ReplayError(f"its device is {summary_device!r}, not what nnhw writes (such as 'cpu (2 threads)')")
    kind = summary_device.split()[0] if summary_device else "cpu"
    if kind not in ("cpu", "cuda"):
        raise ReplayError(f"its device is {summary_device!r}, not what nnhw writes (such as 'cpu (2 threads)')")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ReplayError("it ran on CUDA, and this machine has none: its random streams live there")
    return torch.device(kind)


def read_json(path):
    """The JSON table at path; ReplayError when it cannot be read or is not a table."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ReplayError(f"cannot read {path}: {e}") from None
    if not isinstance(value, dict):
        raise ReplayError(f"{path} holds a {type(value).__name__}, not the table nnhw writes")
    return value


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_fingerprint(fp):
    """ReplayError unless fp is a fingerprint as nnhw.train records it: steps, that many losses (numbers,
    or None for a step without points), the two checksums, and the initial loss where it was recorded."""
    if not isinstance(fp, dict):
        raise ReplayError(f"its summary.json's fingerprint is {fp!r:.40}, not the table nnhw.train writes")
    steps, losses, sums = fp.get("steps"), fp.get("losses"), fp.get("checksums")
    if (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1 or not isinstance(losses, list) or len(losses) != steps
            or not all(x is None or is_number(x) for x in losses)):
        raise ReplayError("its summary.json's fingerprint has no 'steps' and as many 'losses' (numbers), as nnhw.train writes")
    if not isinstance(sums, dict) or set(sums) != {"abs_sum", "sq_sum"} or not all(map(is_number, sums.values())):
        raise ReplayError("its summary.json's fingerprint has no 'checksums' (abs_sum and sq_sum, numbers), as nnhw.train writes")
    if "initial_loss" in fp and not (fp["initial_loss"] is None or is_number(fp["initial_loss"])):
        raise ReplayError(f"its summary.json's fingerprint has initial_loss {fp['initial_loss']!r:.40}, not a number as nnhw.train writes")


def run_config(run_dir, device, recipe=None):
    """The config that made the run's first steps: its config.toml with `recipe` (its summary's) in
    place, on `device`."""
    try:
        cfg = config_mod.load(Path(run_dir) / "config.toml")
        if recipe is not None:
            cfg = config_mod.with_recipe(cfg, recipe)
    except ConfigError as e:
        raise ReplayError(str(e)) from None
    cfg.run.device = device.type
    return cfg


def first_steps(cfg, device, n):
    """The losses of the first n training steps and the checksums after them, computed now."""
    trainer = Trainer.start(cfg, device, data_mod.splits_on_disk(cfg.data, device, cfg.run.seed)["train"])
    trainer.fingerprint_steps = n
    state = TrainState()
    while "checksums" not in state.fingerprint:
        trainer.step(state)
    return state.fingerprint


def parts(a, b):
    """Whether two recorded losses or checksums differ by more than REL_TOL (a step without points has None)."""
    return (a is None) != (b is None) or (a is not None and rel_diff(a, b) > REL_TOL)


def first_loss(fp):
    """The loss a fingerprint holds that every CPU rounds alike: the initial weights' on the first batch,
    in evaluation mode. Runs made before fingerprints recorded it give their first step's, which is the
    same forward pass in training mode (dropout, the batch's statistics) and, with train.adversarial,
    the adversarial term, whose finite difference rounds otherwise on another CPU."""
    return fp["initial_loss"] if "initial_loss" in fp else fp["losses"][0]


def compare_fingerprint(recorded, now, was="recorded"):
    """'' when the initial losses (where both have one), the checksums and the first LOSS_STEPS losses
    agree within REL_TOL, else where they part: at initialisation, the first step whose loss differs by
    more than REL_TOL, or the checksum that does (`was` names where the first numbers come from)."""
    if "initial_loss" in recorded and "initial_loss" in now and parts(recorded["initial_loss"], now["initial_loss"]):
        return f"parted at initialisation: loss of the initial weights {recorded['initial_loss']} {was}, {now['initial_loss']} now"
    pairs = list(zip(recorded["losses"], now["losses"]))
    first = next((k for k, (a, b) in enumerate(pairs, 1) if parts(a, b)), None)
    sums = [(key, a, now["checksums"][key]) for key, a in recorded["checksums"].items() if parts(a, now["checksums"][key])]
    if not sums and (first is None or first > LOSS_STEPS):
        return ""
    if first is not None:
        a, b = pairs[first - 1]
        return f"parted at step {first}: loss {a} {was}, {b} now" + (f" (relative difference {rel_diff(a, b):.1e})" if a and b else "")
    key, a, b = sums[0]
    return f"parted in the parameters after step {recorded['steps']}: {key} {a:.10g} {was}, {b:.10g} now (relative difference {rel_diff(a, b):.1e})"


def replay_run(run_dir, summary):
    fp = summary.get("fingerprint")
    if not fp:
        raise ReplayError("its summary.json has no fingerprint (a run made before runs recorded one): "
                          "record it with the code of its commit, python tools/fingerprint_at.py RUN_DIR")
    check_fingerprint(fp)
    device = device_of(summary.get("device"))
    recipe = summary.get("recipe")
    if recipe is not None and not isinstance(recipe, dict):
        raise ReplayError(f"its summary.json's recipe is a {type(recipe).__name__}, not the table nnhw.train writes")
    cfg = run_config(run_dir, device, recipe)
    now = dict(steps=fp["steps"], **first_steps(cfg, device, fp["steps"]))
    parted = compare_fingerprint(fp, now)
    if not parted:
        return True, f"same arithmetic: the parameters after its first {fp['steps']} steps, and their losses"
    if fp.get("rounding") == rounding_probe(device):
        return False, parted  # this machine rounds as the one that made the run: not rounding
    return against_its_commit(run_dir, summary, recipe, device, cfg, fp, now, parted)


def against_its_commit(run_dir, summary, recipe, device, cfg, fp, now, parted):
    """The run was made on a machine that rounds otherwise (or before runs recorded how theirs rounds),
    and its recorded steps part from the code at hand: rounding, or changed arithmetic? The code of the
    run's own commit, run here (nnhw.at_commit), rounds as the code at hand does, and decides. Its first
    loss (`first_loss`) must still be the recorded one."""
    commit = summary.get("git_commit", "unknown")
    if commit == "unknown" or commit.endswith("-dirty"):
        return False, f"{parted}; it was made on a machine that rounds otherwise, with code no commit holds ({commit})"
    try:
        then = dict(steps=fp["steps"], **first_steps_at(commit, run_dir, recipe, fp["steps"], device, data_mod.resolve_root(cfg.data.root)))
    except CommitCodeError as e:
        return False, f"{parted}; it was made on a machine that rounds otherwise, and its commit cannot be run here to tell: {e}"
    at_hand = compare_fingerprint(then, now, was=f"at {commit[:12]}")
    if at_hand:
        return False, f"{at_hand}: the code at hand no longer computes what its commit computes here"
    if parts(first_loss(fp), first_loss(then)):
        return False, (f"{parted}, and its commit {commit[:12]} computes another first loss here ({first_loss(fp)} recorded, "
                       f"{first_loss(then)} at {commit[:12]}): its recorded steps are not that commit's run")
    return True, (f"{BY_ITS_COMMIT} {commit[:12]} computes here: the parameters after its first {fp['steps']} steps, "
                  f"and their losses; where it was made, its steps rounded otherwise: {parted}")


def replay_sweep(sweep_dir):
    """Replay a learning-rate sweep at its threshold rate (its first rate when it has none)."""
    from .sweep import build_parser, loss_after_budget

    sw = read_json(Path(sweep_dir) / "sweep.json")
    rows = sw.get("rows")
    if (not isinstance(sw.get("command"), str) or not is_number(sw.get("start_loss")) or not is_number(sw.get("budget_epochs"))
            or not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and is_number(r.get("lr")) and is_number(r.get("loss")) for r in rows)):
        raise ReplayError("its sweep.json has no command, start_loss, budget_epochs and rows of lr and loss, as nnhw.sweep writes")
    try:
        args = build_parser().parse_intermixed_args(shlex.split(sw["command"])[3:])
        path = Path(sweep_dir) / "config.toml"
        cfg = config_mod.load(path) if path.is_file() else config_mod.load(PROJECT_ROOT / args.config, args.overrides)
    except (ConfigError, KeyError, SystemExit) as e:
        raise ReplayError(f"cannot rebuild its config from {sw.get('command')!r}: {e}") from None
    device = device_of(sw.get("device"))
    cfg.run.device = device.type
    splits = data_mod.splits_on_disk(cfg.data, device, cfg.run.seed)
    trainer = Trainer.start(cfg, device, splits["train"])
    net = trainer.net
    start = evaluate(net.params, net.forward, net.loss_fn, splits["train"], cfg.eval.batch_size)[0]
    if rel_diff(start, sw["start_loss"]) > REL_TOL:
        return False, f"parted at initialisation: training loss {sw['start_loss']:.8g} recorded, {start:.8g} now"
    row = next((r for r in sw["rows"] if r["lr"] == sw["threshold_lr"]), sw["rows"][0])
    budget = max(1, round(sw["budget_epochs"] * data_mod.N_TRAIN))
    end = loss_after_budget(cfg, splits, row["lr"], budget, device)
    if not rel_diff(end, row["loss"]) <= REL_TOL:  # NaN parts too
        return False, f"parted at rate {row['lr']:g}: loss after the budget {row['loss']:.8g} recorded, {end:.8g} now"
    return True, f"same arithmetic: the loss at initialisation and after the budget at rate {row['lr']:g}"


def replay(folder):
    """(same: bool, what it found) for a run or sweep folder; ReplayError when it cannot be replayed."""
    folder = Path(folder)
    try:
        if (folder / "sweep.json").is_file():
            return replay_sweep(folder)
        if not (folder / "summary.json").is_file():
            if (folder / "checkpoint.pt").is_file():
                raise ReplayError(f"a run that has not finished (a checkpoint, no summary.json yet); finish it with "
                                  f"python -m nnhw.train --resume {folder}, then replay it")
            raise ReplayError("not a run folder (no summary.json) and not a sweep folder (no sweep.json)")
        summary = read_json(folder / "summary.json")
        if summary.get("processes", 1) != 1:
            raise ReplayError(f"it ran under torchrun with {summary['processes']} processes; replay it the same way")
        return replay_run(folder, summary)
    except (ConfigError, DataError) as e:
        raise ReplayError(str(e)) from None


def replay_command(argv):
    p = Parser(prog="python -m nnhw.replay", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("folders", nargs="+", metavar="RUN_DIR", help="run folders written by nnhw.train (or kept by nnhw.report), or sweep folders")
    args = p.parse_args(argv)
    worst = 0
    for folder in args.folders:
        try:
            same, what = replay(folder)
        except ReplayError as e:
            print(f"{folder}: cannot replay: {e}")
            worst = 2
            continue
        print(f"{folder}: {what}")
        worst = max(worst, 0 if same else 1)
    return worst


def main(argv=None):
    """`python -m nnhw.replay`: the exit code (nnhw.command)."""
    return run_command("nnhw.replay", replay_command, argv)


if __name__ == "__main__":
    sys.exit(main())
