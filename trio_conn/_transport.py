"""One open WebSocket connection over one byte stream, on wsproto's public API.

:class:`WebSocket` takes over after the opening handshake
(``trio_conn/_handshake.py``): it reads frames in one reader task
(:meth:`WebSocket.run_reader`), writes frames (``trio_conn/_frames.py``),
answers pings, enforces the limits and runs the closing handshake. It counts
the bytes received, even inside one frame: the heartbeat's proof that the
peer lives.

Rules of the house:

- Frames are written as ``trio_conn/_frames.py`` says: whole, generated only
  when the stream can take them, a long message in fragments with the frame
  lock released between them; a send cancelled before its first byte fails
  alone, one cut later makes the connection unusable (``send_error``).
- The reader never waits for a write lock while the connection lives: a pong
  owed while a frame is being written is written by a task of its own once
  the frame lock is free, never by the application's send (its failure is not
  the send's). Only its own close frame, once the connection is ending, waits
  for the lock, within :data:`CLOSE_FRAME_BOUND`. Only the latest
  ping is answered (RFC 6455 section 5.5.3 allows it): a ping flood holds
  nothing.
- Limits are checked as data arrives: ``max_message_size`` in bytes (UTF-8
  for text, after decompression) and ``max_fragments`` frames per message;
  a message is assembled in one growing buffer, so one trickled a byte per
  read holds about its own size. With compression, data is fed to wsproto in
  slices of :data:`COMPRESSED_SLICE` bytes, so one feed inflates to at most
  about a thousand times that before the size check runs; the bytes that
  came with the handshake's answer go the same way, and nothing is fed once
  the connection is closed.
- Every end is noticed by the reader at once (a close frame, EOF, a reset,
  a protocol error, a message over a limit) and raised as
  :class:`~trio_conn.ConnectionClosed`; why it ended is recorded before the
  reader answers a close, so an answer that fails does not hide it.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio
from wsproto.connection import ConnectionState as WireState
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

from ._assembly import Assembly, TooBig
from ._exceptions import ConnectionClosed
from ._frames import Data as Data  # the type of a message, re-exported
from ._frames import FrameWriter, acquire
from ._handle import RECEIVE_AFTER_ON_CONNECT
from ._handle import Session as Session  # re-exported: trio_conn.Session
from ._handshake import READ_SIZE, Opened
from ._mailbox import Mailbox

#: ``nursery.start_soon``: how the connection starts the task that writes owed pongs.
Spawn = Callable[[Callable[[], Awaitable[None]]], object]

#: With compression on, bytes fed to wsproto at a time (see the rules above).
COMPRESSED_SLICE = 1024
#: Longest the reader waits to write a close frame of its own (the answer to
#: the peer's, or 1009/1002) before it ends the session anyway, in seconds.
CLOSE_FRAME_BOUND = 1.0
_OPEN = WireState.OPEN
_READABLE = (WireState.OPEN, WireState.LOCAL_CLOSING)  # states wsproto parses bytes in


class MessageSink(Protocol):
    """Where the reader delivers whole messages."""

    def offer(self, message: Data) -> bool:
        """Take ``message`` without waiting; False if there is no room now."""

    async def put(self, message: Data) -> None:
        """Take ``message``, waiting for room.

        :raises trio.ClosedResourceError: the sink takes no more messages.
        """


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


class WebSocket:
    """One open WebSocket connection over one byte stream, owned by one session.

    :param stream: the byte stream (TCP, TLS, or ``open_stream``'s).
    :param opened: what the handshake returned on that stream.
    :param max_message_size: largest message accepted, in bytes (UTF-8 for
        text, after decompression); a larger one is closed with 1009.
    :param max_fragments: most frames one message may arrive in; more is
        closed with 1009.
    :param buffer: messages held for :meth:`receive` until :meth:`deliver_to`.
    :param on_change: called when the connection ends or can no longer be
        written to: wakes the session.
    :param spawn: starts a task in the session's nursery (its ``start_soon``):
        the writer of a pong owed while a frame is being written.
    """

    # Slots: thousands of idle connections per process (bench/idle_scale.py).
    __slots__ = (
        "_assembly",
        "_buffer",
        "_close_sent",
        "_done",
        "_leftover",
        "_on_change",
        "_pings",
        "_pong",
        "_pong_writer",
        "_sink",
        "_slice",
        "_spawn",
        "_stream",
        "_writer",
        "_ws",
        "bytes_received",
        "compressed",
        "end",
        "messages_received",
        "messages_sent",
        "on_pong",
        "subprotocol",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        opened: Opened,
        *,
        max_message_size: int,
        max_fragments: int,
        buffer: int,
        on_change: Callable[[], None],
        spawn: Spawn,
    ) -> None:
        self._stream = stream
        self._ws = opened.connection
        self._writer = FrameWriter(stream, opened.connection, on_change)
        self._leftover = opened.leftover  # frames that came with the 101: read first
        self._on_change = on_change
        self._spawn = spawn
        self._pong: bytes | None = None  # the payload of the latest ping not yet answered
        self._pong_writer = False  # a task of its own writes the owed pong
        self._buffer = _Buffer(buffer)
        self._sink: MessageSink = self._buffer
        self._assembly = Assembly(max_message_size, max_fragments)
        self._slice = COMPRESSED_SLICE if opened.compressed else 0  # 0: a whole read at once
        self._pings = itertools.count(1)
        self._close_sent = False
        self._done = trio.Event()  # our closing handshake finished, or the connection ended
        #: Called when a pong arrives (the heartbeat's reply).
        self.on_pong: Callable[[], None] | None = None
        #: The subprotocol the server chose, or None.
        self.subprotocol = opened.subprotocol
        #: Whether permessage-deflate was negotiated.
        self.compressed = opened.compressed
        #: Bytes received from the peer so far (handshake included).
        self.bytes_received = opened.received
        #: Whole data messages received (heartbeat replies included) and sent.
        self.messages_received = 0
        self.messages_sent = 0
        #: Why the connection ended, once it has (None after our own close).
        self.end: ConnectionClosed | None = None

    @property
    def bytes_sent(self) -> int:
        """Bytes handed to the stream so far: every frame, control frames included."""
        return self._writer.bytes_sent

    @property
    def send_error(self) -> BaseException | None:
        """Why no frame can be written any more: a frame or message cut off
        (SendInterrupted) or a broken stream (ConnectionClosed 1006); or None."""
        return self._writer.error

    @property
    def sending_message(self) -> bool:
        """Whether a message is being sent (its fragments hold the message lock)."""
        return self._writer.message_lock.locked()

    # -- reading ---------------------------------------------------------------

    async def run_reader(self) -> None:
        """Read and handle frames until the connection ends: the session's reader task.

        Returns once the closing handshake this side started is complete.

        :raises ConnectionClosed: the peer closed (its code), the stream ended
            or was reset (1006), a protocol error (1002, 1007, ...) or a
            message over a limit (1009).
        """
        stream = self._stream
        try:
            leftover, self._leftover = self._leftover, b""
            await self._feed(leftover)  # frames that came with the handshake's answer
            while not self._done.is_set():
                try:
                    data = await stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    raise self._ended(1006, "the stream was reset") from exc
                if not data:
                    self._ws.receive_data(None)  # yields CloseConnection(1006)
                    await self._handle_events()
                    continue
                self.bytes_received += len(data)
                await self._feed(data)
        except TooBig as exc:
            self._record_end(1009, str(exc))  # first: writing the close frame may fail
            await self._send_close(CloseConnection(1009, "message too big"))
            raise self._ended(1009, str(exc)) from None
        finally:
            if not self._done.is_set():  # cancelled: the session is being torn down
                self._ended(1006, "the session ended")

    async def _feed(self, data: bytes | bytearray) -> None:
        """Give ``data`` to wsproto (in slices with compression) and handle what it finds."""
        ws = self._ws
        if not self._slice:
            if data:
                ws.receive_data(data if type(data) is bytes else bytes(data))
                await self._handle_events()
            return
        with memoryview(data) as view:
            for start in range(0, len(data), self._slice):
                if ws.state not in _READABLE:  # closed: what follows the close is not read
                    return
                ws.receive_data(bytes(view[start : start + self._slice]))
                await self._handle_events()

    async def _handle_events(self) -> None:
        max_size = self._assembly.max_size
        for event in self._ws.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                data = event.data  # type: ignore[attr-defined]
                # The hot path, inline: a whole small message in one piece.
                if (
                    event.message_finished  # type: ignore[attr-defined]
                    and self._assembly.pieces is None
                    and type(data) is not bytearray
                    and len(data) * 4 <= max_size  # within the limit even in UTF-8
                ):
                    message: Data | None = data
                else:
                    message = self._assembly.add(event)  # type: ignore[arg-type]
                if message is not None:
                    self.messages_received += 1
                    if not self._sink.offer(message):
                        await self._put(message)
            elif kind is Ping:
                self._pong = event.payload  # type: ignore[attr-defined]
            elif kind is Pong:
                if self.on_pong is not None:
                    self.on_pong()
            elif kind is CloseConnection:
                await self._closed_by(event)  # type: ignore[arg-type]
                return
        if self._pong is not None:
            await self._answer_pings()

    async def _put(self, message: Data) -> None:
        """Wait for room for ``message`` in the sink, following a hand-over meanwhile."""
        while True:
            sink = self._sink
            try:
                await sink.put(message)
                return
            except trio.ClosedResourceError:
                if self._sink is sink:
                    raise
            # deliver_to() switched sinks while this waited: the messages held
            # before went first; this one follows them into the new sink.
            if self._sink.offer(message):
                return

    async def _answer_pings(self) -> None:
        """Answer the latest ping: now if no frame is being written, else from a task."""
        if self._pong_writer:
            return  # it writes the latest payload
        if self._writer.frame_lock.locked():
            self._pong_writer = True
            self._spawn(self._write_pongs)
            return
        await self._write_pongs()

    async def _write_pongs(self) -> None:
        """Write the owed pong (the latest ping's), after any frame being written."""
        writer = self._writer
        try:
            while self._pong is not None:
                await acquire(writer.frame_lock)
                try:
                    payload, self._pong = self._pong, None
                    if writer.open:
                        await writer.write_frame(Pong(payload))
                finally:
                    writer.frame_lock.release()
        except ConnectionClosed:
            pass  # the stream broke: recorded in send_error, the session ends
        finally:
            self._pong_writer = False

    async def _closed_by(self, event: CloseConnection) -> None:
        """A close frame arrived, the stream ended (1006), or wsproto found a protocol error."""
        state = self._ws.state
        code, reason = int(event.code), event.reason or None
        if state is WireState.CLOSED and self._close_sent:  # the answer to our close
            self._done.set()
            return
        self._record_end(code, reason)  # first: writing the answer may fail
        if state is WireState.REMOTE_CLOSING:  # the peer's close: answer it, then end
            await self._send_close(event.response())
        elif state is _OPEN:  # a protocol error found here (wsproto leaves the state)
            await self._send_close(CloseConnection(code, reason))
        raise self._ended(code, reason)

    async def _send_close(self, event: Event) -> None:
        """Write a close frame of the reader's own, after any frame being written
        (between two fragments is allowed), all within :data:`CLOSE_FRAME_BOUND`:
        the session ends whether the peer reads or not. A failure is not why the
        connection ended: that is recorded already."""
        writer = self._writer
        if writer.error is not None:
            return
        with trio.move_on_after(CLOSE_FRAME_BOUND):
            await acquire(writer.frame_lock)
            try:
                await writer.wait_writable()
                try:
                    data = self._ws.send(event)
                except LocalProtocolError:  # the state allows no close frame now
                    return
                self._close_sent = True
                await writer.write(data)
            except ConnectionClosed:
                pass
            finally:
                writer.frame_lock.release()

    def _record_end(self, code: int, reason: str | None) -> None:
        """Record why the connection ended; the first reason wins."""
        if self.end is None:
            self.end = ConnectionClosed(code, reason)
            self._writer.end_code = code

    def _ended(self, code: int, reason: str | None) -> ConnectionClosed:
        """Record why the connection ended (the first reason wins) and wake everyone."""
        self._record_end(code, reason)
        assert self.end is not None
        self._done.set()
        self._buffer.mailbox.close()
        self._on_change()
        return self.end

    # -- writing ---------------------------------------------------------------

    async def send(self, message: Data) -> None:
        """Send one message: str as text, bytes as binary; a long one as fragments.

        :raises ConnectionClosed: the connection has ended, is closing, or
            broke during the send.
        :raises SendInterrupted: cancelled in the middle of a frame or
            between fragments: the connection can no longer be used.
        :raises UnicodeEncodeError: text with no UTF-8 form (nothing sent).
        """
        await self._writer.send(message)
        self.messages_sent += 1

    async def ping(self) -> None:
        """Send a ping frame with a payload unique on this connection; return once written.

        Waits only for a frame being written (it goes between the fragments
        of a long message). Does nothing once the connection is closing.
        """
        writer = self._writer
        await acquire(writer.frame_lock)
        try:
            if writer.open:
                await writer.write_frame(Ping(next(self._pings).to_bytes(8, "big")))
        except ConnectionClosed:
            if writer.error is not None:
                raise  # the stream broke: the session ends with it
            # Closing meanwhile: the reader ends the session with the close's code.
        finally:
            writer.frame_lock.release()

    # -- closing ---------------------------------------------------------------

    async def close(
        self,
        code: int = 1000,
        reason: str | None = None,
        *,
        written: Callable[[], None] | None = None,
    ) -> None:
        """Start the closing handshake and wait for the peer's answer (RFC 6455 section 7).

        Waits for a message being sent to be finished first, so nothing is
        cut off. ``written()`` is called once no frame can be written any more
        (the close frame is out, or none can be): the session then stops its
        heartbeat without cutting a ping in half. The reader must be running
        (it reads the answer); the caller bounds and shields this.
        """
        writer = self._writer
        try:
            if writer.error is not None or self.end is not None:
                return
            await acquire(writer.message_lock)
            try:
                await acquire(writer.frame_lock)
                try:
                    if writer.open:
                        self._close_sent = True
                        await writer.write_frame(CloseConnection(code, reason))
                finally:
                    writer.frame_lock.release()
            finally:
                writer.message_lock.release()
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
        :raises RuntimeError: :meth:`deliver_to` has run (``on_connect`` returned).
        """
        self._check_receiving()
        try:
            return await self._buffer.mailbox.get()
        except trio.EndOfChannel:
            self._check_receiving()
            raise self.end or ConnectionClosed(1006) from None

    def _check_receiving(self) -> None:
        if self._sink is not self._buffer:
            raise RuntimeError(RECEIVE_AFTER_ON_CONNECT)

    async def deliver_to(self, sink: MessageSink) -> None:
        """Deliver every later message to ``sink``, from the reader task.

        Messages received during ``on_connect`` and not read there go first,
        in order; a message the reader was waiting to hold follows them.
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
        mailbox.close()  # receive() is over; a reader waiting for room moves to ``sink``
