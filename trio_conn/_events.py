"""Library log events: one event per fact, built from the record that caused it.

Every transition event is built from the :class:`~trio_conn.TransitionRecord`
the lifecycle returned (the record ``on_transition`` receives too), so the
reason, the duration and the failure in the log are the state machine's own.

Where events go (the library never configures logging):

- structlog configured (by the application, or by
  ``trio_conn.configure_logging``): through its pipeline, as
  ``structlog.get_logger("trio_conn")``, resolved when an event is emitted so
  that configuration done later applies;
- otherwise: as records of the standard library's logger ``trio_conn``, the
  message a sentence a person reads (``msg`` its template, the varying
  parts in ``args``), every field an attribute of the record
  (``record.to_state``...): an application that set up only ``logging``
  gets them through its handlers (contextvars included; a field named like
  a record attribute, ``name`` say, arrives as ``trio_conn_name``), and one
  that set up nothing gets what Python gives any quiet library (warnings and
  errors on stderr, nothing on stdout).

Secrets are scrubbed from every text field here (an application's own
pipeline gets clean fields), and again from every value at the sink of the
pipelines ``configure_logging`` builds (trio_conn/_secrets.py). Exceptions
are rendered as ``error_type`` and ``error_message`` only: no ``exc_info``,
so no traceback and no frame locals reach a log line.

Context: fields bound with ``structlog.contextvars.bind_contextvars`` appear
in events when bound before ``open_connection`` (its tasks copy the context
when they start); to add fields later, use ``ManagedConnection.bind(...)``.
"""

from __future__ import annotations

import collections
import functools
import logging
import sys
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Concatenate, ParamSpec, TextIO

import structlog

from ._records import RecoveryRecord, TransitionRecord
from ._redact import (
    error_message,
    error_type,
    error_type_name,
    header_secrets,
    redact_url,
    scrub_value,
    url_secrets,
)
from ._secrets import SECRETS, retire
from ._state import ConnectionState
from ._vocabulary import (
    HEARTBEAT_MISSED,
    HOOK_FAILED,
    LIBRARY_FIELDS,
    RECOVERY,
    RESERVED_FIELDS,
    STATE_CHANGED,
    STATE_STUCK,
    sentence_template,
)

P = ParamSpec("P")

#: How many attempts' header values a connection keeps registered as secrets
#: (a ``headers()`` callable may mint a fresh token per attempt).
ATTEMPTS_KEPT = 3

_S = ConnectionState
# The fields that can carry text from outside (a reason given to disconnect(),
# an exception's message, a hook's detail); conn_id and url are scrubbed when
# read; error_type (a class name), outcome and hook (the library's own words)
# and the states and kinds (enums) carry no secret.
_TEXT_FIELDS = ("reason", "error_message", "detail")
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Attributes a LogRecord has of its own: a bound field by such a name travels
# as ``trio_conn_<name>`` instead.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
STDLIB_LOGGER = logging.getLogger("trio_conn")
#: A key only the pipelines ``configure_logging`` builds receive and remove:
#: ``(secret set version, keys scrubbed when the event was built)``.
CLEAN_MARK = "\x00trio_conn.scrubbed"
#: The attribute that marks the sink processor of those pipelines.
SINK_ATTRIBUTE = "trio_conn_sink"


def _sink_scrubs() -> bool:
    """Whether structlog's configured pipeline is one ``configure_logging`` built."""
    processors = structlog.get_config()["processors"]
    return any(getattr(processor, SINK_ATTRIBUTE, False) for processor in processors)


def _never_raises(
    method: Callable[Concatenate[ConnectionEvents, P], None],
) -> Callable[Concatenate[ConnectionEvents, P], None]:
    """Make an emitting method safe for the connection: building the fields or
    logging them may fail (an application's processor, a closed stream, an
    exception class no rule foresaw); that is reported once per connection on
    ``stderr`` (type and scrubbed message) and the event is lost."""

    @functools.wraps(method)
    def guarded(self: ConnectionEvents, /, *args: P.args, **kwargs: P.kwargs) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception as exc:
            self._logging_failed(exc)

    return guarded


def _forget(held: list[list[str]]) -> None:
    for forms in held:
        SECRETS.remove(forms)
    held.clear()


class ConnectionEvents:
    """Emits the events of one connection, each with its ``conn_id`` and redacted ``url``.

    :param conn_id: the connection's name, in every event.
    :param url: the URL it connects to; logged through ``redact_url``, and its
        userinfo and query values are registered as secrets.
    :param logger: a structlog logger to use instead of the routing described
        in the module docstring (for tests).

    Secrets: the URL's, every fixed header value and the last
    :data:`ATTEMPTS_KEPT` attempts' are registered (trio_conn/_secrets.py)
    until :meth:`forget_secrets` retires them or this object is collected.
    """

    __slots__ = (
        "__weakref__",
        "_attempts",
        "_bound",
        "_held",
        "_logger",
        "_logging_error_reported",
        "_marks",
        "_raw_conn_id",
        "_resolved",
        "_shown_as",
        "_url",
    )

    def __init__(self, conn_id: str, url: str, *, logger: Any | None = None) -> None:
        self._raw_conn_id = conn_id
        self._logger: Any = logger
        self._resolved: Any = None  # the proxy's logger, kept when structlog caches
        self._logging_error_reported = False
        self._bound: dict[str, Any] = {}
        self._marks = False  # the resolved pipeline is one configure_logging built
        fixed = SECRETS.add(url_secrets(url))
        self._held: list[list[str]] = [fixed]  # every registration, for the finalizer
        self._attempts: collections.deque[list[str]] = collections.deque()
        weakref.finalize(self, _forget, self._held)
        self._url = redact_url(url)
        self._shown_as: tuple[int, str, str] = (-1, "", "")

    @property
    def conn_id(self) -> str:
        """The connection id as it appears in events (scrubbed)."""
        return self._shown()[0]

    @property
    def url(self) -> str:
        """The URL as it appears in events (redacted and scrubbed)."""
        return self._shown()[1]

    def _shown(self) -> tuple[str, str]:
        # Scrubbed again only when the secret set changed: two fields of every event.
        shown = self._shown_as
        if shown[0] != SECRETS.version:
            shown = (SECRETS.version, SECRETS.scrub(self._raw_conn_id), SECRETS.scrub(self._url))
            self._shown_as = shown
        return shown[1], shown[2]

    def add_secrets(self, values: Iterable[str], *, attempt: bool = False) -> None:
        """Hide header ``values`` from every later event (see ``header_secrets``).

        :param attempt: these are one attempt's values: only the last
            :data:`ATTEMPTS_KEPT` attempts' stay registered. Otherwise they stay
            as long as the connection.
        """
        registered = SECRETS.add(
            part for value in values if isinstance(value, str) for part in header_secrets(value)
        )
        if not registered:
            return
        self._held.append(registered)
        if attempt:
            self._attempts.append(registered)
            while len(self._attempts) > ATTEMPTS_KEPT:
                oldest = self._attempts.popleft()
                SECRETS.remove(oldest)
                self._held.remove(oldest)

    def forget_secrets(self) -> None:
        """The connection is CLOSED: no event of it follows, but the application
        may still log its URL or an error of it: its secrets stay registered
        while it is one of the last ``CLOSED_KEPT`` connections to close."""
        self._attempts.clear()
        retire(self._held)

    def bind(self, fields: dict[str, Any]) -> None:
        """Add ``fields`` to every later event.

        :raises ValueError: a name of the library's own fields (``reason``,
            ``conn_id``...: see :data:`LIBRARY_FIELDS`), or one structlog, the
            renderers or ECS own (``event``, ``level``, ``timestamp``,
            ``exc_info``, ``logger``...: :data:`RESERVED_FIELDS`).
        """
        taken = sorted(key for key in fields if key in LIBRARY_FIELDS or key in RESERVED_FIELDS)
        if taken:
            raise ValueError(
                f"cannot bind {', '.join(map(repr, taken))}: the library's own event fields, "
                "and the names structlog, the renderers and ECS use (level, timestamp, "
                "exc_info, logger...), keep their meaning; choose other names"
            )
        self._bound.update(fields)

    def _logging_failed(self, error: Exception) -> None:
        if self._logging_error_reported:
            return
        self._logging_error_reported = True
        try:
            stream: TextIO | None = sys.stderr
            if stream is not None:
                stream.write(
                    f"trio_conn: logging an event of connection {self.conn_id} failed "
                    f"({error_type_name(type(error))}: {error_message(error)}); the "
                    "connection goes on, and later logging errors of this connection "
                    "are not reported\n"
                )
                stream.flush()
        except Exception:  # stderr itself is broken: nowhere left to say it
            pass

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        version = SECRETS.version  # before scrubbing: a secret added later forces the sink's scan
        scrub = SECRETS.scrub
        for key in _TEXT_FIELDS:
            value = fields.get(key)
            if value is not None:
                fields[key] = scrub(value)
        # Every bound value, nested ones and objects' reprs included: an
        # application's own pipeline gets them as they are here.
        bound = {key: scrub_value(value) for key, value in self._bound.items()}
        logger = self._resolved
        marks = self._marks
        if logger is None:
            if self._logger is None and not structlog.is_configured():
                self._to_stdlib(level, event, fields | bound)
                return
            logger = self._logger if self._logger is not None else structlog.get_logger("trio_conn")
            marks = self._logger is None and _sink_scrubs()
            # Resolve the lazy proxy once, as structlog would, when the
            # application asked structlog to cache loggers (configure_logging
            # does); otherwise resolve per event, so later configuration applies.
            if structlog.is_configured() and structlog.get_config()["cache_logger_on_first_use"]:
                logger = self._resolved = logger.bind()
                self._marks = marks
        if marks and self._shown_as[0] == version:
            # Every field built here is scrubbed already: the sink need not
            # scan them again (trio_conn/_logging.py, _scrub_event). Bound and
            # context fields are not in this set and are scanned there.
            fields[CLEAN_MARK] = (version, fields.keys())
        getattr(logger, level)(event, **fields, **bound)

    def _to_stdlib(self, level: str, event: str, fields: dict[str, Any]) -> None:
        number = _LEVELS[level]
        if not STDLIB_LOGGER.isEnabledFor(number):
            return
        extra = {
            (f"trio_conn_{key}" if key in _RECORD_ATTRIBUTES else key): value
            for key, value in fields.items()
        }
        # Context is the application's, but these records are built here: no
        # sink of ours runs after, so every value is scrubbed now.
        for key, value in structlog.contextvars.get_contextvars().items():
            key = SECRETS.scrub(key)
            extra.setdefault(
                f"trio_conn_{key}" if key in _RECORD_ATTRIBUTES else key, scrub_value(value)
            )
        extra["event"] = event
        # The template as msg: handlers that group by it (Sentry) group by event.
        template, args = sentence_template(event, fields)
        STDLIB_LOGGER.log(number, template, *args, extra=extra)

    def _add_error(self, fields: dict[str, Any], error: BaseException | None) -> None:
        if error is not None:
            fields["error_type"] = error_type(error)
            fields["error_message"] = error_message(error)

    @_never_raises
    def state_changed(self, record: TransitionRecord) -> None:
        """Emit ``connection.state_changed`` for ``record``.

        Level: ``error`` into FAILED; ``warning`` into RECONNECTING after a
        failure; ``info`` otherwise (leaving FAILED after a refresh, a reset or
        for a probe is good news). ``outcome``: ``success`` into CONNECTED,
        ``failure`` on a move caused by a failure, absent otherwise. Optional
        fields appear only when not None.
        """
        to_state = record.to_state
        # The StrEnum members themselves: every renderer writes them as their
        # value, and ``.value`` (an enum descriptor) costs more than the rest.
        conn_id, url = self._shown()
        fields: dict[str, Any] = {
            "conn_id": conn_id,
            "url": url,
            "from_state": record.from_state,
            "to_state": to_state,
            "reason": record.reason,
            "duration_s": round(float(record.duration), 6),
            "consecutive_failures": record.consecutive_failures,
            "attempt": record.attempt,
        }
        level = "info"
        kind = record.kind
        if kind is not None:
            fields["error_kind"] = kind
            self._add_error(fields, record.error)
            if record.close_code is not None:
                fields["close_code"] = record.close_code
            if record.status_code is not None:
                fields["status_code"] = record.status_code
            if record.retry_in is not None:
                fields["retry_in_s"] = round(float(record.retry_in), 6)
            fields["outcome"] = "failure"
            level = "error" if to_state is _S.FAILED else "warning"
        elif to_state is _S.CONNECTED:
            fields["outcome"] = "success"
        elif to_state is _S.FAILED:  # defensive: FAILED always follows a failure
            level = "error"
        self._emit(level, STATE_CHANGED, fields)

    @_never_raises
    def heartbeat_missed(self, *, misses: int, max_misses: int, timeout: float) -> None:
        """Emit ``connection.heartbeat_missed`` (warning): ``misses`` of ``max_misses``."""
        conn_id, url = self._shown()
        fields = {
            "conn_id": conn_id,
            "url": url,
            "misses": int(misses),
            "max_misses": int(max_misses),
            "timeout": round(float(timeout), 6),
        }
        self._emit("warning", HEARTBEAT_MISSED, fields)

    @_never_raises
    def state_stuck(self, *, state: ConnectionState, seconds: float, limit: float) -> None:
        """Emit ``connection.state_stuck`` (warning): in ``state`` for ``seconds`` > ``limit``."""
        conn_id, url = self._shown()
        fields = {
            "conn_id": conn_id,
            "url": url,
            "state": ConnectionState(state),
            "seconds": round(float(seconds), 6),
            "limit": round(float(limit), 6),
        }
        self._emit("warning", STATE_STUCK, fields)

    @_never_raises
    def recovery(self, record: RecoveryRecord) -> None:
        """Emit ``connection.recovery``: the on_failed hook answered.

        ``info`` with outcome ``success`` when it refreshed the credentials;
        outcome ``failure`` otherwise, at ``warning`` when it answered False
        (nothing to refresh) and ``error`` when it raised, hung or answered a
        non-bool (``detail`` says why when there is no exception).
        """
        conn_id, url = self._shown()
        fields: dict[str, Any] = {
            "conn_id": conn_id,
            "url": url,
            "outcome": "success" if record.refreshed else "failure",
            "duration_s": round(float(record.duration), 6),
            "consecutive_failures": record.consecutive_failures,
        }
        self._add_error(fields, record.error)
        if record.detail is not None:
            fields["detail"] = record.detail
        if record.refreshed:
            level = "info"
        elif record.error is None and record.detail is None:
            level = "warning"  # False: nothing to refresh; FAILED itself was logged as error
        else:
            level = "error"
        self._emit(level, RECOVERY, fields)

    @_never_raises
    def hook_failed(self, *, hook: str, error: BaseException) -> None:
        """Emit ``connection.hook_failed`` (error): a user hook raised; it was ignored."""
        conn_id, url = self._shown()
        fields: dict[str, Any] = {"conn_id": conn_id, "url": url, "hook": hook}
        self._add_error(fields, error)
        self._emit("error", HOOK_FAILED, fields)
