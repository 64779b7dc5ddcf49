"""One attempt and the life of one WebSocket connection, under its own nursery.

A session opens the byte stream, does the handshake and ``on_connect``
(all within ``connect_timeout``), then holds the connection: messages go into
the mailbox, the heartbeat judges the peer. It never changes state and never
talks to the lifecycle: it *returns* how it ended (:class:`SessionEnd`), and
the supervisor decides. Its nursery::

    session nursery                     (one per attempt; ends with the session)
    ├── trio-websocket's reader task    reads frames, delivers into the mailbox
    ├── heartbeat loop                  HeartbeatMonitor.run: beats, misses
    └── beat tasks                      one per beat in flight, each bounded

When :func:`run_session` returns, every task of the session has ended and
its stream is closed: at most one stream is open per connection.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeAlias

import trio

from ._config import ConnectionConfig
from ._events import ConnectionEvents
from ._failure import describe_failure
from ._heartbeat import Heartbeat, HeartbeatMonitor
from ._mailbox import Mailbox
from ._policy import FailureDetails
from ._transport import Message, Socket, StreamOpener, Target, check_headers

Headers: TypeAlias = list[tuple[str, str]]
HeadersSource: TypeAlias = Headers | Callable[[], Awaitable[Headers]] | None

HANDSHAKE = "during the handshake"
ON_CONNECT = "in on_connect"
CONNECTED = "while connected"


class Session:
    """One WebSocket connection, given to ``on_connect`` for its init handshake."""

    __slots__ = ("_socket",)

    def __init__(self, socket: Socket) -> None:
        self._socket = socket

    async def send(self, message: Message) -> None:
        """Send a message (str: a text frame; bytes: a binary frame) on this connection."""
        await self._socket.send(message)

    async def receive(self) -> Message:
        """Receive the next message of this connection."""
        return await self._socket.receive()


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """What every attempt of one connection needs; fixed for the connection's life."""

    target: Target
    config: ConnectionConfig
    heartbeat: Heartbeat | None
    headers: HeadersSource = field(repr=False)  # values are secrets
    on_connect: Callable[[Session], Awaitable[None]] | None
    ssl_context: ssl.SSLContext | None
    open_stream: StreamOpener


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """How a session ended: ``failure`` None means a stop ended it."""

    failure: FailureDetails | None
    phase: str


class Control:
    """The one object the supervisor hands down to its sessions.

    Other tasks reach a running session through it: ``stop()`` (set by the
    supervisor when a disconnect or close is requested) cancels the scopes
    registered with :meth:`interruptible` and wakes every waiter. The session
    publishes here what the application's ``send()`` and ``statistics()``
    read: the live WebSocket connection and the heartbeat's round trip.
    """

    __slots__ = ("_lot", "_scopes", "monitor", "rtt", "socket", "stopping")

    def __init__(self) -> None:
        self._lot = trio.lowlevel.ParkingLot()
        self._scopes: list[trio.CancelScope] = []
        #: A stop is pending: the session closes gracefully and returns.
        self.stopping = False
        #: The CONNECTED session's WebSocket connection, for ``conn.send()``.
        self.socket: Socket | None = None
        #: The running heartbeat, and the last round trip of an ended one.
        self.monitor: HeartbeatMonitor | None = None
        self.rtt: float | None = None

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


async def run_session(
    spec: SessionSpec,
    control: Control,
    mailbox: Mailbox[Message],
    events: ConnectionEvents,
    opened: Callable[[], None],
) -> SessionEnd:
    """One attempt and, if it succeeds, the life of that connection.

    ``opened()`` is called once the handshake and ``on_connect`` succeeded,
    with ``control.socket`` set: the supervisor publishes CONNECTED there.
    Returns when the connection failed or a stop ended it; a cancellation
    from outside (the close outlived its bound) propagates.
    """
    config = spec.config
    socket = Socket(
        spec.target,
        max_message_size=config.max_message_size,
        queue_size=config.receive_buffer,
        on_closed=control.notify,
    )
    phase = HANDSHAKE
    try:
        async with trio.open_nursery() as nursery:
            with control.interruptible() as attempt_scope, trio.fail_after(config.connect_timeout):
                headers = await _attempt_headers(spec.headers, events)
                await socket.open(
                    nursery,
                    headers=headers,
                    ssl_context=spec.ssl_context,
                    open_stream=spec.open_stream,
                )
                del headers  # not kept alive for the connection's life
                if spec.on_connect is not None:
                    phase = ON_CONNECT
                    await spec.on_connect(Session(socket))
            stopped = attempt_scope.cancelled_caught
            del attempt_scope  # not kept alive for the connection's life
            if not stopped:
                phase = CONNECTED
                await _Live(spec, control, mailbox, events, socket).hold(nursery, opened)
            nursery.cancel_scope.cancel()
        return SessionEnd(None, phase)
    except BaseException as exc:
        cancelled, errors = split_cancelled(exc)
        if errors is not None and not isinstance(errors, Exception):
            raise  # KeyboardInterrupt and the like are not connection failures
        if control.stopping:
            # Closing: what a stream being torn down raises is expected. A
            # cancellation (the close outlived its bound) goes on up.
            if cancelled is not None:
                raise cancelled from None
            return SessionEnd(None, phase)
        if cancelled is not None or errors is None:
            raise
        return SessionEnd(describe_failure(errors), phase)
    finally:
        control.socket = None
        monitor = control.monitor
        if monitor is not None:
            if monitor.rtt is not None:
                control.rtt = monitor.rtt
            control.monitor = None
        await socket.abort()


async def _attempt_headers(source: HeadersSource, events: ConnectionEvents) -> Headers:
    if source is None:
        return []
    headers = check_headers(await source(), "headers()") if callable(source) else source
    events.add_secrets(value for _, value in headers)
    return headers


class _Live:
    """A CONNECTED session: delivery into the mailbox, the heartbeat, the end."""

    __slots__ = ("_control", "_events", "_mailbox", "_monitor", "_socket", "_spec")

    def __init__(
        self,
        spec: SessionSpec,
        control: Control,
        mailbox: Mailbox[Message],
        events: ConnectionEvents,
        socket: Socket,
    ) -> None:
        self._spec = spec
        self._control = control
        self._mailbox = mailbox
        self._events = events
        self._socket = socket
        self._monitor: HeartbeatMonitor | None = None

    async def hold(self, nursery: trio.Nursery, opened: Callable[[], None]) -> None:
        """Hold the connection until it fails (raise) or a stop is requested (return).

        On a stop the heartbeat is cancelled first, so that the closing
        handshake has a live reader to read the peer's answer.
        """
        spec, control, socket = self._spec, self._control, self._socket
        config = spec.config
        control.socket = socket
        opened()
        heartbeat_scope = None
        if spec.heartbeat is not None:
            self._monitor = control.monitor = HeartbeatMonitor(
                spec.heartbeat,
                interval=config.heartbeat_interval,
                timeout=config.heartbeat_timeout,
                max_misses=config.max_heartbeat_failures,
                on_miss=self._heartbeat_missed,
            )
            heartbeat_scope = await nursery.start(_run_heartbeat, self._monitor, socket, nursery)
        await socket.deliver_to(self._deliver)
        while not control.stopping and socket.send_error is None and not socket.closed:
            await control.wait_changed()
        if heartbeat_scope is not None:
            heartbeat_scope.cancel()
        if socket.send_error is not None:
            raise socket.send_error
        if not control.stopping:
            socket.raise_closed()
        with trio.move_on_after(config.close_timeout, shield=True):
            await socket.close_gracefully()

    def _heartbeat_missed(self, misses: int) -> None:
        config = self._spec.config
        self._events.heartbeat_missed(
            misses=misses,
            max_misses=config.max_heartbeat_failures,
            timeout=config.heartbeat_timeout,
        )

    async def _deliver(self, message: Message) -> None:
        """Put one message in the receive buffer; runs in trio-websocket's reader task.

        Heartbeat replies are consumed here. When the buffer is full the
        reader waits (backpressure, no loss) and the heartbeat counts no
        misses meanwhile; a stop request ends the wait, so that the reader can
        read the close handshake (the message is then dropped, as the session
        ends).
        """
        monitor = self._monitor
        if monitor is not None:
            monitor.message_arrived()
            heartbeat = self._spec.heartbeat
            if (
                heartbeat is not None
                and heartbeat.replies_are_messages
                and self._is_heartbeat_reply(heartbeat, message)
            ):
                monitor.reply_arrived()
                return
        try:
            self._mailbox.put_nowait(message)
            return
        except trio.WouldBlock:
            pass
        if monitor is not None:
            monitor.reader_blocked(True)
        try:
            with self._control.interruptible():
                await self._mailbox.put(message)
        finally:
            if monitor is not None:
                monitor.reader_blocked(False)

    def _is_heartbeat_reply(self, heartbeat: Heartbeat, message: Message) -> bool:
        try:
            return heartbeat.is_response(message)
        except Exception as exc:
            self._events.hook_failed(hook="heartbeat.is_response", error=exc)
            return False


async def _run_heartbeat(
    monitor: HeartbeatMonitor,
    socket: Socket,
    nursery: trio.Nursery,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The session's heartbeat, under a scope the session can cancel on a stop.

    Beats are sent from tasks in the session's ``nursery``: one still
    writing when the close starts finishes its frame first (trio-websocket
    serialises writes), and the session's end cancels them.
    """
    with trio.CancelScope() as scope:
        task_status.started(scope)
        del task_status  # it holds start()'s scaffolding: not for the session's life
        await monitor.run(socket, nursery)


def split_cancelled(exc: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """``(the trio.Cancelled part, the rest)`` of an exception or exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)
    if isinstance(exc, trio.Cancelled):
        return exc, None
    return None, exc
