"""A WebSocket server that misbehaves on command, for trio_conn's tests and yours.

:func:`open_fault_server` runs a real trio-websocket server on 127.0.0.1 (port
0) whose behaviour a test changes while it runs: echo, push, ignore pings or
application heartbeats, drop or close every connection, freeze, trickle its
bytes over a slow link, reject, hang or cut handshakes, close each connection
after a delay, stop and start again::

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
the TCP resets (``drop(reset=True)``, ``cut_handshake_next(reset=True)``),
which need a real socket. Over TCP, use the real clock.

How. The WebSocket side is trio-websocket's public API (``wrap_server_stream``,
``WebSocketRequest.accept``/``reject``, ``WebSocketConnection``). What that
API cannot do is done to the byte stream under it, as a middlebox would:
freezing, dropping, swallowing the server's pong frames, trickling its bytes
and cutting its handshake response (see ``trio_conn._faultstream``).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio
import trio.testing
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from ._faultstream import Faults, FaultStream, HandshakeCut, socket_of

__all__ = ["FaultServer", "ServerConnection", "open_fault_server"]

Message = str | bytes

#: How long a closing connection waits for the peer's part of the close handshake.
_CLOSE_TIMEOUT = 5.0
_CLOSE_AFTER_REASON = "closing after delay"
_GARBAGE = b"\x00\xffNOT HTTP\r\n\x1b[2J\r\n\r\n"


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
    #: The code of the close that ended the connection, once closed: the
    #: server's own (``close_all(4401)``, ``close_after_code``) when the server
    #: closed first, else the client's (1000 for a graceful close), or 1006 when
    #: the stream just ended. None for a handshake rejected or cut.
    close_code: int | None = None

    def header(self, name: str) -> str | None:
        """The first value of request header ``name`` (case-insensitive), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)


@dataclass(eq=False)
class _Session:
    """An accepted connection, while the server serves it."""

    ws: WebSocketConnection
    record: ServerConnection
    stream: FaultStream
    #: Holds trio-websocket's reader task and the server's close handshakes.
    nursery: trio.Nursery
    #: The code of the close frame the server sent first, if it did.
    close_code_sent: int | None = None

    def end_code(self) -> int:
        if self.close_code_sent is not None:
            # Our own code: trio-websocket's ``closed`` says 1000 for every close
            # it initiates, and later the code the peer echoed.
            return self.close_code_sent
        return self.ws.closed.code if self.ws.closed is not None else 1006


class FaultServer:
    r"""The running server. Change its attributes or call its methods at any time.

    Behaviour attributes (read at the moment they matter):

    - ``echo`` (True): send every received message back, except heartbeats.
    - ``answer_pings`` (True): answer WebSocket pings with pongs; when False,
      every pong frame the server writes is swallowed on its way out.
    - ``send_rate`` (None): bytes per second for everything the server writes,
      handshake included (None: unlimited); a large message then takes its
      time, and a pong waits behind it, as on a slow link.
    - ``is_heartbeat`` (None): a predicate recognising application heartbeats;
      a recognised message is never echoed, and is answered with
      ``heartbeat_reply(message)`` when ``answer_heartbeats`` is True.
    - ``close_after`` (None): seconds after which each accepted connection is
      dropped (``close_after_abrupt``, default) or closed with a close frame
      carrying ``close_after_code`` (1000) and ``close_after_reason``: a
      flapping peer, or one that closes with an application's code (4401).

    Counters: ``tcp_connections`` (streams accepted), ``handshakes`` (upgrade
    requests read), ``accepted``, ``rejected``, ``hung``, ``garbled``, ``cut``;
    ``connections`` holds a :class:`ServerConnection` per handshake read, in
    order.

    One line per fault::

        server.echo = False                          # swallow messages
        await server.push('{"price": 1}')            # to every client
        await server.push("x" * 2_000_000)           # oversized
        await server.push(b"\x00\x01")               # binary
        server.answer_pings = False                  # pings go unanswered
        server.send_rate = 150_000                   # a slow link: 150 kB/s
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
        server.cut_handshake_next(after=20)          # "HTTP/1.1 101 ..." cut short
        server.cut_handshake_next(reset=True)        # ... and a TCP RST
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
        self._faults = Faults()
        self._streams: set[FaultStream] = set()
        self._sessions: dict[int, _Session] = {}
        self._reject: list[tuple[int, list[tuple[bytes, bytes]], bytes]] = []
        self._cuts: list[HandshakeCut] = []
        self._hang_remaining = 0
        self._garbage_remaining = 0

        self.echo: bool = True
        self.is_heartbeat: Callable[[Message], bool] | None = None
        self.heartbeat_reply: Callable[[Message], Message] | None = None
        self.answer_heartbeats: bool = True
        self.close_after: float | None = None
        self.close_after_abrupt: bool = True
        self.close_after_code: int = 1000
        self.close_after_reason: str = _CLOSE_AFTER_REASON

        self.tcp_connections: int = 0
        self.handshakes: int = 0
        self.accepted: int = 0
        self.rejected: int = 0
        self.hung: int = 0
        self.garbled: int = 0
        self.cut: int = 0
        self.connections: list[ServerConnection] = []

    # -- byte-level faults, applied by every stream ----------------------------

    @property
    def answer_pings(self) -> bool:
        """Answer WebSocket pings; when False, outgoing pong frames are swallowed."""
        return self._faults.answer_pings

    @answer_pings.setter
    def answer_pings(self, value: bool) -> None:
        self._faults.answer_pings = value

    @property
    def send_rate(self) -> float | None:
        """Bytes per second for everything the server writes; None: unlimited."""
        return self._faults.send_rate

    @send_rate.setter
    def send_rate(self, rate: float | None) -> None:
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"send_rate must be None or a positive number, got {rate!r}")
        self._faults.send_rate = rate

    @property
    def frozen(self) -> bool:
        """Whether the server neither reads nor writes (see :meth:`freeze`)."""
        return self._faults.frozen

    @frozen.setter
    def frozen(self, value: bool) -> None:
        self._faults.frozen = value
        self._faults.changed()

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
        :raises ValueError: this connection's turn came for a
            ``cut_handshake_next(reset=True)``, which needs TCP.
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
        for session in list(self._sessions.values()):
            try:
                await _send(session, message)
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
        for session in list(self._sessions.values()):
            self._start_close(session, code, reason)
        await self._wait_ended(streams)

    def freeze(self) -> None:
        """Stop reading and writing on every connection; TCP stays open.

        Nothing is answered, not even pings, until :meth:`thaw`.
        """
        self.frozen = True

    def thaw(self) -> None:
        """Undo :meth:`freeze`: what arrived meanwhile is read and answered."""
        self.frozen = False

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

    def cut_handshake_next(self, count: int = 1, *, after: int = 20, reset: bool = False) -> None:
        """Cut the handshake response of the next ``count`` connections short.

        The server writes only the first ``after`` bytes of its response
        (``HTTP/1.1 101 ...``, or a rejection if one is pending too), then
        closes the stream; with ``reset=True`` it sends a TCP RST instead
        (TCP connections only: :meth:`open_stream` raises ValueError). An
        ``after`` past the response's end sends it whole, then closes. Hangs
        and garbage take their turn first.
        """
        if not (isinstance(after, int) and after >= 0):
            raise ValueError(f"after must be an int >= 0, got {after!r}")
        self._cuts.extend([HandshakeCut(after, reset)] * count)

    async def heal(self) -> None:
        """Undo every fault: listen again, thaw, echo, answer pings and heartbeats
        at full speed, stop flapping (``close_after`` None, and its
        ``close_after_abrupt``, ``close_after_code`` and ``close_after_reason``
        back to their defaults), and forget pending rejections, hangs, garbage
        and cuts. What recognises and answers application heartbeats
        (``is_heartbeat``, ``heartbeat_reply``) describes the application's
        protocol, not a fault: it stays."""
        self._reject.clear()
        self._cuts.clear()
        self._hang_remaining = 0
        self._garbage_remaining = 0
        self.echo = True
        self.answer_pings = True
        self.answer_heartbeats = True
        self.send_rate = None
        self.close_after = None
        self.close_after_abrupt = True
        self.close_after_code = 1000
        self.close_after_reason = _CLOSE_AFTER_REASON
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

    async def _wait_ended(self, streams: list[FaultStream]) -> None:
        while any(stream in self._streams for stream in streams):
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _next_handshake_fault(self, raw: trio.abc.Stream) -> str | HandshakeCut | None:
        """Take the pending handshake fault, if any, that this new connection gets."""
        if self._hang_remaining > 0:
            self._hang_remaining -= 1
            self.hung += 1
            return "hang"
        if self._garbage_remaining > 0:
            self._garbage_remaining -= 1
            self.garbled += 1
            return "garbage"
        if self._cuts:
            if self._cuts[0].reset and socket_of(raw) is None:
                raise ValueError("cut_handshake_next(reset=True) needs a TCP connection")
            self.cut += 1
            return self._cuts.pop(0)
        return None

    async def _serve_stream(
        self,
        raw: trio.abc.Stream,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._ssl_context is not None and isinstance(raw, trio.SocketStream):
            raw = trio.SSLStream(raw, self._ssl_context, server_side=True)  # type: ignore[arg-type]
        fault = self._next_handshake_fault(raw)
        cut = fault if isinstance(fault, HandshakeCut) else None
        stream = FaultStream(raw, self._faults, cut=cut)
        self.tcp_connections += 1
        self._streams.add(stream)
        self._notify()
        task_status.started()
        try:
            if fault == "garbage":
                await stream.read_request()
                await stream.send_all(_GARBAGE)
            if fault in ("hang", "garbage"):
                await stream.discard_until_eof()
                return
            await self._serve_websocket(stream)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed):
            pass  # the client went away, TLS failed or a fault closed the stream
        finally:
            self._streams.discard(stream)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            self._notify()

    async def _serve_websocket(self, stream: FaultStream) -> None:
        async with trio.open_nursery() as nursery:
            request = await self._read_request(nursery, stream)
            if request is None:
                nursery.cancel_scope.cancel()
                return
            record = self._record(request, stream)
            try:
                if self._reject:
                    await self._reject_with_next(request)
                    # trio-websocket would go on reading: hang up, as a server does.
                    nursery.cancel_scope.cancel()
                    return
                ws = await request.accept()
                await self._serve_session(_Session(ws, record, stream, nursery))
            finally:
                record.open = False
            # Leave the reader time to finish a close handshake, so that the peer
            # gets its answer; a peer that never answers is cut off.
            nursery.cancel_scope.deadline = trio.current_time() + _CLOSE_TIMEOUT

    async def _read_request(
        self, nursery: trio.Nursery, stream: FaultStream
    ) -> WebSocketRequest | None:
        """The client's upgrade request, or None if the stream ends before one came.

        ``wrap_server_stream`` would wait forever for a request that never
        comes (EOF, a request that is not HTTP, a fault closing the stream).
        """
        request: WebSocketRequest | None = None
        async with trio.open_nursery() as race:

            async def read() -> None:
                nonlocal request
                request = await trio_websocket.wrap_server_stream(
                    nursery,  # the reader task outlives this race
                    stream,
                    message_queue_size=64,
                    max_message_size=self._max_message_size,
                )
                race.cancel_scope.cancel()

            race.start_soon(read)
            await stream.wait_ended()
            race.cancel_scope.cancel()
        return request

    def _record(self, request: WebSocketRequest, stream: FaultStream) -> ServerConnection:
        self.handshakes += 1
        record = ServerConnection(
            id=len(self.connections),
            path=request.path,
            # From the bytes: trio-websocket's request.headers lacks those wsproto
            # handles itself (Host, Sec-WebSocket-Extensions, -Protocol).
            headers=_header_fields(stream.request_head),
        )
        self.connections.append(record)
        self._notify()
        return record

    async def _reject_with_next(self, request: WebSocketRequest) -> None:
        status, headers, body = self._reject.pop(0)
        self.rejected += 1
        # A copy: trio-websocket appends Content-Length to the list it is given.
        await request.reject(status, extra_headers=list(headers), body=body or None)

    async def _serve_session(self, session: _Session) -> None:
        session.stream.accepted = True
        self._sessions[session.record.id] = session
        self.accepted += 1
        self._notify()
        try:
            async with trio.open_nursery() as timer:
                if self.close_after is not None:
                    timer.start_soon(self._end_later, session, self.close_after)
                await self._handle_messages(session)
                timer.cancel_scope.cancel()
        finally:
            del self._sessions[session.record.id]
            session.record.close_code = session.end_code()

    async def _handle_messages(self, session: _Session) -> None:
        record = session.record
        try:
            while True:
                message = await session.ws.get_message()
                record.received.append(message)
                self._notify()
                if self.is_heartbeat is not None and self.is_heartbeat(message):
                    if self.answer_heartbeats and self.heartbeat_reply is not None:
                        await _send(session, self.heartbeat_reply(message))
                elif self.echo:
                    await _send(session, message)
        except ConnectionClosed:  # on receive or on send: the connection ended
            pass

    async def _end_later(self, session: _Session, delay: float) -> None:
        await trio.sleep(delay)
        if self.close_after_abrupt:
            await session.stream.abort()
        else:
            self._start_close(session, self.close_after_code, self.close_after_reason)

    def _start_close(self, session: _Session, code: int, reason: str | None) -> None:
        # In the connection's nursery: the close handshake ends with the connection.
        session.nursery.start_soon(self._close, session, code, reason)

    async def _close(self, session: _Session, code: int, reason: str | None) -> None:
        if session.ws.closed is None:  # else the peer closed first, with its own code
            session.close_code_sent = code
        session.stream.closing = True
        with trio.move_on_after(_CLOSE_TIMEOUT):
            await session.ws.aclose(code, reason)


def _header_fields(head: bytes) -> list[tuple[str, str]]:
    """The header fields of an HTTP head, names lower-cased, in order."""
    fields = []
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, colon, value = line.partition(":")
        if colon:
            fields.append((name.strip().lower(), value.strip()))
    return fields


async def _send(session: _Session, message: Message) -> None:
    await session.ws.send_message(message)
    session.record.sent.append(message)


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
