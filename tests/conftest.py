import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _mnist_root():
    for root in (os.environ.get("NNHW_DATA_ROOT"), SHARED_DATA):
        if root and (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(root)
    return None


@pytest.fixture(scope="session")
def mnist_root():
    """The real MNIST, from NNHW_DATA_ROOT or ../shared/data; tests never download it."""
    root = _mnist_root()
    if root is None:
        pytest.skip("real MNIST not found: neither NNHW_DATA_ROOT nor ../shared/data holds MNIST/raw/")
    return root


def run_cli(*args, env=None, cwd=REPO, timeout=600):
    """`python -m <args>` in a fresh process; returns CompletedProcess with text output."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def wait_for_checkpoint(run_parent, points, proc, timeout=180):
    """The run folder under run_parent once its checkpoint holds `points` (the process must still run)."""
    from nnhw import train

    t0 = time.time()
    while time.time() - t0 < timeout:
        for ckpt in run_parent.glob("*/checkpoint.pt"):
            try:
                if train.load_checkpoint(ckpt.parent)["points"] >= points:
                    return ckpt.parent
            except train.RunError:
                pass  # being replaced right now
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")
