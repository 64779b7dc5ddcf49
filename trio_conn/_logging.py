"""``configure_logging``: structlog set up for applications and the CLI (json, ecs, console).

The library itself never configures logging; this function does, and only when
called. It replaces structlog's whole configuration (processors, level filter,
output), so an application that has its own structlog setup should not call it.

ECS version (decision): lines are stamped ``ecs.version`` = :data:`ECS_VERSION`
("8.11.0"), not the "1.6.0" that ``ecs_logging`` stamps by default.
"1.6.0" would be false: ``event.reason`` only exists since ECS 1.7. The field
list the tests check against (``shared/ecs/ecs-fields.json``) is ECS 9.5.0-dev,
an unreleased development version, so we claim the last 8.x release instead:
every field we emit exists there with the same name and type, and both 8.x and
9.x stacks read it. Bump it when a field needs a newer version.

Unknown keys in ECS mode (decision): the application's own log calls go
through the same chain. A key already in ECS form (dotted, or a mapping, under
an ECS field set such as ``http.request.method`` or ``user={"id": ...}``) and
``trio_conn.*`` keys are passed through unchanged (their shape is the caller's
responsibility). Every other key (``request_id``, a plain ``user="bob"``,
``url="..."``), and contextvars context too, goes to ``labels.<key>`` (dots
replaced by ``_``) with its value as a string, since ECS ``labels`` are keyword
values. So a line never has a plain string where ECS expects an object.
``ecs.*`` keys are the formatter's and also go to labels.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import sys
import traceback
from collections.abc import Mapping
from typing import IO, Any, Literal, cast

import ecs_logging
import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from ._events import (
    EVENT_NAMES,
    HEARTBEAT_MISSED,
    HOOK_FAILED,
    RECOVERY,
    STATE_CHANGED,
    STATE_STUCK,
    error_message,
    error_type_name,
)

ECS_VERSION = "8.11.0"
LogFormat = Literal["json", "ecs", "console"]
FORMATS: tuple[LogFormat, ...] = ("json", "ecs", "console")
LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
#: trio-websocket logs request lines, query string included, at DEBUG.
TRIO_WEBSOCKET_LOGGER = "trio-websocket"

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
_LIBRARY_FIELDS = frozenset(
    {
        "conn_id", "from_state", "to_state", "duration_s", "consecutive_failures", "attempt",
        "error_kind", "close_code", "retry_in_s", "outcome", "misses", "max_misses", "timeout",
        "state", "seconds", "limit", "hook", "detail",
    }
)  # fmt: skip
_TYPE_BY_TARGET = {
    "connected": ["connection", "start"],
    "closed": ["connection", "end"],
    "disconnected": ["connection", "end"],
    "reconnecting": ["connection", "error"],
    "failed": ["connection", "error"],
}
_OUTCOMES = frozenset({"success", "failure", "unknown"})
_DEFAULT_OUTCOME = {HEARTBEAT_MISSED: "failure", HOOK_FAILED: "failure"}


def _seconds(value: Any) -> str:
    """12.5 -> "12.5", 3.0 -> "3", 0.0004 -> "0": millisecond precision for a sentence."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def _sentence(name: str, ev: EventDict) -> str:
    """The ECS ``message`` of a library event: one sentence a person reads."""
    conn = f"connection {ev.get('conn_id', '?')}"
    error = f"{ev['error_type']}: {ev.get('error_message', '')}" if "error_type" in ev else None
    if name == STATE_CHANGED:
        text = (
            f"{conn} moved from {ev.get('from_state')} to {ev.get('to_state')} after "
            f"{_seconds(ev.get('duration_s'))} s: {ev.get('reason')}"
        )
        if "retry_in_s" in ev:
            text += f"; next attempt in {_seconds(ev['retry_in_s'])} s"
        return text
    if name == HEARTBEAT_MISSED:
        return (
            f"{conn} missed heartbeat {ev.get('misses')} of {ev.get('max_misses')} "
            f"(no reply within {_seconds(ev.get('timeout'))} s)"
        )
    if name == STATE_STUCK:
        return (
            f"{conn} has been {ev.get('state')} for {_seconds(ev.get('seconds'))} s "
            f"(limit {_seconds(ev.get('limit'))} s)"
        )
    if name == RECOVERY:
        verb = "succeeded" if ev.get("outcome") == "success" else "failed"
        text = f"{conn} recovery hook {verb} after {_seconds(ev.get('duration_s'))} s"
        for extra in (ev.get("detail"), error):
            if extra:
                text += f": {extra}"
        return text
    return f"{conn}: {ev.get('hook')} hook raised {error}; ignored"


def _label_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, default=repr, ensure_ascii=False)


class _ECSMapper:
    """Turns an event dict into ECS-shaped keys; ``StructlogFormatter`` finishes the job."""

    def __init__(self, service_name: str) -> None:
        self.service_name = service_name

    def __call__(self, logger: WrappedLogger, method_name: str, ev: EventDict) -> EventDict:
        name = str(ev.get("event"))
        out: EventDict = {}
        library = name in EVENT_NAMES
        if library:
            out["event"] = _sentence(name, ev)  # becomes "message" in the formatter
            out["event.action"] = name
            out["event.kind"] = "event"
            out["event.category"] = ["network"]
            if name == STATE_CHANGED:
                kinds = _TYPE_BY_TARGET.get(str(ev.get("to_state")), ["connection"])
            elif name == HOOK_FAILED or (name == RECOVERY and ev.get("outcome") != "success"):
                kinds = ["connection", "error"]
            else:
                kinds = ["connection", "info"]
            out["event.type"] = list(kinds)
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
            elif library and key in _LIBRARY_FIELDS:
                if key != "outcome" or value not in _OUTCOMES:
                    out[f"trio_conn.{key}"] = value
            else:
                self._generic(out, key, value)
        if "service.name" not in out and not isinstance(out.get("service"), Mapping):
            out["service.name"] = self.service_name
        return out

    @staticmethod
    def _generic(out: EventDict, key: str, value: Any) -> None:
        root = key.partition(".")[0]
        if key == "exception" or (
            root in _ECS_ROOTS and ("." in key or isinstance(value, Mapping))
        ):
            out.setdefault(key, value)
        elif key == "tags" and isinstance(value, list | tuple):
            out.setdefault("tags", [str(tag) for tag in value])
        elif key == "labels" and isinstance(value, Mapping):
            for label, item in value.items():
                if item is not None:
                    out.setdefault(f"labels.{str(label).replace('.', '_')}", _label_value(item))
        elif value is not None:
            out.setdefault(f"labels.{key.replace('.', '_')}", _label_value(value))


class _ECSFormatter(ecs_logging.StructlogFormatter):
    """``ecs_logging``'s formatter, stamping :data:`ECS_VERSION` instead of 1.6.0.

    It must set the flat key: the base class calls ``setdefault("ecs.version")``
    after expanding dotted keys, so an ``ecs.version`` given earlier would end up
    twice (nested and flat).
    """

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        result: str = super().__call__(logger, name, cast("dict[str, Any]", event_dict))
        return result

    def format_to_ecs(self, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict["ecs.version"] = ECS_VERSION
        result: dict[str, Any] = super().format_to_ecs(event_dict)
        return result


_METHOD_LEVEL = {"warn": "warning", "exception": "error"}
_UTC = datetime.UTC
_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


class _ExceptionFields:
    """Render an application's ``exc_info`` as ``error_type`` and ``error_message``.

    The traceback (as ``exception``, plain text, never frame locals) is added
    only when the configured level is debug: at other levels a log line says
    what went wrong, not where.
    """

    def __init__(self, *, with_traceback: bool) -> None:
        self.with_traceback = with_traceback

    def __call__(self, logger: WrappedLogger, method_name: str, ev: EventDict) -> EventDict:
        exc_info = ev.pop("exc_info", None)
        if not exc_info:
            return ev
        if isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        elif not isinstance(exc_info, tuple):
            exc_info = sys.exc_info()
        error = exc_info[1]
        if error is None:
            return ev
        ev.setdefault("error_type", error_type_name(type(error)))
        ev.setdefault("error_message", error_message(error))
        if self.with_traceback:
            ev["exception"] = "".join(traceback.format_exception(*exc_info))
        return ev


def _json_head(logger: WrappedLogger, method_name: str, ev: EventDict) -> EventDict:
    """Put ``timestamp``, ``level`` and ``event`` first.

    The timestamp stays a ``datetime``: orjson writes it as ISO 8601 with ``Z``
    several times faster than ``isoformat()`` (this chain has a 10 us budget).
    """
    now = datetime.datetime.now(_UTC)
    level = _METHOD_LEVEL.get(method_name, method_name)
    head = {"timestamp": now, "level": level, "event": ev.get("event"), **ev}
    head["timestamp"] = now
    head["level"] = level
    return head


def _orjson_default(value: Any) -> Any:
    structlog_repr = getattr(value, "__structlog__", None)
    return structlog_repr() if callable(structlog_repr) else repr(value)


def _render_json(logger: WrappedLogger, method_name: str, ev: EventDict) -> bytes:
    return orjson.dumps(ev, default=_orjson_default, option=_JSON_OPTIONS)


class _TextToBytes:
    """A binary file facade over a text stream without ``.buffer`` (``io.StringIO``)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, data: bytes) -> int:
        return self._stream.write(data.decode("utf-8"))

    def flush(self) -> None:
        self._stream.flush()


class _BytesToText:
    """A text file facade over a binary stream (``io.BytesIO``, a file opened ``"wb"``)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(text.encode("utf-8"))

    def flush(self) -> None:
        self._stream.flush()


def _is_text(stream: Any) -> bool:
    if isinstance(stream, io.TextIOBase):
        return True
    if isinstance(stream, io.RawIOBase | io.BufferedIOBase):
        return False
    return "b" not in getattr(stream, "mode", "")


def _binary_sink(stream: Any) -> Any:
    if not _is_text(stream):
        return stream
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        return _TextToBytes(stream)
    stream.flush()  # what was written as text must come before our bytes
    return buffer


def _text_sink(stream: Any) -> Any:
    return stream if _is_text(stream) else _BytesToText(stream)


def _check_level(level: str | int) -> int:
    if isinstance(level, str) and level.lower() in LEVELS:
        return LEVELS[level.lower()]
    if isinstance(level, int) and not isinstance(level, bool) and level in LEVELS.values():
        return level
    allowed = ", ".join(repr(name) for name in LEVELS)
    numbers = ", ".join(str(number) for number in LEVELS.values())
    raise ValueError(f"level must be one of {allowed} (or {numbers}), got {level!r}")


def configure_logging(
    format: LogFormat = "json",
    level: str | int = "info",
    stream: IO[str] | IO[bytes] | None = None,
    service_name: str = "trio-conn",
) -> None:
    """Configure structlog (globally) to write one event per line to ``stream``.

    - ``"json"``: one JSON object per line (orjson, UTF-8), starting with
      ``timestamp`` (ISO 8601 UTC with ``Z``), ``level`` and ``event``, then
      every field, contextvars context included.
    - ``"ecs"``: Elastic Common Schema through ``ecs_logging.StructlogFormatter``
      (see the module docstring for the version and the unknown keys);
      ``service.name`` is ``service_name``.
    - ``"console"``: structlog's ConsoleRenderer; colours only on a TTY.

    Events below ``level`` are dropped by structlog's filtering logger before
    any processing. An application's ``exc_info`` is rendered as
    ``error_type`` and ``error_message``, plus a plain traceback (never frame
    locals) when ``level`` is debug. The stdlib logger ``trio-websocket``
    is raised to at least INFO, because at DEBUG it logs request lines with
    their query strings (tokens); lower it again after this call if you need it.

    structlog is told to cache loggers on first use (it saves a third of the
    cost of an event), so call this once, at startup: a logger already used
    keeps the configuration it was first used with.

    :param stream: where lines go; default ``sys.stdout`` (at call time). Text
        streams with a ``buffer`` get JSON as UTF-8 bytes through it (text
        already written is flushed first; ``print()`` output written later may
        be reordered with JSON lines); ``io.StringIO`` and binary streams
        (``io.BytesIO``) work too.
    :raises ValueError: ``format``, ``level`` or ``service_name`` is invalid.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(map(repr, FORMATS))}, got {format!r}")
    min_level = _check_level(level)
    if not isinstance(service_name, str) or not service_name:
        raise ValueError(f"service_name must be a non-empty string, got {service_name!r}")
    target: Any = sys.stdout if stream is None else stream
    logger_factory: Any
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _ExceptionFields(with_traceback=min_level <= logging.DEBUG),
    ]
    if format == "json":
        processors += [
            _json_head,
            _render_json,
        ]
        logger_factory = structlog.BytesLoggerFactory(_binary_sink(target))
    elif format == "ecs":
        processors += [
            _ECSMapper(service_name),
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="@timestamp"),
            _ECSFormatter(),  # must be last: it returns the line
        ]
        logger_factory = structlog.WriteLoggerFactory(_text_sink(target))
    else:
        isatty = getattr(target, "isatty", None)
        processors += [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(
                colors=bool(callable(isatty) and isatty()),
                exception_formatter=structlog.dev.plain_traceback,
            ),
        ]
        logger_factory = structlog.WriteLoggerFactory(_text_sink(target))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        context_class=dict,
        logger_factory=logger_factory,
        # Cached: resolving the lazy proxy costs ~3 us of the 10 us budget per event.
        # A logger keeps the configuration it was first used with, so configure once.
        cache_logger_on_first_use=True,
    )
    websocket_logger = logging.getLogger(TRIO_WEBSOCKET_LOGGER)
    if websocket_logger.level < logging.INFO:
        websocket_logger.setLevel(logging.INFO)
