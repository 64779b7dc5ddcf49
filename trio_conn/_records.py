"""The values the lifecycle hands out: records for observers, actions for the driver,
what hooks see, statistics.

Every observer of a connection (the log events, ``on_transition``, metrics)
is fed from these records, built once by ``trio_conn/_lifecycle.py``: what a
log line says and what a hook receives cannot disagree. Nothing here imports
Trio. Clock readings are seconds on the driver's clock (``trio.current_time()``
under a Trio run: monotonic, virtual under a ``MockClock``).

A record's ``repr()`` (what ``print(record)`` and an application's own log
line show) gives its exception as :func:`shown_error` does: a peer's close
reason or body never, any other message scrubbed when the record was built.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from ._exceptions import TrioConnError
from ._policy import ErrorKind
from ._redact import error_message, error_type, error_type_name
from ._state import ConnectionState


def shown_error(error: BaseException | None) -> str | None:
    """How a record's ``repr()`` shows its exception: never the peer's words raw.

    The library's own exceptions show their ``repr`` (a close code, an HTTP
    status: no reason, no body); any other shows its type and its message,
    scrubbed and cut (trio_conn/_redact.py). Called when the record is built,
    while the connection's secrets are registered: a record printed after the
    connection closed would find none to scrub. Never raises.
    """
    if error is None:
        return None
    if isinstance(error, TrioConnError):
        try:
            return repr(error)
        except Exception:  # a subclass's repr that fails: its type says enough
            return error_type_name(type(error))
    return f"{error_type(error)}({error_message(error)!r})"


def _safe_repr(record: Any, shown: str | None) -> str:
    """A record's ``repr()`` with ``error`` as :func:`shown_error` built it (``shown``)."""
    items = []
    for item in fields(record):
        if not item.repr:
            continue
        if item.name == "error":
            items.append(f"error={'None' if shown is None else shown}")
        else:
            items.append(f"{item.name}={getattr(record, item.name)!r}")
    return f"{type(record).__name__}({', '.join(items)})"


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One state change with its context: what ``on_transition`` receives.

    The first five fields are :class:`~trio_conn.Transition`'s. The failure
    fields are set on moves caused by a failure (into RECONNECTING or FAILED)
    and None elsewhere.

    :ivar from_state: ``ConnectionState``, the state left.
    :ivar to_state: ``ConnectionState``, the state entered.
    :ivar reason: ``str``, why, in words (no secret: exception messages never appear
        here).
    :ivar at: ``float``, clock reading (seconds, ``trio.current_time()``) of the change.
    :ivar duration: ``float``, seconds spent in ``from_state``.
    :ivar attempt: ``int``, number of the current (or last) connection attempt, from 1;
        0 before any.
    :ivar consecutive_failures: ``int``, consecutive failures of any kind, after this
        change (at most ``max_connection_failures``).
    :ivar kind: ``ErrorKind | None``, the failure's :class:`ErrorKind`, after
        ``RetryPolicy.close_codes``.
    :ivar error: ``BaseException | None``, the exception that ended the attempt or
        session.
    :ivar close_code: ``int | None``, the close code that ended the session, whichever
        side sent it (1006: the stream just ended; 1009: the client closed for an
        oversized message).
    :ivar status_code: ``int | None``, the HTTP status of a rejected handshake (or of
        a proxy's refusal).
    :ivar retry_in: ``float | None``, seconds slept in RECONNECTING before the next
        attempt; None on a move to FAILED and on any move without a sleep.
    """

    #: The state left.
    from_state: ConnectionState
    #: The state entered.
    to_state: ConnectionState
    #: Why, in words (no secret: exception messages never appear here).
    reason: str
    #: Clock reading (seconds, ``trio.current_time()``) of the change.
    at: float
    #: Seconds spent in ``from_state``.
    duration: float
    #: Number of the current (or last) connection attempt, from 1; 0 before any.
    attempt: int
    #: Consecutive failures of any kind, after this change (at most
    #: ``max_connection_failures``).
    consecutive_failures: int
    #: The failure's :class:`ErrorKind`, after ``RetryPolicy.close_codes``.
    kind: ErrorKind | None = None
    #: The exception that ended the attempt or session.
    error: BaseException | None = None
    #: The close code that ended the session, whichever side sent it (1006:
    #: the stream just ended; 1009: the client closed for an oversized message).
    close_code: int | None = None
    #: HTTP status of a rejected handshake.
    status_code: int | None = None
    #: Seconds slept in RECONNECTING before the next attempt; None on a move
    #: to FAILED and on any move without a sleep.
    retry_in: float | None = None
    # ``error`` as repr() shows it, fixed when the record is built.
    _error_shown: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_error_shown", shown_error(self.error))

    def __repr__(self) -> str:
        return _safe_repr(self, self._error_shown)


@dataclass(frozen=True, slots=True)
class RecoveryRecord:
    """The ``on_failed`` hook answered (or failed to): one ``connection.recovery`` event.

    :ivar at: ``float``, clock reading (seconds) when the hook returned.
    :ivar duration: ``float``, seconds the hook ran.
    :ivar refreshed: ``bool``, true when the hook returned True in time: credentials
        refreshed.
    :ivar consecutive_failures: ``int``, consecutive failures when the hook was called.
    :ivar error: ``BaseException | None``, what the hook raised (``trio.TooSlowError``
        past ``connect_timeout``).
    :ivar detail: ``str | None``, why it counts as a failure when there is no exception
        (e.g. a non-bool).
    """

    #: Clock reading (seconds) when the hook returned.
    at: float
    #: Seconds the hook ran.
    duration: float
    #: True when the hook returned True in time: credentials refreshed.
    refreshed: bool
    #: Consecutive failures when the hook was called.
    consecutive_failures: int
    #: What the hook raised (``trio.TooSlowError`` past ``connect_timeout``).
    error: BaseException | None = None
    #: Why it counts as a failure when there is no exception (e.g. a non-bool).
    detail: str | None = None
    # ``error`` as repr() shows it, fixed when the record is built.
    _error_shown: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_error_shown", shown_error(self.error))

    def __repr__(self) -> str:
        return _safe_repr(self, self._error_shown)


@dataclass(frozen=True, slots=True)
class FailureInfo:
    """Given to ``on_failed``: why the connection is FAILED.

    :ivar consecutive_failures: ``int``, consecutive failures of any kind (1 after a
        fatal one).
    :ivar kind: ``ErrorKind``, the last failure's :class:`ErrorKind` (after
        ``RetryPolicy.close_codes``).
    :ivar error: ``BaseException | None``, the last failure's exception.
    :ivar close_code: ``int | None``, the close code that ended the last session, if it
        was closed or dropped.
    :ivar status_code: ``int | None``, the HTTP status of the last rejected handshake,
        if it was rejected.
    """

    #: Consecutive failures of any kind (a fatal kind moves to FAILED whatever the count).
    consecutive_failures: int
    #: The last failure's :class:`ErrorKind` (after ``RetryPolicy.close_codes``).
    kind: ErrorKind
    #: The last failure's exception.
    error: BaseException | None
    #: The close code that ended the last session, if it was closed or dropped.
    close_code: int | None = None
    #: The HTTP status of the last rejected handshake, if it was rejected.
    status_code: int | None = None
    # ``error`` as repr() shows it, fixed when the record is built.
    _error_shown: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_error_shown", shown_error(self.error))

    def __repr__(self) -> str:
        return _safe_repr(self, self._error_shown)


K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V]):
    """A read-only mapping that, unlike ``MappingProxyType``, hashes, pickles and copies:
    a statistics snapshot can be compared, stored and sent to another process."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[K, V]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __reduce__(self) -> tuple[type[FrozenMap[K, V]], tuple[dict[K, V]]]:
        return (type(self), (self._data,))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """An immutable snapshot of a connection's figures.

    Clock readings (``state_since``, ``next_retry_at``, ``connected_since``)
    are ``trio.current_time()`` values, not wall-clock times; the other
    times are durations in seconds.

    :ivar state: ``ConnectionState``, the current state.
    :ivar state_since: ``float``, clock reading when the current state was entered.
    :ivar time_in_state: ``float``, seconds in the current state so far.
    :ivar attempts: ``int``, connection attempts started (moves into CONNECTING).
    :ivar consecutive_failures: ``int``, consecutive failures of any kind, as of now: 0
        once CONNECTED has lasted ``stable_after`` seconds.
    :ivar total_failures: ``int``, every failure since the connection was opened.
    :ivar transitions: ``Mapping[tuple[ConnectionState, ConnectionState], int]``, how
        many times each ``(from, to)`` edge was taken.
    :ivar time_by_state: ``Mapping[ConnectionState, float]``, seconds spent in each
        state, the current stay included.
    :ivar last_error: ``str | None``, ``kind: ExceptionType`` of the last failure (no
        message text).
    :ivar last_error_kind: ``ErrorKind | None``, the last failure's kind.
    :ivar last_close_code: ``int | None``, the close code of the last failure; None when
        it had none.
    :ivar heartbeat_rtt: ``float | None``, round trip of the last answered heartbeat, in
        seconds.
    :ivar next_retry_at: ``float | None``, clock reading when the next attempt is due:
        the end of the backoff in RECONNECTING, the next probe in FAILED; None
        otherwise.
    :ivar connected_since: ``float | None``, clock reading when the current CONNECTED
        stay began; None unless CONNECTED.
    """

    #: The current state.
    state: ConnectionState
    #: Clock reading when the current state was entered.
    state_since: float
    #: Seconds in the current state so far.
    time_in_state: float
    #: Connection attempts started (moves into CONNECTING).
    attempts: int
    #: Consecutive failures of any kind, as of now: 0 once CONNECTED has
    #: lasted ``stable_after`` seconds.
    consecutive_failures: int
    #: Every failure since the connection was opened.
    total_failures: int
    #: How many times each ``(from, to)`` edge was taken.
    transitions: Mapping[tuple[ConnectionState, ConnectionState], int]
    #: Seconds spent in each state, the current stay included.
    time_by_state: Mapping[ConnectionState, float]
    #: ``kind: ExceptionType`` of the last failure (no message text).
    last_error: str | None
    #: The last failure's kind.
    last_error_kind: ErrorKind | None
    #: The close code of the last failure; None when it had none.
    last_close_code: int | None
    #: Round trip of the last answered heartbeat, in seconds.
    heartbeat_rtt: float | None
    #: Clock reading when the next attempt is due: the end of the backoff in
    #: RECONNECTING, the next probe in FAILED; None otherwise.
    next_retry_at: float | None
    #: Clock reading when the current CONNECTED stay began; None unless CONNECTED.
    connected_since: float | None


Record = TransitionRecord | RecoveryRecord


@dataclass(frozen=True, slots=True)
class Connect:
    """Action: start one attempt now (the state is CONNECTING); report ``connected``
    and then ``session_ended`` to the lifecycle."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Action: sleep until the clock reads ``until`` (``math.inf``: no deadline) or a
    request arrives, whichever is first; then ask for the next action again."""

    until: float


@dataclass(frozen=True, slots=True)
class CallHook:
    """Action: call ``on_failed(info)``; report ``hook_answered``, or nothing if a stop
    interrupted it."""

    info: FailureInfo


@dataclass(frozen=True, slots=True)
class Finish:
    """Action: CLOSED; the supervisor's work is done."""


Action = Connect | Wait | CallHook | Finish


@dataclass(frozen=True, slots=True)
class Step:
    """What the lifecycle's ``next_action`` decided: records to publish, in order,
    then an action."""

    records: tuple[Record, ...]
    action: Action
