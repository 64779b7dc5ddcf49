"""Control: the one object a connection's supervisor shares with its sessions.

Requests from other tasks (a stop) reach the running session through it, and
the session publishes there what the application's ``send()`` and
``statistics()`` read. Separate from ``trio_conn/_session.py`` so that the
attempt (``_session.py``) and the connected session (``_live.py``) both use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._heartbeat import HeartbeatMonitor
    from ._meters import Traffic
    from ._transport import WebSocket


class Control:
    """The one object the supervisor hands down to its sessions.

    Other tasks reach a running session through it: ``stop()`` (set by the
    supervisor when a disconnect or close is requested) cancels the scopes
    registered with :meth:`interruptible` and wakes every waiter. The session
    publishes here what the application's ``send()`` and ``statistics()``
    read: the live WebSocket connection and the heartbeat's round trip.
    """

    __slots__ = (
        "_lot",
        "_scopes",
        "monitor",
        "on_miss",
        "on_rtt",
        "rtt",
        "stopping",
        "subprotocol",
        "traffic",
        "websocket",
    )

    def __init__(self) -> None:
        self._lot = trio.lowlevel.ParkingLot()
        self._scopes: list[trio.CancelScope] = []
        #: A stop is pending: the session closes gracefully and returns.
        self.stopping = False
        #: The CONNECTED session's WebSocket connection, for ``conn.send()``.
        self.websocket: WebSocket | None = None
        #: The subprotocol of the current (or last) session.
        self.subprotocol: str | None = None
        #: The running heartbeat, and the last round trip of an ended one.
        self.monitor: HeartbeatMonitor | None = None
        self.rtt: float | None = None
        #: Messages and bytes of every session, readable from any thread;
        #: kept only for a metrics backend (None: not counted across sessions).
        self.traffic: Traffic | None = None
        #: Called with each heartbeat round trip (seconds): the metrics' meter.
        self.on_rtt: Callable[[float], None] | None = None
        #: Called at each missed heartbeat: the metrics' meter.
        self.on_miss: Callable[[], None] | None = None

    def notify(self) -> None:
        """Wake every task waiting in :meth:`wait_changed`."""
        self._lot.unpark_all()

    async def wait_changed(self) -> None:
        """Wait for the next :meth:`notify` (re-check your condition after it)."""
        await self._lot.park()

    def stop(self) -> None:
        """A stop was requested: interrupt what is interruptible, wake everyone."""
        self.stopping = True
        for scope in self._scopes:
            scope.cancel()
        self.notify()

    @contextmanager
    def interruptible(self) -> Iterator[trio.CancelScope]:
        """A cancel scope that :meth:`stop` cancels (at once if a stop is pending)."""
        with trio.CancelScope() as scope:
            if self.stopping:
                scope.cancel()
            self._scopes.append(scope)
            try:
                yield scope
            finally:
                self._scopes.remove(scope)

    def heartbeat_rtt(self) -> float | None:
        """Round trip of the last answered heartbeat, in seconds."""
        monitor = self.monitor
        if monitor is not None and monitor.rtt is not None:
            return monitor.rtt
        return self.rtt
