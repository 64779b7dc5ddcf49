"""A WebSocket server that misbehaves on command, for trio_conn's tests and yours.

:func:`open_fault_server` runs a real trio-websocket server on 127.0.0.1 (port
0) whose behaviour a test changes while it runs: echo, push, ignore pings or
application heartbeats, drop or close every connection, freeze, reject or hang
handshakes, close each connection after a delay, stop and start again::

    async with open_fault_server() as server:
        async with open_connection(server.url, open_stream=server.open_stream) as conn:
            await conn.wait_for_state(ConnectionState.CONNECTED)
            await server.drop()               # abrupt: no close frame
            ...

Virtual time. Under pytest-trio's ``autojump_clock`` the clock jumps as soon
as every task is blocked, which can happen while bytes are in flight on a real
socket; a heartbeat timeout could then fire although the pong was on its way.
:meth:`FaultServer.open_stream` connects a client through an in-memory stream
pair instead, where no I/O is ever in flight, so virtual time stays exact:
pass it as ``open_connection(..., open_stream=server.open_stream)`` (or to
``trio_websocket.wrap_client_stream``). Every fault works on both paths except
``drop(reset=True)``, which needs a real socket. Over TCP, use the real clock.

The server builds trio-websocket's ``WebSocketConnection`` itself (as
``wrap_server_stream`` does) to be able to leave pings unanswered; that relies
on trio-websocket 0.12 internals, pinned by this module's tests.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio
import trio.testing
import wsproto
import wsproto.connection
import wsproto.events
from trio_websocket import ConnectionClosed, WebSocketConnection

__all__ = ["FaultServer", "ServerConnection", "open_fault_server"]

Message = str | bytes


@dataclass(eq=False)
class ServerConnection:
    """What the server saw of one WebSocket connection (updated while it lives)."""

    id: int
    path: str
    #: Request headers as received, names lower-cased.
    headers: list[tuple[str, str]]
    #: Every message received, heartbeats included, in order.
    received: list[Message] = field(default_factory=list)
    #: Every message sent (pushed, echoed or a heartbeat reply), in order.
    sent: list[Message] = field(default_factory=list)
    #: False once the connection has ended, for whatever reason.
    open: bool = True
    #: The close code the server saw (1000 for a client's graceful close,
    #: 1006 when the stream just ended), once closed.
    close_code: int | None = None

    def header(self, name: str) -> str | None:
        """The first value of request header ``name`` (case-insensitive), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)


class FaultServer:
    """The running server. Change its attributes or call its methods at any time.

    Behaviour attributes (read at the moment they matter):

    - ``echo`` (True): send every received message back, except heartbeats.
    - ``answer_pings`` (True): answer WebSocket pings with pongs.
    - ``is_heartbeat`` (None): a predicate recognising application heartbeats;
      a recognised message is never echoed, and is answered with
      ``heartbeat_reply(message)`` when ``answer_heartbeats`` is True.
    - ``close_after`` (None): seconds after which each accepted connection is
      dropped (``close_after_abrupt``, default) or closed with a close frame
      carrying ``close_after_code`` (1000) and ``close_after_reason``: a
      flapping peer, or one that closes with an application's code (4401).

    Counters: ``tcp_connections`` (streams accepted), ``handshakes`` (upgrade
    requests read), ``accepted``, ``rejected``, ``hung``; ``connections`` holds
    a :class:`ServerConnection` per handshake read, in order.

    One line per fault::

        server.echo = False                          # swallow messages
        await server.push('{"price": 1}')            # to every client
        await server.push("x" * 2_000_000)           # oversized
        await server.push(b"\x00\x01")               # binary
        server.answer_pings = False                  # pings go unanswered
        server.is_heartbeat = lambda m: m == '{"op":"ping"}'
        server.heartbeat_reply = lambda m: '{"op":"pong"}'
        server.answer_heartbeats = False             # app heartbeats unanswered
        await server.drop()                          # abrupt, no close frame
        await server.drop(reset=True)                # TCP RST
        await server.close_all(4000, "maintenance")  # close frame
        server.freeze(); server.thaw()               # silent peer, TCP open
        server.reject_next(1, 403)                   # credentials refused
        server.reject_next(1, 429, [("Retry-After", "7")])
        server.hang_next()                           # TCP accepted, no upgrade
        server.garbage_next()                        # not HTTP at all
        server.close_after = 1.0                     # flapping
        server.close_after, server.close_after_abrupt = 0.0, False
        server.close_after_code = 4401               # "token expired", at once
        await server.stop(); await server.start()    # down, then up on the same port
        await server.heal()                          # every fault undone
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        host: str,
        port: int,
        ssl_context: object | None,
        max_message_size: int,
    ) -> None:
        self._nursery = nursery
        self._host = host
        self._port = port
        self._ssl_context = ssl_context
        self._max_message_size = max_message_size
        self._listener_scope: trio.CancelScope | None = None
        self._changed = trio.Event()
        self._streams: set[_FaultStream] = set()
        self._sockets: dict[int, tuple[WebSocketConnection, ServerConnection]] = {}
        self._reject: list[tuple[int, list[tuple[bytes, bytes]], bytes]] = []
        self._hang_remaining = 0
        self._garbage_remaining = 0

        self.echo = True
        self.answer_pings = True
        self.is_heartbeat: Callable[[Message], bool] | None = None
        self.heartbeat_reply: Callable[[Message], Message] | None = None
        self.answer_heartbeats = True
        self.close_after: float | None = None
        self.close_after_abrupt = True
        self.close_after_code = 1000
        self.close_after_reason = "closing after delay"
        self.frozen = False

        self.tcp_connections = 0
        self.handshakes = 0
        self.accepted = 0
        self.rejected = 0
        self.hung = 0
        self.garbled = 0
        self.connections: list[ServerConnection] = []

    # -- addresses and lifecycle ---------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port, fixed at the first start and kept across restarts."""
        return self._port

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT/`` (``wss://`` with an ssl_context)."""
        scheme = "wss" if self._ssl_context is not None else "ws"
        return f"{scheme}://{self._host}:{self._port}/"

    @property
    def running(self) -> bool:
        """Whether the server accepts new connections."""
        return self._listener_scope is not None

    @property
    def open_connections(self) -> int:
        """Client streams currently open (TCP or in-memory)."""
        return len(self._streams)

    async def start(self) -> None:
        """Listen again (on the same port after :meth:`stop`). No-op when running."""
        if self.running:
            return
        listeners = await trio.open_tcp_listeners(self._port, host=self._host)
        self._port = listeners[0].socket.getsockname()[1]
        scope = trio.CancelScope()
        self._listener_scope = scope

        async def serve(task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
            with scope:
                await trio.serve_listeners(
                    self._serve_stream,
                    listeners,
                    handler_nursery=self._nursery,
                    task_status=task_status,
                )

        await self._nursery.start(serve)

    async def stop(self) -> None:
        """Stop listening and drop every connection; new attempts are refused."""
        if self._listener_scope is not None:
            self._listener_scope.cancel()
            self._listener_scope = None
        await self.drop()

    async def open_stream(self, host: str = "", port: int = 0) -> trio.abc.Stream:
        """Connect a client through an in-memory stream pair (exact virtual time).

        The signature fits ``open_connection(..., open_stream=...)``; ``host``
        and ``port`` are ignored.

        :raises ConnectionRefusedError: the server is stopped.
        """
        if not self.running:
            raise ConnectionRefusedError(f"fault server on port {self._port} is stopped")
        client, server = trio.testing.memory_stream_pair()
        # start(), not start_soon(): the stream is registered, and takes its turn
        # in reject_next/hang_next, in the order the clients connected.
        await self._nursery.start(self._serve_stream, server)
        return client

    # -- faults --------------------------------------------------------------

    async def push(self, message: Message) -> int:
        """Send ``message`` to every open connection; return how many got it.

        Sends wait while the server is frozen. Use a long ``str`` for an
        oversized message, ``bytes`` for a binary one.
        """
        sent = 0
        for ws, record in list(self._sockets.values()):
            try:
                await _send(ws, record, message)
            except ConnectionClosed:
                continue
            sent += 1
        return sent

    async def drop(self, *, reset: bool = False) -> None:
        """End every connection abruptly: no close frame, the stream just closes.

        ``reset=True`` sends a TCP RST instead of a FIN (TCP connections only).
        Returns once the server has finished with every dropped connection.
        """
        streams = list(self._streams)
        for stream in streams:
            await stream.abort(reset=reset)
        await self._wait_ended(streams)

    async def close_all(self, code: int = 1000, reason: str | None = None) -> None:
        """Close every connection with a close frame carrying ``code`` and ``reason``.

        A connection whose handshake is not done yet (hung, garbled, or held
        by a freeze) has no WebSocket to send a close frame on: its stream is
        closed. Returns once the server has finished with every connection
        (a client that never answers the close frame is cut off after 5 s).
        """
        streams = list(self._streams)
        for stream in streams:
            if not stream.accepted:
                await stream.abort()
        for ws, _ in list(self._sockets.values()):
            with trio.move_on_after(5):
                await ws.aclose(code, reason)
        await self._wait_ended(streams)

    def freeze(self) -> None:
        """Stop reading and writing on every connection; TCP stays open.

        Nothing is answered, not even pings, until :meth:`thaw`.
        """
        self.frozen = True
        self._notify()

    def thaw(self) -> None:
        """Undo :meth:`freeze`: what arrived meanwhile is read and answered."""
        self.frozen = False
        self._notify()

    def reject_next(
        self,
        count: int = 1,
        status: int = 403,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        """Answer the next ``count`` handshakes with HTTP ``status`` and ``headers``.

        Example: ``server.reject_next(1, 429, [("Retry-After", "7")])``.
        """
        encoded = [(k.encode(), v.encode()) for k, v in headers]
        self._reject.extend([(status, encoded, body)] * count)

    def garbage_next(self, count: int = 1) -> None:
        """Answer the next ``count`` upgrade requests with bytes that are not HTTP.

        The stream then stays open, silent, until the client gives up.
        """
        self._garbage_remaining += count

    def hang_next(self, count: int = 1) -> None:
        """Accept TCP for the next ``count`` connections and never answer the upgrade."""
        self._hang_remaining += count

    async def heal(self) -> None:
        """Undo every fault: listen again, thaw, answer pings and heartbeats,
        stop flapping, and forget pending rejections, hangs and garbage."""
        self._reject.clear()
        self._hang_remaining = 0
        self._garbage_remaining = 0
        self.answer_pings = True
        self.answer_heartbeats = True
        self.close_after = None
        self.thaw()
        await self.start()

    async def wait_accepted(self, count: int = 1) -> None:
        """Wait until at least ``count`` handshakes have been accepted in total."""
        while self.accepted < count:
            await self._changed.wait()

    async def wait_closed(self) -> None:
        """Wait until no client stream is open (the server has finished with each)."""
        while self._streams:
            await self._changed.wait()

    async def wait_received(self, count: int = 1) -> None:
        """Wait until at least ``count`` messages have been received in total."""
        while sum(len(c.received) for c in self.connections) < count:
            await self._changed.wait()

    # -- internals -------------------------------------------------------------

    async def _wait_ended(self, streams: list[_FaultStream]) -> None:
        while any(stream in self._streams for stream in streams):
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_thawed(self, stream: _FaultStream) -> None:
        while self.frozen and not stream.closed:
            await self._changed.wait()

    async def _serve_stream(
        self,
        raw: trio.abc.Stream,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._ssl_context is not None and isinstance(raw, trio.SocketStream):
            raw = trio.SSLStream(raw, self._ssl_context, server_side=True)  # type: ignore[arg-type]
        stream = _FaultStream(raw, self)
        self.tcp_connections += 1
        self._streams.add(stream)
        hang = self._hang_remaining > 0
        garbage = not hang and self._garbage_remaining > 0
        if hang:
            self._hang_remaining -= 1
            self.hung += 1
        elif garbage:
            self._garbage_remaining -= 1
            self.garbled += 1
        self._notify()
        task_status.started()
        try:
            if garbage:
                await stream.read_request()
                await stream.send_all(b"\x00\xffNOT HTTP\r\n\x1b[2J\r\n\r\n")
            if hang or garbage:
                await stream.discard_until_eof()
                return
            async with trio.open_nursery() as nursery:
                await self._serve_websocket(nursery, stream)
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed):
            pass  # the client went away, TLS failed or a fault closed the stream
        finally:
            self._streams.discard(stream)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            self._notify()

    async def _serve_websocket(self, nursery: trio.Nursery, stream: _FaultStream) -> None:
        ws = _FaultWebSocket(
            stream,
            wsproto.WSConnection(wsproto.ConnectionType.SERVER),
            server=self,
            message_queue_size=64,
            max_message_size=self._max_message_size,
        )
        handshake_done = trio.Event()
        reader_done = trio.Event()

        async def read() -> None:
            await ws._reader_task()
            reader_done.set()
            if not handshake_done.is_set():  # EOF or garbage before the request
                nursery.cancel_scope.cancel()

        nursery.start_soon(read)
        request = await ws._get_request()
        handshake_done.set()
        self.handshakes += 1
        record = ServerConnection(
            id=len(self.connections),
            path=request.path,
            headers=[
                (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.headers
            ],
        )
        self.connections.append(record)
        self._notify()
        try:
            if self._reject:
                status, headers, body = self._reject.pop(0)
                self.rejected += 1
                await request.reject(status, extra_headers=list(headers), body=body or None)
                return
            await request.accept()
            stream.accepted = True
            self.accepted += 1
            self._sockets[record.id] = (ws, record)
            self._notify()
            if self.close_after is not None:
                nursery.start_soon(self._end_later, stream, ws, self.close_after)
            await self._handle_messages(ws, record)
            # The reader finishes a close handshake (close_all) after the last
            # message: let it, so the peer gets its answer.
            with trio.move_on_after(5):
                await reader_done.wait()
        finally:
            record.open = False
            self._sockets.pop(record.id, None)

    async def _handle_messages(self, ws: WebSocketConnection, record: ServerConnection) -> None:
        try:
            while True:
                message = await ws.get_message()
                record.received.append(message)
                self._notify()
                if self.is_heartbeat is not None and self.is_heartbeat(message):
                    if self.answer_heartbeats and self.heartbeat_reply is not None:
                        await _send(ws, record, self.heartbeat_reply(message))
                elif self.echo:
                    await _send(ws, record, message)
        except ConnectionClosed as closed:  # on receive or on send: the connection ended
            record.close_code = int(closed.reason.code) if closed.reason else None

    async def _end_later(self, stream: _FaultStream, ws: WebSocketConnection, delay: float) -> None:
        await trio.sleep(delay)
        if self.close_after_abrupt:
            await stream.abort()
        else:
            with trio.move_on_after(5):
                await ws.aclose(self.close_after_code, self.close_after_reason)


class _FaultWebSocket(WebSocketConnection):
    """trio-websocket's connection, with pings answered only when the server says so."""

    def __init__(self, *args: object, server: FaultServer, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._fault_server = server

    async def _handle_ping_event(self, event: wsproto.events.Ping) -> None:
        # trio-websocket would also answer a ping after sending its close frame,
        # which wsproto refuses with LocalProtocolError: only answer while open.
        open_ = self._wsproto.state is wsproto.connection.ConnectionState.OPEN
        if self._fault_server.answer_pings and open_:
            await super()._handle_ping_event(event)


class _FaultStream(trio.abc.Stream):
    """A pass-through stream that can be frozen (no I/O) and aborted."""

    def __init__(self, inner: trio.abc.Stream, server: FaultServer) -> None:
        self._inner = inner
        self._server = server
        self.closed = False
        #: The WebSocket handshake was accepted.
        self.accepted = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await self._server._wait_thawed(self)
        data = await self._inner.receive_some(max_bytes)
        # Data that arrived while frozen is held until thawed: not read, not answered.
        await self._server._wait_thawed(self)
        if self.closed:
            raise trio.ClosedResourceError("stream aborted by the fault server")
        return bytes(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._server._wait_thawed(self)
        if self.closed:
            raise trio.ClosedResourceError("stream aborted by the fault server")
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def read_request(self) -> None:
        """Read up to the end of an HTTP request head (or EOF), at most 64 KiB."""
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            data = await self.receive_some(65536)
            if not data:
                return
            head += data

    async def discard_until_eof(self) -> None:
        while await self.receive_some(65536):
            pass

    async def abort(self, *, reset: bool = False) -> None:
        if reset:
            sock = _socket_of(self._inner)
            if sock is None:
                raise ValueError("drop(reset=True) needs a TCP connection")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.aclose()

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self._server._notify()  # wake a frozen reader so it sees the close
        await trio.aclose_forcefully(self._inner)


async def _send(ws: WebSocketConnection, record: ServerConnection, message: Message) -> None:
    await ws.send_message(message)
    record.sent.append(message)


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        return stream.socket
    return None


@asynccontextmanager
async def open_fault_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: object | None = None,
    max_message_size: int = 16 * 1024 * 1024,
) -> AsyncIterator[FaultServer]:
    """Run a :class:`FaultServer` for the duration of the block.

    The server's tasks live in its own nursery; leaving the block closes every
    connection and ends every task.

    :param host: a loopback address to listen on.
    :param port: 0 picks a free port; restarts reuse the one picked.
    :param ssl_context: an ``ssl.SSLContext`` for ``wss://`` (server side).
    :param max_message_size: largest message the server accepts.
    :raises ValueError: ``host`` is not a loopback address.
    """
    if host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("127."):
        raise ValueError(f"open_fault_server host must be a loopback address, got {host!r}")
    if not (isinstance(max_message_size, int) and max_message_size >= 1):
        raise ValueError(f"max_message_size must be an int >= 1, got {max_message_size!r}")
    if not (isinstance(port, int) and 0 <= port < 65536):
        raise ValueError(f"port must be an int in 0..65535, got {port!r}")
    async with trio.open_nursery() as nursery:
        server = FaultServer(
            nursery,
            host=host,
            port=port,
            ssl_context=ssl_context,
            max_message_size=max_message_size,
        )
        await server.start()
        try:
            yield server
        finally:
            with trio.CancelScope(shield=True):
                await server.stop()
            nursery.cancel_scope.cancel()
