"""``configure_logging``: structlog set up for applications and the CLI (json, ecs, console).

The library itself never configures logging (trio_conn/_events.py says where
its events go); this function does, and only when called. It replaces
structlog's whole configuration, so when structlog is already configured it
warns and changes nothing unless ``force=True``.

Rules of the house for the pipelines built here:

- The sink's step, after every processor that adds or changes a field,
  scrubs every registered secret from every key and value of the event;
  only the library's own words (level, timestamp) and the renderer come
  after it; JSON lines escape every non-printable character
  (trio_conn/_sink.py).
- The stream given is the one written to (never its ``buffer``), so it lives
  as long as the configuration, whoever else drops it.
- ECS mapping: trio_conn/_ecs.py.
"""

from __future__ import annotations

import datetime
import io
import logging
import sys
import traceback
import warnings
from collections.abc import Mapping
from typing import IO, Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from ._ecs import ECSFormatter, ECSMapper
from ._redact import error_message, error_type
from ._sink import drop_mark, render_json, safe_event, scrub_event
from ._vocabulary import EVENT_NAMES, LIBRARY_FIELDS, sentence

LogFormat = Literal["json", "ecs", "console"]
FORMATS: tuple[LogFormat, ...] = ("json", "ecs", "console")
LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
#: trio-websocket (the test kit's server) logs request lines, query string
#: included, at DEBUG.
TRIO_WEBSOCKET_LOGGER = "trio-websocket"

_METHOD_LEVEL = {"warn": "warning", "exception": "error"}
_UTC = datetime.UTC


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
        ev.setdefault("error_type", error_type(error))
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


def _console_event(logger: WrappedLogger, method_name: str, ev: EventDict) -> EventDict:
    """A library event as its sentence, plus what the sentence does not say.

    What it does not say: the error message of a transition, and every field
    that is not the library's (the application's, contextvars, ``bind``).
    The sentence names the connection, the states, the reason (error kind,
    exception type, close code or HTTP status) and the durations.
    """
    name = ev.get("event")
    if name not in EVENT_NAMES:
        return ev
    text = sentence(str(name), ev)
    out: EventDict = {"event": text}
    for key, value in ev.items():
        if key not in LIBRARY_FIELDS and key != "event":
            out[key] = value
    error = ev.get("error_message")
    if error and str(error) not in text:
        out["error_message"] = error
    return out


class _ConsoleRenderer(structlog.dev.ConsoleRenderer):
    """structlog's renderer; an event it cannot write is written as text fields."""

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        try:
            return str(super().__call__(logger, name, dict(event_dict)))
        except Exception:  # a repr that raises, say: every field as safe text
            return str(super().__call__(logger, name, safe_event(event_dict)))


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


def _check_level(level: str | int) -> int:
    if isinstance(level, str) and level.lower() in LEVELS:
        return LEVELS[level.lower()]
    if isinstance(level, int) and not isinstance(level, bool) and level in LEVELS.values():
        return level
    allowed = ", ".join(repr(name) for name in LEVELS)
    numbers = ", ".join(str(number) for number in LEVELS.values())
    raise ValueError(f"level must be one of {allowed} (or {numbers}), got {level!r:.60}")


def configure_logging(
    format: LogFormat = "json",
    level: str | int = "info",
    stream: IO[str] | IO[bytes] | None = None,
    service_name: str | None = None,
    *,
    force: bool = False,
) -> None:
    """Configure structlog (globally) to write one event per line to ``stream``.

    - ``"json"``: one JSON object per line (orjson), starting with
      ``timestamp`` (ISO 8601 UTC with ``Z``), ``level`` and ``event``, then
      every field, contextvars context included.
    - ``"ecs"``: Elastic Common Schema through ``ecs_logging.StructlogFormatter``
      (field rules in trio_conn/_ecs.py).
    - ``"console"``: for a person at a terminal: structlog's
      ConsoleRenderer, the UTC time of day, and each library event as one
      sentence (plus its error message and any field that is not the
      library's); colours only on a TTY.

    Every line is scrubbed of every registered secret as its last step (see
    the module docstring). Events below ``level`` are dropped by structlog's
    filtering logger before any processing. An application's ``exc_info`` is
    rendered as ``error_type`` and ``error_message``, plus a plain traceback
    (never frame locals) when ``level`` is debug. The stdlib logger
    ``trio-websocket`` is raised to at least INFO, because at DEBUG it logs
    request lines with their query strings (tokens).

    structlog is told to cache loggers on first use (it saves a third of the
    cost of an event), so call this once, at startup: a logger already used
    keeps the configuration it was first used with.

    :param stream: where lines go (text or binary; binary gets UTF-8); default
        ``sys.stdout`` at call time. The configuration keeps a reference to it.
    :param service_name: ECS ``service.name``, and ``event.dataset``
        ``<service_name>.trio_conn`` on library events; default None sets
        neither. Ignored by the other formats.
    :param force: replace a structlog configuration made before (by the
        application, or an earlier call). Without it, such a call warns
        (``RuntimeWarning``) and changes nothing.
    :raises ValueError: ``format``, ``level`` or ``service_name`` is invalid
        (checked before anything else).
    """
    if format not in FORMATS:
        raise ValueError(
            f"format must be one of {', '.join(map(repr, FORMATS))}, got {format!r:.60}"
        )
    min_level = _check_level(level)
    if service_name is not None and (not isinstance(service_name, str) or not service_name):
        raise ValueError(
            f"service_name must be a non-empty string or None, got {service_name!r:.60}"
        )
    if structlog.is_configured() and not force:
        warnings.warn(
            "structlog is already configured; configure_logging() changed nothing "
            "(pass force=True to replace the configuration)",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    target: Any = sys.stdout if stream is None else stream
    sink: Any = target if _is_text(target) else _BytesToText(target)
    processors: list[Processor] = [
        *([] if format == "json" else [drop_mark]),
        structlog.contextvars.merge_contextvars,
        _ExceptionFields(with_traceback=min_level <= logging.DEBUG),
    ]
    if format == "json":
        # The head after the sink: a short secret such as "info" never hides the level.
        processors += [scrub_event, _json_head, render_json]
    elif format == "ecs":
        processors += [
            ECSMapper(service_name),
            scrub_event,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="@timestamp"),
            ECSFormatter(),  # must be last: it returns the line
        ]
    else:
        isatty = getattr(target, "isatty", None)
        renderer = _ConsoleRenderer(
            colors=bool(callable(isatty) and isatty()),
            exception_formatter=structlog.dev.plain_traceback,
        )
        processors += [
            _console_event,
            scrub_event,
            structlog.processors.add_log_level,  # after the sink, as the time: the library's words
            structlog.processors.TimeStamper(fmt="%H:%M:%S.%f", utc=True),
            renderer,
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        context_class=dict,
        logger_factory=structlog.WriteLoggerFactory(sink),
        # Cached: resolving the lazy proxy costs ~3 us of the 10 us budget per event.
        # A logger keeps the configuration it was first used with, so configure once.
        cache_logger_on_first_use=True,
    )
    websocket_logger = logging.getLogger(TRIO_WEBSOCKET_LOGGER)
    if websocket_logger.level < logging.INFO:
        websocket_logger.setLevel(logging.INFO)
