"""examples/minimal.py runs as a newcomer would run it, and meets its own accuracy check."""

import os
import re
import subprocess
import sys

from conftest import REPO


def test_minimal_example_trains_and_checks_itself(mnist_root):
    res = subprocess.run([sys.executable, "examples/minimal.py"], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, NNHW_DATA_ROOT=str(mnist_root)))
    assert res.returncode == 0, res.stdout + res.stderr
    accuracy = float(re.search(r"test accuracy after one epoch: ([\d.]+)%", res.stdout).group(1))
    assert accuracy > 96.0
