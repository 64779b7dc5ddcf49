"""Everything that knows trio-websocket's connection: URL parsing, opening, I/O, closing.

The rest of the library talks to :class:`Socket`; what its exceptions mean
is ``trio_conn/_failure.py``'s.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit

import trio
import wsproto
import wsproto.events
from trio_websocket import ConnectionClosed, WebSocketConnection

#: ``async (host, port) -> trio.abc.Stream``: how a Socket gets its byte stream.
StreamOpener = Callable[[str, int], Awaitable[trio.abc.Stream]]
Message = str | bytes
#: ``async (message) -> None``: where a Socket delivers messages once told to.
MessageSink = Callable[[Message], Awaitable[None]]

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# h11's field-value rule on the Latin-1 text: visible characters and obs-text,
# single spaces or tabs between them.
_VCHAR = r"[^\x00\s\u0100-\U0010ffff]"
_HEADER_VALUE = re.compile(rf"(?:{_VCHAR}+(?:[ \t]+{_VCHAR}+)*)?", re.ASCII)


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect, parsed from a ws:// or wss:// URL."""

    host: str
    port: int
    resource: str  # path and query, as sent in the request line
    secure: bool

    @property
    def host_header(self) -> str:
        default = 443 if self.secure else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: object, shown_as: str) -> Target:
    """Parse a WebSocket URL.

    :param shown_as: how the URL appears in error messages (redacted).
    :raises TypeError: ``url`` is not a str.
    :raises ValueError: the URL is empty, not ws:// or wss://, has no host,
        contains whitespace or has an invalid port; the message says which.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    if not url:
        raise ValueError("url must not be empty")
    if any(ch.isspace() for ch in url):
        raise ValueError(f"url must not contain whitespace: {shown_as!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ValueError(f"url must start with ws:// or wss://, got {shown_as!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"url must name a host: {shown_as!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"url has an invalid port (must be 0-65535): {shown_as!r}") from None
    secure = scheme == "wss"
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return Target(host, port or (443 if secure else 80), resource, secure)


def check_headers(headers: object, source: str) -> list[tuple[str, str]]:
    """Validate request headers: a sequence of ``(name, value)`` str pairs.

    A name must be an HTTP token (RFC 9110 section 5.1); a value must be
    Latin-1 text with no NUL, no line break and no whitespace at either end
    (RFC 9110 section 5.5, as h11 enforces it). Messages never show a value,
    nor a name that is not a token (either may be a secret).

    :param source: where the headers came from, for the message.
    :raises TypeError: not a sequence of pairs of str.
    :raises ValueError: a name or a value that breaks its rule.
    """
    if isinstance(headers, str | bytes) or not isinstance(headers, Sequence):
        raise TypeError(
            f"{source} must be a list of (name, value) str pairs, got a {type(headers).__name__}"
        )
    checked = []
    for index, pair in enumerate(headers):
        if not (
            isinstance(pair, tuple)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], str)
        ):
            raise TypeError(
                f"{source}[{index}] must be a (name, value) pair of str, "
                f"got a {type(pair).__name__}"  # not the value itself: it may be a secret
            )
        name, value = pair
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(
                f"{source}[{index}] has an invalid header name ({len(name)} characters): "
                "a name must be an HTTP token (RFC 9110 section 5.1)"
            )
        if not _HEADER_VALUE.fullmatch(value):
            raise ValueError(
                f"{source}[{index}] ({name}) value must be Latin-1 text with no NUL, no line "
                "break and no whitespace at either end (RFC 9110 section 5.5)"
            )
        checked.append((name, value))
    return checked


async def open_tcp(host: str, port: int) -> trio.abc.Stream:
    """The default :data:`StreamOpener`: a TCP connection."""
    return await trio.open_tcp_stream(host, port)


class _Inbox:
    """Stands in for trio-websocket's internal send channel: its reader puts each
    message here.

    Until :meth:`Socket.deliver_to`, messages go to trio-websocket's own queue
    (read by :meth:`Socket.receive`, for ``on_connect``); after it, straight to
    the sink, from the reader task itself: no task and no queue in between.
    """

    def __init__(
        self, queue: trio.MemorySendChannel[Message], on_closed: Callable[[], None]
    ) -> None:
        self._queue = queue
        self._on_closed = on_closed
        self.sink: MessageSink | None = None
        self.closed = False

    async def send(self, message: Message) -> None:
        sink = self.sink
        if sink is None:
            await self._queue.send(message)
        else:
            await sink(message)

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self._on_closed()
        await self._queue.aclose()

    async def __aenter__(self) -> _Inbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Socket:
    """One WebSocket connection over one byte stream, owned by one session.

    The stream is opened by the manager's opener (TCP by default) and wrapped
    with trio-websocket, so the manager can always close the stream itself:
    trio-websocket's own close can return early and leave it open. The
    connection object is built here as ``wrap_client_stream`` builds it, with
    the reader's message channel replaced by an :class:`_Inbox` (trio-websocket
    0.12's ``_send_channel``, pinned below 0.13).
    """

    def __init__(
        self,
        target: Target,
        *,
        max_message_size: int,
        queue_size: int,
        on_closed: Callable[[], None],
    ) -> None:
        self._target = target
        self._on_closed = on_closed
        self._max_message_size = max_message_size
        self._queue_size = queue_size
        self._stream: trio.abc.Stream | None = None
        self._ws: WebSocketConnection | None = None
        self._inbox: _Inbox | None = None
        self._ping_counter = 0
        #: Why the application's send made this connection unusable: a
        #: SendInterrupted (cut short: the stream may hold half a frame) or
        #: what the send raised. The session ends with it.
        self.send_error: BaseException | None = None

    async def open(
        self,
        nursery: trio.Nursery,
        *,
        headers: list[tuple[str, str]],
        ssl_context: ssl.SSLContext | None,
        open_stream: StreamOpener,
    ) -> None:
        """Open the stream (TLS for wss) and do the WebSocket handshake.

        trio-websocket's reader task runs in ``nursery``; a rejection is
        raised from it (into ``nursery``), as ``ConnectionRejected``. The
        caller bounds the whole call: trio-websocket does not.
        """
        target = self._target
        stream = await open_stream(target.host, target.port)
        self._stream = stream
        if target.secure:
            context = ssl_context if ssl_context is not None else ssl.create_default_context()
            tls = trio.SSLStream(
                stream, context, server_hostname=target.host, https_compatible=True
            )
            self._stream = tls
            await tls.do_handshake()
            stream = tls
        ws = WebSocketConnection(
            stream,
            wsproto.WSConnection(wsproto.ConnectionType.CLIENT),
            host=target.host_header,
            path=target.resource,
            client_extra_headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            message_queue_size=self._queue_size,
            max_message_size=self._max_message_size,
        )
        inbox = _Inbox(ws._send_channel, self._on_closed)
        ws._send_channel = inbox  # type: ignore[assignment]
        self._ws, self._inbox = ws, inbox
        nursery.start_soon(ws._reader_task)
        await ws._open_handshake.wait()

    async def deliver_to(self, sink: MessageSink) -> None:
        """Deliver every later message to ``sink``, from trio-websocket's reader task.

        Messages already queued (received during ``on_connect`` and not read
        there) go first, in order. A sink that waits holds the reader: nothing
        more is read from the socket meanwhile (backpressure).
        """
        ws, inbox = self._open_ws, self._inbox
        assert inbox is not None
        while True:  # no await between the last empty check and the switch
            try:
                message = ws._recv_channel.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            await sink(message)
        inbox.sink = sink

    @property
    def closed(self) -> bool:
        """Whether the connection has closed (the ``on_closed`` callback has run)."""
        return self._inbox is not None and self._inbox.closed

    def raise_closed(self) -> NoReturn:
        """Raise why the connection closed.

        :raises ConnectionClosed: always, with the close code (1006 when the
            stream just ended).
        """
        raise ConnectionClosed(self._open_ws.closed)

    @property
    def _open_ws(self) -> WebSocketConnection:
        if self._ws is None:
            raise RuntimeError("socket is not open")
        return self._ws

    async def send(self, message: Message) -> None:
        """Send one message. :raises ConnectionClosed: the connection is closed."""
        await self._open_ws.send_message(message)

    async def receive(self) -> Message:
        """The next message, until :meth:`deliver_to` (``on_connect``'s receive).

        :raises ConnectionClosed: closed and drained.
        """
        return await self._open_ws.get_message()

    async def ping(self, deadline: float) -> bool:
        """Send a ping with a payload unique on this socket; wait for its pong until ``deadline``.

        Returns whether the pong arrived. Only the wait is bounded: the frame
        itself is always written whole (a send cut short corrupts the stream).
        This is trio-websocket's ``ping()`` split in two (its ``_pings`` and
        ``_send``, 0.12), so that an unanswered ping neither stays registered
        nor keeps a task waiting.

        :raises ConnectionClosed: the connection is closed.
        """
        ws = self._open_ws
        if ws.closed is not None:
            raise ConnectionClosed(ws.closed)
        self._ping_counter += 1
        payload = self._ping_counter.to_bytes(8, "big")
        answered = trio.Event()
        ws._pings[payload] = answered
        try:
            await ws._send(wsproto.events.Ping(payload=payload))
            with trio.move_on_at(deadline):
                await answered.wait()
        finally:
            ws._pings.pop(payload, None)
        return answered.is_set()

    async def close_gracefully(self) -> None:
        """Send a close frame and wait for the peer's.

        Only while trio-websocket's reader task is alive (it reads the
        answer); the caller bounds it (and shields it in cleanup paths).
        """
        if self._ws is not None:
            await self._ws.aclose(1000, "client closing")

    async def abort(self) -> None:
        """Close the byte stream at once, without a close frame. Idempotent."""
        if self._stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self._stream)
