"""The sans-IO core imports no Trio and no trio-websocket (checked on the source)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trio_conn

PACKAGE = Path(trio_conn.__file__).parent
FORBIDDEN = ("trio", "trio_websocket", "wsproto", "structlog")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve within the package
                names.add(f"trio_conn.{node.module}" if node.module else "trio_conn")
            elif node.module:
                names.add(node.module)
    return names


def sans_io_closure(module: str) -> set[str]:
    """The module and every trio_conn module it imports, transitively."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = PACKAGE / (name.removeprefix("trio_conn.") + ".py")
        todo.extend(m for m in imported_modules(path) if m.startswith("trio_conn."))
    return seen


@pytest.mark.parametrize(
    "module",
    ["trio_conn._state", "trio_conn._policy", "trio_conn._lifecycle", "trio_conn._records"],
)
def test_core_imports_no_io_library(module: str) -> None:
    for name in sans_io_closure(module):
        path = PACKAGE / (name.removeprefix("trio_conn.") + ".py")
        for imported in imported_modules(path):
            top = imported.split(".")[0]
            assert top not in FORBIDDEN, f"{path.name} imports {imported}"


def test_checker_sees_a_trio_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import trio.lowlevel\nfrom trio_websocket import x\nfrom . import _state\n")
    assert imported_modules(sample) == {"trio.lowlevel", "trio_websocket", "trio_conn"}
