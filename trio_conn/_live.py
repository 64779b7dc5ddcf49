"""A CONNECTED session: where its messages go, its heartbeat, how it ends.

:func:`trio_conn._session.run_session` hands over to :class:`LiveSession`
once the handshake and ``on_connect`` are done: it publishes CONNECTED,
delivers the reader's messages into the connection's mailbox (a heartbeat's
replies consumed on the way), runs the heartbeat, and waits for the end (a
stop, a failed send, the reader's end), closing gracefully on a stop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import trio

from ._control import Control
from ._events import ConnectionEvents
from ._frames import Data
from ._heartbeat import Heartbeat, HeartbeatMonitor
from ._mailbox import Mailbox
from ._session_spec import SessionSpec
from ._transport import WebSocket


class LiveSession:
    """A CONNECTED session: the sink of its messages, its heartbeat, its end."""

    __slots__ = (
        "_control",
        "_dropping",
        "_events",
        "_heartbeat",
        "_mailbox",
        "_monitor",
        "_spec",
        "_websocket",
    )

    def __init__(
        self,
        spec: SessionSpec,
        control: Control,
        mailbox: Mailbox[Data],
        events: ConnectionEvents,
        websocket: WebSocket,
    ) -> None:
        self._spec = spec
        self._control = control
        self._mailbox = mailbox
        self._events = events
        self._websocket = websocket
        heartbeat = spec.heartbeat
        # Replies that arrive as messages are looked for in each message.
        self._heartbeat = heartbeat if heartbeat and heartbeat.replies_are_messages else None
        self._monitor: HeartbeatMonitor | None = None
        self._dropping = False  # a stop left a message undelivered: drop the tail, no gap

    async def hold(self, nursery: trio.Nursery, opened: Callable[[], None]) -> None:
        """Hold the connection until it fails (raise) or a stop is requested (return).

        On a stop the closing handshake starts (after any frame being
        written), then the heartbeat is cancelled, and the reader reads the
        peer's answer.
        """
        spec, control, websocket = self._spec, self._control, self._websocket
        config = spec.config
        control.websocket = websocket
        opened()
        heartbeat_scope = None
        if spec.heartbeat is not None:
            self._monitor = control.monitor = monitor = HeartbeatMonitor(
                spec.heartbeat,
                websocket,
                interval=config.heartbeat_interval,
                timeout=config.heartbeat_timeout,
                max_misses=config.max_heartbeat_failures,
                on_miss=self._heartbeat_missed,
                on_rtt=control.on_rtt,
            )
            if not spec.heartbeat.replies_are_messages:
                websocket.on_pong = monitor.reply_arrived
            heartbeat_scope = await nursery.start(_run_heartbeat, monitor)
        await websocket.deliver_to(self)
        while not control.stopping and websocket.send_error is None and websocket.end is None:
            await control.wait_changed()
        if websocket.send_error is not None:
            raise websocket.send_error
        if websocket.end is not None:
            raise websocket.end
        stop_heartbeat = heartbeat_scope.cancel if heartbeat_scope is not None else None
        with trio.move_on_after(config.close_timeout, shield=True):
            await websocket.close(written=stop_heartbeat)
        if heartbeat_scope is not None:  # the close outlived its bound
            heartbeat_scope.cancel()

    def _heartbeat_missed(self, misses: int) -> None:
        config = self._spec.config
        self._events.heartbeat_missed(
            misses=misses,
            max_misses=config.max_heartbeat_failures,
            timeout=config.heartbeat_timeout,
        )
        if self._control.on_miss is not None:
            self._control.on_miss()

    # -- the sink of the reader (trio_conn/_transport.py: MessageSink) ---------

    def offer(self, message: Data) -> bool:
        """Take a message without waiting: a heartbeat's reply is consumed here."""
        heartbeat = self._heartbeat
        if heartbeat is not None and self._is_reply(heartbeat, message):
            if self._monitor is not None:
                self._monitor.reply_arrived()
            return True
        if self._dropping:
            return True
        try:
            self._mailbox.put_nowait(message)
        except trio.WouldBlock:
            return False
        return True

    async def put(self, message: Data) -> None:
        """Wait for room for ``message`` (backpressure, no loss): the heartbeat counts
        no miss meanwhile. A stop ends the wait: this message and every later one
        are dropped (the tail, never the middle), so the reader can read the
        closing handshake."""
        monitor = self._monitor
        if monitor is not None:
            monitor.reader_blocked(True)
        try:
            with self._control.interruptible() as scope:
                await self._mailbox.put(message)
            if scope.cancelled_caught:
                self._dropping = True
        finally:
            if monitor is not None:
                monitor.reader_blocked(False)

    def _is_reply(self, heartbeat: Heartbeat, message: Data) -> bool:
        try:
            answer = heartbeat.is_response(message)
        except Exception as exc:
            self._events.hook_failed(hook="heartbeat.is_response", error=exc)
            return False
        if answer is True or answer is False:
            return answer
        # Only a bool is an answer: anything else (a coroutine from an async
        # def slipped past the check, a truthy object) would swallow messages.
        if inspect.iscoroutine(answer):
            answer.close()
        self._events.hook_failed(
            hook="heartbeat.is_response",
            error=TypeError(
                f"is_response must return a bool, returned {type(answer).__name__}; "
                "the message is delivered"
            ),
        )
        return False


async def _run_heartbeat(
    monitor: HeartbeatMonitor,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The session's heartbeat, under a scope the session cancels on a stop."""
    with trio.CancelScope() as scope:
        task_status.started(scope)
        del task_status  # it holds start()'s scaffolding: not for the session's life
        await monitor.run()
