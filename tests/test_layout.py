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
