"""The transport's reads against a scripted peer: bytes that come with the 101, the
peer's close when answering it fails, bytes after the close, trickled messages,
and compressed messages with control frames between their fragments.

Virtual time; the peer is wsproto's server side writing exact bytes.
"""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import pytest
import trio
import trio.testing
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

from tests.scripted_peer import BINARY, TEXT, close_frame, connected, frame
from trio_conn import ConnectionClosed
from trio_conn._deflate import Deflate
from trio_conn._transport import COMPRESSED_SLICE


async def test_a_compression_bomb_in_the_same_write_as_the_101_is_sliced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """60 MiB of zeros, about 60 KB compressed, right behind the 101: the bytes after
    the response's head go through the 1 KiB slicing like every later byte."""
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    bomb = compressor.compress(b"\x00" * (60 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    after_101 = frame(BINARY, bomb[:-4], rsv1=True)
    async with connected(compression=True, after_101=after_101) as link:
        assert link.websocket.compressed
        tracemalloc.start()
        try:
            with pytest.raises(ConnectionClosed) as info:
                await link.websocket.run_reader()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert info.value.code == 1009
    assert peak < (1 << 20) + 6 * 1030 * COMPRESSED_SLICE  # was 180 MiB


async def test_frames_that_come_with_the_101_are_delivered_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    after_101 = frame(TEXT, b"hello") + frame(BINARY, b"\x00\x01")
    async with connected(after_101=after_101) as link, trio.open_nursery() as nursery:
        nursery.start_soon(link.websocket.run_reader)
        assert [await link.websocket.receive() for _ in range(2)] == ["hello", b"\x00\x01"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("bytes_in", "code"),
    [
        (close_frame(1013, "try again later"), 1013),  # the peer's close
        (frame(TEXT, b"x" * 2000), 1009),  # ours: a message over the limit
        (frame(0x3, b"reserved opcode"), 1002),  # ours: a protocol error
    ],
)
async def test_why_the_connection_ended_survives_a_failed_close_frame(
    autojump_clock: trio.testing.MockClock, bytes_in: bytes, code: int
) -> None:
    """The peer resets as the reader writes its close frame: the code is kept."""
    async with connected(max_message_size=1000) as link:
        link.stream.broken = True
        await link.peer.send(bytes_in)
        with pytest.raises(ConnectionClosed) as info:
            await link.websocket.run_reader()
    assert info.value.code == code
    assert link.websocket.end is info.value
    assert link.websocket.send_error is None  # the failed answer is not why


async def test_bytes_after_the_answer_to_our_close_are_not_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With compression the reader feeds 1 KiB slices: a push already under way,
    right behind the close frame in one read, must not reach wsproto (closed)."""
    async with connected(compression=True) as link:
        websocket, peer = link.websocket, link.peer

        async def answer() -> None:
            data = b""
            while b"\x88" not in data:  # the client's close frame (masked)
                data += bytes(await peer.stream.receive_some(65536))
            await peer.send(close_frame(1000) + frame(TEXT, b"y" * 2000))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(websocket.run_reader)
            nursery.start_soon(answer)
            with trio.fail_after(5):
                await websocket.close()
        assert websocket.end is None  # a clean close of our own


@pytest.mark.parametrize("text", [False, True])
async def test_a_message_trickled_a_byte_per_read_holds_about_its_size(
    autojump_clock: trio.testing.MockClock, text: bool
) -> None:
    count = 4_000
    async with connected(max_message_size=1 << 20) as link, trio.open_nursery() as nursery:
        nursery.start_soon(link.websocket.run_reader)
        await link.peer.send(bytes([0x80 | (TEXT if text else BINARY), 127]))
        await link.peer.send(struct.pack("!Q", 1 << 20))
        await trio.testing.wait_all_tasks_blocked()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(count):
                await link.peer.send(b"x")
                await trio.sleep(0.001)  # the reader reads it alone
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        nursery.cancel_scope.cancel()
    # Its size and the event loop's own few KiB; it was about 42 times the size.
    assert held < count + 16 * 1024


@pytest.mark.parametrize("control", [Ping(b"between"), Pong(b"between")], ids=["ping", "pong"])
@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
async def test_a_control_frame_between_compressed_fragments_leaves_the_message_intact(
    autojump_clock: trio.testing.MockClock, control: Ping | Pong, text: bool
) -> None:
    """RFC 6455 section 5.4 lets a control frame come between fragments; wsproto
    1.3.2's own permessage-deflate forgot the message was compressed there."""
    part = "abc" * 1000 if text else b"abc" * 1000
    async with connected(compression=True) as link, trio.open_nursery() as nursery:
        peer = link.peer.ws
        nursery.start_soon(link.websocket.run_reader)
        message = TextMessage if text else BytesMessage
        wire = peer.send(message(part, message_finished=False))  # type: ignore[arg-type]
        wire += peer.send(control)
        wire += peer.send(message(part, message_finished=True))  # type: ignore[arg-type]
        wire += peer.send(message(part))  # type: ignore[arg-type]  # the next message too
        await link.peer.send(wire)
        assert await link.websocket.receive() == part * 2
        assert await link.websocket.receive() == part
        nursery.cancel_scope.cancel()


def test_the_deflate_extension_keeps_its_state_under_names_of_its_own() -> None:
    """Receiving compressed fragments with a ping between them changes none of the
    state wsproto's PerMessageDeflate keeps (whatever its names)."""
    deflate = Deflate()
    deflate.finalize("permessage-deflate; server_max_window_bits=12")
    theirs = set(vars(PerMessageDeflate()))
    before = {name: value for name, value in vars(deflate).items() if name in theirs}
    client = Connection(ConnectionType.CLIENT, extensions=[deflate])
    compressor = zlib.compressobj(wbits=-12)
    data = compressor.compress(b"abc" * 1000) + compressor.flush(zlib.Z_SYNC_FLUSH)
    client.receive_data(
        frame(BINARY, data[:100], fin=False, rsv1=True)
        + frame(0x9, b"between")
        + frame(0x0, data[100:-4])
    )
    events = list(client.events())
    assert b"".join(e.data for e in events if isinstance(e, BytesMessage)) == b"abc" * 1000
    after = {name: value for name, value in vars(deflate).items() if name in theirs}
    assert after == before
    assert set(vars(deflate)) - theirs == {
        "negotiated",
        "inbound_window_bits",
        "inflater",
        "message_compressed",
        "control_frame",
    }
