"""Record the fingerprint of runs made before nnhw recorded one, with the code that made them.

    python tools/fingerprint_at.py RUN_DIR...

A run's fingerprint (nnhw.trainer.Trainer) is the loss of each of its first steps and
checksums of the parameters after them; `python -m nnhw.replay` compares it with
what the code at hand computes. For a run whose summary.json has none, this script
checks out the run's own commit (its summary's git_commit) in a temporary git
worktree, runs that commit's own `nnhw.train.run` on the run's config.toml with its
training step wrapped to note each step's loss and stop after FINGERPRINT_STEPS,
and writes the losses and the checksums of the parameters it stopped with into
summary.json, with the commit that computed them (`computed_at`). The fingerprint
thus comes from the run's code, never from the code it is later checked against.

Needs git and the commit in this repository's history, MNIST (NNHW_DATA_ROOT), and a
commit whose nnhw.train.run builds its step with nnhw.train.make_train_step.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nnhw import PROJECT_ROOT  # noqa: E402
from nnhw.rundir import atomic_write_text  # noqa: E402
from nnhw.trainer import FINGERPRINT_STEPS, checksums  # noqa: E402

# Runs inside the old commit's checkout: its train.run, its step, its data order; the parameters
# after the last noted step are saved for the checksums, which HEAD's nnhw.trainer.checksums computes.
DRIVER = """
import json, sys, tempfile
from pathlib import Path
import torch
from nnhw import config, train

run_dir, n, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
losses = []

class Done(BaseException):
    pass

make = train.make_train_step

def noting(params, *args, **kwargs):
    step = make(params, *args, **kwargs)

    def noted(*a, **k):
        loss = step(*a, **k)
        losses.append(None if loss is None else loss.item())
        if len(losses) == n:
            torch.save({name: p.detach().cpu() for name, p in params.items()}, out / "params.pt")
            raise Done
        return loss

    return noted

train.make_train_step = noting
cfg = config.load(run_dir / "config.toml")
cfg.run.device, cfg.run.log_dir = "cpu", str(out / "logs")
try:
    train.run(cfg)
except Done:
    (out / "losses.json").write_text(json.dumps(losses))
"""


def fingerprint_at(run_dir, commit):
    """(losses, checksums) of the run's first FINGERPRINT_STEPS steps, computed by `commit`'s code."""
    with tempfile.TemporaryDirectory() as tmp:
        tree, out = Path(tmp) / "tree", Path(tmp) / "out"
        out.mkdir()
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), commit], cwd=PROJECT_ROOT, check=True)
        try:
            env = dict(os.environ, PYTHONPATH=str(tree))
            subprocess.run([sys.executable, "-c", DRIVER, str(Path(run_dir).resolve()), str(FINGERPRINT_STEPS), str(out)],
                           cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=PROJECT_ROOT, check=True)
        if not (out / "losses.json").is_file():
            raise SystemExit(f"{run_dir}: the run at {commit} ended before {FINGERPRINT_STEPS} steps")
        losses = json.loads((out / "losses.json").read_text())
        return losses, checksums(torch.load(out / "params.pt", weights_only=True))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    args = p.parse_args(argv)
    for run_dir in map(Path, args.run_dirs):
        path = run_dir / "summary.json"
        if not path.is_file():
            print(f"{run_dir}: skipped: not a run folder (no summary.json)")
            continue
        summary = json.loads(path.read_text())
        commit = summary.get("git_commit", "unknown")
        if summary.get("fingerprint"):
            print(f"{run_dir}: has a fingerprint already")
            continue
        if commit == "unknown" or commit.endswith("-dirty") or not summary.get("device", "").startswith("cpu"):
            print(f"{run_dir}: skipped: made with uncommitted code, outside git, or not on a CPU ({commit}, {summary.get('device')})")
            continue
        losses, sums = fingerprint_at(run_dir, commit)
        summary["fingerprint"] = dict(steps=len(losses), losses=losses, checksums=sums, computed_at=commit)
        atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
        print(f"{run_dir}: fingerprint of {len(losses)} steps computed at {commit[:12]}")


if __name__ == "__main__":
    main()
