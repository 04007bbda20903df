"""A run's first steps as the code of another commit computes them, on this machine.

A run's fingerprint holds its first steps as the CPU that made it rounded them. Another CPU of the same
kind rounds differently, and in the batch-normalised CNNs trained with Adam that difference grows past
what a learning rate 1% off moves within a few steps (docs/results.md), so the recorded numbers alone
cannot say whether the code at hand still computes such a run. The code of the run's own commit, run
here, rounds as the code at hand does: `first_steps_at` takes that commit's nnhw/ from git (`git
archive`, into a temporary folder; the checkout is not touched) and runs its own
`nnhw.replay.first_steps` in a separate Python process.
"""

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from . import PROJECT_ROOT
from .command import NnhwError

TIMEOUT_S = 900  # the old code's start (MNIST read in) and its first steps: seconds for every committed config

# Runs in a folder that holds the commit's nnhw/, which Python imports before the installed one (the
# script's folder comes first on sys.path). Runs made before summaries kept their recipe replay from
# config.toml alone, as that commit's run_config does.
DRIVER = """
import inspect, json, sys
from pathlib import Path
import torch
from nnhw import replay

run_dir, steps, recipe, device, out = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), torch.device(sys.argv[4]), Path(sys.argv[5])
takes_recipe = "recipe" in inspect.signature(replay.run_config).parameters
cfg = replay.run_config(run_dir, device, recipe) if takes_recipe else replay.run_config(run_dir, device)
out.write_text(json.dumps(replay.first_steps(cfg, device, steps)))
"""


class CommitCodeError(NnhwError, RuntimeError):
    """The commit's code could not be run here; the message is one line."""


def is_commit(name):
    """Whether `name` is a commit of this checkout's git history (False without git)."""
    try:
        res = subprocess.run(["git", "cat-file", "-e", f"{name}^{{commit}}"], cwd=PROJECT_ROOT, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0


def first_steps_at(commit, run_dir, recipe, steps, device, data_root):
    """{'losses', 'checksums'} of the run's first `steps` steps as `commit`'s code computes them on this
    machine (its nnhw.replay.first_steps, given the run's recipe), reading MNIST from `data_root`;
    CommitCodeError when git cannot give that code or the code cannot replay the run."""
    if not is_commit(commit):
        raise CommitCodeError(f"its commit {commit} is not in this checkout's git history")
    with tempfile.TemporaryDirectory(prefix="nnhw-at-commit-") as tmp:
        tmp = Path(tmp)
        archive = subprocess.run(["git", "archive", "--format=tar", commit, "nnhw"], cwd=PROJECT_ROOT, capture_output=True, timeout=60)
        if archive.returncode != 0:
            raise CommitCodeError(f"git archive {commit[:12]} failed: {archive.stderr.decode(errors='replace').strip()}")
        archive_path = tmp / "code.tar"
        archive_path.write_bytes(archive.stdout)
        with tarfile.open(archive_path) as tar:
            tar.extractall(tmp, filter="data")
        (tmp / "driver.py").write_text(DRIVER)
        out = tmp / "first_steps.json"
        args = [sys.executable, str(tmp / "driver.py"), str(Path(run_dir).resolve()), str(steps), json.dumps(recipe), device.type, str(out)]
        env = {**os.environ, "NNHW_DATA_ROOT": str(Path(data_root).resolve())}
        try:
            res = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CommitCodeError(f"the code of {commit[:12]} took more than {TIMEOUT_S} s for its first {steps} steps") from None
        if res.returncode != 0 or not out.is_file():
            last = (res.stderr.strip().splitlines() or ["no message"])[-1]
            raise CommitCodeError(f"the code of {commit[:12]} could not replay it: {last}")
        return json.loads(out.read_text())
