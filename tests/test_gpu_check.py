"""tools/gpu_check.sh waits for a machine with a GPU; its CPU mode keeps it from rotting meanwhile."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # the GPU script end to end on a CPU


def gpu_check(tmp_path, **env):
    full = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "OUT": str(tmp_path / "out"), **env}
    return subprocess.run(["bash", "tools/gpu_check.sh"], cwd=REPO, env=full, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_runs_every_step_on_the_cpu(tmp_path, mnist_root):
    # the time-to-99% table trains three recipes in full; tests/test_bench.py checks its parts
    # two smoke runs stand for all: each config's runs the same lines of the script (tests/test_cuda_ready.py
    # takes every config's step on simulated CUDA, tests/test_train.py a few real steps of each published recipe)
    res = gpu_check(tmp_path, NNHW_DATA_ROOT=str(mnist_root), EPOCHS="0.01", TRAIN_ARGS="eval.max_points=1000",
                    BENCH_CONFIGS="sigmoid", BENCH_REPEATS="1", TIME_TO_99="0", TRAIN_CONFIGS="fast", SMOKE_CONFIGS="gd_sharpness_lr0.1 relu")
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["bench-cpu.json", "bench.txt", "device.txt", "smoke.log", "summaries.json", "train.log"]  # at most 8 come back
    smoke = (out / "smoke.log").read_text()
    assert [line.removeprefix("== ") for line in smoke.splitlines() if line.startswith("== ")] == [f"{c}: ok" for c in ("gd_sharpness_lr0.1", "relu")]
    assert [r["config"] for r in json.loads((out / "bench-cpu.json").read_text())["rows"]] == ["sigmoid"]
    summaries = json.loads((out / "summaries.json").read_text())
    assert sorted(summaries) == ["fast"]  # each config's training takes the same steps of the script
    for cfg, summary in summaries.items():
        assert summary["status"] == "finished" and summary["passes"] > 0 and "time_to_accuracy" in summary
        assert summary["cuda"] is None  # the GPU and its TF32 and determinism settings, on CUDA only
        assert f"{cfg}: " in res.stdout


def test_gpu_check_stops_at_a_config_that_cannot_run_and_says_why(tmp_path, mnist_root):
    # a config the device refuses (here: a CUDA device index this machine lacks) fails its smoke run; the
    # reason lands in $OUT/smoke.log before any long step starts
    res = gpu_check(tmp_path, NNHW_DATA_ROOT=str(mnist_root), DEVICE="cuda:7", BENCH="0", TIME_TO_99="0", SMOKE_CONFIGS="fast relu")
    assert res.returncode == 1
    assert "a config failed its smoke run on cuda:7" in res.stderr
    smoke = (tmp_path / "out" / "smoke.log").read_text()
    assert "== relu: FAILED" in smoke and "run.device: 'cuda:7' asked for" in smoke
    assert not (tmp_path / "out" / "train.log").exists()


def test_gpu_check_without_mnist_says_what_to_do(tmp_path):
    # a copy of the repo with no ../shared beside it and no .mnist/
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "tools", repo / "tools")
    env = {k: v for k, v in os.environ.items() if k != "NNHW_DATA_ROOT"}
    res = subprocess.run(["bash", "tools/gpu_check.sh"], cwd=repo, env=dict(env, OUT=str(tmp_path / "out")), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip() == "gpu_check: no MNIST: set NNHW_DATA_ROOT, or put the four gzipped raw files in .mnist/"
