"""The fault matrix: each way a run can be killed, interrupted, fed bad input or starved of disk,
and what nnhw promises then (one line, the right exit code, nothing written is lost)."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from nnhw import checkpoint, config, data, functions as nf, rundir, train
from nnhw.config import ConfigError

from conftest import REPO, SHORT, _mnist_root, wait_for_checkpoint
from conftest import killed_after_checkpoint as killed_after

pytestmark = pytest.mark.slow  # the fault matrix: signals, resumes and full disks around real runs


def short_cfg(log_dir, name="relu", extra=()):
    return config.load(REPO / "configs" / f"{name}.toml", [*SHORT, f'run.log_dir="{log_dir}"', *extra])


def killed_after_checkpoint(monkeypatch, log_dir, n, extra=()):
    """A run killed right after its n-th checkpoint (1 = the one before any step); its folder."""
    killed_after(monkeypatch, n, lambda: train.run(short_cfg(log_dir, extra=extra)))
    (run_dir,) = (log_dir / "relu").iterdir()
    return run_dir


def one_line_error(capsys, code, expected_code=2):
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    return err


@pytest.fixture(autouse=True)
def data_root(monkeypatch):
    """Runs read the real MNIST when there is one; the tests that need it also ask for mnist_root."""
    if _mnist_root() is not None:
        monkeypatch.setenv("NNHW_DATA_ROOT", str(_mnist_root()))


@pytest.fixture(scope="module")
def whole(tmp_path_factory, mnist_root, module_env):
    """An uninterrupted short relu run: what every resumed run must end as."""
    module_env.setenv("NNHW_DATA_ROOT", str(mnist_root))
    log_dir = tmp_path_factory.mktemp("whole")
    relu_dir, status, _ = train.run(short_cfg(log_dir))
    assert status == "finished"
    return relu_dir


# --------------------------------------------------------------------------- #
# a. resume from any checkpoint, the first included, is bit-identical         #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("n", [1, 2, 3])
def test_resume_from_checkpoint_n_equals_uninterrupted(tmp_path, monkeypatch, whole, n):
    run_dir = killed_after_checkpoint(monkeypatch, tmp_path, n)
    assert checkpoint.load_checkpoint(run_dir)["points"] == 500 * (n - 1)
    assert train.main(["--resume", str(run_dir)]) == 0
    a, b = checkpoint.load_checkpoint(whole)["params"], checkpoint.load_checkpoint(run_dir)["params"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    hist = json.loads((run_dir / "history.json").read_text())
    assert [r["points"] for r in hist] == [0, 500, 1000, 1500, 2000]


def test_resume_with_dropout_is_exact_too(tmp_path, monkeypatch, mnist_root):
    extra = ["model.dropout_hidden=0.5", "train.augment=\"shift\""]
    whole_dir, _, _ = train.run(short_cfg(tmp_path / "whole", extra=extra))
    run_dir = killed_after_checkpoint(monkeypatch, tmp_path / "killed", 2, extra)
    assert train.main(["--resume", str(run_dir)]) == 0
    a, b = checkpoint.load_checkpoint(whole_dir)["params"], checkpoint.load_checkpoint(run_dir)["params"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- #
# b. SIGTERM and SIGHUP behave as Ctrl-C                                      #
# --------------------------------------------------------------------------- #


def start(log_dir, mnist_root, *extra):
    env = dict(os.environ, NNHW_DATA_ROOT=str(mnist_root), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "nnhw.train", "configs/sigmoid.toml", "train.epochs=0.3", "eval.every=500",
                             "train.batch_size=50", f"run.log_dir={log_dir}", *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_save_and_exit(tmp_path, mnist_root, sig, code):
    proc = start(tmp_path, mnist_root)
    run_dir = wait_for_checkpoint(tmp_path / "sigmoid", 500, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert f"interrupted by {signal.Signals(sig).name}; checkpoint saved. Resume with: python -m nnhw.train --resume {run_dir}" in err
    assert "Traceback" not in err and not (run_dir / "summary.json").exists()
    assert checkpoint.load_checkpoint(run_dir)["points"] >= 500


# --------------------------------------------------------------------------- #
# c. one writer per run folder; temporary files of its own; none left behind  #
# --------------------------------------------------------------------------- #


def test_second_resume_of_a_running_run_exits_2(tmp_path, monkeypatch, capsys, whole):
    run_dir = killed_after_checkpoint(monkeypatch, tmp_path, 2)
    before = (run_dir / checkpoint.CHECKPOINT).read_bytes()
    with rundir.RunLock(run_dir):  # the run that is still going
        err = one_line_error(capsys, train.main(["--resume", str(run_dir)]))
    assert f"{run_dir} is in use by another nnhw.train" in err
    assert (run_dir / checkpoint.CHECKPOINT).read_bytes() == before


def test_each_writer_has_its_own_temporary_file(tmp_path, monkeypatch):
    names, real = [], rundir.os.replace
    monkeypatch.setattr(rundir.os, "replace", lambda src, dst: names.append(str(src)) or real(src, dst))
    for _ in range(2):
        rundir.atomic_write_bytes(tmp_path / "f", b"x")
    assert names[0] != names[1] and all(n.endswith(".tmp") for n in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


# --------------------------------------------------------------------------- #
# d. overrides a resume cannot apply                                          #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("override,key", [
    ("model.hidden=[50]", "model.hidden"), ("model.arch=cnn", "model.arch"),
    ('data.train_split="train+dev"', "data.train_split"), ("data.standardize=true", "data.standardize"),
    ("run.seed=5", "run.seed"), ("train.batch_size=20", "train.batch_size"),
])
def test_resume_rejects_what_the_checkpoint_depends_on(tmp_path, monkeypatch, capsys, whole, override, key):
    run_dir = killed_after_checkpoint(monkeypatch, tmp_path, 2)
    files = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    err = one_line_error(capsys, train.main(["--resume", str(run_dir), override]))
    assert f"{key}: cannot change on --resume" in err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == files  # config.toml untouched


def test_resume_from_train_dev_rejects_train_split(tmp_path, monkeypatch, capsys, mnist_root):
    run_dir = killed_after_checkpoint(monkeypatch, tmp_path, 2, ['data.train_split="train+dev"'])
    err = one_line_error(capsys, train.main(["--resume", str(run_dir), 'data.train_split="train"']))
    assert "data.train_split: cannot change on --resume" in err


def test_resume_applies_and_records_what_it_may_change(tmp_path, monkeypatch, whole):
    run_dir = killed_after_checkpoint(monkeypatch, tmp_path, 2)
    assert train.main(["--resume", str(run_dir), "train.epochs=0.06", "optim.lr=0.05", "eval.every=1000"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 60
    (change,) = summary["changes"]
    assert change["points"] == 500
    assert "train.epochs: 0.04 -> 0.06" in change["change"] and "optim.lr: 1.0 -> 0.05" in change["change"]
    assert config.load(run_dir / "config.toml").train.epochs == 0.06


# --------------------------------------------------------------------------- #
# e. a checkpoint from another kind of device                                 #
# --------------------------------------------------------------------------- #


def test_resume_of_a_cuda_checkpoint_on_the_cpu(tmp_path, monkeypatch, whole):
    run_dir = killed_after_checkpoint(monkeypatch, tmp_path, 2, ["model.dropout_hidden=0.5"])
    ckpt = checkpoint.load_checkpoint(run_dir)
    ckpt["noise_rng"] = torch.arange(16, dtype=torch.uint8)  # a CUDA generator's state: seed and offset
    ckpt["noise_device"] = "cuda"
    train.save_checkpoint(run_dir, ckpt)
    assert train.main(["--resume", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    resume, reseeded = summary["changes"]  # the resume, and what it had to do
    assert summary["status"] == "finished" and resume["keys"] == [] and "re-seeded on cpu" in reseeded["change"] and reseeded["keys"] == ["noise"]


# --------------------------------------------------------------------------- #
# f. bad checkpoints                                                          #
# --------------------------------------------------------------------------- #


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:200])


BAD = {
    "empty": lambda p: p.write_bytes(b""),
    "truncated": _truncate,
    "not a dict": lambda p: torch.save([1, 2], p),
    "missing key": lambda p: torch.save({k: v for k, v in torch.load(p, weights_only=True).items() if k != "perm"}, p),
    "wrong type": lambda p: torch.save(dict(torch.load(p, weights_only=True), points="many"), p),
    "code": lambda p: torch.save({"points": 1, "x": Evil()}, p),
}


@pytest.mark.parametrize("how", list(BAD))
def test_bad_checkpoint_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys, whole, how):
    run_dir = killed_after_checkpoint(monkeypatch, tmp_path, 2)
    path = run_dir / checkpoint.CHECKPOINT
    BAD[how](path)
    err = one_line_error(capsys, train.main(["--resume", str(run_dir)]))
    assert str(path) in err and "weights_only=False" not in err and "pwned" not in err


# --------------------------------------------------------------------------- #
# g. a full disk or a read-only run folder                                    #
# --------------------------------------------------------------------------- #


def test_full_disk_keeps_the_last_checkpoint_and_no_tmp(tmp_path, monkeypatch, capsys, mnist_root):
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) >= 3:  # config.toml and the first checkpoint fit; then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code = train.main(["configs/relu.toml", *SHORT, f"run.log_dir={tmp_path}"])
    monkeypatch.setattr(os, "fsync", real_fsync)
    err = one_line_error(capsys, code)
    (run_dir,) = (tmp_path / "relu").iterdir()
    assert "no space left on device" in err and str(run_dir) in err
    assert checkpoint.load_checkpoint(run_dir)["points"] == 0
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_read_only_run_folder_on_resume(tmp_path, monkeypatch, capsys, whole):
    run_dir = killed_after_checkpoint(monkeypatch, tmp_path, 2)

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(rundir, "open", refuse, raising=False)  # what a read-only folder does to every write
    err = one_line_error(capsys, train.main(["--resume", str(run_dir)]))
    assert f"cannot write the run folder {run_dir}: permission denied" in err


# --------------------------------------------------------------------------- #
# h. an unreadable data file                                                  #
# --------------------------------------------------------------------------- #


def test_unreadable_data_file_names_it(tmp_path, monkeypatch, mnist_root):
    raw = mnist_root / "MNIST" / "raw"
    real_open = open

    def deny(path, *args, **kwargs):
        if str(path).endswith("t10k-labels-idx1-ubyte"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(data, "open", deny, raising=False)
    with pytest.raises(data.DataError, match=r"cannot read .*t10k-labels-idx1-ubyte: permission denied"):
        data.check_raw_files(raw)


# --------------------------------------------------------------------------- #
# i. values that pass the types but could not run                             #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("override,key", [
    ("train.epochs=1e305", "train.epochs"), ("run.seed=18446744073709551616", "run.seed"),
    ("model.bias_init=1e39", "model.bias_init"), ("model.init_scale=1e39", "model.init_scale"),
    ("run.device=cuda:99999999999999999999", "run.device"), ("train.augment_shift=1e9", "train.augment_shift"),
    ("train.augment_rotate=1e6", "train.augment_rotate"), ("model.hidden=[1000000000]", "model"),
])
def test_values_that_cannot_run_stop_before_training(tmp_path, capsys, mnist_root, override, key):
    err = one_line_error(capsys, train.main(["configs/relu.toml", override, f"run.log_dir={tmp_path}"]))
    assert err.startswith(f"nnhw.train: error: {key}")
    assert not (tmp_path / "relu").exists() or not list((tmp_path / "relu").iterdir())


def test_too_large_a_model_says_how_large(capsys, tmp_path, mnist_root):
    err = one_line_error(capsys, train.main(["configs/relu.toml", "model.hidden=[1000000000]", f"run.log_dir={tmp_path}"]))
    assert "795,000,000,010 parameters need about" in err and "GiB" in err


# --------------------------------------------------------------------------- #
# j. divergence that stays finite                                             #
# --------------------------------------------------------------------------- #


def test_finite_divergence_exits_3(tmp_path, capsys, mnist_root):
    code = train.main(["configs/sigmoid.toml", *SHORT, "optim.lr=1e6", f"run.log_dir={tmp_path}"])
    err = one_line_error(capsys, code, train.EXIT_DIVERGED)
    assert f"rose above {train.DIVERGENCE_FACTOR:g}x its initial" in err and "the checkpoint of epoch 0.000 is kept" in err
    (run_dir,) = (tmp_path / "sigmoid").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"


def test_divergence_before_any_step_claims_no_checkpoint(tmp_path, capsys, mnist_root):
    code = train.main(["configs/relu.toml", *SHORT, "model.init_scale=1e30", f"run.log_dir={tmp_path}"])
    err = one_line_error(capsys, code, train.EXIT_DIVERGED)
    assert "no checkpoint was written" in err and "is kept" not in err
    (run_dir,) = (tmp_path / "relu").iterdir()
    assert not (run_dir / checkpoint.CHECKPOINT).exists()


# --------------------------------------------------------------------------- #
# k. the Python API                                                           #
# --------------------------------------------------------------------------- #


def test_cross_entropy_rejects_target_minus_100():
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 10\)"):
        nf.softmax_cross_entropy(torch.randn(3, 10), torch.tensor([1, -100, 2]))


def test_empty_batches_behave_as_the_builtins():
    p = torch.zeros(0, 10, requires_grad=True)
    loss = nf.squared_error(p, torch.zeros(0, 10))
    assert torch.isnan(loss) and torch.isnan(torch.nn.functional.mse_loss(torch.zeros(0, 10), torch.zeros(0, 10)))
    loss.backward()
    assert p.grad.shape == (0, 10)
    x = torch.zeros(0, 3, 4, 4, requires_grad=True)
    y = nf.Flatten.apply(x)
    assert y.shape == torch.flatten(torch.zeros(0, 3, 4, 4), 1).shape == (0, 48)
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("p", [1.0, 1.5, -0.1])
def test_dropout_probability_outside_0_1(p):
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\)"):
        nf.dropout(torch.ones(3), p, torch.Generator())


# --------------------------------------------------------------------------- #
# l. failed starts and their messages                                         #
# --------------------------------------------------------------------------- #


def test_failed_start_leaves_no_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NNHW_DATA_ROOT", str(tmp_path / "none"))
    err = one_line_error(capsys, train.main(["configs/relu.toml", "data.download=false", f"run.log_dir={tmp_path}"]))
    assert "no MNIST files" in err
    assert not (tmp_path / "relu").exists() or not list((tmp_path / "relu").iterdir())


def test_download_failure_keeps_its_cause(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://a/, got:\n"
                           "<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(data.DataError) as info:
        data.load_mnist(tmp_path, download=True)
    message = str(info.value)
    assert "Name or service not known" in message and "\n" not in message
    assert "data.download = true" not in message  # it is already set


def test_learning_rate_suggests_lr():
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'"):
        config.load(REPO / "configs" / "relu.toml", ["optim.learning_rate=0.1"])


def test_run_name_dotdot_message_does_not_contradict_itself():
    with pytest.raises(ConfigError) as info:
        config.load(REPO / "configs" / "relu.toml", ['run.name=".."'])
    assert "start with a letter or digit" in str(info.value) and "may only hold" not in str(info.value)


# --------------------------------------------------------------------------- #
# m. Ctrl-C at start-up, while drawing figures, and twice during a write      #
# --------------------------------------------------------------------------- #


def test_ctrl_c_during_start_up(tmp_path, mnist_root):
    proc = start(tmp_path, mnist_root)
    time.sleep(0.5)  # importing torch
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert not (tmp_path / "sigmoid").exists() or not list((tmp_path / "sigmoid").iterdir())


def test_ctrl_c_while_drawing_figures(tmp_path, monkeypatch, capsys, mnist_root):
    from nnhw import plot

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plot, "save_figures", interrupted)
    err = one_line_error(capsys, train.main(["configs/relu.toml", *SHORT, f"run.log_dir={tmp_path}"]), train.EXIT_INTERRUPTED)
    (run_dir,) = (tmp_path / "relu").iterdir()
    assert f"stopped by SIGINT; its last checkpoint stands: python -m nnhw.train --resume {run_dir}" in err
    assert checkpoint.load_checkpoint(run_dir)["points"] == 2000
    assert not (run_dir / "summary.json").exists()  # not "finished" without its figures
    monkeypatch.undo()
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    assert train.main(["--resume", str(run_dir)]) == 0  # resuming the ended run draws them, then says so
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished" and (run_dir / "loss.png").is_file()


def test_second_ctrl_c_during_a_checkpoint_write(tmp_path, monkeypatch, capsys, mnist_root):
    real_save, calls = torch.save, []

    def save(obj, f):
        calls.append(1)
        if len(calls) == 3:  # in the middle of the third checkpoint's write
            f.write(b"half a checkpoint")
            raise KeyboardInterrupt
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", save)
    code = train.main(["configs/relu.toml", *SHORT, f"run.log_dir={tmp_path}"])
    monkeypatch.setattr(torch, "save", real_save)
    one_line_error(capsys, code, train.EXIT_INTERRUPTED)
    (run_dir,) = (tmp_path / "relu").iterdir()
    assert checkpoint.load_checkpoint(run_dir)["points"] == 500  # the second checkpoint, whole
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
