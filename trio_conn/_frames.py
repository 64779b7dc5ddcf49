"""Writing frames onto one byte stream without ever leaving half of one behind.

:class:`FrameWriter` is the writing half of a WebSocket connection
(``trio_conn/_transport.py``). A frame is generated only once the stream can
take it (``wait_send_all_might_not_block``, or a zero-timeout poll() of a TCP
socket), then written whole: a cancellation before that point writes nothing
and the send fails alone; a cancellation while the frame is being written, or
between the fragments of one message, leaves the peer with an incomplete
frame or message, so the connection is marked unusable (``error``) and the
session ends. permessage-deflate's state advances when a frame is generated,
so it stays in step with what the peer reads.

A message over :data:`FRAGMENT_SIZE` goes as fragments (RFC 6455 section 5.4)
under the message lock, the frame lock released between them: a ping and a
pong owed to the peer go in between (control frames may, section 5.5).
"""

from __future__ import annotations

import select
from collections.abc import Callable, Sequence

import trio
from wsproto.connection import Connection
from wsproto.connection import ConnectionState as WireState
from wsproto.events import BytesMessage, CloseConnection, Event, TextMessage
from wsproto.utilities import LocalProtocolError

from ._exceptions import ConnectionClosed, SendInterrupted

Data = str | bytes

#: Largest frame payload sent, in bytes (before compression); a longer message
#: goes as fragments. A ping waits for at most one fragment, so a peer that
#: reads at least this much per ``heartbeat_timeout`` (2.2 kB/s with the
#: default 30 s) can answer in time; and the cost per fragment (a header of
#: up to 14 bytes, two lock operations, a writability check, a wsproto call)
#: stays under 0.1% of it. Messages up to this size go in one frame, as before.
FRAGMENT_SIZE = 65536
_CAN_POLL = hasattr(select, "poll")


class FrameWriter:
    """Frames of one connection onto its stream, in the order they are generated.

    :param stream: the byte stream.
    :param ws: wsproto's frame protocol, which generates the frames.
    :param on_unusable: called when no frame can be written any more.
    """

    __slots__ = (
        "_on_unusable",
        "_poller",
        "_stream",
        "_ws",
        "bytes_sent",
        "end_code",
        "error",
        "frame_lock",
        "message_lock",
    )

    def __init__(
        self, stream: trio.abc.Stream, ws: Connection, on_unusable: Callable[[], None]
    ) -> None:
        self._stream = stream
        self._ws = ws
        self._on_unusable = on_unusable
        # A zero-timeout poll of the TCP socket, made once: asked before each frame.
        self._poller: select.poll | None = None
        if _CAN_POLL:
            tcp = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
            if isinstance(tcp, trio.SocketStream):
                self._poller = select.poll()
                self._poller.register(tcp.socket.fileno(), select.POLLOUT)
        #: Held for a whole message, all its fragments.
        self.message_lock = trio.StrictFIFOLock()
        #: Held while one frame is generated and written.
        self.frame_lock = trio.StrictFIFOLock()
        #: Why no frame can be written any more: a frame or message cut off
        #: (SendInterrupted) or a broken stream (ConnectionClosed 1006).
        self.error: BaseException | None = None
        #: The close code the connection ended with, once it has: a write
        #: failing after that is not why it ended.
        self.end_code: int | None = None
        #: Bytes handed to the stream so far: every frame, control frames included.
        self.bytes_sent = 0

    @property
    def open(self) -> bool:
        """Whether frames can be written: the connection is open and usable."""
        return self._ws.state is WireState.OPEN and self.error is None

    async def send(self, message: Data) -> None:
        """Send one message, as fragments if it is over :data:`FRAGMENT_SIZE` bytes.

        :raises ConnectionClosed: the connection has ended, is closing, or
            broke during the send.
        :raises SendInterrupted: cancelled in the middle of a frame or
            between fragments: the connection can no longer be used.
        :raises UnicodeEncodeError: text with no UTF-8 form (nothing sent).
        """
        pieces = fragments(message)
        if len(pieces) == 1 and not self.message_lock.locked():
            # One frame, no long message under way: the frame lock alone keeps
            # it whole, and a long message that starts meanwhile queues behind
            # it for that lock (FIFO), so nothing goes between fragments.
            await self._send_piece(pieces[0], True)
            return
        await acquire(self.message_lock)
        try:
            last = len(pieces) - 1
            for index, piece in enumerate(pieces):
                try:
                    await self._send_piece(piece, index == last)
                except trio.Cancelled:
                    if index > 0:  # the peer holds an incomplete message
                        self.unusable(SendInterrupted("a send was cut off between fragments"))
                    raise
        finally:
            self.message_lock.release()

    async def _send_piece(self, piece: Data, finished: bool) -> None:
        await acquire(self.frame_lock)
        try:
            self.check_open()
            if isinstance(piece, str):
                await self.write_frame(TextMessage(piece, message_finished=finished))
            else:
                await self.write_frame(BytesMessage(piece, message_finished=finished))
        finally:
            self.frame_lock.release()

    def check_open(self) -> None:
        """:raises ConnectionClosed: no frame can be written (lost, or closing)."""
        if self.error is not None:
            raise ConnectionClosed(1006, "the connection was lost") from self.error
        if self._ws.state is not WireState.OPEN:
            raise ConnectionClosed(self.end_code or 1000, "the connection is closing")

    async def write_frame(self, event: Event) -> None:
        """Generate ``event``'s frame once the stream can take it, and write it whole.

        The caller holds the frame lock. A cancellation before the frame is
        generated writes nothing; after, the connection is unusable.

        :raises ConnectionClosed: the stream broke (the connection is
            unusable), or the connection is closing: a data or control frame
            once the connection left OPEN (checked after the wait, since the
            peer's close may come meanwhile), any frame wsproto's state does
            not allow (nothing written).
        """
        await self.wait_writable()
        if not isinstance(event, CloseConnection):
            self.check_open()  # the peer's close may have come while this waited
        try:
            data = self._ws.send(event)
        except LocalProtocolError:
            # Its message holds the event, payload and all: never shown.
            raise ConnectionClosed(self.end_code or 1000, "the connection is closing") from None
        await self.write(data)

    async def wait_writable(self) -> None:
        """Return once a write of the stream might not block; nothing is written.

        A TCP socket (under TLS or not) is asked with a zero-timeout poll()
        first: no trip through the event loop when it can take bytes now, the
        usual case (that trip would cost about half of a small send).

        :raises ConnectionClosed: the stream is broken or closed.
        """
        stream = self._stream
        try:
            poller = self._poller
            if poller is not None:
                await trio.lowlevel.checkpoint_if_cancelled()
                ready = poller.poll(0)
                # POLLOUT alone: a closed socket answers POLLNVAL (its fd may be
                # another's by now), a reset one POLLERR: trio says which below.
                if ready and ready[0][1] == select.POLLOUT:
                    return
            await stream.wait_send_all_might_not_block()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._broken() from exc

    async def write(self, data: bytes | bytearray) -> None:
        """Write ``data`` whole (the caller holds the frame lock).

        :raises ConnectionClosed: the stream broke (the connection is unusable).
        :raises trio.Cancelled: part of ``data`` may be written: unusable.
        """
        self.bytes_sent += len(data)  # counted when handed over: a failed write ends it all
        try:
            await self._stream.send_all(data)
        except trio.Cancelled:
            self.unusable(SendInterrupted("a send was cut off in the middle of its frame"))
            raise
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._broken() from exc

    def _broken(self) -> ConnectionClosed:
        error = ConnectionClosed(1006, "the stream broke during a send")
        self.unusable(error)
        return error

    def unusable(self, error: BaseException) -> None:
        """No frame can be written any more: record why, unless the connection
        ended first (that is why), and tell the connection."""
        if self.error is None and self.end_code is None:
            self.error = error
        self._on_unusable()


async def acquire(lock: trio.StrictFIFOLock) -> None:
    """Take ``lock``; a cancellation while waiting for it writes nothing."""
    if lock.locked():
        await lock.acquire()
    else:
        await trio.lowlevel.checkpoint_if_cancelled()
        lock.acquire_nowait()


def fragments(message: Data) -> Sequence[Data]:
    """``message`` in pieces of at most :data:`FRAGMENT_SIZE` bytes (UTF-8 for text).

    :raises UnicodeEncodeError: text with no UTF-8 form (checked before any
        piece is sent).
    """
    step = FRAGMENT_SIZE
    if isinstance(message, str) and not message.isascii():
        if len(message) * 4 <= FRAGMENT_SIZE:
            return (message,)  # wsproto encodes it before anything is written
        message.encode()
        step = FRAGMENT_SIZE // 4  # a character is at most 4 bytes of UTF-8
    if len(message) <= step:
        return (message,)
    return [message[start : start + step] for start in range(0, len(message), step)]
