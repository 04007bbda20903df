"""nnhw.replay: a run's first steps, replayed with the code at hand, are the same arithmetic; a changed
learning rate, initialisation or Function parts from them, and the check says where."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from nnhw import config, functions as nf, replay, sweep
from nnhw.device import rounding_probe
from nnhw.trainer import FINGERPRINT_STEPS

from conftest import REPO, SHORT, finished_run, record_as_another_machine, run_cli


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, mnist_root, module_env):
    module_env.setenv("NNHW_DATA_ROOT", str(mnist_root))
    return finished_run(tmp_path_factory.mktemp("logs"), SHORT)


def copy_of(run_dir, tmp_path, edit_config=None, drop_fingerprint=False, edit_recipe=True):
    """A copy of the run whose config.toml, and with edit_recipe its summary's recipe (what replay
    replays), take the overrides edit_config."""
    dest = tmp_path / run_dir.name
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("*.pt", "events.*", "train", "dev", "test"))
    s = json.loads((dest / "summary.json").read_text())
    if edit_config:
        cfg = config.load(dest / "config.toml", edit_config)
        (dest / "config.toml").write_text(config.to_toml(cfg))
        if edit_recipe:
            s["recipe"] = config.recipe(cfg)
    if drop_fingerprint:
        s["fingerprint"] = None
    (dest / "summary.json").write_text(json.dumps(s))
    return dest


def test_a_run_records_its_first_steps(short_run):
    fp = json.loads((short_run / "summary.json").read_text())["fingerprint"]
    assert fp["steps"] == FINGERPRINT_STEPS == len(fp["losses"])
    assert all(isinstance(x, float) for x in fp["losses"]) and fp["losses"][-1] < fp["losses"][0]  # it learns
    assert set(fp["checksums"]) == {"abs_sum", "sq_sum"}
    assert fp["rounding"] == rounding_probe(torch.device("cpu"))  # how this machine rounds
    # relu.toml has no dropout and no batch normalisation: evaluation mode is the first step's own forward pass
    assert fp["initial_loss"] == pytest.approx(fp["losses"][0], rel=1e-6)


def test_a_run_replays_as_the_same(short_run):
    same, what = replay.replay(short_run)
    assert same, what
    assert what.startswith("same arithmetic")


@pytest.mark.parametrize("change, where", [(["optim.lr=1.1"], "step 2"), (["model.init_scale=0.011"], "initialisation"),
                                           (["optim.momentum=0.8"], "step 3")], ids=["lr", "init", "momentum"])
def test_a_changed_config_parts(short_run, tmp_path, change, where):
    same, what = replay.replay(copy_of(short_run, tmp_path, change))
    assert not same and what.startswith(f"parted at {where}:"), what


def test_replay_takes_the_recipe_that_made_the_first_steps_not_an_edited_config_toml(short_run, tmp_path):
    """The summary keeps the recipe the run started with; config.toml (the config at the end, which a
    resume may change and a hand may edit) does not decide what the first steps were."""
    same, what = replay.replay(copy_of(short_run, tmp_path, ["optim.lr=1.1"], edit_recipe=False))
    assert same, what


def test_a_changed_function_parts(short_run, monkeypatch):
    """ReLU's reverse rule off by 1% for positive inputs: the same forward, another gradient."""
    real = nf.ReLU.backward

    def slightly_wrong(ctx, g):
        return real(ctx, g) * 1.01

    monkeypatch.setattr(nf.ReLU, "backward", staticmethod(slightly_wrong))
    same, what = replay.replay(short_run)
    assert not same and "parted at step 2" in what, what  # step 1's loss is computed before any update


def as_another_machine_recorded(run_dir, tmp_path, commit, first=1.0, initial=1.0):
    """A copy of the run as a machine that rounds otherwise would have recorded it at `commit`."""
    return record_as_another_machine(copy_of(run_dir, tmp_path), commit, first=first, initial=initial)


def test_steps_recorded_where_rounding_differs_are_replayed_by_their_own_commit_here(short_run, tmp_path, head_commit):
    """Another CPU rounds a run's first steps otherwise, and in some nets that grows past the tolerance
    within the steps compared: the run's own commit, run here, decides whether the code at hand still
    computes it."""
    same, what = replay.replay(as_another_machine_recorded(short_run, tmp_path, head_commit))
    assert same, what
    assert what.startswith(f"same arithmetic as its commit {head_commit[:12]} computes here") and "rounded otherwise: parted at step 2" in what


def test_steps_recorded_where_rounding_is_the_same_part_without_asking_the_commit(short_run, tmp_path):
    moved = as_another_machine_recorded(short_run, tmp_path, "0" * 40)  # a commit that would fail if it were asked
    s = json.loads((moved / "summary.json").read_text())
    s["fingerprint"]["rounding"] = rounding_probe(torch.device("cpu"))
    (moved / "summary.json").write_text(json.dumps(s))
    same, what = replay.replay(moved)
    assert not same and what.startswith("parted at step 2") and "commit" not in what, what


def test_steps_recorded_elsewhere_part_when_their_commit_cannot_be_asked(short_run, tmp_path):
    same, what = replay.replay(as_another_machine_recorded(short_run, tmp_path, "0" * 40))
    assert not same and what.startswith("parted at step 2") and f"its commit {'0' * 40} is not in this checkout's git history" in what, what
    same, what = replay.replay(as_another_machine_recorded(short_run, tmp_path / "dirty", "abc-dirty"))
    assert not same and "with code no commit holds (abc-dirty)" in what, what


@pytest.mark.slow
def test_steps_recorded_elsewhere_part_when_the_code_at_hand_parts_from_their_commit(short_run, tmp_path, head_commit, monkeypatch):
    real = nf.ReLU.backward
    monkeypatch.setattr(nf.ReLU, "backward", staticmethod(lambda ctx, g: real(ctx, g) * 1.01))
    same, what = replay.replay(as_another_machine_recorded(short_run, tmp_path, head_commit))
    assert not same and what.startswith(f"parted at step 2: loss") and f"at {head_commit[:12]}, " in what, what
    assert what.endswith("the code at hand no longer computes what its commit computes here"), what


@pytest.mark.slow
@pytest.mark.parametrize("first, initial, same", [(1.01, 1.0, True), (1.0, 1.01, False), (1.01, None, False)],
                         ids=["first step rounded otherwise", "initial loss not its commit's", "run without an initial loss"])
def test_steps_recorded_elsewhere_are_their_commits_run_when_their_initial_loss_is(short_run, tmp_path, head_commit, first, initial, same):
    """The initial weights' loss on the first batch (one forward pass) rounds alike to 1e-7 on any CPU: a
    recorded one that the commit does not compute is not that commit's run. The first step's own loss may
    round otherwise (a VAT run's holds a finite difference), and decides only for runs made before the
    initial loss was recorded."""
    replayed, what = replay.replay(as_another_machine_recorded(short_run, tmp_path, head_commit, first=first, initial=initial))
    assert replayed == same, what
    if same:
        assert what.startswith(f"same arithmetic as its commit {head_commit[:12]} computes here") and "parted at step 1" in what, what
    else:
        assert f"its commit {head_commit[:12]} computes another first loss here" in what, what


def test_a_run_without_a_fingerprint_cannot_replay(short_run, tmp_path):
    with pytest.raises(replay.ReplayError, match="no fingerprint"):
        replay.replay(copy_of(short_run, tmp_path, drop_fingerprint=True))


LAST_WITHOUT_FINGERPRINTS = "a56c2ea682a58d8a3ddfafdb89573392eba5ddb7"  # the last commit whose runs recorded none


@pytest.mark.slow
def test_an_old_run_takes_its_fingerprint_from_its_own_commit_and_replays_at_this_one(tmp_path, mnist_root, monkeypatch):
    """A run made by the code of a commit before fingerprints: tools/fingerprint_at.py computes its
    fingerprint with that commit's code, and the code at hand replays it as the same arithmetic."""
    import subprocess
    import sys

    if subprocess.run(["git", "cat-file", "-e", LAST_WITHOUT_FINGERPRINTS], cwd=REPO).returncode:
        pytest.skip("this checkout's history does not hold the commit")
    tree = tmp_path / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), LAST_WITHOUT_FINGERPRINTS], cwd=REPO, check=True)
    try:
        res = run_cli("nnhw.train", "configs/relu.toml", *SHORT[:3], f"run.log_dir={tmp_path / 'logs'}", cwd=tree,
                      env={"NNHW_DATA_ROOT": str(mnist_root), "PYTHONPATH": str(tree)})
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=True)
    assert res.returncode == 0, res.stderr
    run_dir = Path(res.stdout.strip().splitlines()[-1])
    assert "fingerprint" not in json.loads((run_dir / "summary.json").read_text())
    res = subprocess.run([sys.executable, "tools/fingerprint_at.py", str(run_dir)], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "NNHW_DATA_ROOT": str(mnist_root)}, timeout=600)
    assert res.returncode == 0 and "fingerprint of 20 steps computed at a56c2ea682a5" in res.stdout, res.stdout + res.stderr
    fp = json.loads((run_dir / "summary.json").read_text())["fingerprint"]
    assert fp["computed_at"] == LAST_WITHOUT_FINGERPRINTS and fp["steps"] == FINGERPRINT_STEPS
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    same, what = replay.replay(run_dir)
    assert same, what


def test_compare_names_the_step_and_the_checksum():
    n = replay.LOSS_STEPS + 2
    losses = [1.0 - 0.01 * k for k in range(n)]
    fp = dict(steps=n, losses=losses, checksums=dict(abs_sum=10.0, sq_sum=5.0))
    assert replay.compare_fingerprint(fp, fp) == ""
    assert replay.compare_fingerprint(fp, dict(fp, losses=[x * (1 + 0.5 * replay.REL_TOL) for x in losses])) == ""  # rounding
    assert replay.compare_fingerprint(fp, dict(fp, losses=[1.0, 0.91, *losses[2:]])).startswith("parted at step 2")
    late = [*losses[:-1], losses[-1] * 1.01]  # past LOSS_STEPS, rounding grows: only the checksums decide
    assert replay.compare_fingerprint(fp, dict(fp, losses=late)) == ""
    assert replay.compare_fingerprint(fp, dict(fp, losses=late, checksums=dict(abs_sum=10.0, sq_sum=5.01))).startswith(f"parted at step {n}")
    parted = replay.compare_fingerprint(fp, dict(fp, checksums=dict(abs_sum=10.0, sq_sum=5.01)))
    assert parted.startswith(f"parted in the parameters after step {n}: sq_sum")
    initial = dict(fp, initial_loss=2.3)  # compared where both fingerprints hold one, before the steps
    assert replay.compare_fingerprint(initial, dict(initial, initial_loss=2.3 * (1 + 0.5 * replay.REL_TOL))) == ""
    assert replay.compare_fingerprint(initial, fp) == replay.compare_fingerprint(fp, initial) == ""
    assert replay.compare_fingerprint(initial, dict(fp, initial_loss=2.31, losses=[1.0, 0.91, *losses[2:]])).startswith(
        "parted at initialisation: loss of the initial weights 2.3 recorded, 2.31 now")


def check_exit_codes(short_run, tmp_path, replay_command):
    """0 when every folder replays as the same, 2 with one line a folder otherwise; replay_command(args)
    gives (exit code, stdout, stderr)."""
    code, out, _ = replay_command([str(short_run)])
    assert code == 0 and out.startswith(f"{short_run}: same arithmetic")
    edited = copy_of(short_run, tmp_path, ["optim.lr=1.1"])
    code, out, err = replay_command([str(short_run), str(edited), str(tmp_path / "nothing")])
    lines = out.splitlines()
    assert code == 2 and len(lines) == 3 and "Traceback" not in err
    assert "same arithmetic" in lines[0] and "parted at step" in lines[1] and "cannot replay: not a run folder" in lines[2]


def test_cli_exit_codes(short_run, tmp_path, capsys):
    """In this process; the slow tier runs the command itself."""

    def in_process(args):
        code = replay.main(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    check_exit_codes(short_run, tmp_path, in_process)


@pytest.mark.slow
def test_cli_exit_codes_as_a_user_runs_it(short_run, tmp_path, mnist_root):
    def fresh_process(args):
        res = run_cli("nnhw.replay", *args, env={"NNHW_DATA_ROOT": str(mnist_root)})
        return res.returncode, res.stdout, res.stderr

    check_exit_codes(short_run, tmp_path, fresh_process)


@pytest.mark.slow
def test_a_sweep_replays_at_its_threshold(tmp_path, mnist_root, monkeypatch):
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    monkeypatch.chdir(REPO)
    assert sweep.main(["configs/relu.toml", "--lo", "0.01", "--hi", "1", "--per-decade", "1", "--budget", "0.02",
                       f"run.log_dir={tmp_path}", "eval.batch_size=5000"]) == 0
    (sweep_dir,) = (tmp_path / "relu-sweep").iterdir()
    same, what = replay.replay(sweep_dir)
    assert same and what.startswith("same arithmetic"), what
    sw = json.loads((sweep_dir / "sweep.json").read_text())
    row = next(r for r in sw["rows"] if r["lr"] == sw["threshold_lr"])
    row["loss"] *= 1.01
    (sweep_dir / "sweep.json").write_text(json.dumps(sw))
    same, what = replay.replay(sweep_dir)
    assert not same and "loss after the budget" in what


def test_kept_runs_carry_fingerprints():
    """Every run the report keeps can be checked in seconds: it has a fingerprint."""
    kept = sorted((REPO / "reports" / "runs").glob("*/*/summary.json"))
    assert kept
    missing = [str(p.parent.relative_to(REPO)) for p in kept if not json.loads(p.read_text()).get("fingerprint")]
    assert not missing, f"run python -m nnhw.replay --record on: {missing}"


def test_checksums_see_every_parameter():
    a = {"W": torch.ones(2, 3), "b": torch.zeros(2)}
    b = {"W": torch.ones(2, 3), "b": torch.tensor([0.0, 1e-3])}
    from nnhw.trainer import checksums

    assert checksums(a) == dict(abs_sum=6.0, sq_sum=6.0) and checksums(b)["abs_sum"] == pytest.approx(6.001)
