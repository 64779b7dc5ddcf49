"""What a metrics backend sees of a connection, and the guard around it.

A backend (``trio_conn.metrics.PrometheusMetrics``, or any object with the
same ``attach`` method) is one more observer of the records the lifecycle
publishes (trio_conn/_records.py), beside the log and ``on_transition``. The
supervisor attaches each connection when it starts running and detaches it at
CLOSED; in between it hands the backend every record, and the session hands
it each heartbeat round trip. The traffic figures are not pushed: they are
counted where they happen (the transport's plain integers) and the backend
reads them from :class:`Traffic` when it is scraped, from any thread.

Nothing here imports prometheus-client: the connection code depends on this
module only.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

from ._records import Record

if TYPE_CHECKING:
    from ._events import ConnectionEvents


class TrafficSource(Protocol):
    """One WebSocket connection's counters (trio_conn/_transport.py's ``WebSocket``)."""

    @property
    def messages_received(self) -> int: ...

    @property
    def messages_sent(self) -> int: ...

    @property
    def bytes_received(self) -> int: ...

    @property
    def bytes_sent(self) -> int: ...


def _read(source: TrafficSource) -> tuple[int, int, int, int]:
    return (
        source.messages_received,
        source.messages_sent,
        source.bytes_received,
        source.bytes_sent,
    )


class Traffic:
    """A connection's traffic across its sessions: what ended, plus the live session's.

    Read from any thread (a scrape runs in the HTTP server's); changed only
    when a session starts or ends, under a lock held for a few additions.
    """

    __slots__ = ("_ended", "_live", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ended = (0, 0, 0, 0)
        self._live: TrafficSource | None = None

    def follow(self, source: TrafficSource | None) -> None:
        """Fold the live session's counts into the total, then follow ``source`` (None: none)."""
        with self._lock:
            live = self._live
            if live is not None:
                self._ended = _add(self._ended, _read(live))
            self._live = source

    def totals(self) -> tuple[int, int, int, int]:
        """``(messages received, messages sent, bytes received, bytes sent)`` so far.

        Messages are whole data messages (heartbeat replies included); bytes
        are what was read from and handed to the byte stream (frame headers,
        the opening handshake's answer, compressed sizes with
        permessage-deflate). Never goes back.
        """
        with self._lock:
            live = self._live
            return self._ended if live is None else _add(self._ended, _read(live))


def _add(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


class ConnectionMeter(Protocol):
    """One connection's view of a metrics backend (what ``Metrics.attach`` returns)."""

    def record(self, record: Record) -> None:
        """A record the lifecycle published (TransitionRecord or RecoveryRecord)."""

    def heartbeat_rtt(self, seconds: float) -> None:
        """A heartbeat's round trip, in seconds."""

    def heartbeat_missed(self) -> None:
        """A beat went unanswered (no proof of life by its deadline)."""

    def closed(self) -> None:
        """The connection is CLOSED: no call follows."""


class Metrics(Protocol):
    """What ``open_connection(metrics=...)`` takes: e.g. ``trio_conn.metrics.PrometheusMetrics``."""

    def attach(self, conn_id: str, traffic: Traffic) -> ConnectionMeter:
        """Start observing connection ``conn_id``; its traffic is read from ``traffic``."""
        ...


class GuardedMeter:
    """A backend's meter behind a guard: an exception it raises is logged once per
    connection (``connection.hook_failed``, hook ``metrics``) and ignored, as
    ``on_transition``'s is. Its methods never raise."""

    __slots__ = ("_events", "_meter", "_reported")

    def __init__(
        self, metrics: Metrics, conn_id: str, traffic: Traffic, events: ConnectionEvents
    ) -> None:
        self._events = events
        self._reported = False
        self._meter: ConnectionMeter | None = None
        try:
            self._meter = metrics.attach(conn_id, traffic)
        except Exception as exc:
            self._failed(exc)

    def record(self, record: Record) -> None:
        meter = self._meter
        if meter is not None:
            try:
                meter.record(record)
            except Exception as exc:
                self._failed(exc)

    def heartbeat_rtt(self, seconds: float) -> None:
        meter = self._meter
        if meter is not None:
            try:
                meter.heartbeat_rtt(seconds)
            except Exception as exc:
                self._failed(exc)

    def heartbeat_missed(self) -> None:
        meter = self._meter
        if meter is not None:
            try:
                meter.heartbeat_missed()
            except Exception as exc:
                self._failed(exc)

    def closed(self) -> None:
        meter, self._meter = self._meter, None
        if meter is not None:
            try:
                meter.closed()
            except Exception as exc:
                self._failed(exc)

    def _failed(self, error: Exception) -> None:
        if not self._reported:
            self._reported = True
            self._events.hook_failed(hook="metrics", error=error)


def check_metrics(metrics: object) -> None:
    """:raises TypeError: ``metrics`` is neither None nor an object with ``attach``."""
    if metrics is not None and not callable(getattr(metrics, "attach", None)):
        raise TypeError(
            "metrics must be None or a metrics backend such as "
            f"trio_conn.metrics.PrometheusMetrics(), got {type(metrics).__name__}"
        )
