"""The fault server, observed from a plain trio-websocket client.

Faults whose proof is an absence (no pong, no echo) or a delay run over the
server's in-memory streams under the autojump clock, where virtual time is
exact. The TCP tests use the real clock (a real socket can be mid-flight when
an autojump fires) and wait only for things that happen at once; each is
bounded by fail_after.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext

import pytest
import trio
import trio.testing
import trio_websocket
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from trio_conn._faultstream import FrameFilter
from trio_conn.testing import FaultServer, open_fault_server

REAL_TIME_BOUND = 10  # seconds: a TCP test that takes longer is stuck
VIRTUAL_BOUND = 60  # virtual seconds: an in-memory wait that takes longer is stuck


def leaves(error: BaseException) -> list[BaseException]:
    """The non-group exceptions inside (possibly nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for sub in error.exceptions for leaf in leaves(sub)]
    return [error]


def rejection(error: BaseException) -> ConnectionRejected:
    """trio-websocket raises a rejection from its reader task, inside groups."""
    (found,) = [e for e in leaves(error) if isinstance(e, ConnectionRejected)]
    return found


@asynccontextmanager
async def memory_client(
    server: FaultServer,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    max_message_size: int = 1024 * 1024,
) -> AsyncIterator[WebSocketConnection]:
    async with trio.open_nursery() as nursery:
        stream = await server.open_stream()
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            stream,  # type: ignore[arg-type]
            "127.0.0.1",
            "/feed?x=1",
            extra_headers=headers,
            max_message_size=max_message_size,
        )
        try:
            yield ws
        finally:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await ws.aclose()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def tcp_client(server: FaultServer) -> AsyncIterator[WebSocketConnection]:
    """A plain trio-websocket client over TCP that always closes its socket.

    (open_websocket_url can leave the socket open after a peer's abort; see
    DEPENDENCY-NOTES, trio-websocket item 3.)
    """
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(nursery, stream, "127.0.0.1", "/")
            try:
                yield ws
            finally:
                with trio.move_on_after(1) as scope:
                    scope.shield = True
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


# -- raw WebSocket bytes, to see what a client library would hide --------------

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
MASK = b"\x0f\xa0\x5a\xc3"

UPGRADE_REQUEST = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def frame(opcode: int, payload: bytes = b"", *, mask: bytes | None = None) -> bytes:
    """One final RFC 6455 frame; masked (as a client's must be) when ``mask`` is given."""
    mask_bit = 0x80 if mask is not None else 0
    size = len(payload)
    if size < 126:
        header = bytes([0x80 | opcode, mask_bit | size])
    elif size < 65536:
        header = bytes([0x80 | opcode, mask_bit | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, mask_bit | 127]) + size.to_bytes(8, "big")
    if mask is None:
        return header + payload
    return header + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


def parse_frame(data: bytearray) -> tuple[int, bytes, int] | None:
    """(opcode, payload, size) of the unmasked frame ``data`` starts with, if complete."""
    if len(data) < 2:
        return None
    length, offset = data[1] & 0x7F, 2
    if length >= 126:
        offset += 2 if length == 126 else 8
        if len(data) < offset:
            return None
        length = int.from_bytes(data[2:offset], "big")
    if len(data) < offset + length:
        return None
    return data[0] & 0x0F, bytes(data[offset : offset + length]), offset + length


async def next_frame(stream: trio.abc.Stream, pending: bytearray) -> tuple[int, bytes]:
    """The server's next frame as (opcode, payload); ``pending`` holds bytes read ahead."""
    with trio.fail_after(VIRTUAL_BOUND):
        while (parsed := parse_frame(pending)) is None:
            data = await stream.receive_some()
            assert data, "the stream ended inside a frame"
            pending += data
    opcode, payload, size = parsed
    del pending[:size]
    return opcode, payload


async def read_to_eof(stream: trio.abc.Stream) -> bytes:
    received = bytearray()
    with trio.fail_after(VIRTUAL_BOUND):
        while data := await stream.receive_some():
            received += data
    return bytes(received)


async def raw_handshake(server: FaultServer) -> tuple[trio.abc.Stream, bytes, bytearray]:
    """An in-memory client that upgraded by hand: (stream, response head, bytes after it)."""
    stream = await server.open_stream()
    await stream.send_all(UPGRADE_REQUEST)
    received = bytearray()
    with trio.fail_after(VIRTUAL_BOUND):
        while b"\r\n\r\n" not in received:
            data = await stream.receive_some()
            assert data, "the stream ended inside the handshake response"
            received += data
    head, _, rest = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    return stream, head + b"\r\n\r\n", bytearray(rest)


async def test_echo_and_records_over_memory(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_fault_server() as server,
        memory_client(server, headers=[(b"X-Token", b"abc123")]) as ws,
    ):
        await ws.send_message("hello")
        assert await ws.get_message() == "hello"
        await ws.send_message(b"\x00\x01")
        assert await ws.get_message() == b"\x00\x01"
        (record,) = server.connections
        assert record.path == "/feed?x=1"
        assert record.header("x-token") == "abc123"
        assert record.header("X-TOKEN") == "abc123"
        assert record.header("missing") is None
        assert record.received == ["hello", b"\x00\x01"]
        assert (server.tcp_connections, server.handshakes, server.accepted) == (1, 1, 1)
        assert server.open_connections == 1


async def test_echo_over_tcp_with_a_real_client() -> None:
    with trio.fail_after(REAL_TIME_BOUND):
        async with (
            open_fault_server() as server,
            tcp_client(server) as ws,
        ):
            assert server.url == f"ws://127.0.0.1:{server.port}/"
            await ws.send_message("over tcp")
            assert await ws.get_message() == "over tcp"
            assert server.accepted == 1


async def test_echo_can_be_turned_off(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fault_server() as server, memory_client(server) as ws:
        server.echo = False
        await ws.send_message("quiet")
        with trio.move_on_after(30) as scope:
            await ws.get_message()
        assert scope.cancelled_caught
        assert server.connections[0].received == ["quiet"]


async def test_push_reaches_every_client(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_fault_server() as server,
        memory_client(server) as first,
        memory_client(server) as second,
    ):
        await server.wait_accepted(2)
        assert await server.push("news") == 2
        assert await first.get_message() == "news"
        assert await second.get_message() == "news"
        assert await server.push(b"\xff" * 10) == 2
        assert await first.get_message() == b"\xff" * 10


async def test_oversized_push_closes_the_client_with_1009(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server, memory_client(server, max_message_size=100) as ws:
        await server.wait_accepted()
        await server.push("x" * 1000)
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason is not None
        assert info.value.reason.code == 1009


async def test_pings_answered_then_ignored(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fault_server() as server, memory_client(server) as ws:
        with trio.fail_after(1):
            await ws.ping(b"1")
        server.answer_pings = False
        with trio.move_on_after(30) as scope:
            await ws.ping(b"2")
        assert scope.cancelled_caught
        server.answer_pings = True
        with trio.fail_after(1):
            await ws.ping(b"3")  # its pong also settles the abandoned ping 2


async def test_application_heartbeats(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fault_server() as server, memory_client(server) as ws:
        server.is_heartbeat = lambda m: m == '{"op":"ping"}'
        server.heartbeat_reply = lambda m: '{"op":"pong"}'
        await ws.send_message('{"op":"ping"}')
        assert await ws.get_message() == '{"op":"pong"}'  # answered, not echoed
        server.answer_heartbeats = False
        await ws.send_message('{"op":"ping"}')
        await ws.send_message("data")
        assert await ws.get_message() == "data"  # the heartbeat got nothing back
        assert server.connections[0].received == ['{"op":"ping"}', '{"op":"ping"}', "data"]


async def test_drop_is_abrupt(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fault_server() as server, memory_client(server) as ws:
        await server.wait_accepted()
        await server.drop()
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
        assert info.value.reason is not None
        assert info.value.reason.code == 1006  # no close frame was sent
        assert server.connections[0].open is False


@pytest.mark.parametrize("reset", [False, True])
async def test_drop_over_tcp(reset: bool) -> None:
    with trio.fail_after(REAL_TIME_BOUND):
        async with (
            open_fault_server() as server,
            tcp_client(server) as ws,
        ):
            await server.wait_accepted()
            await server.drop(reset=reset)
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == 1006


async def test_reset_needs_a_tcp_connection(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fault_server() as server, memory_client(server):
        await server.wait_accepted()
        with pytest.raises(ValueError, match="needs a TCP connection"):
            await server.drop(reset=True)


async def test_close_all_sends_code_and_reason(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fault_server() as server, memory_client(server) as ws:
        await server.wait_accepted()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.close_all, 4001, "maintenance")
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
        assert info.value.reason is not None
        assert (info.value.reason.code, info.value.reason.reason) == (4001, "maintenance")


async def test_close_all_closes_a_connection_still_in_its_handshake(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Found by the chaos run: a handshake held by a freeze when close_all was called
    was accepted after the thaw and never closed, so close_all never returned."""
    async with open_fault_server() as server:
        server.freeze()
        stream = await server.open_stream()
        await stream.send_all(UPGRADE_REQUEST)
        await trio.testing.wait_all_tasks_blocked()  # the request waits at the frozen gate
        assert (server.open_connections, server.handshakes) == (1, 0)
        with trio.fail_after(1):
            await server.close_all(4000, "maintenance")
        server.thaw()
        assert server.open_connections == 0
        assert server.accepted == 0  # closed, not accepted after the thaw
        with trio.fail_after(1):
            assert await stream.receive_some() == b""  # the client sees the stream end
        await stream.aclose()


async def test_freeze_and_thaw(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fault_server() as server, memory_client(server) as ws:
        await server.wait_accepted()
        server.freeze()
        await ws.send_message("while frozen")
        with trio.move_on_after(60) as scope:
            await ws.ping(b"frozen")
        assert scope.cancelled_caught  # no pong while frozen
        with trio.move_on_after(60) as scope:
            await ws.get_message()
        assert scope.cancelled_caught  # no echo either
        assert server.connections[0].received == []  # not even read
        assert server.connections[0].open  # but the connection lives
        server.thaw()
        with trio.fail_after(1):
            assert await ws.get_message() == "while frozen"
            await ws.ping(b"thawed")


async def test_drop_while_frozen(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fault_server() as server, memory_client(server) as ws:
        await server.wait_accepted()
        server.freeze()
        await server.drop()
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
        server.thaw()
    assert server.open_connections == 0


async def test_reject_next_with_status_and_headers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server:
        server.reject_next(2, 429, [("Retry-After", "7")], body=b"slow down")
        for _ in range(2):
            with pytest.raises(BaseExceptionGroup) as info:
                async with memory_client(server):
                    pass
            rejected = rejection(info.value)
            assert rejected.status_code == 429
            assert (b"retry-after", b"7") in rejected.headers
            assert rejected.body == b"slow down"
        async with memory_client(server) as ws:
            await ws.send_message("in")
            assert await ws.get_message() == "in"
        assert (server.handshakes, server.rejected, server.accepted) == (3, 2, 1)


async def test_reject_over_tcp() -> None:
    with trio.fail_after(REAL_TIME_BOUND):
        async with open_fault_server() as server:
            server.reject_next(1, 403)
            with pytest.raises(BaseExceptionGroup) as info:
                async with tcp_client(server):
                    pass
            assert rejection(info.value).status_code == 403


async def test_hang_next_never_answers_the_upgrade(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server:
        server.hang_next()
        with trio.move_on_after(3600) as scope:
            async with memory_client(server):
                raise AssertionError("the handshake was answered")
        assert scope.cancelled_caught
        assert (server.tcp_connections, server.hung, server.handshakes) == (1, 1, 0)
        async with memory_client(server) as ws:  # only the next one hung
            await ws.send_message("ok")
            assert await ws.get_message() == "ok"


async def test_close_after_delay_makes_a_flapping_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server:
        server.close_after = 1.0
        async with memory_client(server) as ws:
            started = trio.current_time()
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert trio.current_time() - started == pytest.approx(1.0)
            assert info.value.reason is not None
            assert info.value.reason.code == 1006
        server.close_after_abrupt = False
        async with memory_client(server) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == 1000


async def test_stop_and_start_on_the_same_port() -> None:
    with trio.fail_after(REAL_TIME_BOUND):
        async with open_fault_server() as server:
            port = server.port
            async with tcp_client(server) as ws:
                await server.stop()
                assert not server.running
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
            with pytest.raises(OSError):
                async with tcp_client(server):
                    pass
            with pytest.raises(ConnectionRefusedError):
                await server.open_stream()
            await server.start()
            assert server.port == port
            async with tcp_client(server) as ws:
                await ws.send_message("back")
                assert await ws.get_message() == "back"


async def test_leaving_the_block_ends_every_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        stream = None
        async with open_fault_server() as server:
            server.hang_next()
            stream = await server.open_stream()  # hung mid-handshake
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                await server.open_stream(),  # type: ignore[arg-type]
                "127.0.0.1",
                "/",
            )
            await server.wait_accepted()
            assert server.open_connections == 2
        # The server's nursery has ended, so every one of its tasks has too.
        assert server.open_connections == 0
        with pytest.raises(ConnectionClosed):
            await ws.get_message()
        assert await stream.receive_some() == b""  # EOF on the hung stream
        nursery.cancel_scope.cancel()


async def test_only_loopback_hosts() -> None:
    with pytest.raises(ValueError, match="loopback"):
        async with open_fault_server(host="0.0.0.0"):
            pass


async def test_request_headers_are_recorded_as_received(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Host and Sec-WebSocket-Protocol too, which trio-websocket's request omits."""
    async with open_fault_server() as server, trio.open_nursery() as nursery:
        stream = await server.open_stream()
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            stream,  # type: ignore[arg-type]
            "127.0.0.1",
            "/",
            subprotocols=["chat.v2", "json"],
            extra_headers=[(b"X-Token", b"abc")],
        )
        await server.wait_accepted()
        record = server.connections[0]
        assert record.header("host") == "127.0.0.1"
        assert record.header("sec-websocket-protocol") == "chat.v2, json"
        assert record.header("x-token") == "abc"
        assert ws.subprotocol is None  # offered, not chosen: the server picks none
        await ws.aclose()
        nursery.cancel_scope.cancel()


# -- swallowed pongs -------------------------------------------------------------


async def test_a_swallowed_pong_leaves_the_frames_around_it_intact(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server:
        stream, _, pending = await raw_handshake(server)
        server.answer_pings = False
        await stream.send_all(frame(PING, b"lost", mask=MASK) + frame(TEXT, b"after", mask=MASK))
        # The server answered the ping first: the echo comes next, the pong never.
        assert await next_frame(stream, pending) == (TEXT, b"after")
        server.answer_pings = True
        await stream.send_all(frame(PING, b"found", mask=MASK))
        assert await next_frame(stream, pending) == (PONG, b"found")
        await stream.send_all(frame(CLOSE, (1000).to_bytes(2, "big"), mask=MASK))
        assert await next_frame(stream, pending) == (CLOSE, (1000).to_bytes(2, "big"))
        assert await read_to_eof(stream) == b""
        assert pending == b""
    assert server.connections[0].close_code == 1000


def frame_stream() -> list[bytes]:
    """Frames of every kind and length encoding (7, 16 and 64 bits), a few masked."""
    return [
        frame(TEXT, b"hello"),
        frame(PONG, b"p1"),
        frame(BINARY, bytes(range(256)) + b"16-bit length"),
        frame(PING, b"are you there"),
        frame(PONG),
        frame(BINARY, random.Random(1).randbytes(70_000)),  # 64-bit length
        frame(PONG, b"x" * 125),
        frame(TEXT, b"masked", mask=MASK),
        frame(PONG, b"masked pong", mask=MASK),
        frame(CLOSE, (1000).to_bytes(2, "big") + b"bye"),
    ]


def test_frame_filter_drops_exactly_the_pongs() -> None:
    frames = frame_stream()
    everything = b"".join(frames)
    expected = b"".join(f for f in frames if f[0] & 0x0F != PONG)
    assert sum(f[0] & 0x0F == PONG for f in frames) == 4

    def filtered(pieces: list[bytes], drop: tuple[int, ...] = (PONG,)) -> bytes:
        parser = FrameFilter()
        return b"".join(parser.feed(piece, drop) for piece in pieces)

    assert filtered([everything]) == expected  # several frames per write
    assert filtered([everything[i : i + 1] for i in range(len(everything))]) == expected
    assert filtered([everything], drop=()) == everything  # nothing dropped: byte for byte
    rng = random.Random(7)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(everything)), 30))
        pieces = [
            everything[a:b] for a, b in zip([0, *cuts], [*cuts, len(everything)], strict=True)
        ]
        assert filtered(pieces) == expected


def test_frame_filter_survives_a_split_at_every_byte_boundary() -> None:
    frames = [f for f in frame_stream() if len(f) < 1000]  # every split: keep it small
    everything = b"".join(frames)
    expected = b"".join(f for f in frames if f[0] & 0x0F != PONG)
    for cut in range(len(everything) + 1):
        parser = FrameFilter()
        head, tail = everything[:cut], everything[cut:]
        assert parser.feed(head, (PONG,)) + parser.feed(tail, (PONG,)) == expected, cut


async def test_a_ping_crossing_the_servers_close_frame_goes_unanswered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """trio-websocket would answer it with a pong after its own close frame, which
    wsproto refuses (LocalProtocolError): the connection died with the close frame
    unsent, and the client saw 1006 instead of the server's code."""
    async with open_fault_server() as server:
        stream, _, pending = await raw_handshake(server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.close_all, 4401, "token expired")
            code = (4401).to_bytes(2, "big")
            assert await next_frame(stream, pending) == (CLOSE, code + b"token expired")
            await stream.send_all(frame(PING, b"late", mask=MASK) + frame(CLOSE, code, mask=MASK))
            assert await read_to_eof(stream) == b""  # no pong, and the server hung up
        assert pending == b""
        assert server.connections[0].close_code == 4401
        assert server.open_connections == 0


# -- trickled bytes --------------------------------------------------------------


async def test_trickled_bytes_arrive_at_the_send_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server, memory_client(server) as ws:
        await server.wait_accepted()
        server.send_rate = 150_000
        ponged: list[float] = []

        async def ping() -> None:
            await ws.ping(b"behind the frame")
            ponged.append(trio.current_time())

        start = trio.current_time()
        with trio.fail_after(VIRTUAL_BOUND):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.push, "x" * 900_000)
                await trio.testing.wait_all_tasks_blocked()  # the frame is on its way
                nursery.start_soon(ping)
                message = await ws.get_message()
                received = trio.current_time()
        assert message == "x" * 900_000
        one_piece = 0.01  # the server writes about 10 ms of bytes at a time
        assert received - start == pytest.approx(6.0, abs=one_piece)
        (pong,) = ponged
        assert received <= pong < received + one_piece  # it waited for the frame


async def test_send_rate_must_be_positive(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fault_server() as server:
        for rate in (0, -1.0, float("inf"), float("nan")):
            with pytest.raises(ValueError, match="send_rate"):
                server.send_rate = rate
        assert server.send_rate is None


async def test_heal_undoes_the_send_rate_and_pending_cuts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server:
        server.send_rate = 1.0
        server.cut_handshake_next(2)
        await server.heal()
        assert server.send_rate is None
        start = trio.current_time()
        async with memory_client(server) as ws:
            await ws.send_message("healed")
            assert await ws.get_message() == "healed"
        assert trio.current_time() == start  # not trickled
        assert (server.cut, server.accepted) == (0, 1)


async def test_heal_undoes_every_fault_it_documents(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Echo back on, flapping off with its manner reset: a connection after heal()
    lives past the old close_after and echoes; the heartbeat setup stays."""
    async with open_fault_server() as server:
        is_heartbeat = server.is_heartbeat = lambda message: message == "beat"
        server.echo = False
        server.answer_pings = False
        server.answer_heartbeats = False
        server.close_after = 1.0
        server.close_after_abrupt = False
        server.close_after_code = 4401
        server.close_after_reason = "token expired"
        server.freeze()
        await server.heal()
        assert (server.echo, server.answer_pings, server.answer_heartbeats) == (True,) * 3
        assert (server.close_after, server.close_after_abrupt) == (None, True)
        assert (server.close_after_code, server.close_after_reason) == (
            1000,
            "closing after delay",
        )
        assert not server.frozen
        assert server.is_heartbeat is is_heartbeat  # the application's protocol, not a fault
        async with memory_client(server) as ws:
            await trio.sleep(2.0)  # past the old close_after
            await ws.send_message("healed")
            assert await ws.get_message() == "healed"
        assert server.connections[0].close_code == 1000  # closed by the client


# -- cut handshakes ----------------------------------------------------------------


@pytest.mark.parametrize("after", [0, 20, 10_000])
async def test_cut_handshake_sends_the_first_bytes_then_ends_the_stream(
    autojump_clock: trio.testing.MockClock, after: int
) -> None:
    """A raw client: trio-websocket's wrap_client_stream would wait forever (it
    waits for a handshake that an ended stream never completes)."""
    async with open_fault_server() as server:
        server.cut_handshake_next(after=after)
        stream = await server.open_stream()
        await stream.send_all(UPGRADE_REQUEST)
        cut = await read_to_eof(stream)
        await stream.aclose()
        whole_stream, whole, _ = await raw_handshake(server)  # only the next one was cut
        assert cut == whole[:after]
        assert (server.cut, server.handshakes, server.accepted) == (1, 2, 1)
        assert server.connections[0].open is False
        await whole_stream.aclose()


@pytest.mark.parametrize("reset", [False, True])
async def test_cut_handshake_over_tcp(reset: bool) -> None:
    with trio.fail_after(REAL_TIME_BOUND):
        async with open_fault_server() as server:
            server.cut_handshake_next(after=20, reset=reset)
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            received = bytearray()
            try:
                await stream.send_all(UPGRADE_REQUEST)
                with pytest.raises(trio.BrokenResourceError) if reset else nullcontext() as info:
                    while data := await stream.receive_some():
                        received += data
            finally:
                await stream.aclose()
            assert len(received) == 20
            assert received.startswith(b"HTTP/1.1 101 ")
            if info is not None:
                assert isinstance(info.value.__cause__, ConnectionResetError)


async def test_cut_handshake_with_reset_needs_a_tcp_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server:
        server.cut_handshake_next(reset=True)
        with pytest.raises(ValueError, match="needs a TCP connection"):
            await server.open_stream()
        assert (server.tcp_connections, server.cut) == (0, 0)


# -- close codes -------------------------------------------------------------------


@pytest.mark.parametrize("closer", ["close_all", "close_after"])
async def test_close_code_is_the_servers_own_when_it_closes_first(
    autojump_clock: trio.testing.MockClock, closer: str
) -> None:
    async with open_fault_server() as server:
        if closer == "close_after":
            server.close_after, server.close_after_abrupt = 0.5, False
            server.close_after_code, server.close_after_reason = 4401, "token expired"
        async with memory_client(server) as ws:
            await server.wait_accepted()
            with trio.fail_after(VIRTUAL_BOUND):
                async with trio.open_nursery() as nursery:
                    if closer == "close_all":
                        nursery.start_soon(server.close_all, 4401, "token expired")
                    with pytest.raises(ConnectionClosed) as info:
                        await ws.get_message()
            assert info.value.reason is not None
            assert (info.value.reason.code, info.value.reason.reason) == (4401, "token expired")
            await server.wait_closed()
        assert server.connections[0].close_code == 4401


async def test_close_code_is_the_clients_when_it_closes_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server:
        async with memory_client(server) as ws:
            await ws.aclose(4000, "done")
            await server.wait_closed()
        assert server.connections[0].close_code == 4000
        async with memory_client(server):
            await server.wait_accepted(2)
            await server.close_all(4401)
            await server.close_all(4002)  # nothing left to close: the code stays
        assert server.connections[1].close_code == 4401
