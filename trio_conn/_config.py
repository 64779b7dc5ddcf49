"""ConnectionConfig: the numbers a managed connection runs by, validated once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ._policy import RetryPolicy, finite, shown
from ._state import ConnectionState

#: The states the stuck-state watchdog watches by default, and after how long.
DEFAULT_STUCK_AFTER: Mapping[ConnectionState, float] = MappingProxyType(
    {ConnectionState.CONNECTING: 30.0, ConnectionState.RECONNECTING: 120.0}
)

_POSITIVE_SECONDS = (
    "heartbeat_interval",
    "heartbeat_timeout",
    "connect_timeout",
    "close_timeout",
)
_NON_NEGATIVE_SECONDS = ("stable_after", "recovery_cooldown")
_COUNTS = (
    "max_heartbeat_failures",
    "max_connection_failures",
    "receive_buffer",
    "max_message_size",
    "max_message_fragments",
)


@dataclass(frozen=True)
class ConnectionConfig:
    """Timings and limits of a managed connection. Every value is checked on creation.

    :ivar heartbeat_interval: ``float``, default ``15.0``. Seconds between heartbeats,
        from one beat's scheduled time to the next (``max(heartbeat_interval,
        heartbeat_timeout)`` while unanswered).
    :ivar heartbeat_timeout: ``float``, default ``30.0``. Seconds from a beat's
        scheduled time by which it must be sent and answered (or some byte come from the
        peer) before counting a miss.
    :ivar max_heartbeat_failures: ``int``, default ``3``. Consecutive misses that end
        the session as dead.
    :ivar max_connection_failures: ``int``, default ``5``. Consecutive failed attempts
        (or unstable sessions) that move to FAILED.
    :ivar connect_timeout: ``float``, default ``10.0``. Bound on one whole attempt:
        headers, DNS, TCP, TLS, handshake, on_connect.
    :ivar stable_after: ``float``, default ``30.0``. Seconds CONNECTED must last before
        the failure count resets (0: at once).
    :ivar recovery_cooldown: ``float``, default ``60.0``. Minimum seconds between two
        calls of the on_failed hook (0: no minimum).
    :ivar failed_retry_interval: ``float | None``, default ``300.0``. Seconds between
        probes while FAILED (spread upwards by the retry jitter); None: stay FAILED
        until ``reset()`` or the hook refreshes.
    :ivar retry: ``RetryPolicy``, default ``RetryPolicy()``. Backoff rows, jitter and
        which kinds of error are fatal.
    :ivar receive_buffer: ``int``, default ``64``. Messages buffered between the socket
        and the application.
    :ivar max_message_size: ``int``, default ``1024 * 1024``. Largest message accepted
        from the peer, in bytes (UTF-8 for text, after decompression); a larger one
        closes the connection with 1009.
    :ivar max_message_fragments: ``int``, default ``4096``. Most frames one message may
        arrive in; more closes with 1009 (a peer that streams empty continuation frames
        holds no memory for long).
    :ivar close_timeout: ``float``, default ``5.0``. Bound on the closing handshake when
        the connection is closed.
    :ivar stuck_after: ``Mapping[ConnectionState, float]``, default ``field(``. States
        watched for being held too long, with the limit in seconds.
    :raises ValueError: a value breaks its rule; the message names the field,
        the value and the rule.
    :raises TypeError: a value has the wrong type.
    """

    #: Seconds between heartbeats, from one beat's scheduled time to the next
    #: (``max(heartbeat_interval, heartbeat_timeout)`` while unanswered).
    heartbeat_interval: float = 15.0
    #: Seconds from a beat's scheduled time by which it must be sent and
    #: answered (or some byte come from the peer) before counting a miss.
    heartbeat_timeout: float = 30.0
    #: Consecutive misses that end the session as dead.
    max_heartbeat_failures: int = 3
    #: Consecutive failed attempts (or unstable sessions) that move to FAILED.
    max_connection_failures: int = 5
    #: Bound on one whole attempt: headers, DNS, TCP, TLS, handshake, on_connect.
    connect_timeout: float = 10.0
    #: Seconds CONNECTED must last before the failure count resets (0: at once).
    stable_after: float = 30.0
    #: Minimum seconds between two calls of the on_failed hook (0: no minimum).
    recovery_cooldown: float = 60.0
    #: Seconds between probes while FAILED (spread upwards by the retry
    #: jitter); None: stay FAILED until ``reset()`` or the hook refreshes.
    failed_retry_interval: float | None = 300.0
    #: Backoff rows, jitter and which kinds of error are fatal.
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Messages buffered between the socket and the application.
    receive_buffer: int = 64
    #: Largest message accepted from the peer, in bytes (UTF-8 for text, after
    #: decompression); a larger one closes the connection with 1009.
    max_message_size: int = 1024 * 1024
    #: Most frames one message may arrive in; more closes with 1009 (a peer
    #: that streams empty continuation frames holds no memory for long).
    max_message_fragments: int = 4096
    #: Bound on the closing handshake when the connection is closed.
    close_timeout: float = 5.0
    #: States watched for being held too long, with the limit in seconds.
    stuck_after: Mapping[ConnectionState, float] = field(
        default_factory=lambda: DEFAULT_STUCK_AFTER
    )

    def __post_init__(self) -> None:
        for name in _POSITIVE_SECONDS:
            _check_seconds(name, getattr(self, name), allow_zero=False)
        for name in _NON_NEGATIVE_SECONDS:
            _check_seconds(name, getattr(self, name), allow_zero=True)
        if self.failed_retry_interval is not None:
            _check_seconds(
                "failed_retry_interval", self.failed_retry_interval, allow_zero=False, or_none=True
            )
        for name in _COUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"ConnectionConfig.{name} must be an int, got {shown(value)}")
            if value < 1:
                raise ValueError(f"ConnectionConfig.{name} must be >= 1, got {shown(value)}")
        if not isinstance(self.retry, RetryPolicy):
            raise TypeError(
                f"ConnectionConfig.retry must be a RetryPolicy, got {shown(self.retry)}"
            )
        object.__setattr__(self, "stuck_after", _check_stuck_after(self.stuck_after))


def _check_seconds(name: str, value: object, *, allow_zero: bool, or_none: bool = False) -> None:
    alternative = " or None" if or_none else ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"ConnectionConfig.{name} must be a number of seconds{alternative}, got {shown(value)}"
        )
    rule = ">= 0" if allow_zero else "> 0"
    if not finite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            f"ConnectionConfig.{name} must be finite and {rule} seconds{alternative}, "
            f"got {shown(value)}"
        )


def _check_stuck_after(value: object) -> Mapping[ConnectionState, float]:
    if not isinstance(value, Mapping):
        raise TypeError(
            "ConnectionConfig.stuck_after must be a mapping of state to seconds, "
            f"got {shown(value)}"
        )
    checked: dict[ConnectionState, float] = {}
    for key, seconds in value.items():
        watchable = [state for state in ConnectionState if state is not ConnectionState.CLOSED]
        try:
            state = ConnectionState(key)
        except ValueError:
            state = ConnectionState.CLOSED
        if state is ConnectionState.CLOSED:  # terminal: a stay there never ends
            raise ValueError(
                f"ConnectionConfig.stuck_after keys must be states other than closed "
                f"({', '.join(watchable)}), got {shown(key)}"
            )
        _check_seconds(f"stuck_after[{state}]", seconds, allow_zero=False)
        checked[state] = float(seconds)
    return MappingProxyType(checked)
