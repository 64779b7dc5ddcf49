"""docs/design.md's checked tables say what the code says, so the document cannot drift.

Each test reads one section of the document, parses its markdown table and
compares it with the code: the transition table and its Mermaid diagram with
``TRANSITIONS``, the defaults with ``ConnectionConfig()`` and ``RetryPolicy()``,
the backoff rows and the close-code table with ``RetryPolicy()``'s, and the
heartbeat bound with the default numbers.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

from trio_conn import (
    TRANSITIONS,
    ConnectionConfig,
    ConnectionState,
    ErrorKind,
    RetryPolicy,
)

DESIGN = Path(__file__).parent.parent / "docs" / "design.md"


def section(heading: str) -> str:
    """The text of the section whose heading line is ``heading``, up to the next one
    of the same or a higher level."""
    text = DESIGN.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n") + 1
    level = heading.split(" ", 1)[0]
    ends = [
        match.start() + 1
        for match in re.finditer(r"\n(#+) ", text[start + len(heading) :])
        if len(match.group(1)) <= len(level)
    ]
    end = start + len(heading) + ends[0] if ends else len(text)
    return text[start:end]


def tables(text: str) -> list[list[list[str]]]:
    """Every markdown table in ``text``: rows of stripped cells, the separator row left out."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def code(cell: str) -> str:
    """The text of a cell written as one code span."""
    match = re.fullmatch(r"`([^`]*)`", cell)
    assert match is not None, f"expected a `code` cell, got {cell!r}"
    return match.group(1)


def value(expression: str) -> object:
    """A default as the document writes it: a literal, ``frozenset(...)`` or ``RetryPolicy()``."""
    if expression == "RetryPolicy()":
        return RetryPolicy()
    match = re.fullmatch(r"frozenset\((.*)\)", expression)
    if match is not None:
        return frozenset(ast.literal_eval(match.group(1)))
    return ast.literal_eval(expression)


def plain(actual: object) -> object:
    """A default in the document's terms: mappings as dicts of str keys, enums as str."""
    if isinstance(actual, Mapping):
        return {str(key): item for key, item in actual.items()}
    if isinstance(actual, frozenset):
        return frozenset(str(item) for item in actual)
    return actual


def test_the_transition_table_is_transitions() -> None:
    [table] = tables(section("## States and transitions"))
    header, *rows = table
    targets = header[1:]
    found = {
        row[0]: {target for target, cell in zip(targets, row[1:], strict=True) if cell == "✓"}
        for row in rows
    }
    assert found == {str(s): {str(t) for t in TRANSITIONS[s]} for s in ConnectionState}
    assert set(targets) == {str(s) for s in ConnectionState}


def test_the_state_diagram_is_transitions() -> None:
    lines = ["stateDiagram-v2", "    [*] --> disconnected"]
    for source in ConnectionState:
        for target in ConnectionState:
            if target in TRANSITIONS[source]:
                lines.append(f"    {source} --> {target}")
    lines.append("    closed --> [*]")
    match = re.search(r"```mermaid\n(.*?)```", section("## States and transitions"), re.DOTALL)
    assert match is not None
    assert match.group(1).rstrip("\n") == "\n".join(lines)


def test_the_defaults_table_is_connection_config() -> None:
    defaults, policy = tables(section("## Configuration defaults"))
    config = ConnectionConfig()
    rows = {code(row[0]): code(row[1]) for row in defaults[1:]}
    assert list(rows) == [field.name for field in dataclasses.fields(ConnectionConfig)]
    for name, expression in rows.items():
        documented, actual = value(expression), plain(getattr(config, name))
        assert documented == actual, f"{name}: the document says {expression}, the code {actual!r}"
        assert type(documented) is type(actual), f"{name}: {expression} is not a {type(actual)}"
    retry = RetryPolicy()
    for row in policy[1:]:
        name, expression = code(row[0]), code(row[1])
        assert value(expression) == plain(getattr(retry, name)), name


def test_the_backoff_rows_are_the_policy_rows() -> None:
    [rows] = tables(section("### The delay"))
    documented = {row[0]: (float(row[1]), float(row[2])) for row in rows[1:]}
    actual = {str(kind): (row.step, row.cap) for kind, row in RetryPolicy().backoff.items()}
    assert documented == actual


def test_the_close_code_table_is_the_policy_table() -> None:
    text = section("### Kinds and classification")
    codes = next(table for table in tables(text) if table[0][0] == "close code")
    documented = {int(row[0]): ErrorKind(row[1]) for row in codes[1:]}
    assert documented == dict(RetryPolicy().close_codes)


def test_the_heartbeat_bound_is_the_defaults() -> None:
    text = section("## Heartbeat")
    config = ConnectionConfig()
    bound = config.heartbeat_interval + config.max_heartbeat_failures * max(
        config.heartbeat_timeout, config.heartbeat_interval
    )
    match = re.search(r"\*\*(\d+) s\*\*", text)
    assert match is not None
    assert float(match.group(1)) == bound
