"""The homework's policy, checked on the source: no nn.Module-based layers, no torch.optim,
and every autograd Function in nnhw is in the gradcheck registry."""

import inspect
import re

import torch

import nnhw.functions
from conftest import REPO
from test_functions import CASES

FORBIDDEN = re.compile(
    r"nn\.Module|nn\.(Linear|Sequential|Conv[123]d|ReLU|Sigmoid|Tanh|CrossEntropyLoss|MSELoss|Dropout)\b"
    r"|torch\.optim|from torch import optim|DataLoader\s*\(|import .*DataLoader"
)


def test_no_module_layers_no_torch_optim():
    hits = []
    for path in sorted((REPO / "nnhw").rglob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if FORBIDDEN.search(code) and not code.strip().startswith(('"', "'")):
                hits.append(f"{path.name}:{i}: {line.strip()}")
    assert not hits, hits


def test_every_function_is_gradchecked():
    defined = {
        obj for _, obj in inspect.getmembers(nnhw.functions, inspect.isclass)
        if issubclass(obj, torch.autograd.Function) and obj.__module__ == "nnhw.functions"
    }
    covered = {case.fn.__self__ for case in CASES}
    assert defined and defined <= covered, defined - covered
