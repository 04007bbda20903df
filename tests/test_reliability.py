"""Bad input, broken files, killed and interrupted runs: nothing is lost and nothing is a traceback."""

import io
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnhw import checkpoint, config, data, rundir, train
from nnhw.config import ConfigError

from conftest import REPO, a_checkpoint, wait_for_checkpoint

pytestmark = pytest.mark.slow  # killed, interrupted and concurrent runs in subprocesses

# --------------------------------------------------------------------------- #
# Config: random TOML and overrides raise nothing but ConfigError             #
# --------------------------------------------------------------------------- #

KEYS = [(s, f.name) for s, fac in config.SECTIONS.items() for f in config.dataclasses.fields(fac())]
scalars = st.one_of(
    st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=12), st.lists(st.integers(-5, 5000), max_size=4), st.lists(st.floats(-10, 10), max_size=3),
)
names = st.one_of(st.sampled_from([k for _, k in KEYS]), st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10))
sections = st.one_of(st.sampled_from(list(config.SECTIONS)), st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8))


def _toml(table):
    lines = []
    for section, body in table.items():
        lines.append(f"[{section}]")
        for k, v in body.items():
            lines.append(f"{k} = {config._toml_value(v)}")  # floats as repr: inf and nan are TOML too
    return "\n".join(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=st.dictionaries(sections, st.dictionaries(names, scalars, max_size=4), max_size=4), raw=st.text(max_size=60),
       overrides=st.lists(st.one_of(st.text(max_size=30), st.builds(lambda s, k, v: f"{s}.{k}={v}", sections, names, st.text(max_size=12))), max_size=3))
def test_random_configs_raise_only_config_error(tmp_path, table, raw, overrides):
    for text in (_toml(table), raw):
        path = tmp_path / "random.toml"
        path.write_text(text)
        try:
            config.load(path, overrides)
        except ConfigError as e:
            assert "\n" not in str(e)


# --------------------------------------------------------------------------- #
# Data                                                                        #
# --------------------------------------------------------------------------- #


def test_read_only_data_root_works_and_stays_untouched(tmp_path, mnist_root):
    raw = tmp_path / "ro" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.FILES:
        os.symlink(mnist_root / "MNIST" / "raw" / name, raw / name)
    for d in (raw, raw.parent, raw.parent.parent):
        d.chmod(0o555)
    try:
        before = sorted(p.name for p in (tmp_path / "ro").rglob("*"))
        splits = data.load_splits(tmp_path / "ro")
        assert len(splits["train"]) == 50000
        assert sorted(p.name for p in (tmp_path / "ro").rglob("*")) == before
    finally:
        for d in (raw, raw.parent, raw.parent.parent):
            d.chmod(0o755)


# --------------------------------------------------------------------------- #
# Checkpoints                                                                 #
# --------------------------------------------------------------------------- #


class Crash(Exception):
    pass


def _checkpoint(points):
    """A whole checkpoint of softmax regression, as the training loop writes it, at `points`."""
    return a_checkpoint(config.load(REPO / "configs" / "softmax.toml"), points=points)


@pytest.mark.parametrize("where", ["mid-write", "before-fsync", "before-rename"])
def test_interrupted_checkpoint_write_keeps_previous(tmp_path, monkeypatch, where):
    train.save_checkpoint(tmp_path, _checkpoint(points=1))

    real_save, real_fsync, real_replace = torch.save, os.fsync, os.replace

    def partial_save(obj, f):
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[:100])
        raise Crash

    if where == "mid-write":
        monkeypatch.setattr(torch, "save", partial_save)
    elif where == "before-fsync":
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(Crash()))
    else:
        monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        train.save_checkpoint(tmp_path, _checkpoint(points=2))
    monkeypatch.setattr(torch, "save", real_save)
    monkeypatch.setattr(os, "fsync", real_fsync)
    monkeypatch.setattr(os, "replace", real_replace)
    ckpt = checkpoint.load_checkpoint(tmp_path)
    assert ckpt["points"] == 1 and torch.equal(ckpt["params"]["W1"], _checkpoint(points=1)["params"]["W1"])


def test_checkpoint_is_data_not_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"points": 1, "x": Evil()}, tmp_path / checkpoint.CHECKPOINT)
    with pytest.raises(rundir.RunError, match="cannot read the checkpoint"):
        checkpoint.load_checkpoint(tmp_path)


def test_run_dirs_never_collide(tmp_path):
    dirs = {rundir.make_run_dir(tmp_path, "x") for _ in range(5)}
    assert len(dirs) == 5


# --------------------------------------------------------------------------- #
# Whole runs in their own processes                                           #
# --------------------------------------------------------------------------- #

LONGISH = ["train.epochs=0.3", "eval.every=500", "train.batch_size=50", "eval.max_points=2000"]


def start(tmp_path, mnist_root, *extra, log="logs"):
    env = dict(os.environ, NNHW_DATA_ROOT=str(mnist_root), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "nnhw.train", "configs/sigmoid.toml", *LONGISH, f"run.log_dir={tmp_path / log}", *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, mnist_root):
    whole = start(tmp_path, mnist_root, log="whole")  # one thread each: the two runs side by side on two cores
    victim = start(tmp_path, mnist_root, log="killed")
    run_dir = wait_for_checkpoint(tmp_path / "killed" / "sigmoid", 2000, victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert whole.wait(300) == 0
    (whole_dir,) = (tmp_path / "whole" / "sigmoid").iterdir()
    assert not (run_dir / "summary.json").exists()
    res = subprocess.run([sys.executable, "-m", "nnhw.train", "--resume", str(run_dir)], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, NNHW_DATA_ROOT=str(mnist_root), OMP_NUM_THREADS="1"), timeout=300)
    assert res.returncode == 0, res.stderr
    a, b = checkpoint.load_checkpoint(whole_dir)["params"], checkpoint.load_checkpoint(run_dir)["params"]
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert json.loads((run_dir / "history.json").read_text()) != []


def test_ctrl_c_saves_and_exits_130(tmp_path, mnist_root):
    proc = start(tmp_path, mnist_root)
    run_dir = wait_for_checkpoint(tmp_path / "logs" / "sigmoid", 1000, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"Resume with: python -m nnhw.train --resume {run_dir}" in err and "Traceback" not in err
    ckpt = checkpoint.load_checkpoint(run_dir)
    assert ckpt["points"] >= 1000 and not (run_dir / "summary.json").exists()


def test_two_runs_at_once_use_two_folders(tmp_path, mnist_root):
    procs = [start(tmp_path, mnist_root, "train.epochs=0.02") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    dirs = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(dirs) == 2
    for d in dirs:
        assert json.loads(open(os.path.join(d, "summary.json")).read())["status"] == "finished"
