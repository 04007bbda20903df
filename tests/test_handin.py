"""The hand-in PDF (reports/REPORT.pdf), built from tiny real runs and read back with pypdf."""

import json
import re
import shutil
from pathlib import Path

import pypdf
import pytest
import torch

from nnhw import config, handin, readout, report, theory
from nnhw.describe import COMMANDS, show
from nnhw.sharpness import CONFIGS as SHARPNESS_CONFIGS

from conftest import REPO, TENTH, run_as_committed

pytestmark = pytest.mark.slow  # REPORT.pdf built from tiny real runs


# Every question the homework numbers, in its order, as the PDF's headings carry them.
LABELS = [
    "0 Problem 0", "1.1 ", "1.2 ", "1.3 ",
    "2.1.1 ", "2.1.2 ", "2.1.3 ", "2.1.4 ", "2.1.5 ",
    "2.2.1 ", "2.2.2 ", "2.2.3 ", "2.2.4 ",
    "2.3.1 (a)", "2.3.1 (b)", "2.3.2 (a)", "2.3.2 (b)",
    "3 (a)", "3 (b)", "3 (c)", "3 (d)",
    *[f"4.1.{i} " for i in range(1, 7)], *[f"4.2.{i} " for i in range(1, 7)], *[f"4.3.{i} " for i in range(1, 6)],
    "5.1 ", "5.2 ", "5.3.1 ", "5.3.2 ",
    *[f"6.{i} " for i in range(1, 6)],
    "7.1 ", "7.2 ", "7.3 ", "7.4 ",
    "8 Code",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory, mnist_root, module_env):
    """Tiny finished runs of softmax, sigmoid, cnn and one sharpness config filed as runs of the committed
    configs, the XOR check of theory.json, and the report built from them."""
    module_env.setenv("NNHW_DATA_ROOT", str(mnist_root))
    log_dir = tmp_path_factory.mktemp("logs")
    module_env.chdir(tmp_path_factory.mktemp("project"))  # where the runs' configs/<name>.toml are
    for name, extra in (("softmax", []), ("sigmoid", []), ("cnn", ["train.epochs=0.01", "eval.every=600", "eval.max_points=2000"]),
                        (SHARP, ["data.train_points=200", "train.batch_size=200", "train.epochs=10", "eval.every=1000", "eval.max_points=500",
                                "eval.sharpness_iters=5"])):
        cfg = config.load(REPO / "configs" / f"{name}.toml", [*TENTH, *extra, f'run.log_dir="{log_dir}"'])
        _, status, _ = run_as_committed(cfg, name, Path.cwd())
        assert status == "finished"
    out = tmp_path_factory.mktemp("reports")
    (out / "theory").mkdir()
    (out / "theory" / "theory.json").write_text(json.dumps({"2.3.2": dict(theory.claim_2_3_2(), claim="XOR")}))
    report.build(log_dir, out)
    return log_dir, out


SHARP = SHARPNESS_CONFIGS[-1]  # the one sharpness config the fixture runs; the others are missing


class PageTexts:
    """Each page's text, extracted when first asked for and kept: pypdf takes a quarter of a second a
    page, and the code section alone runs to over a hundred pages that only their first lines are read of."""

    def __init__(self, reader):
        self.reader, self.cache = reader, {}

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.reader.pages)))]
        if index not in self.cache:
            self.cache[index] = self.reader.pages[index].extract_text()
        return self.cache[index]


@pytest.fixture(scope="module")
def pdf(built):
    """The built PDF read once: (reader, its outline, each page's text, read lazily)."""
    reader = pypdf.PdfReader(built[1] / "REPORT.pdf")
    return reader, outline(reader), PageTexts(reader)


def answer_text(pdf):
    """The text of every page before the code section, whitespace runs made single spaces."""
    _, marks, texts = pdf
    code_page = next(page for title, page in marks if title.startswith("8 Code"))
    return re.sub(r"\s+", " ", "".join(texts[:code_page]))


def outline(reader):
    """[(title, page index)] of the PDF's bookmarks, depth first (the reading order)."""
    found = []

    def walk(items):
        for item in items:
            if isinstance(item, list):
                walk(item)
            else:
                found.append((item.title, reader.get_destination_page_number(item)))

    walk(reader.outline)
    return found


def test_every_question_is_a_heading_in_the_homeworks_order(pdf):
    reader, marks, texts = pdf
    positions = []
    for label in LABELS:
        hits = [i for i, (title, _) in enumerate(marks) if (title + " ").startswith(label)]
        assert hits, f"no heading for {label!r}"
        positions.append(hits[0])
    assert positions == sorted(positions), "questions out of the homework's order"
    pages = [marks[i][1] for i in positions]
    assert pages == sorted(pages)
    for label, i in zip(LABELS, positions):  # the heading is really on its page, not only in the outline
        title, page = marks[i]
        assert title.split(" ")[0] in texts[page], title


def test_each_figure_is_embedded(built, pdf):
    _, out = built
    reader, marks, _ = pdf
    code_page = next(page for title, page in marks if title.startswith("8 Code"))  # the code has no pictures
    embedded = sum(len(page.images) for page in reader.pages[:code_page])
    pngs = sorted(p.relative_to(out) for p in out.glob("**/*.png") if p.relative_to(out).parts[0] != report.KEPT)  # kept runs: copies
    # softmax, sigmoid and cnn: loss, error, weights each, and 7.4's sharpness figure; the sweeps and 7's figure
    # were not made here
    assert len(pngs) == 10 and (out / "sharpness.png").is_file(), pngs
    assert embedded == len(pngs)


def test_code_section_names_every_module(pdf):
    _, marks, texts = pdf
    code_page = next(page for title, page in marks if title.startswith("8 Code"))
    titles = [title for title, page in marks if page >= code_page]
    for path in sorted((REPO / "nnhw").glob("*.py")):
        name = f"nnhw/{path.name}"
        assert name in titles, name
        page = next(page for title, page in marks if title == name)
        first_line = next(line for line in path.read_text().splitlines() if line.strip())
        # its heading and its first line are printed on the page the outline points to (or the next)
        printed = re.sub(r"\s+", "", texts[page] + texts[page + 1])
        assert name in printed and re.sub(r"\s+", "", first_line)[:40] in printed, name
    for path in ("configs/relu.toml", "tools/complexity.py", "nnhw/handin.typ"):
        assert path in titles


def test_answers_carry_the_runs_numbers_and_name_missing_runs(built, pdf):
    log_dir, out = built
    flat = answer_text(pdf)
    s = json.loads(next((log_dir / "sigmoid").glob("*/summary.json")).read_text())
    assert f"{s['final']['test_error']:.2f}%" in flat and f"{s['lowest_test_error']:.2f}%" in flat
    assert "chosen on the test set as the homework asks" in flat
    # relu, wide, deep and cnn_aug have no run here: their answers name the command that makes one
    for name in ("relu", "wide", "deep", "cnn_aug"):
        assert f"python -m nnhw.train configs/{name}.toml" in flat, name
    # the XOR weights come from nnhw.theory's claim, the 5.1 pseudocode from nnhw.autodiff's code
    xor = theory.claim_2_3_2()
    assert show(xor["W1"]) == "[[1, 1], [-1, -1]]" and show(xor["W1"]) in flat
    assert show(xor["network_outputs"]) in flat
    assert "bar1 = bar2 * TWO_PI * math.cos(TWO_PI * z1) + bar4 * 3.0" in flat
    assert "d6 = d4 * z5 + z4 * d5" in flat


def test_the_sharpness_section_carries_its_runs_numbers(built, pdf):
    log_dir, out = built
    flat = answer_text(pdf)
    s = json.loads(next((log_dir / SHARP).glob("*/summary.json")).read_text())["sharpness"]
    md = (out / "REPORT.md").read_text().split("## 7.4")[1].split("\n## ")[0]
    for text in (flat, md):
        assert f"{s['first']['value']:.3g}" in text and f"{s['peak']['value']:.3g}" in text and f"{s['last']['value']:.3g}" in text
        assert f"{s['first']['threshold']:.3g}" in text  # 2/lr
        for name in SHARPNESS_CONFIGS[:-1]:  # not run here: named with the command that makes them
            assert f"python -m nnhw.train configs/{name}.toml" in text, name
    assert "![sharpness against step](sharpness.png)" in md


def test_rebuild_is_byte_identical(built, tmp_path):
    log_dir, out = built
    again = tmp_path / "again"
    shutil.copytree(out / "theory", again / "theory")
    report.build(log_dir, again)
    assert (again / "REPORT.pdf").read_bytes() == (out / "REPORT.pdf").read_bytes()


def test_problem_0_blank_until_the_student_fills_it_in(built, pdf, tmp_path):
    log_dir, out = built
    flat = re.sub(r"\s+", " ", "".join(pdf[2][:6]))
    assert "[blank: write the certification sentence yourself]" in flat
    assert handin.CERTIFICATION not in flat  # never certified on a person's behalf

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "student.toml").write_text(
        'name = "Ada Lovelace"\ncollaborators = ["C. Babbage (2.2)", "M. Somerville (5)"]\n'
        'acknowledgements = "none"\ncertification = "I have read and understood these policies"\n'
    )
    report.build(log_dir, mine)
    flat = re.sub(r"\s+", " ", "".join(p.extract_text() for p in pypdf.PdfReader(mine / "REPORT.pdf").pages[:6]))
    assert "Ada Lovelace" in flat and "C. Babbage (2.2); M. Somerville (5)" in flat
    assert handin.CERTIFICATION in flat and "[blank:" not in flat


def test_a_name_in_a_script_the_bundled_fonts_lack_prints_with_a_font_from_the_fonts_folder(built, tmp_path):
    """An Inuktitut name: refused in one line with nothing to draw it, then drawn once a font that has it
    (matplotlib's DejaVu Sans) is in <out>/fonts/; its glyphs come back out of the PDF's text."""
    import matplotlib

    log_dir, _ = built
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "student.toml").write_text('name = "ᐃᓄᒃᑎᑐᑦ"\n')
    with pytest.raises(handin.StudentFileError, match="the PDF's fonts have no glyph for"):
        report.build(log_dir, mine)
    assert not (mine / "REPORT.pdf").exists()  # refused before anything was written
    (mine / "fonts").mkdir()
    shutil.copy(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", mine / "fonts")
    report.build(log_dir, mine)
    assert "ᐃᓄᒃᑎᑐᑦ" in pypdf.PdfReader(mine / "REPORT.pdf").pages[0].extract_text()


def test_bad_student_file_is_one_line(tmp_path):
    (tmp_path / "student.toml").write_text('nmae = "x"\n')
    with pytest.raises(handin.StudentFileError, match="unknown key 'nmae'"):
        handin.student_data(tmp_path)
    (tmp_path / "student.toml").write_text("name = \n")
    with pytest.raises(handin.StudentFileError, match="not valid TOML"):
        handin.student_data(tmp_path)


def test_readout_describes_the_pictured_units():
    gen = torch.Generator().manual_seed(0)
    w1 = torch.zeros(8, 784)
    w1.view(8, 28, 28)[:, 10:18, 10:18] = 1.0  # all mass in the centre
    w2 = torch.randn(10, 8, generator=gen)
    w2[3, 0], w2[7, 0] = 5.0, -5.0
    lines, summary = readout.readout_text({"W1": w1, "W2": w2})
    assert lines[0].startswith("unit 1: 100% of |w| in the central 20x20 box, 100% of it positive")
    assert "votes for digit 3 (+5.00) and against digit 7 (-5.00)" in lines[0]
    assert "100-100%" in summary

    f = torch.zeros(8, 1, 5, 5)
    f[:, 0, :, :2], f[:, 0, :, 3:] = -1.0, 1.0  # dark left, bright right: a vertical edge
    f[1, 0] = f[1, 0].t().clone()  # a horizontal one
    lines, _ = readout.readout_text({"Wc1": f, "W1": torch.zeros(10, 4)})
    assert lines[0].startswith("filter 1: a vertical edge (gradient at 0 degrees")
    assert lines[1].startswith("filter 2: a horizontal edge (gradient at 90 degrees")


def test_the_readme_lists_the_commands_the_pdf_lists():
    """One source for both tables: describe.COMMANDS, which the README's table must equal row for row."""
    section = (REPO / "README.md").read_text().split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows == [f"| `{c}` | {w} |" for c, w in COMMANDS]


def test_report_cli_rejects_a_bad_student_file_before_writing(tmp_path):
    from conftest import run_cli

    (tmp_path / "logs").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "student.toml").write_text("certify = true\n")
    res = run_cli("nnhw.report", "--log-dir", str(tmp_path / "logs"), "--out", str(out))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "unknown key 'certify'" in res.stderr
    assert not (out / "REPORT.md").exists() and not (out / "REPORT.pdf").exists()
