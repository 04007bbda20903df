"""Data flows one way through nnhw/: no two modules import each other, directly or round a circle.
Function-level imports count too (they hide a circle, they do not remove it)."""

import ast

from conftest import REPO


def nnhw_imports(source, package_modules):
    """The nnhw modules that `source` imports anywhere: `from . import x`, `from .x import y`,
    `from nnhw.x import y`, `import nnhw.x`."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level and not module or module == "nnhw":
                names = [a.name for a in node.names]  # from . import x, y
            elif node.level:
                names = [module.split(".")[0]]  # from .x import y
            elif module.startswith("nnhw."):
                names = [module.split(".")[1]]
            else:
                names = []
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("nnhw.")]
        else:
            continue
        found |= {n for n in names if n in package_modules}
    return found


def find_cycle(edges):
    """One import circle as [a, b, ..., a], or None. Depth-first search with colours."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == "open":
                return stack[stack.index(t):] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def import_graph():
    """{module: the nnhw modules it imports}; a subpackage (nnhw/functions/) is one module, all its files' imports."""
    sources = {p.stem: p.read_text() for p in (REPO / "nnhw").glob("*.py")}
    for package in (p for p in (REPO / "nnhw").iterdir() if (p / "__init__.py").is_file()):
        sources[package.name] = "\n".join(f.read_text() for f in sorted(package.glob("*.py")))
    return {m: nnhw_imports(text, sources) - {m} for m, text in sources.items()}


def test_no_import_cycle_in_nnhw():
    graph = import_graph()
    assert graph["train"] and graph["report"], "the walk found no imports at all"
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_walk_sees_every_kind_of_import_and_finds_circles():
    mods = {"a", "b", "c"}
    src = "from . import a\nfrom .b import x\ndef f():\n    from nnhw.c import y\n    import nnhw.a\nimport os\n"
    assert nnhw_imports(src, mods) == {"a", "b", "c"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_pdfs_code_section_lists_each_module_after_the_ones_it_imports():
    """REPORT.pdf's code runs in the order it is printed (the homework asks for code that runs as given)."""
    from nnhw.handin import CODE

    order = list(dict.fromkeys(path.split("/")[1].removesuffix(".py") for path, _ in CODE if path.startswith("nnhw/") and path.endswith(".py")))
    graph = import_graph()
    assert sorted(order) == sorted(graph)  # every module is listed
    for i, module in enumerate(order):
        later = graph[module] - set(order[:i])
        assert not later, f"{module} imports {sorted(later)}, listed after it"
