"""Random values of every command's options: a result, or one line and exit 2, never a traceback.

Each command runs in this process through its own `main`, as `python -m` runs it; where its options
pass, the work they start (training, a sweep, timings, the claims) is replaced by a stand-in that
stops at once, so the test explores the options, not hours of training."""

import dataclasses
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnhw import autodiff, committee, config, plot, replay, report, sweep, theory, train

from conftest import REPO, tool

pytestmark = pytest.mark.slow  # hundreds of command lines


bench, time_to_99, hvp_cost = tool("bench"), tool("time_to_99"), tool("hvp_cost")


class Started(BaseException):
    """The options passed and the command started its work."""


def started(*args, **kwargs):
    raise Started


KEYS = [f"{s}.{f.name}" for s, factory in config.SECTIONS.items() for f in dataclasses.fields(factory())]
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**30, 10**30).map(str),
                    st.sampled_from(["nan", "inf", "-inf", "1e-320", "1e308", "0", "-1", "3.5"]))
TEXT = st.text(alphabet=string.printable + "\x00\x7f\u00e9", max_size=12)
VALUES = st.one_of(NUMBERS, TEXT, TEXT.map(lambda t: '"' + t.replace('"', "") + '"'), st.sampled_from(["true", "[]", "[1, 0]", "[99999]"]))
OVERRIDES = st.lists(st.builds(lambda k, v: f"{k}={v}", st.one_of(st.sampled_from(KEYS), TEXT), VALUES), max_size=3)
PATHS = st.one_of(st.sampled_from(["configs/relu.toml", "configs/cnn.toml", "nope.toml", "reports", "reports/runs/relu", ""]), TEXT)


def option(name, values):
    return st.one_of(st.just([]), values.map(lambda v: [name, v]))


COMMANDS = {
    "train": st.builds(lambda c, o, s, r: [c, *o, *s, *r], PATHS, OVERRIDES, option("--seeds", st.one_of(TEXT, NUMBERS)),
                       option("--resume", PATHS)),
    "sweep": st.builds(lambda c, a, b, d, e, o: [c, *a, *b, *d, *e, *o], PATHS, option("--lo", NUMBERS), option("--hi", NUMBERS),
                       option("--per-decade", NUMBERS), option("--budget", NUMBERS), OVERRIDES),
    "autodiff": st.builds(lambda a, b, d, r: [*a, *b, *d, *r], option("--w1", NUMBERS), option("--w2", NUMBERS),
                          st.one_of(st.just([]), st.lists(NUMBERS, max_size=4).map(lambda ds: ["--dims", *ds] if ds else [])),
                          option("--repeats", NUMBERS)),
    "replay": st.lists(PATHS, min_size=1, max_size=2),
    "plot": PATHS.map(lambda p: [p]),
    "report": st.builds(lambda a, b: [*a, *b], option("--log-dir", PATHS), option("--out", TEXT)),
    "theory": option("--out", TEXT),
    "bench": st.builds(lambda c, d, r: [*c, *d, *r], option("--configs", st.sampled_from(["relu", "nope", "cnn", "mlp_maxnorm"])),
                       option("--device", st.sampled_from(["cpu", "cuda", "foo", "cuda:9", ""])), option("--repeats", NUMBERS)),
    "time_to_99": st.builds(lambda d, m, r, n: [*d, *m, *r, *n], option("--device", st.sampled_from(["cpu", "cuda", "foo", "cuda:9", ""])),
                            option("--max-seconds", NUMBERS),
                            option("--recipe", st.sampled_from(["configs/fast.toml", "configs/cnn.toml", "configs/mlp_maxnorm.toml",
                                                                "configs/nope.toml", ""])),
                            option("--repeats", NUMBERS)),
    "hvp_cost": st.builds(lambda d, r: [*d, *r], option("--device", st.sampled_from(["cpu", "cuda", "foo", ""])), option("--repeats", NUMBERS)),
    "committee": st.builds(lambda p, d: [*p, *d], st.lists(PATHS, min_size=1, max_size=2), option("--device", st.sampled_from(["cpu", "cuda", "x"]))),
    "config": st.lists(TEXT, max_size=2),
}
MAINS = {"train": train.main, "sweep": sweep.main, "autodiff": autodiff.main, "replay": replay.main, "plot": plot.main,
         "report": report.main, "theory": theory.main, "bench": bench.main, "time_to_99": time_to_99.main, "hvp_cost": hvp_cost.main,
         "committee": committee.main, "config": config.main}


@pytest.fixture
def stand_ins(monkeypatch, tmp_path):
    """Where the options pass, the command's work starts, and stops at once."""
    monkeypatch.chdir(REPO)
    for module, name in [(train, "run"), (sweep, "sweep"), (autodiff, "mode_cost_table"), (replay, "first_steps"),
                         (replay, "replay_sweep"), (plot, "save_figures"), (report, "build"), (bench, "bench_config"),
                         (time_to_99, "time_to_99_rows"), (bench, "matmul_gflops"), (hvp_cost, "hvp_rows"), (hvp_cost.data_mod, "load_splits")]:
        monkeypatch.setattr(module, name, started)
    monkeypatch.setattr(theory, "CLAIMS", [])
    monkeypatch.setattr(sweep, "make_run_dir", lambda *a, **k: tmp_path)  # no folders in the log directory
    monkeypatch.setattr(autodiff, "cost_figure", started)
    monkeypatch.setattr(theory, "Path", lambda *a: tmp_path / "theory")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_random_options_give_a_result_or_one_line(command, stand_ins, capsys):
    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(argv=COMMANDS[command])
    def check(argv):
        capsys.readouterr()
        try:
            code = MAINS[command](argv)
        except SystemExit as e:  # --help or argparse's usage error, one line
            code = e.code
        except Started:
            return
        err = capsys.readouterr().err
        assert "Traceback" not in err, (argv, err)
        assert code in (0, 1, 2), (argv, code, err)
        if code == 2:
            assert err.strip().count("\n") == 0, (argv, err)

    check()
