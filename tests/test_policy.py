"""The homework's policy, checked on the source: no nn.Module-based layers, no torch.optim,
and every autograd Function in nnhw is in the gradcheck registry; and the bugs tools/mutants.py
plants to measure the tests still fit the code."""

import ast
import inspect
import os
import re

import pytest
import torch

import nnhw.functions
from conftest import REPO, tool
from test_functions import CASES

FORBIDDEN_ATTR = re.compile(
    r"(^|\.)nn\.(Module|Linear|Sequential|Conv[123]d|ReLU|Sigmoid|Tanh|CrossEntropyLoss|MSELoss|Dropout|AvgPool2d)$"
    r"|(^|\.)torch\.optim(\.|$)|DataLoader$"
)


def forbidden_import(node):
    """import torch.optim..., from torch.optim import ..., from torch import optim, or Module/DataLoader from torch."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("torch.optim")]
    module = node.module or ""
    if node.level or not module.startswith("torch"):
        return []
    if module.startswith("torch.optim"):
        return [module]
    return [a.name for a in node.names if a.name in ("optim", "Module", "DataLoader")]


def dotted(node):
    """'torch.nn.Module' for the expression torch.nn.Module; '' when it is not a plain chain."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def test_no_module_layers_no_torch_optim():
    """Walks the code (not the prose) of nnhw/: no nn.Module-based layer, no torch.optim, no DataLoader."""
    hits = []
    for path in sorted((REPO / "nnhw").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and FORBIDDEN_ATTR.search(dotted(node)):
                hits.append(f"{path.name}:{node.lineno}: {dotted(node)}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                hits += [f"{path.name}:{node.lineno}: imports {n}" for n in forbidden_import(node)]
    assert not hits, hits


def test_policy_check_catches_violations(tmp_path):
    code = "import torch\nfrom torch import optim\nnet = torch.nn.Linear(3, 4)\nopt = torch.optim.SGD([], lr=1)\n"
    tree = ast.parse(code)
    found = [dotted(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute) and FORBIDDEN_ATTR.search(dotted(n))]
    assert "torch.nn.Linear" in found and "torch.optim.SGD" in found
    imports = [n for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for n in forbidden_import(node)]
    assert imports == ["optim"]
    assert forbidden_import(ast.parse("from .optim import MomentumSGD").body[0]) == []


def test_every_function_is_gradchecked():
    defined = {
        obj for name, obj in inspect.getmembers(nnhw.functions, inspect.isclass)
        if issubclass(obj, torch.autograd.Function) and obj.__module__.startswith("nnhw.functions.") and not name.startswith("_")  # _Function: the shared base
    }
    covered = {case.function or case.fn.__self__ for case in CASES}
    assert defined and defined <= covered, defined - covered


@pytest.mark.skipif(bool(os.environ.get("NNHW_MUTANT")), reason="tools/mutants.py has planted one of its bugs in this copy")
def test_every_planted_bug_is_in_its_file_once():
    """tools/mutants.py plants each bug by replacing a piece of code: a piece that has since changed would
    stop the tool (it checks before running), so the list is checked here, where a change to the code meets it."""
    tool("mutants").check_list()  # SystemExit, which fails the test, naming the first planted bug that no longer fits
