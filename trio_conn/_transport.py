"""One WebSocket connection over one byte stream, on wsproto's public API.

:class:`WebSocket` does the opening handshake, reads frames in one reader task
(:meth:`WebSocket.run_reader`), writes frames, answers pings, enforces the
limits and runs the closing handshake. It keeps the wire-level figures the
heartbeat judges liveness by: bytes received (even inside one frame) and
bytes of frames the stream has accepted.

Rules of the house:

- Frames are generated and written under one lock, in the order they were
  generated (permessage-deflate's state advances when a frame is generated:
  a frame that was generated is written whole, or the connection is done).
- A send cancelled before its first byte was written fails alone; one cut
  in the middle of a frame makes the connection unusable (``send_error``):
  the peer would read what follows as the rest of that frame.
- The reader never waits for the write lock: a pong it owes while another
  task writes is queued, and that task writes it right after its frame.
- Limits are checked as data arrives: ``max_message_size`` in bytes (UTF-8
  for text, after decompression) and ``max_fragments`` frames per message.
  With compression, data is fed to wsproto in slices of
  :data:`COMPRESSED_SLICE` bytes, so one feed inflates to at most about a
  thousand times that before the size check runs.
- Every end is noticed by the reader at once (a close frame, EOF, a reset,
  a protocol error, a message over a limit) and raised as
  :class:`~trio_conn.ConnectionClosed`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import trio
import wsproto
from wsproto.connection import Connection
from wsproto.connection import ConnectionState as WireState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError

from ._exceptions import ConnectionClosed, ConnectionRejected, SendInterrupted
from ._mailbox import Mailbox
from ._request import Target

Data = str | bytes

#: Bytes asked of the stream per read: 16 KiB messages arrive several per
#: read (4 KiB reads made them about six times slower).
READ_SIZE = 65536
#: With compression on, bytes fed to wsproto at a time (see the rules above).
COMPRESSED_SLICE = 1024
#: Frames longer than four of these are written in chunks of it: each chunk
#: the stream accepts shows the peer reads (Trio's TCP streams set
#: TCP_NOTSENT_LOWAT, so acceptance follows the peer's reading).
WRITE_CHUNK = 16384
#: Most of a rejection's body kept, in bytes.
MAX_REJECTION_BODY = 65536
#: Longest the reader waits to write a close frame of its own (the answer to
#: the peer's, or 1009/1002) before it ends the session anyway, in seconds.
CLOSE_FRAME_BOUND = 1.0
_OPEN = WireState.OPEN


class MessageSink(Protocol):
    """Where the reader delivers whole messages."""

    def offer(self, message: Data) -> bool:
        """Take ``message`` without waiting; False if there is no room now."""

    async def put(self, message: Data) -> None:
        """Take ``message``, waiting for room."""


class _Buffer:
    """The sink until the session takes over: messages for ``on_connect``'s receive()."""

    __slots__ = ("mailbox",)

    def __init__(self, capacity: int) -> None:
        self.mailbox: Mailbox[Data] = Mailbox(capacity)

    def offer(self, message: Data) -> bool:
        try:
            self.mailbox.put_nowait(message)
        except trio.WouldBlock:
            return False
        return True

    async def put(self, message: Data) -> None:
        await self.mailbox.put(message)


class _TooBig(Exception):
    """Internal: a message broke a limit (the reason says which)."""


class WebSocket:
    """One WebSocket connection over one byte stream, owned by one session.

    :param stream: the byte stream (TCP, TLS, or ``open_stream``'s).
    :param max_message_size: largest message accepted, in bytes (UTF-8 for
        text, after decompression); a larger one is closed with 1009.
    :param max_fragments: most frames one message may arrive in; more is
        closed with 1009.
    :param buffer: messages held for :meth:`receive` until :meth:`deliver_to`.
    :param on_change: called when the connection ends or can no longer be
        written to: wakes the session.
    """

    # Slots: thousands of idle connections per process (bench/idle_scale.py).
    __slots__ = (
        "_buffer",
        "_close_sent",
        "_done",
        "_fragments",
        "_lock",
        "_max_fragments",
        "_max_size",
        "_on_change",
        "_owed",
        "_parts",
        "_pings",
        "_sink",
        "_size",
        "_slice",
        "_stream",
        "_ws",
        "bytes_received",
        "bytes_written",
        "compressed",
        "end",
        "on_pong",
        "send_error",
        "subprotocol",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_message_size: int,
        max_fragments: int,
        buffer: int,
        on_change: Callable[[], None],
    ) -> None:
        self._stream = stream
        # The handshake's object until the 101; then only the frame protocol's
        # (WSConnection.connection), so the HTTP parser is not kept for days.
        self._ws: wsproto.WSConnection | Connection = wsproto.WSConnection(
            wsproto.ConnectionType.CLIENT
        )
        self._max_size = max_message_size
        self._max_fragments = max_fragments
        self._on_change = on_change
        self._lock = trio.StrictFIFOLock()
        self._owed: deque[bytes] | None = None  # pongs owed while another task writes
        self._buffer = _Buffer(buffer)
        self._sink: MessageSink = self._buffer
        self._parts: list[str | bytes | bytearray] = []  # the message being assembled
        self._size = 0
        self._fragments = 0
        self._slice = 0  # bytes fed to wsproto at a time; 0: a whole read
        self._pings = itertools.count(1)
        self._close_sent = False
        self._done = trio.Event()  # our closing handshake finished, or the connection ended
        #: Called when a pong arrives (the heartbeat's reply).
        self.on_pong: Callable[[], None] | None = None
        #: The subprotocol the server chose, or None.
        self.subprotocol: str | None = None
        #: Whether permessage-deflate was negotiated.
        self.compressed = False
        #: Bytes received from the peer so far (handshake included).
        self.bytes_received = 0
        #: Bytes of frames the stream has accepted so far.
        self.bytes_written = 0
        #: Why this connection can no longer be written to: a send cut in the
        #: middle of a frame (SendInterrupted) or a broken stream.
        self.send_error: BaseException | None = None
        #: Why the connection ended, once it has (None after our own close).
        self.end: ConnectionClosed | None = None

    # -- the opening handshake -----------------------------------------------

    async def handshake(
        self,
        target: Target,
        *,
        headers: Sequence[tuple[str, str]],
        subprotocols: Sequence[str],
        compression: bool,
    ) -> None:
        """Send the upgrade request and read the answer (RFC 6455 section 4).

        :raises ConnectionRejected: the server answered with another status.
        :raises trio.BrokenResourceError: the stream ended or was reset
            before the answer was complete.
        :raises wsproto.utilities.RemoteProtocolError: the answer is not a
            valid WebSocket handshake.
        """
        request = Request(
            host=target.host_header,
            target=target.resource,
            extra_headers=[(k.encode("ascii"), v.encode("latin-1")) for k, v in headers],
            subprotocols=list(subprotocols),
            extensions=[PerMessageDeflate()] if compression else [],
        )
        await self._stream.send_all(self._ws.send(request))
        rejection: ConnectionRejected | None = None
        while True:
            data = await self._stream.receive_some(READ_SIZE)
            if not data:
                raise trio.BrokenResourceError("the peer ended the stream during the handshake")
            self.bytes_received += len(data)
            handshake = self._ws
            assert isinstance(handshake, wsproto.WSConnection)
            handshake.receive_data(bytes(data))
            for event in handshake.events():
                if isinstance(event, AcceptConnection):
                    self.subprotocol = event.subprotocol
                    self.compressed = bool(event.extensions)
                    self._slice = COMPRESSED_SLICE if self.compressed else 0
                    assert handshake.connection is not None  # frames after the 101 are in it
                    self._ws = handshake.connection
                    return
                if isinstance(event, RejectConnection):
                    rejection = ConnectionRejected(event.status_code, list(event.headers), b"")
                    if not event.has_body:
                        raise rejection
                elif isinstance(event, RejectData) and rejection is not None:
                    body = rejection.body + event.data
                    rejection.body = body[:MAX_REJECTION_BODY]
                    if event.body_finished:
                        raise rejection

    # -- reading ---------------------------------------------------------------

    async def run_reader(self) -> None:
        """Read and handle frames until the connection ends: the session's reader task.

        Returns once the closing handshake this side started is complete.

        :raises ConnectionClosed: the peer closed (its code), the stream ended
            or was reset (1006), a protocol error (1002, 1007, ...) or a
            message over a limit (1009).
        """
        stream, ws = self._stream, self._ws
        try:
            await self._handle_events()  # frames that came with the handshake's answer
            while not self._done.is_set():
                try:
                    data = await stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise self._ended(1006, "the stream was reset") from exc
                if not data:
                    ws.receive_data(None)  # yields CloseConnection(1006)
                    await self._handle_events()
                    continue
                self.bytes_received += len(data)
                if not self._slice:
                    ws.receive_data(data if type(data) is bytes else bytes(data))
                    await self._handle_events()
                    continue
                with memoryview(data) as view:
                    for start in range(0, len(data), self._slice):
                        ws.receive_data(bytes(view[start : start + self._slice]))
                        await self._handle_events()
        except _TooBig as exc:
            await self._send_close(CloseConnection(1009, "message too big"))
            raise self._ended(1009, str(exc)) from None
        finally:
            if not self._done.is_set():  # cancelled: the session is being torn down
                self._ended(1006, "the session ended")

    async def _handle_events(self) -> None:
        max_size = self._max_size
        for event in self._ws.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                data = event.data  # type: ignore[attr-defined]
                # The hot path, inline: a whole small message in one piece.
                if (
                    event.message_finished  # type: ignore[attr-defined]
                    and not self._parts
                    and type(data) is not bytearray
                    and len(data) * 4 <= max_size  # within the limit even in UTF-8
                ):
                    message: Data | None = data
                else:
                    message = self._assemble(event)  # type: ignore[arg-type]
                if message is not None and not self._sink.offer(message):
                    await self._sink.put(message)
            elif kind is Ping:
                await self._answer(event)  # type: ignore[arg-type]
            elif kind is Pong:
                if self.on_pong is not None:
                    self.on_pong()
            elif kind is CloseConnection:
                await self._closed_by(event)  # type: ignore[arg-type]
                return

    def _assemble(self, event: TextMessage | BytesMessage) -> Data | None:
        """Add a piece of a message; return the message once it is whole.

        :raises _TooBig: the message broke a limit.
        """
        data = event.data
        size = len(data) if type(data) is not str or data.isascii() else len(data.encode())
        if event.message_finished and not self._parts:  # the usual case: one piece
            if size > self._max_size:
                raise _TooBig(f"a message of {size} bytes; the limit is {self._max_size}")
            return bytes(data) if isinstance(data, bytearray) else data
        self._size += size
        if event.frame_finished:
            self._fragments += 1
        if self._size > self._max_size:
            raise _TooBig(f"a message of over {self._max_size} bytes")
        if self._fragments > self._max_fragments:
            raise _TooBig(f"a message of over {self._max_fragments} fragments")
        self._parts.append(data)
        if not event.message_finished:
            return None
        parts, self._parts, self._size, self._fragments = self._parts, [], 0, 0
        if type(parts[0]) is str:
            return "".join(parts)  # type: ignore[arg-type]
        return b"".join(parts)  # type: ignore[arg-type]

    async def _answer(self, ping: Ping) -> None:
        if self._ws.state is not _OPEN or self.send_error is not None:
            return
        pong = self._ws.send(ping.response())
        if self._lock.locked():
            if self._owed is None:
                self._owed = deque()
            self._owed.append(pong)  # written by the lock's holder after its frame
            return
        self._lock.acquire_nowait()
        try:
            await self._write(pong)
        finally:
            self._lock.release()

    async def _closed_by(self, event: CloseConnection) -> None:
        """A close frame arrived, the stream ended (1006), or wsproto found a protocol error."""
        state = self._ws.state
        code, reason = int(event.code), event.reason or None
        if state is WireState.CLOSED and self._close_sent:  # the answer to our close
            self._done.set()
            return
        if state is WireState.REMOTE_CLOSING:  # the peer's close: answer it, then end
            await self._send_close(event.response())
        elif state is _OPEN:  # a protocol error found here (wsproto leaves the state)
            await self._send_close(CloseConnection(code, reason))
        raise self._ended(code, reason)

    async def _send_close(self, event: Event) -> None:
        """Write a close frame of the reader's own, if no frame is being written;
        bounded (the session ends whether the peer reads or not)."""
        if self.send_error is not None or self._lock.locked():
            return  # a frame is under way: a close frame cannot go in between
        try:
            data = self._ws.send(event)
        except LocalProtocolError:  # the state allows no close frame now
            return
        self._close_sent = True
        self._lock.acquire_nowait()
        try:
            with trio.move_on_after(CLOSE_FRAME_BOUND):
                await self._write(data)
        finally:
            self._lock.release()

    def _ended(self, code: int, reason: str | None) -> ConnectionClosed:
        """Record why the connection ended (the first reason wins) and wake everyone."""
        if self.end is None:
            self.end = ConnectionClosed(code, reason)
        self._done.set()
        self._buffer.mailbox.close()
        self._on_change()
        return self.end

    # -- writing ---------------------------------------------------------------

    async def send(self, message: Data) -> None:
        """Send one message: str as a text frame, bytes as a binary frame.

        :raises ConnectionClosed: the connection has ended, is closing, or
            broke during the send.
        :raises SendInterrupted: cut in the middle of its frame (cancelled):
            the connection can no longer be used.
        :raises UnicodeEncodeError: text with no UTF-8 form (nothing sent).
        """
        await self._acquire()
        try:
            self._check_writable()
            event = TextMessage(message) if isinstance(message, str) else BytesMessage(message)
            await self._write(self._ws.send(event))
        finally:
            self._lock.release()

    async def ping(self) -> None:
        """Send a ping frame with a payload unique on this connection; return once written.

        Does nothing once the connection is closing: a beat is of no use then.
        """
        await self._acquire()
        try:
            if self._ws.state is _OPEN and self.send_error is None:
                payload = next(self._pings).to_bytes(8, "big")
                await self._write(self._ws.send(Ping(payload)))
        finally:
            self._lock.release()

    async def _acquire(self) -> None:
        """Take the write lock; a cancellation while waiting for it writes nothing."""
        if self._lock.locked():
            await self._lock.acquire()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._lock.acquire_nowait()

    def _check_writable(self) -> None:
        if self.send_error is not None:
            raise ConnectionClosed(1006, "the connection was lost") from self.send_error
        if self._ws.state is not _OPEN:
            raise ConnectionClosed(self.end.code if self.end else 1000, "the connection is closing")

    async def _write(self, data: bytes) -> None:
        """Write ``data`` whole, then the pongs owed meanwhile (the caller holds the lock)."""
        try:
            await self._write_chunks(data)
            owed = self._owed
            while owed:
                await self._write_chunks(owed.popleft())
        except trio.Cancelled:
            self._unusable(SendInterrupted("a send was cut off in the middle of its frame"))
            raise
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            error = ConnectionClosed(1006, "the stream broke during a send")
            self._unusable(error)
            raise error from exc

    async def _write_chunks(self, data: bytes) -> None:
        stream = self._stream
        if len(data) <= 4 * WRITE_CHUNK:
            await stream.send_all(data)
            self.bytes_written += len(data)
            return
        with memoryview(data) as view:
            for start in range(0, len(data), WRITE_CHUNK):
                chunk = view[start : start + WRITE_CHUNK]
                await stream.send_all(chunk)
                self.bytes_written += len(chunk)

    def _unusable(self, error: BaseException) -> None:
        if self.send_error is None:
            self.send_error = error
        self._on_change()

    # -- closing ---------------------------------------------------------------

    async def close(
        self,
        code: int = 1000,
        reason: str | None = None,
        *,
        written: Callable[[], None] | None = None,
    ) -> None:
        """Start the closing handshake and wait for the peer's answer (RFC 6455 section 7).

        Waits for a frame being written to be finished first, so nothing is
        cut off. ``written()`` is called once no frame can be written any more
        (the close frame is out, or none can be): the session then stops its
        heartbeat without cutting a ping in half. The reader must be running
        (it reads the answer); the caller bounds and shields this.
        """
        try:
            if self.send_error is not None or self.end is not None:
                return
            await self._acquire()
            try:
                if self._ws.state is not _OPEN or self.send_error is not None:
                    return
                self._close_sent = True
                await self._write(self._ws.send(CloseConnection(code, reason)))
            finally:
                self._lock.release()
        finally:
            if written is not None:
                written()
        await self._done.wait()

    async def abort(self) -> None:
        """Close the byte stream at once, without a close frame. Idempotent."""
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._stream)

    # -- delivery ----------------------------------------------------------------

    async def receive(self) -> Data:
        """The next message, until :meth:`deliver_to` (``on_connect``'s receive).

        :raises ConnectionClosed: the connection has ended.
        """
        try:
            return await self._buffer.mailbox.get()
        except trio.EndOfChannel:
            raise self.end or ConnectionClosed(1006) from None

    async def deliver_to(self, sink: MessageSink) -> None:
        """Deliver every later message to ``sink``, from the reader task.

        Messages received during ``on_connect`` and not read there go first,
        in order.
        """
        mailbox = self._buffer.mailbox
        while True:  # no await between the last empty check and the switch
            try:
                message = mailbox.get_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if not sink.offer(message):
                await sink.put(message)
        self._sink = sink
        mailbox.close()  # receive() is over: on_connect has returned


class Session:
    """One WebSocket connection of a managed connection: what ``on_connect`` and a
    :class:`~trio_conn.Heartbeat`'s ``beat`` are given.

    Valid for one attempt and the life of that connection only.
    """

    __slots__ = ("_websocket",)

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose from those offered, or None."""
        return self._websocket.subprotocol

    async def send(self, message: Data) -> None:
        """Send a message: str as a text frame, bytes as a binary frame.

        :raises ConnectionClosed: the connection has ended, or broke during the send.
        :raises SendInterrupted: cancelled in the middle of its frame; the
            connection can no longer be used (the attempt or session fails).
        :raises UnicodeEncodeError: text with no UTF-8 form (nothing was sent).
        """
        await self._websocket.send(message)

    async def receive(self) -> Data:
        """The next message of this connection; for ``on_connect`` only (after it,
        the application receives with ``ManagedConnection.receive()``).

        :raises ConnectionClosed: the connection has ended, or ``on_connect``
            has returned.
        """
        return await self._websocket.receive()

    async def ping(self) -> None:
        """Send a WebSocket ping frame (RFC 6455 section 5.5.2); return once written.

        Its pong is the reply a :class:`~trio_conn.PingHeartbeat` waits for.
        """
        await self._websocket.ping()
