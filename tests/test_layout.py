"""The driver's modules call one way, from the API down to the kernels, as README's Layout says."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# fit's way down: each module may use those after it, never one before it (nor itself).
CHAIN = ["network", "training", "schedule", "graphs", "engines", "prefetch", "workspace", "backends"]


def imported_modules(path: Path) -> set[str]:
    """gpubp modules that ``path`` imports anywhere (type-checking-only imports aside)."""
    found = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return  # annotations only: no call goes there
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("gpubp"):
                found.add("gpubp")
        if isinstance(node, ast.Import):
            found.update("gpubp" for alias in node.names if alias.name.split(".")[0] == "gpubp")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


@pytest.mark.parametrize("module", CHAIN)
def test_each_module_of_the_training_path_imports_only_those_below_it(module):
    above = set(CHAIN[: CHAIN.index(module) + 1])
    assert not imported_modules(ROOT / "gpubp" / f"{module}.py") & above


def test_the_kernels_import_nothing_of_the_driver():
    for path in (ROOT / "kernels").rglob("*.py"):
        assert "gpubp" not in imported_modules(path), path


def test_the_check_sees_an_upward_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .network import Network\n"
                      "def f():\n    from .schedule import Schedule\n")  # fmt: skip
    assert imported_modules(source) == {"schedule"}


def test_training_and_the_network_do_not_import_each_other():
    """training takes the network's state through callables: it imports nothing of network, not even
    for annotations (and so, with network importing training, there is no cycle)."""
    source = (ROOT / "gpubp" / "training.py").read_text()
    names = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) and n.level == 1}
    assert "network" not in names and "cli" not in names


def private_names_of_others(path: Path) -> list[str]:
    """``obj._name`` uses in ``path`` of a private name the file does not define itself (as a
    function, a class attribute or ``self._name``): another module's private names."""
    tree = ast.parse(path.read_text())
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            own.add(node.attr)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            own.update(t.id for t in targets if isinstance(t, ast.Name))
    used = []
    public = {"_replace", "_asdict", "_fields", "_make"}  # a named tuple's API, underscored to avoid field names
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if node.attr not in own | public:
                used.append(f"{path.name}:{node.lineno}: .{node.attr}")
    return used


@pytest.mark.parametrize("path", sorted((ROOT / "gpubp").glob("*.py")), ids=lambda p: p.name)
def test_no_module_uses_another_modules_private_names(path):
    assert private_names_of_others(path) == []


def test_the_private_name_check_sees_one(tmp_path):
    source = tmp_path / "m.py"
    code = ["class A:", "    def _mine(self):", "        self._x = 1", "", "def f(a, net):", "    a._mine()"]
    source.write_text("\n".join([*code, "    a._x", "    return net._schedule", ""]))
    assert private_names_of_others(source) == ["m.py:8: ._schedule"]


def long_functions(paths: list[Path], limit: int = 80) -> list[str]:
    """Functions (docstrings and signatures included) longer than ``limit`` lines."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= limit:
                found.append(f"{path.name}: {node.name} is {node.end_lineno - node.lineno + 1} lines")
    return found


def test_no_driver_function_is_longer_than_80_lines():
    assert long_functions(sorted((ROOT / "gpubp").glob("*.py"))) == []


def test_no_kernel_call_passes_more_than_12_arguments():
    """The network's arrays and the work buffers travel as two structs, not twenty arguments."""
    crowded = []
    for path in [*(ROOT / "gpubp").glob("*.py"), *(ROOT / "kernels").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and len(node.args) + len(node.keywords) > 12:
                crowded.append(f"{path.name}:{node.lineno}")
    assert crowded == []


def test_no_formatting_is_switched_off():
    """Code that ruff format cannot lay out well is code to restructure, not to skip."""
    paths = [*(ROOT / "gpubp").glob("*.py"), *(ROOT / "kernels").rglob("*.py")]
    marks = ("fmt: " + "skip", "fmt: " + "off")  # spelled apart, so this file is not one of them
    assert [p.name for p in paths if any(mark in p.read_text() for mark in marks)] == []


def test_the_driver_imports_the_kernels_as_its_subpackage():
    """Installed, the kernels are ``gpubp.kernels``: a top-level ``kernels`` import works only from
    the repository's root (and would compile a second copy of every kernel there)."""
    for path in (ROOT / "gpubp").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "kernels" for n in names), f"{path.name}:{node.lineno}"
