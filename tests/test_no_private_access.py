"""No module of trio_conn touches a private attribute of a dependency (checked on the source).

A private name (``_name``, not a dunder) may only be reached through ``self``
or ``cls``, or through one of trio_conn's own objects listed in OWN; no module
imports a private name or module of a dependency, or subclasses a
dependency's class to override a private method; and only the test kit (the
fault server) imports trio-websocket.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import trio_conn

PACKAGE = Path(trio_conn.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))
#: Private attributes of trio_conn's own objects reached from another of its objects.
OWN = {("_connection.py", "conn._supervisor"), ("_connection.py", "conn._close")}
#: The modules that may import trio-websocket: the fault server and its stream.
TRIO_WEBSOCKET_USERS = {"testing.py", "_faultstream.py"}


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and private(node.attr):
            base = ast.unparse(node.value)
            if base not in ("self", "cls") and (path.name, f"{base}.{node.attr}") not in OWN:
                found.append(f"{where}: {base}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if node.module != "__future__" and any(private(part) for part in parts):
                found.append(f"{where}: from {node.module} import ...")
            found += [f"{where}: imports {a.name}" for a in node.names if private(a.name)]
            if parts[0] == "trio_websocket" and path.name not in TRIO_WEBSOCKET_USERS:
                found.append(f"{where}: imports trio_websocket outside the test kit")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if any(private(part) for part in parts):
                    found.append(f"{where}: import {alias.name}")
                if parts[0] == "trio_websocket" and path.name not in TRIO_WEBSOCKET_USERS:
                    found.append(f"{where}: imports trio_websocket outside the test kit")
    return found


def overrides(module_name: str) -> list[str]:
    """Private methods a class of ``module_name`` redefines from a dependency's class."""
    module = importlib.import_module(module_name)
    found = []
    for cls in vars(module).values():
        if not (isinstance(cls, type) and cls.__module__ == module_name):
            continue
        for base in cls.__mro__[1:]:
            if base.__module__.startswith("trio_conn") or base is object:
                continue
            found += [
                f"{cls.__name__} overrides {base.__module__}.{base.__qualname__}.{name}"
                for name, value in vars(cls).items()
                if private(name)
                and inspect.isfunction(value)
                and value.__module__ == module_name  # written here, not set by a metaclass
                and name in vars(base)
            ]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_no_private_attribute_of_a_dependency(path: Path) -> None:
    assert violations(path) == []
    if path.stem not in ("__main__", "_plot"):  # _plot needs matplotlib, __main__ runs the CLI
        assert overrides(f"trio_conn.{path.stem}".replace(".__init__", "")) == []


def test_the_checker_sees_each_kind_of_violation(tmp_path: Path) -> None:
    sample = tmp_path / "_sample.py"
    sample.write_text(
        "import trio._core\n"
        "from trio_websocket._impl import x\n"
        "from wsproto import _private\n"
        "import trio_websocket\n"
        "ws._reader_task\n"
        "self._fine\n"
    )
    assert sorted(line.split(": ", 1)[1] for line in violations(sample)) == sorted(
        [
            "import trio._core",
            "from trio_websocket._impl import ...",
            "imports trio_websocket outside the test kit",
            "imports _private",
            "imports trio_websocket outside the test kit",
            "ws._reader_task",
        ]
    )


def test_the_checker_sees_an_override_of_a_dependencys_private_method(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "trio_conn_sample_override.py").write_text(
        "import trio_websocket\n"
        "class FaultWebSocket(trio_websocket.WebSocketConnection):\n"
        "    async def _handle_ping_event(self, event): ...\n"
        "    def _ours(self): ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert overrides("trio_conn_sample_override") == [
        "FaultWebSocket overrides trio_websocket._impl.WebSocketConnection._handle_ping_event"
    ]
