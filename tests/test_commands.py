"""Every command, fed what a new user feeds it: one line and exit 2 for bad input, 128 + the signal
when stopped, a quiet carry-on when stdout closes, and no finished work lost or misreported."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnhw import autodiff, checkpoint, config, rundir, seeds, sweep, train, trainer
from nnhw.config import ConfigError

from conftest import REPO, SHORT, run_cli, wait_for_checkpoint

pytestmark = pytest.mark.slow  # real runs, subprocesses and signals


def one_line(res, code=2):
    """A subprocess that ended with `code` and said why in one line, without a traceback."""
    assert res.returncode == code, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and res.stderr.strip().count("\n") == 0, res.stderr
    return res.stderr.strip()


@pytest.fixture
def env(mnist_root):
    return {"NNHW_DATA_ROOT": str(mnist_root)}


# --------------------------------------------------------------------------- #
# nnhw.train                                                                  #
# --------------------------------------------------------------------------- #


def test_a_real_full_disk_during_a_checkpoint_is_one_line(tmp_path, env):
    """On a 2 MiB tmpfs the first checkpoint (1.3 MB) fits and the second does not."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root): the full disk is simulated in test_faults.py instead")
    try:
        res = run_cli("nnhw.train", "configs/relu.toml", "train.epochs=0.3", "eval.every=5000", f"run.log_dir={disk}", env=env)
        (run_dir,) = (disk / "relu").iterdir()
        assert "no space left on device" in one_line(res) and str(run_dir) in res.stderr
        assert checkpoint.load_checkpoint(run_dir)["points"] == 0  # the checkpoint before stands
        assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("override, message", [
    ("train.elastic_sigma=1e-200", "train.elastic_sigma: must be >= 0.1"),
    ("run.dist_timeout=100000000000000", "run.dist_timeout: must be <= 10000000"),
    ('run.log_dir="logs\\u0000x"', "run.log_dir: control characters"),
])
def test_values_that_overflow_underflow_or_break_a_path_are_refused_at_once(tmp_path, override, message):
    res = run_cli("nnhw.train", str(REPO / "configs" / "relu.toml"), override, cwd=tmp_path, env={"PYTHONPATH": str(REPO)})
    assert message in one_line(res) and not any(tmp_path.iterdir())


def test_a_cnn_whose_maps_do_not_fit_is_refused_before_allocating(tmp_path, env):
    res = run_cli("nnhw.train", "configs/cnn.toml", "model.conv_padding=4000", f"run.log_dir={tmp_path}", env=env)
    assert "GiB" in one_line(res) and "parameters need about" in res.stderr


def test_a_resume_with_a_newline_in_a_path_stops_before_anything(tmp_path, env):
    res = run_cli("nnhw.train", "configs/relu.toml", *SHORT, f"run.log_dir={tmp_path}", env=env)
    run_dir = Path(res.stdout.strip().splitlines()[-1])
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    res = run_cli("nnhw.train", "--resume", str(run_dir), 'data.root="x\\ny"', env=env)
    assert "data.root: control characters" in one_line(res)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    config.load(run_dir / "config.toml")  # still readable


def test_a_closed_stdout_does_not_stop_training(tmp_path, env):
    """`python -m nnhw.train ... | head -2`: the run goes on, quietly, and finishes."""
    proc = subprocess.Popen([sys.executable, "-m", "nnhw.train", "configs/relu.toml", *SHORT, f"run.log_dir={tmp_path}"], cwd=REPO,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = [proc.stdout.readline() for _ in range(2)]
    proc.stdout.close()  # what head does after two lines
    err = proc.stderr.read()
    assert proc.wait(timeout=600) == 0 and "Traceback" not in err and "Error" not in err, err
    assert first[0].startswith("layer")
    (run_dir,) = (tmp_path / "relu").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


def test_two_sigterms_exit_143_and_name_the_run(tmp_path, env):
    # 2,000 hidden units: a 13 MB checkpoint, whose write the second signal lands in
    proc = subprocess.Popen([sys.executable, "-m", "nnhw.train", "configs/relu.toml", "model.hidden=[2000]", "train.epochs=1",
                             "eval.every=1000", "eval.max_points=1000", f"run.log_dir={tmp_path}"], cwd=REPO, env={**os.environ, **env, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_dir = wait_for_checkpoint(tmp_path / "relu", 1000, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 143, err
    assert "Traceback" not in err and str(run_dir) in err.strip().splitlines()[-1]
    assert checkpoint.load_checkpoint(run_dir)["points"] >= 1000


def test_the_divergence_message_names_the_checkpoint_on_disk(tmp_path, monkeypatch, capsys, mnist_root):
    """Stopped mid-interval (a checkpoint at 750 points, between the evaluations at 500 and 1000), then
    resumed at a rate that diverges: the message names 750 points' epoch, 0.015."""
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    real_step = trainer.Trainer.step

    def step_then_signal(self, state):
        out = real_step(self, state)
        if state.step == 15:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does; the loop checkpoints after this step
        return out

    monkeypatch.setattr(trainer.Trainer, "step", step_then_signal)
    assert train.main(["configs/relu.toml", *SHORT, f"run.log_dir={tmp_path}"]) == 130
    monkeypatch.setattr(trainer.Trainer, "step", real_step)
    (run_dir,) = (tmp_path / "relu").iterdir()
    assert checkpoint.load_checkpoint(run_dir)["points"] == 750
    capsys.readouterr()
    assert train.main(["--resume", str(run_dir), "optim.lr=1e6"]) == train.EXIT_DIVERGED
    assert "the checkpoint of epoch 0.015 is kept" in capsys.readouterr().err


def test_a_long_seed_list_keeps_its_aggregate_name_short():
    long = [10**17 + i for i in range(11)]
    assert seeds.seeds_label([0, 1, 2]) == "0-1-2"
    assert seeds.seeds_label(long) == f"{long[0]}-to-{long[-1]}_11-seeds" and len(seeds.seeds_label(list(range(72)))) < 40


def test_a_file_name_too_long_is_one_line_and_leaves_nothing(tmp_path):
    with pytest.raises(rundir.RunError, match="file name too long"):
        rundir.atomic_write_text(tmp_path / ("x" * 300 + ".json"), "{}")
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- #
# the other commands                                                          #
# --------------------------------------------------------------------------- #


def test_plot_of_a_garbage_checkpoint_is_one_line(tmp_path):
    for name in ("config.toml", "history.json", "checkpoint.pt"):
        (tmp_path / name).write_bytes(b"\x80\x04garbage")
    (tmp_path / "config.toml").write_text("")
    (tmp_path / "history.json").write_text('[{"points": 0, "epoch": 0, "train_loss": 1, "train_error": 1, "test_loss": 1, "test_error": 1}]')
    res = run_cli("nnhw.plot", str(tmp_path))
    assert "cannot read the checkpoint" in one_line(res)


@pytest.mark.parametrize("args, message", [
    (["--hi", "inf"], "--lo and --hi: need finite rates"),
    (["--lo", "1e-300", "--hi", "1e300", "--per-decade", "10"], "at most 200 rates"),
    (["--budget", "nan"], "--budget: need 0 < budget <= 10"),
])
def test_sweep_options_are_checked_first(tmp_path, args, message):
    res = run_cli("nnhw.sweep", "configs/relu.toml", *args, f"run.log_dir={tmp_path}")
    assert message in one_line(res) and not any(tmp_path.iterdir())


def test_sweep_takes_overrides_after_its_options_and_ctrl_c_leaves_no_folder(tmp_path, monkeypatch, capsys):
    seen = {}

    def interrupted(cfg, lrs, budget):
        seen["lr_grid"], seen["batch"] = lrs, cfg.train.batch_size
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "sweep", interrupted)
    code = sweep.main(["configs/relu.toml", "--lo", "0.1", "--hi", "1", "train.batch_size=7", f"run.log_dir={tmp_path}"])
    assert code == 130 and seen["batch"] == 7 and seen["lr_grid"][0] == 0.1
    assert "interrupted" in capsys.readouterr().err
    assert not any((tmp_path / "relu-sweep").iterdir())


@pytest.mark.parametrize("args, message", [
    (["--dims", "10", "10"], "--dims needs at least two different values"),
    (["--w2", "400"], "overflow"),
    (["--w1", "nan"], "need finite numbers"),
])
def test_autodiff_points_and_dims_are_checked_first(tmp_path, args, message):
    res = run_cli("nnhw.autodiff", *args, "--out", str(tmp_path))
    assert message in one_line(res) and not (tmp_path / "autodiff.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--device", "foo"], "run.device: expected"),
    (["--repeats", "0"], "--repeats: need 1 to 1000"),
    (["--configs", "nope"], "--configs: no configs/nope.toml"),
])
def test_bench_options_are_checked_before_minutes_of_work(tmp_path, args, message):
    res = subprocess.run([sys.executable, "tools/bench.py", *args, "--out", str(tmp_path / "b.json")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert message in one_line(res) and not (tmp_path / "b.json").exists()


def test_config_errors_are_nnhw_errors():
    """One kind of error for the entry point to turn into one line."""
    with pytest.raises(ConfigError):
        config.load(None, ["optim.eps=0"])
    from nnhw.command import NnhwError

    assert issubclass(ConfigError, NnhwError) and issubclass(rundir.RunError, NnhwError)


def test_autodiff_refuses_the_point_before_writing(tmp_path):
    assert autodiff.main(["--w1", "nan", "--out", str(tmp_path)]) == 2
    assert not any(tmp_path.iterdir())
