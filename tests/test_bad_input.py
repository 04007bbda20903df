"""Every command, every input: finished work is kept, bad input gets one line and exit 2.

One test per case a new user hit: a seed set that lost its aggregate, quick commands that rewrote the
hand-in's files, a name in another script, a committee or a replay that ended in a traceback, a
command whose output could not be written, unchecked arguments of nnhw.hessian, batch normalisation of
a batch of one, --seeds under torchrun, and wording."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnhw import autodiff, committee, config, handin, hessian, replay, runlog, seeds, theory, train

from conftest import REPO, TINY, finished_run


@pytest.fixture
def data(monkeypatch, mnist_root):
    monkeypatch.setenv("NNHW_DATA_ROOT", str(mnist_root))


def test_a_seed_set_keeps_its_aggregate_whatever_the_committee_does(tmp_path, data, monkeypatch, capsys):
    """eval.max_points 150 in batches of 100 (no multiple): the committee votes on those 150 images. And a
    committee that fails for any reason leaves the aggregate written, with its reason."""
    args = ["configs/relu.toml", "--seeds", "0,1", *TINY, "eval.max_points=150", "eval.batch_size=100", f"run.log_dir={tmp_path}"]
    assert train.main(args) == 0
    (agg,) = (tmp_path / "relu").glob("seeds_*.json")
    assert json.loads(agg.read_text())["committee"]["n_images"] == 150
    agg.unlink()

    def broken(run_dirs, device):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(seeds, "committee", broken)
    assert train.main([*args, "--reuse"]) == 0  # both seeds taken as they are, then the aggregate
    (agg,) = (tmp_path / "relu").glob("seeds_*.json")
    written = json.loads(agg.read_text())
    assert written["committee"] == {"error": "out of memory"} and written["stats"]["final_test_error"]["n"] == 2
    assert "no committee of the seeds: out of memory" in capsys.readouterr().err


def test_the_quick_commands_print_and_write_only_where_asked(tmp_path, monkeypatch):
    """`python -m nnhw.theory` and `python -m nnhw.autodiff`, as the README gives them, leave the report's
    files alone; with --out they write theirs there."""
    monkeypatch.chdir(tmp_path)
    # test_theory checks every claim; here an ordinary one and 7, the one with a figure, show what the command writes
    monkeypatch.setattr(theory, "CLAIMS", [c for c in theory.CLAIMS if c[0] in ("2.2.1", "7")])
    assert theory.main([]) == 0 and autodiff.main(["--dims", "2", "4", "--repeats", "1"]) == 0
    assert list(tmp_path.iterdir()) == []
    assert autodiff.main(["--dims", "2", "4", "--repeats", "1", "--out", "here"]) == 0
    assert sorted(p.name for p in (tmp_path / "here").iterdir()) == ["autodiff.json", "autodiff_cost.png"]


def test_a_name_no_bundled_font_draws_is_named_with_what_to_do(tmp_path):
    (tmp_path / "student.toml").write_text('name = "李小龍"\ncollaborators = ["Ωmega Ångström", "Արամ"]\n')
    with pytest.raises(handin.StudentFileError) as e:
        handin.student_data(tmp_path)
    message = str(e.value)
    assert "李 (U+674E)" in message and "龍 (U+9F8D)" in message
    assert "Ω" not in message and "Ա" not in message  # Greek, Latin and Armenian are drawn (tools/bundled_glyphs.py)
    assert f"into {tmp_path / 'fonts'}/" in message and "\n" not in message


def test_a_font_in_the_fonts_folder_draws_what_the_bundled_ones_lack(tmp_path):
    """Inuktitut's syllabics are in none of Typst's bundled fonts but in matplotlib's DejaVu Sans: with that font in
    <out>/fonts/ the name is taken (tests/test_handin.py builds a PDF with it)."""
    import matplotlib

    (tmp_path / "student.toml").write_text('name = "ᐃᓄᒃᑎᑐᑦ"\n')
    with pytest.raises(handin.StudentFileError, match=r"ᐃ \(U\+1403\)"):
        handin.student_data(tmp_path)
    (tmp_path / "fonts").mkdir()
    shutil.copy(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", tmp_path / "fonts")
    student = handin.student_data(tmp_path)
    assert student["name"] == "ᐃᓄᒃᑎᑐᑦ" and student["fonts"] == str((tmp_path / "fonts").resolve())
    (tmp_path / "fonts" / "broken.ttf").write_bytes(b"not a font")
    with pytest.raises(handin.StudentFileError, match="broken.ttf is not a font file that can be read"):
        handin.student_data(tmp_path)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist_root, module_env):
    module_env.setenv("NNHW_DATA_ROOT", str(mnist_root))
    return finished_run(tmp_path_factory.mktemp("logs"), TINY)


def test_a_committee_member_whose_checkpoint_does_not_fit_is_one_line(tiny_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    (other / "config.toml").write_text(config.to_toml(config.load(other / "config.toml", ["model.hidden=[30]"])))
    with pytest.raises(committee.CommitteeError, match="its checkpoint's parameters do not fit the model its config.toml describes"):
        committee.committee([tiny_run, other], torch.device("cpu"))
    with pytest.raises(ValueError, match="at least one finished run"):
        committee.committee([], torch.device("cpu"))


@pytest.mark.parametrize("mangle, says", [
    (lambda s: {k: v for k, v in s.items() if k != "fingerprint"} | {"fingerprint": {"steps": 20, "checksums": {}}}, "no 'steps' and as many 'losses'"),
    (lambda s: [s], "holds a list"),
    (lambda s: dict(s, device=5), "its device is 5"),
    (lambda s: dict(s, fingerprint="abc"), "fingerprint is 'abc'"),
    (lambda s: dict(s, recipe=[1, 2]), "recipe is a list"),
    (lambda s: dict(s, fingerprint=dict(s["fingerprint"], initial_loss="2.3")), "initial_loss '2.3', not a number"),
], ids=["no losses", "a list", "device 5", "fingerprint abc", "recipe a list", "initial loss a string"])
def test_replay_of_a_malformed_summary_is_one_line_and_exit_2(tiny_run, tmp_path, mangle, says, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    (copy / "summary.json").write_text(json.dumps(mangle(json.loads((copy / "summary.json").read_text()))))
    assert replay.main([str(copy)]) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and says in out and "Traceback" not in out


def test_replay_of_an_unfinished_run_says_how_to_finish_it(tiny_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    (copy / "summary.json").unlink()
    assert replay.main([str(copy)]) == 2
    assert f"a run that has not finished (a checkpoint, no summary.json yet); finish it with python -m nnhw.train --resume {copy}" in capsys.readouterr().out


def test_replay_of_a_malformed_sweep_is_one_line(tmp_path, capsys):
    (tmp_path / "sweep.json").write_text(json.dumps({"command": "python -m nnhw.sweep configs/relu.toml", "rows": "many"}))
    assert replay.main([str(tmp_path)]) == 2
    assert "its sweep.json has no command, start_loss, budget_epochs and rows of lr and loss" in capsys.readouterr().out


def test_a_command_whose_output_cannot_be_written_is_one_line():
    with open("/dev/full", "w") as full:
        res = subprocess.run([sys.executable, "-m", "nnhw.config"], cwd=REPO, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr == "nnhw.config: error: no space left on device\n"


def quadratic(params):
    return (params["w"] ** 2).sum() * 1.5


def test_hessian_names_a_bad_argument():
    w = {"w": torch.ones(3, dtype=torch.float64)}
    with pytest.raises(ValueError, match="top_eigenvalue: params must be a non-empty dict of tensors"):
        hessian.top_eigenvalue(quadratic, {})
    with pytest.raises(ValueError, match="top_eigenvalue: iters must be a whole number >= 1"):
        hessian.top_eigenvalue(quadratic, w, iters=0)
    with pytest.raises(ValueError, match="top_eigenvalues: k must be a whole number >= 1"):
        hessian.top_eigenvalues(quadratic, w, 0)
    with pytest.raises(ValueError, match="trace: samples must be a whole number >= 2"):
        hessian.trace(quadratic, w, samples=1)
    with pytest.raises(ValueError, match="spectral_density: runs must be a whole number >= 1"):
        hessian.spectral_density(quadratic, w, runs=True)
    with pytest.raises(ValueError, match="hvp: mode must be one of"):
        hessian.hvp(quadratic, w, w, mode="sideways")
    for mode in hessian.MODES:  # f that does not depend on the parameters: H = 0, in both modes
        hv = hessian.hvp(lambda p: torch.tensor(2.0, dtype=torch.float64), w, w, mode)
        assert torch.equal(hv["w"], torch.zeros(3, dtype=torch.float64))
    assert hessian.top_eigenvalue(quadratic, w, iters=3).value == pytest.approx(3.0)


def test_batch_normalisation_of_a_batch_of_one_is_refused_naming_the_batch():
    with pytest.raises(config.ConfigError, match="model.batch_norm: normalises by each batch's variance, and a batch of one has none"):
        config.load(REPO / "configs" / "fast.toml", ["train.batch_size=1"])


def test_seeds_under_torchrun_are_refused_before_any_seed_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert train.main(["configs/relu.toml", "--seeds", "0,1", f"run.log_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seeds does not run under torchrun; start one torchrun per seed" in err
    assert list(tmp_path.iterdir()) == []


def test_resume_with_a_config_file_says_what_resume_takes(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert train.main(["configs/relu.toml", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "leave out 'configs/relu.toml' and give only section.key=value overrides" in err


def test_a_run_id_keeps_whole_overrides():
    slug = runlog.run_slug(['run.log_dir="/x"', "optim.lr=0.05", "model.hidden=[300, 100]", "eval.max_points=1000",
                            "data.download=false", "train.batch_size=64"])
    assert slug == "lr-0.05_hidden-300-100_max_points-1000_download-false"  # batch_size-64 did not fit whole: left out
    assert runlog.run_slug(["optim.schedule=" + "x" * 80]) == "schedule-" + "x" * 51  # one override longer than all: its start


MALLINFO = """
import ctypes, sys
from nnhw import command

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.posix_memalign.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "command":
    command.run_command("probe", lambda argv: 0, [])
maps = [ctypes.c_void_p() for _ in range(4)]
for m in maps:  # four 16 MiB maps as torch's CPU allocator makes them (posix_memalign, 64-byte aligned), then freed
    assert libc.posix_memalign(ctypes.byref(m), 64, 16 << 20) == 0
for m in maps:
    libc.free(m)
print(libc.mallinfo2().fordblks >> 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's, on Linux")
def test_a_command_keeps_the_memory_it_frees_for_its_next_tensors():
    """Four 16 MiB maps made and freed: in a plain process malloc hands them back to the system (the
    next ones fault their pages in afresh); once a command has started, the process keeps them."""
    kept = {}
    for mode in ("plain", "command"):
        res = subprocess.run([sys.executable, "-c", MALLINFO, mode], capture_output=True, text=True, cwd=REPO, timeout=120)
        if "mallinfo2" in res.stderr:
            pytest.skip("this C library has no mallinfo2 (glibc before 2.33)")
        assert res.returncode == 0, res.stderr
        kept[mode] = int(res.stdout)
    assert kept["plain"] < 16 <= 64 <= kept["command"], kept
