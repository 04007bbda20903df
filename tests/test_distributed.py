"""Data-parallel training: 2 processes on gloo (CPU) equal 1 process with the same global batch."""

import os
import subprocess
import sys

import pytest

from nnhw import checkpoint
from nnhw.dist import World

from conftest import REPO

pytestmark = pytest.mark.slow  # torchrun with several processes

RUN = ["configs/relu.toml", "train.epochs=0.04", "eval.every=1000", "train.batch_size=100"]


def test_shards_cover_the_batch_evenly():
    for n in (0, 1, 7, 100):
        parts = [World(r, 3).shard(n) for r in range(3)]
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
        assert max(h - l for l, h in parts) - min(h - l for l, h in parts) <= 1


def torchrun(tmp_path, nproc, *extra, mnist_root):
    env = dict(os.environ, NNHW_DATA_ROOT=str(mnist_root), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
         "-m", "nnhw.train", *RUN, f"run.log_dir={tmp_path}", *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )


def test_two_processes_equal_one(tmp_path, mnist_root):
    one = subprocess.run(
        [sys.executable, "-m", "nnhw.train", *RUN, f"run.log_dir={tmp_path / 'one'}"],
        cwd=REPO, env=dict(os.environ, NNHW_DATA_ROOT=str(mnist_root), OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600,
    )
    assert one.returncode == 0, one.stderr
    two = torchrun(tmp_path / "two", 2, mnist_root=mnist_root)
    assert two.returncode == 0, two.stderr
    (one_dir,) = (tmp_path / "one" / "relu").iterdir()
    runs = list((tmp_path / "two" / "relu").iterdir())
    assert len(runs) == 1  # only rank 0 writes a run folder
    two_dir = runs[0]
    a, b = checkpoint.load_checkpoint(one_dir), checkpoint.load_checkpoint(two_dir)
    assert a["points"] == b["points"] == 2000
    for name in a["params"]:
        diff = (a["params"][name] - b["params"][name]).abs().max() / a["params"][name].abs().max()
        assert diff <= 1e-6, (name, diff.item())
    # The sharded evaluation adds up to the single-process one.
    ha, hb = a["history"], b["history"]
    assert [r["points"] for r in ha] == [r["points"] for r in hb]
    for ra, rb in zip(ha, hb):
        assert ra["dev_error"] == rb["dev_error"] and ra["dev_loss"] == pytest.approx(rb["dev_loss"], rel=1e-5)
    assert (two_dir / "summary.json").read_text().count('"processes": 2') == 1


def test_batch_must_split_evenly(tmp_path, mnist_root):
    res = torchrun(tmp_path, 2, "train.batch_size=101", mnist_root=mnist_root)
    assert res.returncode != 0
    assert "train.batch_size: 101 does not split evenly over 2 processes" in res.stderr


def _rank_pids(parent_pid, rank):
    """PIDs of the worker processes (descendants of parent_pid) whose environment says RANK=rank."""
    pids = []
    for proc in os.listdir("/proc"):
        if not proc.isdigit():
            continue
        try:
            env = open(f"/proc/{proc}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=%d" % rank in env and int(proc) != parent_pid:
            pids.append(int(proc))
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the worker processes")
def test_a_dead_rank_stops_the_others(tmp_path, mnist_root):
    import signal
    import time

    env = dict(os.environ, NNHW_DATA_ROOT=str(mnist_root), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "nnhw.train",
         "configs/relu.toml", "train.epochs=2", "eval.every=1000", f"run.log_dir={tmp_path}", "run.dist_timeout=60"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("relu/*/checkpoint.pt")):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    victims = _rank_pids(proc.pid, 1)
    assert victims, "no rank-1 worker found"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    t0 = time.time()
    out, err = proc.communicate(timeout=180)
    assert proc.returncode != 0 and time.time() - t0 < 120  # stopped, did not hang
    assert not list(tmp_path.glob("relu/*/summary.json"))  # the run is not reported finished
    assert list(tmp_path.glob("relu/*/checkpoint.pt"))  # and its last checkpoint stands
