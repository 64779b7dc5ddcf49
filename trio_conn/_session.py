"""One attempt and the life of one WebSocket connection, under its own nursery.

A session opens the byte stream (TCP, TLS, or ``open_stream``), does the
WebSocket handshake and ``on_connect`` (all within ``connect_timeout``), then
holds the connection: messages go into the mailbox, the heartbeat judges the
peer. It never changes state and never talks to the lifecycle: it *returns*
how it ended (:class:`SessionEnd`), and the supervisor decides. Its nursery::

    session nursery              (one per attempt; ends with the session)
    ├── reader task              WebSocket.run_reader: frames, pongs, limits,
    │                            every end; delivers into the mailbox
    └── heartbeat task           HeartbeatMonitor.run: beats, misses

When :func:`run_session` returns, every task of it has ended and its stream
is closed: at most one stream is open per connection.
"""

from __future__ import annotations

import inspect
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeAlias

import trio

from ._config import ConnectionConfig
from ._events import ConnectionEvents
from ._failure import describe_failure
from ._frames import Data
from ._handle import Session, SessionOf
from ._handshake import handshake
from ._heartbeat import Heartbeat, HeartbeatMonitor
from ._mailbox import Mailbox
from ._meters import Traffic
from ._policy import FailureDetails
from ._proxy import ProxySpec, open_tunnel
from ._request import StreamOpener, Target, check_headers
from ._transport import WebSocket

Headers: TypeAlias = list[tuple[str, str]]
HeadersSource: TypeAlias = Headers | Callable[[], Awaitable[Headers]] | None

HANDSHAKE = "during the handshake"
ON_CONNECT = "in on_connect"
CONNECTED = "while connected"


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
    subprotocols: tuple[str, ...]
    compression: bool
    #: The proxy every attempt goes through, or None.
    proxy: ProxySpec | None = None


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

    __slots__ = (
        "_lot",
        "_scopes",
        "monitor",
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
    mailbox: Mailbox[Data],
    events: ConnectionEvents,
    opened: Callable[[], None],
) -> SessionEnd:
    """One attempt and, if it succeeds, the life of that connection.

    ``opened()`` is called once the handshake and ``on_connect`` succeeded,
    with ``control.websocket`` set: the supervisor publishes CONNECTED there.
    Returns when the connection failed or a stop ended it; a cancellation
    from outside (the close outlived its bound) propagates.
    """
    config = spec.config
    streams: list[trio.abc.Stream] = []  # every stream opened, closed at the end
    phase = HANDSHAKE
    try:
        async with trio.open_nursery() as nursery:
            with (
                control.interruptible() as attempt,
                trio.move_on_after(config.connect_timeout) as deadline,
            ):
                headers = await _attempt_headers(spec.headers, events)
                stream = await _open(spec, streams)
                answer = await handshake(
                    stream,
                    spec.target,
                    headers=headers,
                    subprotocols=spec.subprotocols,
                    compression=spec.compression,
                )
                del headers  # not kept alive for the connection's life
                websocket = WebSocket(
                    stream,
                    answer,
                    max_message_size=config.max_message_size,
                    max_fragments=config.max_message_fragments,
                    buffer=config.receive_buffer,
                    on_change=control.notify,
                    spawn=nursery.start_soon,
                )
                del answer  # its leftover bytes are the reader's now
                if control.traffic is not None:
                    control.traffic.follow(websocket)
                control.subprotocol = websocket.subprotocol
                nursery.start_soon(websocket.run_reader)
                if spec.on_connect is not None:
                    phase = ON_CONNECT
                    await spec.on_connect(SessionOf(websocket))
                    if websocket.send_error is not None:  # cut mid-frame: never CONNECTED
                        raise websocket.send_error
            if deadline.cancelled_caught:
                # trio.TooSlowError, as fail_after raises: classified as network.
                raise trio.TooSlowError(
                    f"connect_timeout ({config.connect_timeout:g} s) passed {phase}"
                )
            stopped = attempt.cancelled_caught
            del attempt, deadline  # not kept alive for the connection's life
            if not stopped:
                phase = CONNECTED
                await _Live(spec, control, mailbox, events, websocket).hold(nursery, opened)
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
        control.websocket = None
        if control.traffic is not None:
            control.traffic.follow(None)
        monitor = control.monitor
        if monitor is not None:
            if monitor.rtt is not None:
                control.rtt = monitor.rtt
            control.monitor = None
        with trio.CancelScope(shield=True):
            for stream in reversed(streams):
                await trio.aclose_forcefully(stream)


async def _open(spec: SessionSpec, streams: list[trio.abc.Stream]) -> trio.abc.Stream:
    """Open the byte stream, TLS over it for wss://; every stream goes into ``streams``."""
    target = spec.target
    if spec.proxy is not None:
        stream = await open_tunnel(spec.proxy, target.host, target.port, spec.ssl_context)
    else:
        stream = await spec.open_stream(target.host, target.port)
    streams.append(stream)
    if target.secure:
        context = spec.ssl_context or ssl.create_default_context()
        tls = trio.SSLStream(stream, context, server_hostname=target.host, https_compatible=True)
        streams.append(tls)
        await tls.do_handshake()
        stream = tls
    return stream


async def _attempt_headers(source: HeadersSource, events: ConnectionEvents) -> Headers:
    if source is None:
        return []
    headers = check_headers(await source(), "headers()") if callable(source) else source
    if callable(source):  # a fresh value per attempt: only the last few stay registered
        events.add_secrets((value for _, value in headers), attempt=True)
    return headers


class _Live:
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


def split_cancelled(exc: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """``(the trio.Cancelled part, the rest)`` of an exception or exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)
    if isinstance(exc, trio.Cancelled):
        return exc, None
    return None, exc
