"""Library log events: one structlog event per fact, built from the record that caused it.

Every transition event is built from the :class:`~trio_conn.TransitionRecord`
the lifecycle returned (the record ``on_transition`` receives too), so the
reason, the duration and the failure in the log are the state machine's own.

The module never configures structlog. Events go through
``structlog.get_logger("trio_conn")``, a lazy proxy that is resolved when an
event is emitted (and kept afterwards only if the configuration asks structlog
to cache loggers), so whatever the application configured, even after the
connection was created, applies, ``structlog.contextvars`` context included.
``trio_conn.configure_logging`` is an optional convenience.

Exceptions are rendered as ``error_type`` and ``error_message`` only: no
``exc_info``, so no traceback and no frame locals can reach a log line.

``error_type`` is the class name qualified by its *public* package when the
class is exported there (``trio_websocket.ConnectionClosed``,
``trio_conn.HeartbeatTimeout``), by its defining module otherwise, and bare for
builtins (``ConnectionResetError``).
"""

from __future__ import annotations

import builtins
import functools
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any, Concatenate, ParamSpec, TextIO
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit, urlunsplit

import structlog

from ._records import RecoveryRecord, TransitionRecord
from ._state import ConnectionState

REDACTED = "REDACTED"
P = ParamSpec("P")

#: Registered secrets shorter than this are ignored: replacing 1-3 character
#: strings would mangle ordinary text ("ws", "id", "443") and hide nothing.
MIN_SECRET_LENGTH = 4
#: Parts of a header value (``a=b; c=d``, ``Bearer <token>``) are registered on
#: their own only from this length, so that cookie values and tokens that show
#: up alone are caught while words such as "Bearer" or "dark" are not.
MIN_SECRET_PART_LENGTH = 8
#: Error messages are cut to this many characters (a server's body can be long).
MAX_ERROR_MESSAGE = 1000

STATE_CHANGED = "connection.state_changed"
HEARTBEAT_MISSED = "connection.heartbeat_missed"
STATE_STUCK = "connection.state_stuck"
RECOVERY = "connection.recovery"
HOOK_FAILED = "connection.hook_failed"
EVENT_NAMES = frozenset({STATE_CHANGED, HEARTBEAT_MISSED, STATE_STUCK, RECOVERY, HOOK_FAILED})

_S = ConnectionState
_PART_SEPARATORS = re.compile(r"[;,\s]+")
# The fields that can carry text from outside (a reason given to disconnect(),
# an exception's message, a hook's detail): scrubbed per event. conn_id and url
# are scrubbed once, in add_secrets; error_type (a class name), outcome and hook
# (the library's own words) and the states and kinds (enums) carry no secret.
_TEXT_FIELDS = ("reason", "error_message", "detail")
#: How many scrubbed texts are remembered: reasons and messages repeat.
_SCRUB_CACHE_SIZE = 256


def redact_url(url: str) -> str:
    """Return ``url`` safe to log.

    The userinfo becomes ``REDACTED`` (user and password alike), every query
    value becomes ``REDACTED`` (keys are kept; a bare item without ``=`` counts
    as a value), and the fragment is dropped. Scheme, host, port and path are
    kept. Anything that does not parse as a URL with an authority
    (``scheme://host...``) is returned as ``REDACTED`` as a whole.

    Never raises.
    """
    try:
        parts = urlsplit(url)
        if not parts.netloc:
            return REDACTED
        userinfo, at, hostport = parts.netloc.rpartition("@")
        if at:
            userinfo = f"{REDACTED}:{REDACTED}" if ":" in userinfo else REDACTED
            netloc = f"{userinfo}@{hostport}"
        else:
            netloc = hostport
        query = "&".join(_redact_query_item(item) for item in parts.query.split("&"))
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except Exception:  # garbage in: reveal nothing rather than raise in a log call
        return REDACTED


def _redact_query_item(item: str) -> str:
    key, eq, value = item.partition("=")
    if not eq:
        return REDACTED if key else ""
    return f"{key}={REDACTED}" if value else f"{key}="


def url_secrets(url: str) -> list[str]:
    """The userinfo and query values of ``url``, raw and percent-decoded. Never raises."""
    try:
        parts = urlsplit(url)
        found: list[str] = []
        userinfo, at, _ = parts.netloc.rpartition("@")
        if at:
            found += userinfo.split(":", 1)
        for item in parts.query.split("&"):
            key, eq, value = item.partition("=")
            found.append(value if eq else key)
        found += [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
        found += [unquote(value) for value in found]
        return found
    except Exception:
        return []


# Exception classes are few and long-lived; a plain dict is the cheapest cache.
_TYPE_NAMES: dict[type[BaseException], str] = {}


def error_type_name(cls: type[BaseException]) -> str:
    """``error_type`` of an exception class (see the module docstring); cached per class."""
    cached = _TYPE_NAMES.get(cls)
    if cached is not None:
        return cached
    module, name = cls.__module__, cls.__qualname__
    if not (isinstance(module, str) and isinstance(name, str)):  # a class built oddly
        result = str(getattr(cls, "__name__", "UnknownError"))
    elif module == "builtins" and getattr(builtins, name, None) is cls:
        result = name
    elif getattr(sys.modules.get(module.partition(".")[0]), name, None) is cls:
        result = f"{module.partition('.')[0]}.{name}"
    else:
        result = f"{module}.{name}"
    _TYPE_NAMES[cls] = result
    return result


def error_message(error: BaseException) -> str:
    """``error_message`` of an exception: ``str(error)``, cut to :data:`MAX_ERROR_MESSAGE`.

    An exception that carries HTTP ``headers`` (trio-websocket's
    ``ConnectionRejected``, whose ``str`` is the response's status, headers and
    body) is rendered as its status only: response headers can set cookies.
    An exception with no message of its own is described by its ``__cause__``.
    Never raises.
    """
    try:
        if getattr(error, "headers", None) is not None and hasattr(error, "status_code"):
            text = f"HTTP status {error.status_code}"
        else:
            text = str(error)
        cause = error.__cause__
        if not text and cause is not None:  # e.g. BrokenResourceError from an SSLError
            text = f"{type(cause).__name__}: {cause}"
    except Exception:
        text = f"<unprintable {type(error).__name__}>"
    if len(text) > MAX_ERROR_MESSAGE:
        text = text[: MAX_ERROR_MESSAGE - 1] + "…"
    return text


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


class ConnectionEvents:
    """Emits the events of one connection, each with its ``conn_id`` and redacted ``url``.

    :param conn_id: the connection's name, in every event.
    :param url: the URL it connects to; logged through :func:`redact_url`, and
        its userinfo and query values are registered as secrets.
    :param logger: a structlog logger to use instead of
        ``structlog.get_logger("trio_conn")``. The default is a lazy proxy resolved
        when an event is emitted, so configuration done after construction
        applies. No logger is bound here (binding would freeze a lazy proxy):
        ``conn_id`` and ``url`` are passed with every event.

    Secret scrubbing: every value given to :meth:`add_secrets` (and those of the
    URL) that is at least :data:`MIN_SECRET_LENGTH` characters long is replaced
    by ``REDACTED`` wherever it appears inside a string field of a later event
    (reason, error type and message, detail, hook, outcome, conn_id, url), also
    in its percent-encoded forms. Shorter values are ignored so that ordinary
    text is not mangled. States and error kinds (the library's enums) are fixed
    vocabulary and left as they are; context the application binds itself
    (contextvars) is not scrubbed.
    """

    def __init__(self, conn_id: str, url: str, *, logger: Any | None = None) -> None:
        self._raw_conn_id = conn_id
        self._raw_url = url
        self._logger: Any = logger  # None: structlog.get_logger("trio_conn"), per use
        self._resolved: Any = None  # the proxy's logger, kept when structlog caches
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._probes: tuple[str, ...] = ()
        self._scrubbed: dict[str, str] = {}
        self._logging_error_reported = False
        self._conn_id = conn_id
        self._url = redact_url(url)
        self.add_secrets(url_secrets(url))

    @property
    def conn_id(self) -> str:
        """The connection id as it appears in events."""
        return self._conn_id

    @property
    def url(self) -> str:
        """The URL as it appears in events."""
        return self._url

    def add_secrets(self, values: Iterable[str]) -> None:
        """Hide ``values`` (header values, tokens) from every later event.

        Values shorter than :data:`MIN_SECRET_LENGTH` and non-strings are
        ignored. A header value is also split on ``;``, ``,`` and whitespace,
        and each part (or the value of a ``name=value`` part) of at least
        :data:`MIN_SECRET_PART_LENGTH` characters is registered on its own.
        """
        added = False
        for value in values:
            if not isinstance(value, str):
                continue
            candidates = [value.strip()]
            for part in _PART_SEPARATORS.split(value):
                piece = part.partition("=")[2] or part
                if len(piece) >= MIN_SECRET_PART_LENGTH:
                    candidates.append(piece)
            for candidate in candidates:
                for form in (candidate, quote(candidate, safe=""), quote_plus(candidate)):
                    if len(form) >= MIN_SECRET_LENGTH and form not in self._secrets:
                        self._secrets.add(form)
                        added = True
        if not added:
            return
        # Longest first, so that a secret containing another is replaced whole.
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._pattern = pattern = re.compile("|".join(map(re.escape, ordered)))
        # To detect a hit it is enough to look for the secrets that contain no
        # other secret: any occurrence of a longer one contains one of those.
        self._probes = tuple(
            secret
            for secret in ordered
            if not any(other != secret and other in secret for other in self._secrets)
        )
        self._scrubbed = {}  # texts scrubbed with the previous secrets
        # The fixed fields are scrubbed once here, not on every event.
        self._conn_id = pattern.sub(REDACTED, self._raw_conn_id)
        self._url = pattern.sub(REDACTED, redact_url(self._raw_url))

    def _logging_failed(self, error: Exception) -> None:
        if self._logging_error_reported:
            return
        self._logging_error_reported = True
        try:
            message = error_message(error)
            if self._pattern is not None:
                message = self._scrub(message)
            stream: TextIO | None = sys.stderr
            if stream is not None:
                stream.write(
                    f"trio_conn: logging an event of connection {self._conn_id} failed "
                    f"({error_type_name(type(error))}: {message}); the connection goes on, "
                    "and later logging errors of this connection are not reported\n"
                )
                stream.flush()
        except Exception:  # stderr itself is broken: nowhere left to say it
            pass

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if self._pattern is not None:
            scrubbed = self._scrubbed
            for key in _TEXT_FIELDS:
                value = fields.get(key)
                if value is not None:
                    clean = scrubbed.get(value)
                    if clean is None:
                        clean = self._scrub(value)
                        if len(scrubbed) < _SCRUB_CACHE_SIZE:
                            scrubbed[value] = clean
                    fields[key] = clean
        logger = self._resolved
        if logger is None:
            logger = self._logger if self._logger is not None else structlog.get_logger("trio_conn")
            # Resolve the lazy proxy once, as structlog would, when the
            # application asked structlog to cache loggers (configure_logging
            # does); otherwise resolve per event, so later configuration applies.
            if structlog.is_configured() and structlog.get_config()["cache_logger_on_first_use"]:
                logger = self._resolved = logger.bind()
        getattr(logger, level)(event, **fields)

    def _scrub(self, text: str) -> str:
        assert self._pattern is not None
        # Plain substring tests first (several times faster than a regex search
        # in the usual case: no secret in the text); substitute on a hit.
        for secret in self._probes:
            if secret in text:
                return self._pattern.sub(REDACTED, text)
        return text

    def _add_error(self, fields: dict[str, Any], error: BaseException | None) -> None:
        if error is not None:
            fields["error_type"] = error_type_name(type(error))
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
        fields: dict[str, Any] = {
            "conn_id": self._conn_id,
            "url": self._url,
            "from_state": record.from_state,
            "to_state": to_state,
            "reason": record.reason,
            "duration_s": round(record.duration, 6),
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
                fields["retry_in_s"] = round(record.retry_in, 6)
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
        fields = {
            "conn_id": self._conn_id,
            "url": self._url,
            "misses": misses,
            "max_misses": max_misses,
            "timeout": timeout,
        }
        self._emit("warning", HEARTBEAT_MISSED, fields)

    @_never_raises
    def state_stuck(self, *, state: ConnectionState, seconds: float, limit: float) -> None:
        """Emit ``connection.state_stuck`` (warning): in ``state`` for ``seconds`` > ``limit``."""
        fields = {
            "conn_id": self._conn_id,
            "url": self._url,
            "state": ConnectionState(state),
            "seconds": seconds,
            "limit": limit,
        }
        self._emit("warning", STATE_STUCK, fields)

    @_never_raises
    def recovery(self, record: RecoveryRecord) -> None:
        """Emit ``connection.recovery``: the on_failed hook answered.

        ``info`` with outcome ``success`` when it refreshed the credentials,
        ``error`` with outcome ``failure`` otherwise; ``detail`` says why it
        failed when there is no exception (e.g. the hook returned a non-bool).
        """
        fields: dict[str, Any] = {
            "conn_id": self._conn_id,
            "url": self._url,
            "outcome": "success" if record.refreshed else "failure",
            "duration_s": round(record.duration, 6),
            "consecutive_failures": record.consecutive_failures,
        }
        self._add_error(fields, record.error)
        if record.detail is not None:
            fields["detail"] = record.detail
        self._emit("info" if record.refreshed else "error", RECOVERY, fields)

    @_never_raises
    def hook_failed(self, *, hook: str, error: BaseException) -> None:
        """Emit ``connection.hook_failed`` (error): a user hook raised; it was ignored."""
        fields: dict[str, Any] = {"conn_id": self._conn_id, "url": self._url, "hook": hook}
        self._add_error(fields, error)
        self._emit("error", HOOK_FAILED, fields)
