"""What a run shows: the HParams row (read back from the event files), the model summary, the console."""

import json
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

import torch

from nnhw import config, layers, runlog, summary, sweep, train
from nnhw.trainer import build

from conftest import REPO, SHORT, killed_after_checkpoint

pytestmark = pytest.mark.slow  # HParams rows and console output of real runs


def sessions(run_dir):
    """Every HParams session_start_info written into the run folder itself, across its event files."""
    found = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                if v.tag == "_hparams_/session_start_info":
                    found.append(HParamsPluginData.FromString(v.metadata.plugin_data.content).session_start_info)
    return found


def value(v):
    return getattr(v, v.WhichOneof("kind"))


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, mnist_root, module_env):
    module_env.setenv("NNHW_DATA_ROOT", str(mnist_root))
    log_dir = tmp_path_factory.mktemp("logs")
    overrides = ["model.transfer=tanh", *SHORT, f'run.log_dir="{log_dir}"']
    cfg = config.load(REPO / "configs" / "relu.toml", overrides)
    run_dir, status, _ = train.run(cfg, command="python -m nnhw.train configs/relu.toml", overrides=overrides)
    assert status == "finished"
    return run_dir


def test_each_run_is_one_hparams_row_with_its_config_and_results(short_run):
    (session,) = sessions(short_run)
    hp = {k: value(v) for k, v in session.hparams.items()}
    assert hp["optim.lr"] == 1.0 and hp["model.transfer"] == "tanh" and hp["model.hidden"] == "200" and hp["model.loss"] == "squared_error"
    assert hp["train.batch_size"] == 50 and hp["run.seed"] == 0 and hp["status"] == "finished" and hp["model"] == "784 - 200 - 10"
    assert "model.transfer=tanh" in hp["overrides"]
    # every key of the recipe is on the row, so that runs that differ in any one of them (Adam or SGD, a
    # warm-up, strides, augmentation) differ on it; where a run went is not
    cfg = config.load(short_run / "config.toml")
    assert {k for k in hp if "." in k} == set(config.recipe(cfg))
    summary = json.loads((short_run / "summary.json").read_text())
    acc = EventAccumulator(str(short_run))
    acc.Reload()
    for tag, expected in [("hparams/final_test_error", summary["final"]["test_error"]),
                          ("hparams/best_dev_error", summary["best_dev_error"]),
                          ("hparams/lowest_test_error", summary["lowest_test_error"]),
                          ("hparams/train_seconds", summary["train_seconds"])]:
        assert acc.Scalars(tag)[-1].value == pytest.approx(expected, rel=1e-6), tag
    assert sorted(p.name for p in short_run.iterdir() if p.is_dir()) == ["dev", "test", "train"]  # no extra sub-run


def test_overrides_name_the_run(short_run):
    # the overrides in their order, the log folder left out, as many whole ones as fit in 60 characters
    assert short_run.name.split("_", 1)[1] == "transfer-tanh_epochs-0.04_every-500_batch_size-50"
    assert runlog.run_slug(['run.log_dir="/x"', "optim.lr=0.05", 'model.hidden=[300, 100]']) == "lr-0.05_hidden-300-100"


def test_a_resumed_run_updates_its_row(tmp_path, monkeypatch, mnist_root):
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    killed_after_checkpoint(monkeypatch, 2, lambda: train.run(config.load(REPO / "configs" / "relu.toml", [*SHORT, f'run.log_dir="{tmp_path}"'])))
    (run_dir,) = (tmp_path / "relu").iterdir()
    cfg = config.load(run_dir / "config.toml")
    runlog.write_hparams(run_dir, runlog.hparams_of(cfg), {"hparams/final_test_error": 50.0}, "interrupted")  # as a stopped run leaves it
    assert [value(s.hparams["status"]) for s in sessions(run_dir)] == ["interrupted"]
    assert train.main(["--resume", str(run_dir)]) == 0
    (session,) = sessions(run_dir)
    assert value(session.hparams["status"]) == "finished"


@pytest.mark.parametrize("name,params", [("relu", 159_010), ("deep", 2_913_290), ("cnn", 317_066)])
def test_model_summary_totals(name, params):
    cfg = config.load(REPO / "configs" / f"{name}.toml")
    lines = runlog.model_summary(layers.describe(cfg.model))
    assert lines[-1].split()[:2] == ["total", f"{params:,}"]
    assert params == sum(p.numel() for p in build(cfg, torch.device("cpu")).params.values())


def test_cnn_summary_shows_each_layers_operations_in_the_forward_passs_order():
    lines = runlog.model_summary(layers.describe(config.load(REPO / "configs" / "cnn.toml").model))
    assert lines[1].split()[:8] == ["conv1:", "conv", "5x5", "->", "relu", "->", "avgpool", "2x2"] and "32x12x12" in lines[1]
    assert "64x4x4" in lines[2]
    fast = runlog.model_summary(layers.describe(config.load(REPO / "configs" / "fast.toml").model))
    # max pooling comes before the normalisation and the transfer, as the forward pass takes them
    assert fast[1].split()[:12] == ["conv1:", "conv", "5x5", "->", "maxpool", "2x2", "stride", "2", "->", "batch", "norm", "->"]
    assert fast[-1].endswith("(and 352 running averages)")  # 2 x (16 + 32 + 128)


def test_eval_lines_keep_their_columns():
    row = dict(epoch=1.0, lr=0.1, train_loss=0.5, train_error=9.5, dev_loss=0.25, dev_error=10.25)
    small = dict(row, epoch=12.25, lr=1.1e-8, train_loss=0.0001, train_error=0.0)
    a, b = runlog.eval_line(row, ["train", "dev"]), runlog.eval_line(small, ["train", "dev"])
    assert len(a) == len(b) and a.index("train loss") == b.index("train loss") and a.index("dev loss") == b.index("dev loss")
    assert "1.100e-08" in b


def test_cli_prints_summary_first_and_closing_line_last(tmp_path, mnist_root):
    res = subprocess.run([sys.executable, "-m", "nnhw.train", "configs/relu.toml", *SHORT, f"run.log_dir={tmp_path}"], cwd=REPO,
                         capture_output=True, text=True, env={**__import__("os").environ, "NNHW_DATA_ROOT": str(mnist_root)}, timeout=600)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("layer") and lines[3].split()[:2] == ["total", "159,010"]
    s = json.loads((tmp_path / "relu" / lines[-1].split("/")[-1] / "summary.json").read_text())
    assert lines[-2] == summary.closing_line(s)
    assert lines[-2].startswith(f"finished: final error train {s['final']['train_error']:.2f}%")
    assert f"test there {s['test_error_at_best_dev']:.2f}%" in lines[-2]


def test_help_answers_before_torch_loads():
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "nnhw.train", "--help"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0 and "usage: python -m nnhw.train" in res.stdout
    imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "argparse" in imported and not {"torch", "matplotlib", "tensorboard"} & imported


def test_sweep_writes_one_row_per_rate(tmp_path):
    cfg = config.load(REPO / "configs" / "sigmoid.toml")
    result = dict(budget_epochs=0.25, rows=[dict(lr=0.01, loss=2.2, verdict="flat"), dict(lr=1.0, loss=0.4, verdict="decrease"),
                                            dict(lr=100.0, loss=float("nan"), verdict="diverged")])
    sweep.write_rows(tmp_path, cfg, result)
    rows = sorted(p.name for p in tmp_path.iterdir())
    assert rows == ["lr_0.01", "lr_1", "lr_100"]
    for name, r in zip(rows, result["rows"]):
        (session,) = sessions(tmp_path / name)
        assert value(session.hparams["optim.lr"]) == r["lr"] and value(session.hparams["status"]) == r["verdict"]


@pytest.mark.parametrize("overrides", [[], ["model.pool=1"], ["model.pool=3", "model.pool_stride=3", "model.conv_padding=2"]])
def test_cnn_geometry_has_one_source(overrides):
    """Config checks, parameters, forward pass and summary agree on the feature maps (model.pool=1 is no
    pooling at all, whatever model.pool_stride says)."""
    cfg = config.load(REPO / "configs" / "cnn.toml", overrides)
    net = build(cfg, torch.device("cpu"))
    params = net.params
    assert net.forward(params, torch.zeros(3, 784)).shape == (3, 10)
    total = int(runlog.model_summary(net.model)[-1].split()[1].replace(",", ""))
    assert total == sum(p.numel() for p in params.values())
