"""The report reads everything before it writes anything: an imperfect kept run, a full disk or a
Ctrl-C gives one line and leaves REPORT.md and REPORT.pdf as they were; a resumed run is what the
report shows; a fuzz test damages the kept runs' files one at a time."""

import errno
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnhw import config, inputs, report, train

from conftest import REPO, killed_after_checkpoint

pytestmark = pytest.mark.slow  # report builds from the committed runs, replays included

KEPT_RUNS = sorted(p for p in (REPO / "reports" / "runs").glob("*/2*") if (p / "summary.json").is_file())
RUN_FILES = ["summary.json", "config.toml", "history.json", "readout.json", "loss.png", "error.png", "weights.png"]


@pytest.fixture(scope="module")
def base(tmp_path_factory, mnist_root, module_env):
    """A copy of reports/ as committed, built once (so every kept folder has its kept.json), and the
    bytes of its REPORT.md and REPORT.pdf."""
    module_env.setenv("NNHW_DATA_ROOT", str(mnist_root))
    root = tmp_path_factory.mktemp("base")
    shutil.copytree(REPO / "reports", root / "reports")
    assert report.main(["--log-dir", str(root / "no-logs"), "--out", str(root / "reports")]) == 0
    return root / "reports", {n: (root / "reports" / n).read_bytes() for n in ("REPORT.md", "REPORT.pdf")}


def copy_of(base, tmp_path):
    out = tmp_path / "reports"
    shutil.copytree(base[0], out)
    return out


def unchanged(out, base):
    return all((out / name).read_bytes() == data for name, data in base[1].items())


def one_line(capsys, code, expected=2):
    err = capsys.readouterr().err
    assert code == expected, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    return err


def build(out, tmp_path):
    return report.main(["--log-dir", str(tmp_path / "no-logs"), "--out", str(out)])


def newest_kept(pattern):
    """The path, under reports/, of the newest kept folder or file of that pattern: the one the report reads."""
    return str(max((REPO / "reports").glob(pattern)).relative_to(REPO / "reports"))


RELU = newest_kept("runs/relu/2*")
DAMAGE = {
    "truncated summary": (f"{RELU}/summary.json", lambda p: p.write_bytes(p.read_bytes()[:100])),
    "summary of the wrong shape": (f"{RELU}/summary.json", lambda p: p.write_text("[1, 2]")),
    "malformed history": (f"{RELU}/history.json", lambda p: p.write_text('[{"points": "many"}]')),
    "missing config": (f"{RELU}/config.toml", lambda p: p.unlink()),
    "missing read-out": (f"{RELU}/readout.json", lambda p: p.unlink()),
    "missing summary": (f"{RELU}/summary.json", lambda p: p.unlink()),
    "missing sweep figure": (f"{newest_kept('runs/relu-sweep/2*')}/sweep.png", lambda p: p.unlink()),
    "corrupt seed set": (newest_kept("runs/relu/seeds_*.json"), lambda p: p.write_text("{not json")),
    "broken png": (f"{RELU}/loss.png", lambda p: p.write_bytes(p.read_bytes()[:300])),
    "edited config": (f"{RELU}/config.toml", lambda p: p.write_text(p.read_text().replace("lr = 1.0", "lr = 2.0"))),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_an_imperfect_kept_run_stops_the_build_with_one_line(base, tmp_path, capsys, case):
    out = copy_of(base, tmp_path)
    where, damage = DAMAGE[case]
    damage(out / where)
    err = one_line(capsys, build(out, tmp_path))
    assert str(Path(where).parent) in err and "python -m nnhw." in err  # names the file, and the command that remakes it
    assert unchanged(out, base) and not list(out.glob(".build-*"))


@pytest.mark.parametrize("nth", [1, 35])  # 32 copies stage the build (figures), then the new run is kept
def test_a_full_disk_while_building_leaves_everything_as_it_was(base, tmp_path, capsys, monkeypatch, mnist_root, nth):
    """A newer run in the log folder, to be kept; the disk fills at the n-th file copied (a figure of
    the build, or a file of the kept run)."""
    out = copy_of(base, tmp_path)
    logs = tmp_path / "logs"
    cfg = config.load(REPO / "configs" / "relu.toml", ["train.epochs=0.02", "eval.max_points=1000", f'run.log_dir="{logs}"'])
    train.run(cfg, command="python -m nnhw.train configs/relu.toml", config_file="configs/relu.toml")
    kept_before = sorted(p.relative_to(out) for p in (out / "runs").rglob("*"))
    real, calls = shutil.copyfile, []

    def copyfile(src, dst, **kwargs):
        calls.append(dst)
        if len(calls) == nth:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copyfile)
    err = one_line(capsys, report.main(["--log-dir", str(logs), "--out", str(out)]))
    assert "no space left on device" in err and len(calls) == nth
    assert unchanged(out, base) and not list(out.glob(".build-*"))
    assert sorted(p.relative_to(out) for p in (out / "runs").rglob("*")) == kept_before  # no half-kept run


def test_ctrl_c_during_a_build_leaves_everything_as_it_was(base, tmp_path, capsys, monkeypatch):
    out = copy_of(base, tmp_path)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "stage_figures", interrupted)
    err = one_line(capsys, build(out, tmp_path), 130)
    assert "interrupted" in err and unchanged(out, base) and not list(out.glob(".build-*"))


def test_a_resumed_run_is_what_the_report_shows(tmp_path, monkeypatch, mnist_root):
    """Killed after its second checkpoint, resumed, and resumed again once finished: the report takes it
    as a run of configs/relu.toml each time, with its own numbers."""
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    configs = tmp_path / "configs"
    configs.mkdir()
    text = (REPO / "configs" / "relu.toml").read_text().replace("epochs = 30", "epochs = 0.04").replace("every = 12500", "every = 500")
    (configs / "relu.toml").write_text(text.replace("[eval]", "[eval]\nmax_points = 1000"))
    monkeypatch.chdir(tmp_path)
    logs = tmp_path / "logs"
    killed_after_checkpoint(monkeypatch, 2, lambda: train.main(["configs/relu.toml", f"run.log_dir={logs}"]))
    (run_dir,) = (logs / "relu").iterdir()
    for _ in range(2):  # a resume, then a resume of the finished run
        assert train.main(["--resume", str(run_dir)]) == 0
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["config"] == "configs/relu.toml" and summary["overrides"] == [f"run.log_dir={logs}"]
        assert [c["keys"] for c in summary["changes"]] == [[]] * len(summary["changes"])  # resumes that changed nothing
        text = report.build(logs, tmp_path / "out", pdf=False).read_text()
        assert f"run `{run_dir.name}`" in text
        assert f"| final test error | {summary['final']['test_error']:.2f}% (the last evaluation of the fixed schedule) |" in text
        assert "| reproduce | `python -m nnhw.train configs/relu.toml` |" in text  # where it went is no part of the command


def test_a_run_made_through_the_api_without_a_command_is_no_crash(tmp_path, monkeypatch, mnist_root):
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))
    logs = tmp_path / "logs"
    cfg = config.load(REPO / "configs" / "relu.toml", ["train.epochs=0.02", "eval.max_points=1000", f'run.log_dir="{logs}"'])
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "relu.toml").write_text(config.to_toml(cfg))  # what configs/relu.toml says where the report is built
    monkeypatch.chdir(tmp_path)
    run_dir, _, _ = train.run(cfg, config_file="configs/relu.toml")
    assert json.loads((run_dir / "summary.json").read_text())["command"] is None
    text = report.build(logs, tmp_path / "out", pdf=False).read_text()
    assert f"run `{run_dir.name}`" in text and "| reproduce | `python -m nnhw.train configs/relu.toml` |" in text
    other, _, _ = train.run(cfg)  # no config file either: a run of no committed config
    assert not inputs.is_plain_run_of(json.loads((other / "summary.json").read_text()), "relu")


MUTATIONS = ["truncate", "corrupt", "delete"]


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=st.sampled_from(KEPT_RUNS), name=st.sampled_from(RUN_FILES), how=st.sampled_from(MUTATIONS),
       where=st.floats(0.0, 1.0), junk=st.binary(min_size=1, max_size=8))
def test_fuzz_damaged_kept_files_build_as_before_or_stop_with_one_line(base, tmp_path_factory, capsys, run, name, how, where, junk):
    """A kept run's file truncated, overwritten in part, or deleted: `python -m nnhw.report` builds the
    same report, or exits 2 with one line; REPORT.md and REPORT.pdf stay byte for byte as they were."""
    tmp_path = tmp_path_factory.mktemp("fuzz")
    out = copy_of(base, tmp_path)
    path = out / run.relative_to(REPO / "reports") / name
    data = path.read_bytes()
    cut = int(where * len(data))
    if how == "truncate":
        path.write_bytes(data[:cut])
    elif how == "corrupt":
        path.write_bytes(data[:cut] + junk + data[cut + len(junk):])
    else:
        path.unlink()
    capsys.readouterr()
    code = build(out, tmp_path)
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err, err
    assert code == 0 or err.strip().count("\n") == 0, err
    assert unchanged(out, base)


def test_an_override_that_sets_a_key_to_its_committed_value_leaves_a_run_plain():
    # `--seeds` style runs of seed 0 made one at a time (run.seed=0) are the config as committed
    committed = config.flatten(config.load(REPO / "configs" / "relu.toml"))
    summary = lambda *overrides: {"config": "configs/relu.toml", "overrides": list(overrides)}
    assert inputs.is_plain_run_of(summary(f"run.seed={committed['run.seed']}"), "relu", committed)
    assert inputs.is_plain_run_of(summary('run.name="x"', f"optim.lr={committed['optim.lr']}"), "relu", committed)
    assert not inputs.is_plain_run_of(summary(f"run.seed={committed['run.seed'] + 1}"), "relu", committed)
    assert not inputs.is_plain_run_of(summary(f"optim.lr={committed['optim.lr'] * 2}"), "relu", committed)
    assert not inputs.is_plain_run_of(summary("run.seed=0"), "relu")  # no committed config to compare with
    assert not inputs.is_plain_run_of(summary("not an override"), "relu", committed)


def test_the_readme_and_results_tables_are_what_the_kept_runs_give(monkeypatch):
    """README.md and docs/results.md hold the tables `python -m nnhw.tables` prints from the runs kept under
    reports/runs/ (the ones the report shows): no number in them is typed by hand."""
    from nnhw import tables

    monkeypatch.chdir(REPO)  # the committed configs the runs are runs of

    rows = tables.rows(REPO / "nowhere", REPO / "reports")
    assert len(rows) == len(tables.QUESTIONS)  # every committed config has its run
    assert tables.markdown(rows, tables.README_COLUMNS) in (REPO / "README.md").read_text()
    assert tables.markdown(rows, tables.RESULTS_COLUMNS) in (REPO / "docs" / "results.md").read_text()
    assert tables.beside_markdown(rows) in (REPO / "docs" / "results.md").read_text()


def test_the_published_rows_name_committed_configs_and_say_when_a_config_has_no_run():
    """Each config the published rows set nnhw beside is a committed one, and a config without a finished run
    says so in its cell instead of losing its place."""
    from nnhw import tables

    names = [name for _, configs, _ in tables.BESIDE for name, _ in configs]
    assert all((REPO / "configs" / f"{name}.toml").exists() for name in names)
    row = dict(config="`softmax`", final="**7.00 ± 0.10%**", committee="6.90%")
    text = tables.beside_markdown([row])
    assert "softmax 7.00 ± 0.10% (committee 6.90%)" in text
    assert "sigmoid: no finished run" in text and text.count("\n") == len(tables.BESIDE) + 1


def test_the_report_takes_the_plain_sweep_not_a_newer_one_over_another_grid(tmp_path):
    """A quick `python -m nnhw.sweep configs/relu.toml --budget 0.01`, run to look, is newer than the sweep the
    hand-in shows, and answers another question: the report keeps taking the plain one."""
    def sweep_at(stamp, command):
        d = tmp_path / "relu-sweep" / stamp
        d.mkdir(parents=True)
        (d / "sweep.json").write_text(json.dumps({"command": command}))
        return d

    plain = sweep_at("20261201-000000", "python -m nnhw.sweep configs/relu.toml")
    sweep_at("20261202-000000", "python -m nnhw.sweep configs/relu.toml --lo 0.1 --hi 1 --budget 0.01")
    sweep_at("20261203-000000", "python -m nnhw.sweep configs/relu.toml model.hidden=[30]")
    sweep_at("20261204-000000", "python -m nnhw.sweep configs/sigmoid.toml")
    assert inputs.latest_sweep([tmp_path], "relu") == plain
    where = sweep_at("20261205-000000", "python -m nnhw.sweep configs/relu.toml run.log_dir=elsewhere")
    assert inputs.latest_sweep([tmp_path], "relu") == where  # where its runs went does not make another sweep
