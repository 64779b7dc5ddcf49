"""A small ECS validator for log lines, backed by ``tests/data/ecs-fields.json``.

The JSON file (ECS field names and Elasticsearch types, extracted from the
official ``elastic/ecs`` repository, Apache License 2.0) is the project's
``shared/ecs/ecs-fields.json``, copied into the repository so that the tests do
not depend on where the checkout sits; a test checks the copy against the
shared file when that is present.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parent / "data" / "ecs-fields.json"
SHARED_SCHEMA_PATH = Path(__file__).resolve().parents[2] / "shared" / "ecs" / "ecs-fields.json"

#: Namespaces that are not ECS fields but allowed: ours, and ECS's free-form labels.
CUSTOM_PREFIX = "trio_conn."
LABELS_PREFIX = "labels."
#: What the ecs-logging spec requires on every line.
REQUIRED = ("@timestamp", "log.level", "message", "ecs.version")

_STRING_TYPES = frozenset({"keyword", "constant_keyword", "wildcard", "match_only_text", "text"})
_INTEGER_TYPES = frozenset({"long", "integer", "short", "byte", "unsigned_long"})
_NUMBER_TYPES = frozenset({"float", "double", "scaled_float", "half_float"})
# Types whose value is a whole subtree: flattening stops there.
_OPAQUE_TYPES = frozenset({"flattened", "nested", "geo_point"})
# The event.type values ECS expects with an event.category (ECS reference,
# "ECS categorization field: event.category", expected event types). Only the
# categories this project writes are listed.
EXPECTED_TYPES: Mapping[str, frozenset[str]] = {
    "network": frozenset(
        {"access", "allowed", "connection", "denied", "end", "info", "protocol", "start"}
    ),
}
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


@dataclass(frozen=True)
class EcsSchema:
    """ECS field types (flat dotted name -> Elasticsearch type) and allowed values."""

    version: str
    fields: Mapping[str, str]
    allowed_values: Mapping[str, frozenset[str]]
    #: Every proper prefix of a field name (``url``, ``http.response``): objects.
    objects: frozenset[str]


@functools.cache
def load_schema(path: Path = SCHEMA_PATH) -> EcsSchema:
    """Load and cache the schema.

    :raises FileNotFoundError: the file is missing, with where it was looked for.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"ECS field list not found at {path}; it is expected in shared/ecs/ next to the "
            "repository clone (the shared/ directory of the project)"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    allowed = {name: frozenset(values) for name, values in data["allowed_values"].items()}
    fields: dict[str, str] = dict(data["fields"])
    objects = frozenset(
        name.rsplit(".", depth)[0] for name in fields for depth in range(1, name.count(".") + 1)
    )
    return EcsSchema(str(data.get("ecs_version", "?")), fields, allowed, objects)


def _leaves(
    obj: Mapping[str, Any], fields: Mapping[str, str], prefix: str = ""
) -> Iterator[tuple[str, Any]]:
    for key, value in obj.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and fields.get(path) not in _OPAQUE_TYPES:
            yield from _leaves(value, fields, f"{path}.")
        else:
            yield path, value


def _type_problem(path: str, es_type: str, value: Any) -> str | None:
    values = value if isinstance(value, list) else [value]
    if es_type in _STRING_TYPES:
        ok = all(isinstance(item, str) for item in values)
    elif es_type in _INTEGER_TYPES:
        ok = all(isinstance(item, int) and not isinstance(item, bool) for item in values)
    elif es_type in _NUMBER_TYPES:
        ok = all(isinstance(item, int | float) and not isinstance(item, bool) for item in values)
    elif es_type == "boolean":
        ok = all(isinstance(item, bool) for item in values)
    elif es_type == "date":
        ok = all(isinstance(item, str) and _is_rfc3339(item) for item in values)
    elif es_type == "ip":
        ok = all(isinstance(item, str) and _is_ip(item) for item in values)
    elif es_type == "object":
        ok = False  # a scalar where ECS expects an object (e.g. a plain string "url")
    else:
        ok = True  # flattened, nested, geo_point: not checked further
    if ok:
        return None
    return f"{path}: {value!r} does not fit ECS type {es_type}"


def _is_rfc3339(text: str) -> bool:
    if not _RFC3339.fullmatch(text):
        return False
    try:
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_ecs_line(obj: Mapping[str, Any], schema: EcsSchema | None = None) -> list[str]:
    """Problems of one parsed ECS log line; an empty list means it is valid.

    Checks: the required keys; every leaf (flat dotted keys and nested objects
    alike) is an ECS field, or under ``trio_conn.`` or ``labels.`` (one level,
    string values); the JSON type fits the field's Elasticsearch type; values
    of categorical fields are allowed ones; the same path is not given twice;
    ``@timestamp`` is RFC 3339 in UTC with ``Z``.
    """
    schema = schema or load_schema()
    problems: list[str] = []
    seen: dict[str, Any] = {}
    for path, value in _leaves(obj, schema.fields):
        if path in seen:
            problems.append(f"{path}: given twice (flat and nested)")
        seen[path] = value
        if path.startswith(CUSTOM_PREFIX):
            continue
        if path.startswith(LABELS_PREFIX):
            if "." in path[len(LABELS_PREFIX) :] or not isinstance(value, str):
                problems.append(f"{path}: labels are one level of string values, got {value!r}")
            continue
        es_type = schema.fields.get(path)
        if es_type is None and path in schema.objects:
            problems.append(f"{path}: {value!r} where ECS has an object (field set)")
            continue
        if es_type is None:
            problems.append(f"{path}: not an ECS field (nor trio_conn.* or labels.*)")
            continue
        problem = _type_problem(path, es_type, value)
        if problem:
            problems.append(problem)
        allowed = schema.allowed_values.get(path)
        if allowed is not None:
            for item in value if isinstance(value, list) else [value]:
                if item not in allowed:
                    problems.append(f"{path}: {item!r} is not one of {sorted(allowed)}")
    problems += _categorization_problems(seen)
    problems += [f"{key}: missing" for key in REQUIRED if key not in seen]
    timestamp = seen.get("@timestamp")
    if isinstance(timestamp, str) and not timestamp.endswith("Z"):
        problems.append(f"@timestamp: {timestamp!r} is not UTC with Z")
    return problems


def _categorization_problems(seen: Mapping[str, Any]) -> list[str]:
    categories, types = seen.get("event.category", []), seen.get("event.type", [])
    categories = categories if isinstance(categories, list) else [categories]
    types = types if isinstance(types, list) else [types]
    problems = []
    for category in categories:
        expected = EXPECTED_TYPES.get(category)
        if expected is None:
            continue
        problems += [
            f"event.type: {kind!r} is not expected with category {category!r} "
            f"(expected: {', '.join(sorted(expected))})"
            for kind in types
            if kind not in expected
        ]
    return problems
