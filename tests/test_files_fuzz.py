"""Damaged run files, at random: replay and the committee end in a result or in one line with exit 2
(never exit 1, which means "parted", for a file that is not what nnhw writes), never a traceback.

Each example takes a tiny finished run, damages one of its files (a key dropped, a value replaced by
another JSON value or tensor, the whole file replaced), and runs the command on it in this process."""

import json
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnhw import checkpoint, committee, replay

from conftest import TINY, finished_run

pytestmark = pytest.mark.slow  # a replay or a committee per example

JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False), st.text(max_size=6)),
                    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=6)
EXAMPLES = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist_root, module_env):
    module_env.setenv("NNHW_DATA_ROOT", str(mnist_root))
    return finished_run(tmp_path_factory.mktemp("logs"), TINY)


def damaged(table, key, how, value):
    """table with `key` (the first key of a nested path a/b) dropped or given `value`; or value itself."""
    if how == "whole":
        return value
    table = json.loads(json.dumps(table))
    where, _, inner = key.partition("/")
    target = table[where] if inner and isinstance(table.get(where), dict) else table
    name = inner or where
    if how == "drop":
        target.pop(name, None)
    else:
        target[name] = value
    return table


SUMMARY_KEYS = ["fingerprint", "fingerprint/losses", "fingerprint/steps", "fingerprint/checksums", "fingerprint/initial_loss", "device", "recipe", "processes", "status"]


@given(key=st.sampled_from(SUMMARY_KEYS), how=st.sampled_from(["drop", "set", "whole"]), value=JSON)
@EXAMPLES
def test_replay_of_a_damaged_summary(tiny_run, tmp_path_factory, capsys, key, how, value):
    copy = tmp_path_factory.mktemp("run") / "run"
    shutil.copytree(tiny_run, copy)
    summary = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps(damaged(summary, key, how, value)))
    capsys.readouterr()
    code = replay.main([str(copy)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and code in (0, 1, 2) and out.count("\n") == 1, (key, how, value, out, err)
    assert code != 1 or "parted" in out


SWEEP = {"command": "python -m nnhw.sweep configs/relu.toml", "rule": "x", "start_loss": 0.09, "budget_epochs": 0.001,
         "threshold_lr": 0.1, "diverging_lr": None, "device": "cpu (2 threads)", "rows": [{"lr": 0.1, "loss": 0.08, "verdict": "decrease"}]}


@given(key=st.sampled_from(["command", "start_loss", "budget_epochs", "rows", "threshold_lr", "device"]),
       how=st.sampled_from(["drop", "set", "whole"]), value=JSON)
@EXAMPLES
def test_replay_of_a_damaged_sweep(tmp_path_factory, capsys, key, how, value):
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "sweep.json").write_text(json.dumps(damaged(SWEEP, key, how, value)))
    capsys.readouterr()
    code = replay.main([str(folder)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and code in (0, 1, 2) and out.count("\n") == 1, (key, how, value, out, err)


TENSORS = st.one_of(JSON, st.builds(lambda n: torch.zeros(n), st.integers(0, 4)), st.just({"W1": torch.zeros(2, 2)}))


@given(key=st.sampled_from(["params", "running", "config", "points", "history", "format", "optimizer"]),
       how=st.sampled_from(["drop", "set"]), value=TENSORS)
@EXAMPLES
def test_a_committee_of_a_damaged_checkpoint(tiny_run, tmp_path_factory, capsys, key, how, value):
    copy = tmp_path_factory.mktemp("run") / "run"
    shutil.copytree(tiny_run, copy)
    ckpt = torch.load(copy / checkpoint.CHECKPOINT, weights_only=True)
    if how == "drop":
        ckpt.pop(key)
    else:
        ckpt[key] = value
    checkpoint.save_checkpoint(copy, ckpt)
    capsys.readouterr()
    code = committee.main([str(tiny_run), str(copy), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and code in (0, 2), (key, how, value, err)
    assert code == 0 or err.count("\n") == 1
