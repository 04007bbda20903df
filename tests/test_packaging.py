"""What `pip install .` gets: the wheel holds the package and the PDF's template."""

import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # builds a wheel


def test_the_wheel_holds_the_typst_template(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel without network needs setuptools in this environment")
    src = tmp_path / "src"  # a copy: setuptools leaves build/ and *.egg-info beside what it builds
    shutil.copytree(REPO / "nnhw", src / "nnhw", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(tmp_path)],
                         cwd=src, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    (wheel,) = tmp_path.glob("nnhw-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "nnhw/handin.typ" in names
    assert {f"nnhw/{p.name}" for p in (REPO / "nnhw").glob("*.py")} <= names
