import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Overrides that make a committed config one of the tests' short real runs
SHORT = ["train.epochs=0.04", "eval.every=500", "train.batch_size=50", "eval.max_points=1000"]  # relu.toml: 40 steps, 5 evaluations
TINY = ["data.train_points=500", "train.batch_size=50", "train.epochs=1", "eval.every=250", "eval.max_points=200"]  # relu.toml: 10 steps
TENTH = ["train.epochs=0.1", "eval.every=1000", "train.batch_size=50", "optim.schedule=\"constant\"", "optim.lr=0.2"]  # a tenth of a pass, for the reports


def tool(name):
    """tools/<name>.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

def _find_mnist():
    for root in (os.environ.get("NNHW_DATA_ROOT"), SHARED_DATA):
        if root and (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(root)
    return None


MNIST_ROOT = _find_mnist()  # read once, before the tests' environment is cleared of NNHW_DATA_ROOT


def _mnist_root():
    return MNIST_ROOT


@pytest.fixture(scope="session")
def mnist_root():
    """The real MNIST, from NNHW_DATA_ROOT or ../shared/data; tests never download it."""
    if MNIST_ROOT is None:
        pytest.skip("real MNIST not found: neither NNHW_DATA_ROOT nor ../shared/data holds MNIST/raw/")
    return MNIST_ROOT


@pytest.fixture(scope="session", autouse=True)
def no_data_root_by_default():
    """Tests start without NNHW_DATA_ROOT: one that trains asks for mnist_root and sets it itself,
    so that no test passes only because another one left it set."""
    mp = pytest.MonkeyPatch()
    mp.delenv("NNHW_DATA_ROOT", raising=False)
    yield
    mp.undo()


@pytest.fixture(scope="module", autouse=True)
def environment_unchanged():
    """A module's fixtures leave nnhw's environment variables as they found them (module_env undoes
    what they set); torch and pytest keep their own."""
    before = {k: v for k, v in os.environ.items() if k.startswith("NNHW_")}
    yield
    after = {k: v for k, v in os.environ.items() if k.startswith("NNHW_")}
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"this module's fixtures changed the environment and left it so: {changed}"


@pytest.fixture(scope="module")
def module_env():
    """monkeypatch for module-scoped fixtures: what they set is undone when the module ends."""
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def run_as_committed(cfg, name, root):
    """Train cfg as if `python -m nnhw.train configs/<name>.toml` had started it in root, which holds that
    file: cfg is written there, and the report (built from root) finds the run's config unchanged."""
    from nnhw import config, train
    (root / "configs").mkdir(exist_ok=True)
    (root / "configs" / f"{name}.toml").write_text(config.to_toml(cfg))
    return train.run(cfg, command=f"python -m nnhw.train configs/{name}.toml", config_file=f"configs/{name}.toml")


def finished_run(log_dir, overrides, name="relu"):
    """configs/<name>.toml with `overrides`, trained to its end into log_dir: the run's folder."""
    from nnhw import config, train
    run_dir, status, _ = train.run(config.load(REPO / "configs" / f"{name}.toml", [*overrides, f'run.log_dir="{log_dir}"']))
    assert status == "finished"
    return run_dir


def run_cli(*args, env=None, cwd=REPO, timeout=600):
    """`python -m <args>` in a fresh process; returns CompletedProcess with text output."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def wait_for_checkpoint(run_parent, points, proc, timeout=180):
    """The run folder under run_parent once its checkpoint holds `points` (the process must still run)."""
    from nnhw import checkpoint, rundir

    t0 = time.time()
    while time.time() - t0 < timeout:
        for ckpt in run_parent.glob("*/checkpoint.pt"):
            try:
                if checkpoint.load_checkpoint(ckpt.parent)["points"] >= points:
                    return ckpt.parent
            except rundir.RunError:
                pass  # being replaced right now
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


class Killed(BaseException):
    """What SIGKILL leaves: the process gone right after a checkpoint reached the disk."""


def killed_after_checkpoint(monkeypatch, n, start):
    """start() (a training run in this process), killed right after its n-th checkpoint is on disk."""
    from nnhw import train

    real, calls = train.save_checkpoint, []

    def save_then_die(run_dir, ckpt):
        real(run_dir, ckpt)
        calls.append(ckpt["points"])
        if len(calls) == n:
            raise Killed

    monkeypatch.setattr(train, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        start()
    monkeypatch.setattr(train, "save_checkpoint", real)


def a_checkpoint(cfg, **state):
    """A whole checkpoint of cfg's freshly built run, as the training loop writes it, with `state`
    (checkpoint.TrainState's fields) in it."""
    import torch

    from nnhw import checkpoint
    from nnhw.data import Split
    from nnhw.trainer import Trainer

    split = Split(torch.zeros(10, 784), torch.zeros(10, dtype=torch.int64))
    return Trainer.start(cfg, torch.device("cpu"), split).checkpoint(checkpoint.TrainState(**state))


OTHER_ROUNDING = "0" * 16  # the rounding digest (nnhw.device.rounding_probe) of a machine that rounds otherwise than this one


def record_as_another_machine(run_dir, commit, first=1.0, later=1.0005, initial=1.0):
    """Rewrite the run's summary as a machine that rounds otherwise would have recorded it at `commit`:
    its initial loss times `initial` (None: not recorded, as in runs made before it was), its first
    step's loss times `first`, the later losses and the checksums times `later` (1.0005: more than
    nnhw.replay's tolerance)."""
    path = Path(run_dir) / "summary.json"
    s = json.loads(path.read_text())
    fp = s["fingerprint"]
    if initial is None:
        del fp["initial_loss"]
    else:
        fp["initial_loss"] *= initial
    fp["losses"] = [fp["losses"][0] * first, *(x * later for x in fp["losses"][1:])]
    fp["checksums"] = {k: v * later for k, v in fp["checksums"].items()}
    fp["rounding"], s["git_commit"] = OTHER_ROUNDING, commit
    path.write_text(json.dumps(s))
    return run_dir


@pytest.fixture
def head_commit():
    """HEAD, whose code must be the code at hand for a run made by it to replay against it."""
    from nnhw import rundir

    commit = rundir.git_commit()
    if commit == "unknown" or commit.endswith("-dirty"):
        pytest.skip(f"nnhw/ or configs/ differ from HEAD, or no git ({commit}): HEAD's code is not the code at hand")
    return commit
