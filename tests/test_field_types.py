"""One type per field: what Elasticsearch maps is what every line writes.

Elasticsearch maps a field by the first value it sees; a timeout written as
``30`` in one line and ``30.5`` in the next would be mapped ``long`` and then
refused. A chaos run (every kind of fault, thousands of lines) is rendered in
``ecs`` and ``json``; every field of every line must keep one JSON type, every
ECS line must pass the ECS check, and every ``trio_conn.*`` field must be
mapped, with the type it is written with, by the shipped component template.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping
from importlib.resources import files
from typing import Any

import pytest
import structlog
import trio.testing

from tests.chaos import KINDS, run_chaos
from tests.ecs_schema import check_ecs_line
from trio_conn import configure_logging
from trio_conn._ecs import ECS_VERSION, LIBRARY_FIELD_TYPES

TEMPLATE = files("trio_conn").joinpath("elasticsearch/trio_conn-component-template.json")
# Elasticsearch field type -> the JSON type a value of it must have in a line.
JSON_TYPE_OF = {"keyword": "string", "long": "integer", "double": "float"}
SEED = 20261129


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "null" if value is None else "object"


def leaves(obj: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in obj.items():
        if isinstance(value, Mapping):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def template_types() -> dict[str, str]:
    template = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    mapped = template["template"]["mappings"]["properties"]["trio_conn"]["properties"]
    return {f"trio_conn.{name}": field["type"] for name, field in mapped.items()}


def types_by_field(lines: list[dict[str, Any]]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = defaultdict(set)
    for line in lines:
        for path, value in leaves(line):
            seen[path].add(json_type(value))
    return seen


async def chaos_lines(fmt: str) -> list[dict[str, Any]]:
    structlog.reset_defaults()
    stream = io.StringIO()
    configure_logging(fmt, stream=stream, service_name="chaos")  # type: ignore[arg-type]
    report = await run_chaos(SEED, connections=6, faults=4 * len(KINDS))
    assert report.problems == []
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) > 50
    return lines


def test_the_template_maps_every_library_field_with_its_type() -> None:
    template = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    assert template["_meta"]["ecs_version"] == ECS_VERSION
    expected = {str: "keyword", int: "long", float: "double"}
    assert template_types() == {
        f"trio_conn.{name}": expected[kind] for name, kind in LIBRARY_FIELD_TYPES.items()
    }


@pytest.mark.timeout(120)
async def test_every_ecs_field_of_a_chaos_run_is_mapped_with_one_type(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lines = await chaos_lines("ecs")
    problems = [problem for line in lines for problem in check_ecs_line(line)]
    assert problems == []
    mapped = template_types()
    seen = types_by_field(lines)
    assert {path: kinds for path, kinds in seen.items() if len(kinds) > 1} == {}
    library = {path: kinds.pop() for path, kinds in seen.items() if path.startswith("trio_conn.")}
    core = {"conn_id", "from_state", "to_state", "duration_s", "consecutive_failures", "attempt"}
    assert {f"trio_conn.{name}" for name in core | {"error_kind"}} <= set(library)
    for path, kind in library.items():
        assert path in mapped, f"{path} is written but not in the template"
        assert JSON_TYPE_OF[mapped[path]] == kind, path
    datasets = {line["event"].get("dataset") for line in lines}
    assert datasets == {"chaos.trio_conn"}


@pytest.mark.timeout(120)
async def test_every_json_field_of_a_chaos_run_has_one_type(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lines = await chaos_lines("json")
    seen = types_by_field(lines)
    assert {path: kinds for path, kinds in seen.items() if len(kinds) > 1} == {}
    es_type = {str: "keyword", int: "long", float: "double"}
    for name, kind in LIBRARY_FIELD_TYPES.items():
        if name in seen:
            assert seen[name] == {JSON_TYPE_OF[es_type[kind]]}
