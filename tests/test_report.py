"""Plots, the learning-rate sweep and the report, on tiny real runs (no full training in CI)."""

import json
import re
import shutil
from pathlib import Path

import pytest

from nnhw import config, inputs, plot, report, summary, sweep

from conftest import REPO, TENTH, record_as_another_machine, run_as_committed, run_cli

pytestmark = pytest.mark.slow  # REPORT.md, the figures and the sweep from tiny real runs


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, mnist_root, module_env):
    """One tiny finished run of sigmoid and of softmax, filed as if run from configs/<name>.toml in the
    folder the module's reports are built from."""
    module_env.setenv("NNHW_DATA_ROOT", str(mnist_root))
    log_dir = tmp_path_factory.mktemp("logs")
    module_env.chdir(tmp_path_factory.mktemp("project"))
    runs = {}
    for name in ("sigmoid", "softmax"):
        cfg = config.load(REPO / "configs" / f"{name}.toml", [*TENTH, f'run.log_dir="{log_dir}"'])
        run_dir, status, _ = run_as_committed(cfg, name, Path.cwd())
        assert status == "finished"
        runs[name] = run_dir
    return log_dir, runs


def test_run_writes_figures(tiny_runs):
    _, runs = tiny_runs
    for run_dir in runs.values():
        for name in ("loss", "error", "weights"):
            png = run_dir / f"{name}.png"
            assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_cli_redraws_identically(tiny_runs):
    _, runs = tiny_runs
    before = (runs["sigmoid"] / "loss.png").read_bytes()
    (runs["sigmoid"] / "loss.png").unlink()
    res = run_cli("nnhw.plot", str(runs["sigmoid"]))
    assert res.returncode == 0, res.stderr
    assert (runs["sigmoid"] / "loss.png").read_bytes() == before


def test_plot_cli_rejects_non_run(tmp_path):
    res = run_cli("nnhw.plot", str(tmp_path))
    assert res.returncode == 2 and "not a finished run folder" in res.stderr and "Traceback" not in res.stderr


def test_error_plot_starts_below_threshold(tiny_runs):
    _, runs = tiny_runs
    cfg = config.load(runs["sigmoid"] / "config.toml")
    history = json.loads((runs["sigmoid"] / "history.json").read_text())
    fig = plot.error_figure(history, cfg, "t")
    xs = fig.axes[0].lines[0].get_xdata()
    first = next(r for r in history if r["train_error"] < 20 and r["dev_error"] < 20)
    assert xs[0] == first["epoch"] and history[0]["train_error"] > 20  # the start (~90%) is left out


def test_weight_images_scaled_to_unit_interval(tiny_runs):
    _, runs = tiny_runs
    import torch

    params = torch.load(runs["sigmoid"] / "checkpoint.pt", weights_only=True)["params"]
    imgs = plot.weight_images(params)
    assert imgs.shape == (8, 28, 28)
    assert torch.allclose(imgs.flatten(1).min(1).values, torch.zeros(8))
    assert torch.allclose(imgs.flatten(1).max(1).values, torch.ones(8))


def test_report_numbers_equal_summaries_and_rebuild_is_identical(tiny_runs, tmp_path):
    log_dir, runs = tiny_runs
    out = tmp_path / "reports"
    text = report.build(log_dir, out).read_text()
    for name, run_dir in runs.items():
        s = json.loads((run_dir / "summary.json").read_text())
        assert f"| final test error | {s['final']['test_error']:.2f}% (the last evaluation of the fixed schedule) |" in text
        assert f"| lowest test error, chosen on the test set | {s['lowest_test_error']:.2f}% (effective epoch {s['lowest_test_epoch']:.2f}) |" in text
        assert f"| test error at best dev | {s['test_error_at_best_dev']:.2f}% (best dev {s['best_dev_error']:.2f}%" in text
        for fig in ("loss", "error", "weights"):
            assert f"({name}/{fig}.png)" in text and (out / name / f"{fig}.png").is_file()
    # Every figure the report names exists.
    for ref in re.findall(r"\]\(([^)]+\.png)\)", text):
        assert (out / ref).is_file(), ref
    assert "| Softmax (logistic) regression, tuned | | | | 7.49% |" in text
    again = report.build(log_dir, tmp_path / "again").read_text()
    assert again == text
    assert (out / "sigmoid" / "loss.png").read_bytes() == (tmp_path / "again" / "sigmoid" / "loss.png").read_bytes()


def test_report_skips_runs_with_overrides(tiny_runs, tmp_path):
    log_dir, runs = tiny_runs
    copy = tmp_path / "logs"
    shutil.copytree(log_dir, copy)
    for s_path in copy.glob("*/*/summary.json"):  # each started with another rate than its committed config's
        s = json.loads(s_path.read_text())
        s["command"] += " optim.lr=9"
        s["overrides"] = ["optim.lr=9"]
        s["recipe"]["optim.lr"] = 9.0
        s_path.write_text(json.dumps(s))
    text = report.build(copy, tmp_path / "r").read_text()
    assert "No finished run of `configs/sigmoid.toml` yet" in text


def test_sweep_classifies_and_finds_threshold(mnist_root, monkeypatch):
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    cfg = config.load(REPO / "configs" / "sigmoid.toml")
    result = sweep.sweep(cfg, [1e-4, 0.5, 1e4], budget_epochs=0.05)
    verdicts = [r["verdict"] for r in result["rows"]]
    assert verdicts == ["flat", "decrease", "diverged"], result["rows"]
    assert result["threshold_lr"] == 0.5 and result["diverging_lr"] == 1e4
    fig = sweep.sweep_figure(result)
    assert fig.axes[0].get_xscale() == "log"


def test_sweep_grid():
    assert sweep.log_grid(1e-3, 1.0, 1) == [0.001, 0.01, 0.1, 1.0]
    assert sweep.classify(2.0, float("nan")) == "diverged" and sweep.classify(2.0, 1.7) == "decrease"
    assert sweep.classify(2.0, 1.9) == "flat"


def test_report_extras_come_from_their_files(tiny_runs, tmp_path):
    log_dir, _ = tiny_runs
    out = tmp_path / "r"
    out.mkdir()
    (out / "theory.txt").write_text("[holds] 2.2.1: something\n")
    row = dict(config="sigmoid", batch_size=100, engine="autograd", nnhw_s_per_epoch=1.0, autograd_engine_s_per_epoch=1.0,
               tape_engine_s_per_epoch=0.9, builtin_s_per_epoch=1.1, floor_s_per_epoch=0.5, ratio_builtin=0.909, ratio_floor=2.0,
               products_s_per_epoch=0.6, fused_s_per_epoch=0.8)
    relu = dict(row, config="relu", products_s_per_epoch=0.7, fused_s_per_epoch=None)
    (out / "bench-cpu.json").write_text(json.dumps(dict(command="python tools/bench.py", device="cpu (x)", matmul_gflops=90.0, loader_s_per_epoch=19.0, rows=[row, relu])))
    text = report.build(log_dir, out).read_text()
    assert "[holds] 2.2.1: something" in text
    assert "| sigmoid | 100 | autograd | 1.000 | 1.000 | 0.900 | 1.100 | 0.500 | 0.600 | 0.800 | 0.909 | 2.00 |" in text
    assert "| relu | 100 | autograd | 1.000 | 1.000 | 0.900 | 1.100 | 0.500 | 0.700 | n/a | 0.909 | 2.00 |" in text
    assert "19.00 s per epoch" in text


def test_report_reads_the_newest_seed_set_of_the_plain_config(tiny_runs, tmp_path):
    log_dir, runs = tiny_runs
    copy = tmp_path / "logs"
    shutil.copytree(log_dir, copy)
    summaries = [json.loads((runs["sigmoid"] / "summary.json").read_text())]
    summaries.append(dict(summaries[0], seed=1, final=dict(summaries[0]["final"], test_error=summaries[0]["final"]["test_error"] + 1.0)))
    agg = summary.aggregate(summaries, "python -m nnhw.train configs/sigmoid.toml --seeds 0,1", [str(runs["sigmoid"])] * 2)
    (copy / "sigmoid" / "seeds_20260101-000000_0-1.json").write_text(json.dumps(agg))
    other = dict(agg, command="python -m nnhw.train configs/sigmoid.toml --seeds 0,1 optim.lr=9")  # newer, but with an override
    (copy / "sigmoid" / "seeds_20260102-000000_0-1.json").write_text(json.dumps(other))
    text = report.build(copy, tmp_path / "r", pdf=False).read_text()
    st = agg["stats"]["final_test_error"]
    assert f"| nnhw `sigmoid` (4.1) | {st['mean']:.2f} +- {st['std']:.2f}% (2 seeds) | n/a |" in text  # a set without a committee
    assert f"final test error {st['mean']:.2f} +- {st['std']:.2f}% (2 seeds)" in text
    s0, s1 = agg["runs"]
    assert (f"Each seed's final test error (training + evaluation): seed 0 {s0['final_test_error']:.2f}% "
            f"({report.minutes(s0['train_seconds'])} + {report.minutes(s0['eval_seconds'])}); seed 1 {s1['final_test_error']:.2f}%") in text
    # with the committee that --seeds now writes: in the summary table and the seed set's sentence
    (copy / "sigmoid" / "seeds_20260101-000000_0-1.json").write_text(json.dumps(dict(agg, committee=dict(test_error=0.5, members=[], n_images=10000))))
    text = report.build(copy, tmp_path / "r2", pdf=False).read_text()
    assert f"| nnhw `sigmoid` (4.1) | {st['mean']:.2f} +- {st['std']:.2f}% (2 seeds) | 0.50% |" in text
    assert "the seeds' committee (their mean softmax output) 0.50%" in text


def test_a_number_is_flagged_only_when_its_run_no_longer_replays(tiny_runs, tmp_path, monkeypatch):
    """The runs as made replay as the same: nothing flagged. A run that the code at hand no longer computes
    (here: sigmoid's reverse rule off by 1%) is flagged beside every number of it, and so is a run that
    cannot be checked (no fingerprint)."""
    from nnhw import functions as nf

    log_dir, runs = tiny_runs
    text = report.build(log_dir, tmp_path / "as-made", pdf=False).read_text()
    assert "**Flagged**" not in text and "(**flagged**" not in text and text.count("its first steps compute the same arithmetic") == 2

    copy = tmp_path / "logs"
    shutil.copytree(log_dir, copy)
    real = nf.Sigmoid.backward
    monkeypatch.setattr(nf.Sigmoid, "backward", staticmethod(lambda ctx, g: real(ctx, g) * 1.01))
    monkeypatch.setattr(report, "_SAME", set())  # the code at hand changed: what replayed as the same may not now
    softmax = copy / "softmax" / runs["softmax"].name
    s = json.loads((softmax / "summary.json").read_text())
    (softmax / "summary.json").write_text(json.dumps(dict(s, fingerprint=None)))
    text = report.build(copy, tmp_path / "edited", pdf=False).read_text()
    assert "**Flagged**: its replay parted at step" in text
    assert "**Flagged**: not replay-checked here: its summary.json has no fingerprint" in text
    row = next(line for line in text.splitlines() if line.startswith("| nnhw `sigmoid`"))
    assert "(**flagged**: its replay parted at step" in row


def test_a_run_recorded_where_rounding_differs_stands_by_its_own_commit(tiny_runs, tmp_path, head_commit):
    """The sigmoid run's steps as a machine that rounds otherwise recorded them: they part from the code at
    hand, but its commit, run here, computes what the code at hand computes, so its numbers stand, and the
    report says how it knows."""
    log_dir, runs = tiny_runs
    copy = tmp_path / "logs"
    shutil.copytree(log_dir, copy)
    record_as_another_machine(copy / "sigmoid" / runs["sigmoid"].name, head_commit)
    text = report.build(copy, tmp_path / "r", pdf=False).read_text()
    assert "**Flagged**" not in text and "(**flagged**" not in text
    assert text.count("the code of its own commit, run on this report's machine, computes the same arithmetic as the code at hand") == 1
    assert text.count("its first steps compute the same arithmetic") == 1  # softmax's, replayed from its recorded steps


def test_a_run_of_a_config_before_its_edit_is_no_run_of_it(tiny_runs, tmp_path, monkeypatch):
    """The runs replay as the same, but configs/sigmoid.toml now says another rate: the sigmoid run is no
    longer what that file trains, so the report takes no run of it and names the command that makes one;
    softmax's file is gone, so nothing is a run of it. Where a run went (run.log_dir) is no part of what it is."""
    log_dir, runs = tiny_runs
    project = tmp_path / "project"
    shutil.copytree(Path.cwd() / "configs", project / "configs")
    monkeypatch.chdir(project)
    moved = Path("configs/sigmoid.toml")
    moved.write_text(moved.read_text().replace(f'log_dir = "{log_dir}"', 'log_dir = "elsewhere"'))
    assert "**Flagged**" not in report.build(log_dir, tmp_path / "moved", pdf=False).read_text()

    moved.write_text(moved.read_text().replace("lr = 0.2", "lr = 0.3"))
    Path("configs/softmax.toml").unlink()
    text = report.build(log_dir, tmp_path / "edited", pdf=False).read_text()
    assert "No finished run of `configs/sigmoid.toml` yet: `python -m nnhw.train configs/sigmoid.toml`" in text
    assert "No finished run of `configs/softmax.toml` yet" in text
    assert runs["sigmoid"].name not in text and runs["softmax"].name not in text


def test_report_rebuilds_from_the_runs_it_kept(tiny_runs, tmp_path):
    """What the report read is kept beside it, so the same report comes back without the log folder."""
    log_dir, runs = tiny_runs
    out = tmp_path / "reports"
    text = report.build(log_dir, out, pdf=False).read_text()
    kept = out / "runs" / "sigmoid" / runs["sigmoid"].name
    assert (kept / "summary.json").read_bytes() == (runs["sigmoid"] / "summary.json").read_bytes()
    assert not (kept / "checkpoint.pt").exists()
    assert inputs.read_run(kept, "sigmoid")["readout"] == inputs.read_run(runs["sigmoid"], "sigmoid")["readout"]  # the weights' sentences, without the weights
    for png in out.glob("*/*.png"):
        png.unlink()  # the figures come back from the kept runs too
    assert report.build(tmp_path / "no-logs", out, pdf=False).read_text() == text
    res = run_cli("nnhw.report", "--log-dir", str(tmp_path / "no-logs"), "--out", str(tmp_path / "empty"))
    assert res.returncode == 2 and "no kept runs" in res.stderr and "Traceback" not in res.stderr


def test_newest_run_wins_between_log_folder_and_kept_runs(tmp_path):
    logs, kept = tmp_path / "tb_logs" / "relu", tmp_path / "reports" / "runs" / "relu"
    both = [logs / "20260101-000000", kept / "20260102-000000_seed-1", kept / "20260101-000000"]
    assert inputs.newest(both) == kept / "20260102-000000_seed-1"
    assert inputs.newest(both[::2]) == logs / "20260101-000000"  # the same run in both places: the log folder's
    assert inputs.newest([]) is None
