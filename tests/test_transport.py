"""The transport on its own: one WebSocket over memory streams, against a scripted peer.

The peer (``tests/scripted_peer.py``) writes frames byte for byte as the
test says (``frame()``), so each rule of
trio_conn/_transport.py is checked against exact bytes: limits, fragments,
pings, closes, protocol errors, cut and cancelled sends, liveness figures.
Virtual time throughout (``autojump_clock``).
"""

from __future__ import annotations

import tracemalloc
import zlib

import pytest
import trio
import trio.testing
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    TextMessage,
)

from tests.scripted_peer import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    client_handshake,
    close_frame,
    connected,
    frame,
    read_request,
    unconnected,
)
from trio_conn import ConnectionClosed, ConnectionRejected, SendInterrupted
from trio_conn._transport import COMPRESSED_SLICE, WebSocket


async def read_all(websocket: WebSocket, count: int) -> list[object]:
    return [await websocket.receive() for _ in range(count)]


# -- the handshake ----------------------------------------------------------------


async def test_the_handshake_carries_headers_and_chooses_a_subprotocol(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected(subprotocol="json") as link:
        websocket = link.websocket
        assert websocket.subprotocol == "json"
        assert not websocket.compressed


async def test_a_rejection_carries_status_headers_and_the_start_of_the_body(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client_stream, server_stream, server = unconnected()

    async def reject() -> None:
        await read_request(server_stream, server)
        answer = RejectConnection(status_code=503, headers=[(b"retry-after", b"7")], has_body=True)
        await server_stream.send_all(server.send(answer))
        await server_stream.send_all(server.send(RejectData(b"x" * 100_000)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reject)
        with pytest.raises(ConnectionRejected) as info:
            await client_handshake(client_stream)
    assert info.value.status_code == 503
    assert (b"retry-after", b"7") in info.value.headers
    assert info.value.body == b"x" * 65536  # the start only


@pytest.mark.parametrize("after", [0, 1, 20, 60])
async def test_a_peer_that_ends_the_stream_inside_the_101_fails_the_handshake_at_once(
    autojump_clock: trio.testing.MockClock, after: int
) -> None:
    client_stream, server_stream, server = unconnected()

    async def cut() -> None:
        await read_request(server_stream, server)
        answer = server.send(AcceptConnection())
        assert answer.startswith(b"HTTP/1.1 101")
        await server_stream.send_all(answer[:after])
        await server_stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cut)
        with pytest.raises(trio.BrokenResourceError, match="during the handshake"):
            await client_handshake(client_stream)
    assert trio.current_time() == 0.0  # at once, not at a timeout


# -- messages and limits --------------------------------------------------------------


async def test_messages_arrive_whole_in_order_and_fragments_are_assembled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as link, trio.open_nursery() as nursery:
        websocket, peer = link.websocket, link.peer
        nursery.start_soon(websocket.run_reader)
        await peer.send(
            frame(TEXT, b"one")
            + frame(BINARY, b"\x00\x01")
            + frame(TEXT, b"caf", fin=False)
            + frame(CONTINUATION, "é and".encode(), fin=False)
            + frame(PING, b"in between")  # control frames may come between fragments
            + frame(CONTINUATION, b" more", fin=True)
        )
        assert await read_all(websocket, 3) == ["one", b"\x00\x01", "café and more"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("x" * 1000, True),  # exactly the limit
        ("é" * 500, True),  # 1000 bytes in UTF-8
        ("€" * 334, False),  # 334 characters, 1002 bytes
        ("😀" * 250 + "x", False),  # 251 characters, 1001 bytes
    ],
)
async def test_max_message_size_counts_utf8_bytes(
    autojump_clock: trio.testing.MockClock, text: str, accepted: bool
) -> None:
    async with connected(max_message_size=1000) as link:
        websocket, peer = link.websocket, link.peer
        await peer.send(frame(TEXT, text.encode()))
        if accepted:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(websocket.run_reader)
                assert await websocket.receive() == text
                nursery.cancel_scope.cancel()
            return
        with pytest.raises(ConnectionClosed) as info:
            await websocket.run_reader()
        assert info.value.code == 1009


async def test_an_oversized_message_is_closed_1009_without_waiting_for_the_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected(max_message_size=1000) as link:
        websocket, peer = link.websocket, link.peer
        await peer.send(frame(TEXT, b"x" * 600, fin=False) + frame(CONTINUATION, b"x" * 600))
        with pytest.raises(ConnectionClosed) as info:
            await websocket.run_reader()  # the peer never answers the close
        assert (info.value.code, websocket.end) == (1009, info.value)
        assert link.changes  # the session was woken
        await websocket.abort()
        with trio.fail_after(1):
            events = await peer.read_events()
    (close,) = [e for e in events if isinstance(e, CloseConnection)]
    assert close.code == 1009


async def test_a_flood_of_empty_continuation_frames_is_closed_at_the_fragment_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected(max_fragments=64) as link:
        websocket, peer = link.websocket, link.peer
        flood = frame(TEXT, b"start", fin=False) + frame(CONTINUATION, b"", fin=False) * 10_000
        await peer.send(flood)
        with pytest.raises(ConnectionClosed) as info:
            await websocket.run_reader()
    assert info.value.code == 1009
    assert "64 fragments" in str(info.value)


async def test_a_compression_bomb_is_refused_before_it_inflates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """50 MiB of zeros compress to about 50 KiB; the client stops at its limit."""
    async with connected(max_message_size=1 << 20, compression=True) as link:
        websocket, peer = link.websocket, link.peer
        assert websocket.compressed
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        bomb = compressor.compress(b"\x00" * (50 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert len(bomb) < 60_000
        await peer.send(frame(BINARY, bomb[:-4], rsv1=True))  # RFC 7692: without 00 00 ff ff
        tracemalloc.start()
        try:
            with pytest.raises(ConnectionClosed) as info:
                await websocket.run_reader()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert info.value.code == 1009
    # The check runs after each slice: the message held (at most the 1 MiB limit)
    # plus what one slice inflates to (about 1,000 x COMPRESSED_SLICE), and the
    # copies wsproto makes of it; never the 50 MiB the bomb holds.
    assert peak < (1 << 20) + 6 * 1030 * COMPRESSED_SLICE


async def test_compressed_messages_are_inflated(autojump_clock: trio.testing.MockClock) -> None:
    async with connected(compression=True) as link, trio.open_nursery() as nursery:
        websocket, peer = link.websocket, link.peer
        nursery.start_soon(websocket.run_reader)
        await peer.send(peer.ws.send(TextMessage("hello " * 1000)))
        assert await websocket.receive() == "hello " * 1000
        await websocket.send("and back " * 100)
        await peer.stream.send_all(b"")  # nothing: just let the client's bytes be read
        with trio.move_on_after(1):
            await peer.read_events()
        (reply,) = [e for e in peer.received if isinstance(e, TextMessage)]
        assert reply.data == "and back " * 100
        nursery.cancel_scope.cancel()


# -- control frames and the end -----------------------------------------------------


async def test_pings_are_answered_and_pongs_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pongs: list[int] = []
    async with connected() as link, trio.open_nursery() as nursery:
        websocket, peer = link.websocket, link.peer
        websocket.on_pong = lambda: pongs.append(1)
        nursery.start_soon(websocket.run_reader)
        await peer.send(frame(PING, b"are you there") + frame(PONG, b"\x00" * 8))
        await websocket.ping()
        with trio.move_on_after(1):
            await peer.read_events()
        answers = [e for e in peer.received if isinstance(e, Pong)]
        assert [a.payload for a in answers] == [b"are you there"]
        (ping,) = [e for e in peer.received if isinstance(e, Ping)]
        assert len(ping.payload) == 8
        assert pongs == [1]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("bytes_in", "code", "reason", "answered"),
    [
        (close_frame(4401, "token expired"), 4401, "token expired", 4401),
        (close_frame(1000), 1000, None, 1000),
        (frame(CLOSE), 1005, None, 1005),  # no status code: answered with none either
        (frame(0x3, b"reserved opcode"), 1002, None, 1002),  # a protocol error, found here
        (frame(TEXT, b"\xff\xfe"), 1007, None, 1007),  # not UTF-8
    ],
)
async def test_every_close_is_noticed_at_once_and_answered(
    autojump_clock: trio.testing.MockClock,
    bytes_in: bytes,
    code: int,
    reason: str | None,
    answered: int,
) -> None:
    async with connected() as link:
        websocket, peer = link.websocket, link.peer
        await peer.send(bytes_in)
        with pytest.raises(ConnectionClosed) as info:
            await websocket.run_reader()
        assert info.value.code == code
        if reason is not None:
            assert info.value.reason == reason
        await websocket.abort()
        with trio.fail_after(1):
            events = await peer.read_events()
    (close,) = [e for e in events if isinstance(e, CloseConnection)]
    assert close.code == answered
    assert trio.current_time() == 0.0


async def test_eof_and_reset_end_the_connection_with_1006(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as link:
        websocket, peer = link.websocket, link.peer
        await peer.stream.aclose()
        with pytest.raises(ConnectionClosed) as info:
            await websocket.run_reader()
    assert info.value.code == 1006


async def test_our_close_waits_for_the_peers_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as link, trio.open_nursery() as nursery:
        websocket, peer = link.websocket, link.peer
        nursery.start_soon(websocket.run_reader)

        async def answer() -> None:
            while not any(isinstance(e, CloseConnection) for e in peer.received):
                peer.ws.receive_data(bytes(await peer.stream.receive_some(65536)))
                peer.received.extend(peer.ws.events())
            await trio.sleep(2)  # the peer takes its time
            await peer.send(close_frame(1000))

        nursery.start_soon(answer)
        await websocket.close(1000, "bye")
        assert trio.current_time() == 2.0
        assert websocket.end is None  # a clean close of our own, not a failure
    (close,) = [e for e in peer.received if isinstance(e, CloseConnection)]
    assert (close.code, close.reason) == (1000, "bye")


# -- sends ----------------------------------------------------------------------------


async def test_a_send_cancelled_before_its_first_byte_fails_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as link, trio.open_nursery() as nursery:
        websocket, peer = link.websocket, link.peer
        nursery.start_soon(websocket.run_reader)
        with trio.CancelScope() as scope:
            scope.cancel()
            await websocket.send("never")
        assert websocket.send_error is None
        await websocket.send("after")
        with trio.move_on_after(1):
            await peer.read_events()
        assert [e.data for e in peer.received if isinstance(e, TextMessage)] == ["after"]
        nursery.cancel_scope.cancel()


async def test_a_send_waiting_behind_another_fails_alone_and_the_other_completes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as link:
        websocket, peer = link.websocket, link.peer
        link.stream.delay = 1.0  # each write takes a second: a slow link
        async with trio.open_nursery() as nursery:
            nursery.start_soon(websocket.run_reader)
            nursery.start_soon(websocket.send, "L" * 200_000)  # 13 chunks: 13 s
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(2):
                await websocket.send("short")  # waits for the lock, then gives up
            assert websocket.send_error is None
            link.stream.delay = 0.0
            with trio.move_on_after(30):
                await peer.read_events()
            pieces = [e for e in peer.received if isinstance(e, TextMessage)]
            assert "".join(e.data for e in pieces) == "L" * 200_000  # "short" never went out
            assert [e.message_finished for e in pieces].count(True) == 1
            nursery.cancel_scope.cancel()


async def test_a_send_cut_mid_frame_makes_the_connection_unusable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as link:
        websocket = link.websocket
        link.stream.stall = True
        with trio.move_on_after(1):
            await websocket.send("x" * 1000)
        assert isinstance(websocket.send_error, SendInterrupted)
        assert link.changes  # the session was woken
        with pytest.raises(ConnectionClosed):
            await websocket.send("more")  # would be read as the rest of the frame
        await websocket.ping()  # a beat does nothing now


async def test_the_liveness_figures_move_inside_one_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as link, trio.open_nursery() as nursery:
        websocket, peer = link.websocket, link.peer
        nursery.start_soon(websocket.run_reader)
        big = frame(TEXT, b"y" * 100_000)
        await peer.send(big[:40_000])
        await trio.testing.wait_all_tasks_blocked()
        before = websocket.bytes_received
        await peer.send(big[40_000:80_000])
        await trio.testing.wait_all_tasks_blocked()
        assert websocket.bytes_received == before + 40_000  # the frame is not whole yet
        nursery.cancel_scope.cancel()
