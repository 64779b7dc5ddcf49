"""Elastic Common Schema (ECS) lines: the mapping of events to ECS fields.

Rules of the house:

- Library events: ``message`` is a sentence a person reads;
  ``event.action`` the event name; ``event.kind`` "event";
  ``event.category`` ["network"]; ``event.type`` only values ECS expects
  with ``network`` ("connection" plus "start" into CONNECTED, "end" when a
  connection ends or the state is left for good, "info" for the events that
  are not transitions): an error is told by ``event.outcome``, never by a
  type. ``event.duration`` is in nanoseconds (an integer); ``url``, ``reason``,
  ``error_type``, ``error_message`` and ``status_code`` go to their ECS
  fields; every other library field goes under ``trio_conn.*`` with the one
  JSON type the index template gives it (trio_conn/elasticsearch/).
- ``service.name`` and ``event.dataset`` (``<service>.trio_conn`` for library
  events, ``<service>`` for the application's) are set only when a service
  name is given, as the ecs-logging specification asks.
- The application's own keys (its log calls go through the same chain): a
  key already in ECS form (dotted, or a mapping, under an ECS field set such
  as ``http.request.method`` or ``user={"id": ...}``) and ``trio_conn.*``
  keys pass unchanged (their shape is the caller's responsibility); every
  other key, contextvars context and ``ManagedConnection.bind`` fields
  included, goes to ``labels.<key>`` as a string, with each character a label
  key may not hold (``.``, ``*``, ``\\``) replaced by ``_``.

ECS version (decision): lines are stamped ``ecs.version`` = :data:`ECS_VERSION`
("8.11.0"), not the "1.6.0" that ``ecs_logging`` stamps by default, which
would be false (``event.reason`` exists since ECS 1.7). The field list the
tests check against (``shared/ecs/ecs-fields.json``) is ECS 9.5.0-dev, an
unreleased version, so we claim the last 8.x release: every field we emit
exists there with the same name and type, and 8.x and 9.x stacks read it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, cast

import ecs_logging
import orjson
from structlog.typing import EventDict, WrappedLogger

from ._sink import json_line, safe_event, safe_repr
from ._vocabulary import EVENT_NAMES, HEARTBEAT_MISSED, HOOK_FAILED, STATE_CHANGED, sentence

ECS_VERSION = "8.11.0"

# Top-level names of ECS field sets (from ECS 9.5), minus those handled apart.
_ECS_ROOTS = frozenset(
    {
        "agent", "client", "cloud", "container", "data_stream", "destination", "device", "dll",
        "dns", "email", "entity", "error", "event", "faas", "file", "gen_ai", "group", "host",
        "http", "log", "network", "observer", "orchestrator", "organization", "package",
        "process", "registry", "related", "rule", "server", "service", "source", "span",
        "threat", "tls", "trace", "transaction", "url", "user", "user_agent", "volume",
        "vulnerability", "trio_conn",
    }
)  # fmt: skip
# Library field -> ECS field; the other library fields go under trio_conn.*.
_ECS_FIELD = {
    "url": "url.full",
    "reason": "event.reason",
    "error_type": "error.type",
    "error_message": "error.message",
    "status_code": "http.response.status_code",
}
_ERROR_FIELDS = {"error_type": "error.type", "error_message": "error.message"}
#: The library's own fields under ``trio_conn.*``, each with its one JSON type
#: (the index template in trio_conn/elasticsearch/ maps them so).
LIBRARY_FIELD_TYPES: Mapping[str, type] = {
    "conn_id": str,
    "from_state": str,
    "to_state": str,
    "duration_s": float,
    "consecutive_failures": int,
    "attempt": int,
    "error_kind": str,
    "close_code": int,
    "retry_in_s": float,
    "outcome": str,
    "misses": int,
    "max_misses": int,
    "timeout": float,
    "state": str,
    "seconds": float,
    "limit": float,
    "hook": str,
    "detail": str,
    "probe_in_s": float,
}
_OUTCOMES = frozenset({"success", "failure", "unknown"})
_DEFAULT_OUTCOME = {HEARTBEAT_MISSED: "failure", HOOK_FAILED: "failure"}
# Characters a label key may not hold (ecs-logging specification, "labels").
_LABEL_KEY_FORBIDDEN = re.compile(r"[.*\\]")


def label_key(key: str) -> str:
    """``key`` as a label key: ``.``, ``*`` and ``\\`` become ``_``."""
    return _LABEL_KEY_FORBIDDEN.sub("_", key)


def _event_type(name: str, ev: EventDict) -> list[str]:
    if name != STATE_CHANGED:
        return ["connection", "info"]
    to_state, from_state = str(ev.get("to_state")), str(ev.get("from_state"))
    if to_state == "connected":
        return ["connection", "start"]
    if to_state in ("closed", "disconnected") or from_state == "connected":
        return ["connection", "end"]
    return ["connection"]


def _label_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    try:
        return json.dumps(value, default=safe_repr, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):  # a tuple key, a cycle: its repr
        return safe_repr(value)


def _typed(key: str, value: Any) -> Any:
    """A library field's value in its one JSON type (a float is never written as an int)."""
    wanted = LIBRARY_FIELD_TYPES[key]
    if wanted is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if wanted is str and not isinstance(value, str):
        return str(value)
    return value


class ECSMapper:
    """Turns an event dict into ECS-shaped keys; ``ECSFormatter`` finishes the job.

    :param service_name: ``service.name``, and the stem of ``event.dataset``; None sets neither.
    """

    def __init__(self, service_name: str | None) -> None:
        self.service_name = service_name

    def __call__(self, logger: WrappedLogger, method_name: str, ev: EventDict) -> EventDict:
        try:
            return self._map(ev)
        except Exception:  # a field no rule foresaw: the event goes on, its fields as text
            return self._map(safe_event(ev))

    def _map(self, ev: EventDict) -> EventDict:
        name = str(ev.get("event"))
        out: EventDict = {}
        library = name in EVENT_NAMES
        if library:
            out["event"] = sentence(name, ev)  # becomes "message" in the formatter
            out["event.action"] = name
            out["event.kind"] = "event"
            out["event.category"] = ["network"]
            out["event.type"] = _event_type(name, ev)
            outcome = ev.get("outcome", _DEFAULT_OUTCOME.get(name, "unknown"))
            out["event.outcome"] = outcome if outcome in _OUTCOMES else "unknown"
            duration = ev.get("duration_s")
            if isinstance(duration, int | float) and not isinstance(duration, bool):
                out["event.duration"] = round(duration * 1e9)
            out["log.logger"] = "trio_conn"
        for key, value in ev.items():
            if key == "event":
                if not library:
                    out["event"] = value  # the formatter turns it into "message"
            elif key in _ERROR_FIELDS or (library and key in _ECS_FIELD):
                out[_ECS_FIELD[key]] = value
            elif library and key in LIBRARY_FIELD_TYPES:
                if key != "outcome" or value not in _OUTCOMES:
                    out[f"trio_conn.{key}"] = _typed(key, value)
            else:
                _generic(out, key, value)
        service = self.service_name
        if service is not None:
            if "service.name" not in out and not isinstance(out.get("service"), Mapping):
                out["service.name"] = service
            if "event.dataset" not in out:
                out["event.dataset"] = f"{service}.trio_conn" if library else service
        return out


def _generic(out: EventDict, key: str, value: Any) -> None:
    root = key.partition(".")[0]
    if key == "exception" or (root in _ECS_ROOTS and ("." in key or isinstance(value, Mapping))):
        out.setdefault(key, value)
    elif key == "tags" and isinstance(value, list | tuple):
        out.setdefault("tags", [str(tag) for tag in value])
    elif key == "labels" and isinstance(value, Mapping):
        for label, item in value.items():
            if item is not None:
                out.setdefault(f"labels.{label_key(str(label))}", _label_value(item))
    elif value is not None:
        out.setdefault(f"labels.{label_key(key)}", _label_value(value))


def _message(event_dict: EventDict) -> str:
    message = event_dict.get("event", event_dict.get("message"))
    return str(safe_event({"message": message})["message"])


class ECSFormatter(ecs_logging.StructlogFormatter):
    """``ecs_logging``'s formatter, stamping :data:`ECS_VERSION` instead of 1.6.0.

    It must set the flat key: the base class calls ``setdefault("ecs.version")``
    after expanding dotted keys, so an ``ecs.version`` given earlier would end up
    twice (nested and flat).
    """

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        try:
            result: str = super().__call__(logger, name, cast("dict[str, Any]", event_dict))
        except Exception:  # e.g. "http" as a label and "http.request.method" as a field
            result = orjson.dumps(
                {
                    "@timestamp": event_dict.get("@timestamp"),
                    "log.level": name,
                    "message": _message(event_dict),
                    "ecs.version": ECS_VERSION,
                    "labels": {"logging_error": "the event's fields could not be written"},
                }
            ).decode("utf-8")
        return json_line(result)  # ecs_logging leaves DEL and, unasked, may leave more raw

    def format_to_ecs(self, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict["ecs.version"] = ECS_VERSION
        result: dict[str, Any] = super().format_to_ecs(event_dict)
        return result
