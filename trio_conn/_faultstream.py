"""The fault server's middlebox: the byte stream under its WebSocket connections.

trio-websocket's public API cannot leave a ping unanswered, slow its writes
down or stop half-way through a handshake response. A proxy or a slow link
between the peers can, so :class:`FaultStream` does it to the bytes and the
WebSocket connection on top never knows: it freezes (no read, no write),
aborts (FIN or RST), trickles every write at a given rate, cuts the handshake
response after some bytes and swallows outgoing pong frames.

It also keeps trio-websocket out of a trap: it answers a ping that arrives
after its own close frame, which wsproto refuses with LocalProtocolError; the
reader task dies, and the close frame may die unsent with it. Once the server
begins a close (:attr:`FaultStream.closing`), client pings are dropped on the
way in.
"""

from __future__ import annotations

import math
import socket
import struct
from collections import deque
from collections.abc import Container
from dataclasses import dataclass

import trio

#: RFC 6455 section 5.2 opcodes.
OPCODE_PING = 0x9
OPCODE_PONG = 0xA

# A trickled write goes out in pieces of about this many seconds each (at least
# one byte, at most _MAX_PIECE): fine enough for exact arrival times, coarse
# enough not to flood the scheduler.
_PIECE_SECONDS = 0.01
_MAX_PIECE = 64 * 1024


def header_size(header: bytes | bytearray) -> int | None:
    """The size of the frame header that ``header`` starts with, once known (2 bytes)."""
    if len(header) < 2:
        return None
    extended = {126: 2, 127: 8}.get(header[1] & 0x7F, 0)
    mask = 4 if header[1] & 0x80 else 0
    return 2 + extended + mask


def payload_length(header: bytes | bytearray) -> int:
    """The payload length in a complete frame header."""
    length = header[1] & 0x7F
    if length == 126:
        return int.from_bytes(header[2:4], "big")
    if length == 127:
        return int.from_bytes(header[2:10], "big")
    return length


class FrameFilter:
    """Drops chosen frames from a WebSocket frame stream (RFC 6455 section 5.2).

    Incremental: a frame may be split across :meth:`feed` calls, and one call
    may carry several frames. Masked and unmasked frames are both understood.
    """

    def __init__(self) -> None:
        self._header = bytearray()  # the current frame's header, while incomplete
        self._payload_left = 0  # payload bytes of the current frame still to come
        self._dropping = False  # the current frame is being dropped

    def feed(self, data: bytes, drop: Container[int] = ()) -> bytes:
        """Return ``data`` less the bytes of frames whose opcode is in ``drop``.

        A frame is kept or dropped whole: ``drop`` is consulted at its first byte.
        """
        kept = bytearray()
        view = memoryview(data)
        while view:
            if self._payload_left:
                size = min(self._payload_left, len(view))
                if not self._dropping:
                    kept += view[:size]
                self._payload_left -= size
                view = view[size:]
                continue
            # Headers are at most 14 bytes: byte by byte is simplest.
            byte, view = view[0], view[1:]
            if not self._header:
                self._dropping = (byte & 0x0F) in drop
            self._header.append(byte)
            if not self._dropping:
                kept.append(byte)
            if len(self._header) == header_size(self._header):
                self._payload_left = payload_length(self._header)
                self._header.clear()
        return bytes(kept)


class _HttpHead:
    """The HTTP head that starts a byte stream, found incrementally."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.complete = False

    def take(self, data: bytes) -> int:
        """Absorb the part of ``data`` that belongs to the head; return its length."""
        search_from = max(0, len(self.data) - 3)  # "\r\n\r\n" may straddle two writes
        self.data += data
        end = self.data.find(b"\r\n\r\n", search_from)
        if end < 0:
            return len(data)
        beyond = len(self.data) - (end + 4)
        del self.data[end + 4 :]
        self.complete = True
        return len(data) - beyond

    @property
    def switching(self) -> bool:
        """A complete ``101 Switching Protocols`` response: WebSocket frames follow."""
        return self.complete and self.data.startswith(b"HTTP/1.1 101")


@dataclass
class _Chunk:
    data: bytearray
    #: The opcode of the whole control frame this chunk is; None: other bytes.
    opcode: int | None = None


class _Inbound:
    """What the client sent, split into the chunks the server will read.

    A control frame is held until whole and is a chunk of its own, so that
    trio-websocket acts on it as soon as it reads it: a ping handed over
    before a close begins is answered before the close frame is made, and one
    handed over after it is dropped instead.
    """

    def __init__(self) -> None:
        self._head = _HttpHead()  # the upgrade request, passed on as it comes
        self._undecided = bytearray()  # frame bytes not yet split
        self._data_left = 0  # payload bytes of the current data frame still to come
        self._chunks: deque[_Chunk] = deque()
        self.eof = False

    @property
    def request_head(self) -> bytes:
        """The client's HTTP request head, as received (so far)."""
        return bytes(self._head.data)

    def feed(self, data: bytes) -> None:
        if not self._head.complete:
            size = self._head.take(data)
            self._push(data[:size])
            data = data[size:]
        self._undecided += data
        self._split()

    def finish(self) -> None:
        """The client's EOF: what is left of an incomplete frame goes as it is."""
        self._push(self._undecided)
        self._undecided = bytearray()
        self.eof = True

    def next_chunk(self, max_bytes: int | None, *, drop_pings: bool) -> bytes:
        """The next chunk for the server (b"" when none is ready)."""
        while self._chunks:
            chunk = self._chunks[0]
            if drop_pings and chunk.opcode == OPCODE_PING:
                self._chunks.popleft()
                continue
            if max_bytes is None or len(chunk.data) <= max_bytes:
                self._chunks.popleft()
                return bytes(chunk.data)
            # Handed over in parts (trio-websocket reads 4 KiB, more than a control
            # frame): the rest was decided on with this part, so never dropped.
            part = bytes(chunk.data[:max_bytes])
            del chunk.data[:max_bytes]  # cheap at the front of a bytearray
            chunk.opcode = None
            return part
        return b""

    def _split(self) -> None:
        while self._undecided:
            if self._data_left:
                piece = self._take(min(self._data_left, len(self._undecided)))
                self._data_left -= len(piece)
                self._push(piece)
                continue
            size = header_size(self._undecided)
            if size is None or len(self._undecided) < size:
                return  # more header to come
            opcode, length = self._undecided[0] & 0x0F, payload_length(self._undecided)
            # A control frame is at most 131 bytes; a longer one is a protocol
            # error, passed on as data for wsproto to refuse.
            if opcode & 0x8 and length <= 125:
                if len(self._undecided) < size + length:
                    return
                self._chunks.append(_Chunk(self._take(size + length), opcode))
            else:
                self._push(self._take(size))
                self._data_left = length

    def _take(self, size: int) -> bytearray:
        taken = self._undecided[:size]
        del self._undecided[:size]
        return taken

    def _push(self, data: bytes | bytearray) -> None:
        """Queue bytes other than a control frame, after the last such bytes if they
        are the last chunk."""
        if not data:
            return
        if self._chunks and self._chunks[-1].opcode is None:
            self._chunks[-1].data += data
        else:
            self._chunks.append(_Chunk(bytearray(data)))


@dataclass(frozen=True)
class HandshakeCut:
    """Write only ``after`` bytes of the handshake response, then close (or reset)."""

    after: int
    reset: bool


class Faults:
    """The byte-level faults every stream of one server obeys, changed at any time."""

    def __init__(self) -> None:
        self.frozen = False
        self.answer_pings = True
        #: Bytes per second for everything written; None: unlimited.
        self.send_rate: float | None = None
        self._changed = trio.Event()

    def changed(self) -> None:
        """Wake every stream waiting for a change (a thaw, a close)."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()


class FaultStream(trio.abc.Stream):
    """A pass-through stream that applies the server's :class:`Faults` to its bytes."""

    def __init__(
        self, inner: trio.abc.Stream, faults: Faults, *, cut: HandshakeCut | None = None
    ) -> None:
        self._inner = inner
        self._faults = faults
        self._cut = cut
        self._inbound = _Inbound()
        self._head = _HttpHead()  # the server's response
        self._frames = FrameFilter()
        self._link_free_at = -math.inf  # when the trickled link is next idle
        self._ended = trio.Event()
        self.closed = False
        #: The WebSocket handshake was accepted (set by the server).
        self.accepted = False
        #: The server has begun a close handshake: client pings are dropped.
        self.closing = False

    # -- trio.abc.Stream -----------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()  # as trio's streams do, even with bytes at hand
        while True:
            # Data that arrived while frozen is held until thawed: not read, not answered.
            await self._gate()
            if self.closed:
                raise trio.ClosedResourceError("stream aborted by the fault server")
            # No await between deciding on a ping and handing it over.
            chunk = self._inbound.next_chunk(max_bytes, drop_pings=self.closing)
            if chunk:
                return chunk
            if self._inbound.eof:
                self._ended.set()
                return b""
            try:
                data = await self._inner.receive_some(max_bytes)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._ended.set()
                raise
            if data:
                self._inbound.feed(bytes(data))
            else:
                self._inbound.finish()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            raise trio.ClosedResourceError("stream aborted by the fault server")
        body = bytes(data)
        if not self._head.complete:
            offset = len(self._head.data)
            head_size = self._head.take(body)
            await self._write_head(body[:head_size], offset)
            body = body[head_size:]
        if self._head.switching:
            # Every frame goes through the parser, to stay in step with the stream.
            drop = () if self._faults.answer_pings else (OPCODE_PONG,)
            body = self._frames.feed(body, drop)
        if body:
            await self._write(body)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self._ended.set()
            self._faults.changed()  # wake a frozen reader or writer so it sees the close
        await trio.aclose_forcefully(self._inner)

    # -- for the server --------------------------------------------------------

    async def abort(self, *, reset: bool = False) -> None:
        """Close without a WebSocket close frame; ``reset``: a TCP RST, not a FIN.

        :raises ValueError: ``reset`` on a stream that is not TCP.
        """
        if reset:
            sock = socket_of(self._inner)
            if sock is None:
                raise ValueError("drop(reset=True) needs a TCP connection")
            # Linger on, with a zero timeout: close() sends RST and discards the buffers.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.aclose()

    @property
    def request_head(self) -> bytes:
        """The client's HTTP request head, as received (so far)."""
        return self._inbound.request_head

    async def wait_ended(self) -> None:
        """Wait until the stream is closed, or the client ended or broke it."""
        await self._ended.wait()

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

    # -- internals -------------------------------------------------------------

    async def _gate(self) -> None:
        while self._faults.frozen and not self.closed:
            await self._faults.wait_changed()

    async def _write_head(self, head: bytes, offset: int) -> None:
        """Write part of the response head, which started ``offset`` bytes earlier."""
        cut = self._cut
        if cut is None:
            await self._write(head)
            return
        allowed = max(0, cut.after - offset)
        if len(head) < allowed and not self._head.complete:
            await self._write(head)  # still short of the cut
            return
        await self._write(head[:allowed])
        await self.abort(reset=cut.reset)
        raise trio.BrokenResourceError("handshake response cut by the fault server")

    async def _write(self, data: bytes) -> None:
        """Write through the freeze gate, at the configured rate."""
        view = memoryview(data)
        while view:
            rate = self._faults.send_rate
            piece = view if rate is None else view[: _piece_size(rate)]
            if rate is not None:
                await self._pace(len(piece), rate)
            await self._gate()
            if self.closed:
                raise trio.ClosedResourceError("stream aborted by the fault server")
            await self._inner.send_all(piece)
            view = view[len(piece) :]

    async def _pace(self, size: int, rate: float) -> None:
        # A link that carries one piece after another: a piece arrives once the
        # link has carried it, so timing is exact whatever the piece size.
        self._link_free_at = max(trio.current_time(), self._link_free_at) + size / rate
        await trio.sleep_until(self._link_free_at)


def _piece_size(rate: float) -> int:
    return max(1, min(_MAX_PIECE, int(rate * _PIECE_SECONDS)))


def socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The TCP socket under ``stream`` (plain or TLS), or None (in-memory)."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        return stream.socket
    return None
