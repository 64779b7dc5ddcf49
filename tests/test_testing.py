"""The fault server, observed from a plain trio-websocket client.

Faults whose proof is an absence (no pong, no echo) or a delay run over the
server's in-memory streams under the autojump clock, where virtual time is
exact. The TCP tests use the real clock (a real socket can be mid-flight when
an autojump fires) and wait only for things that happen at once; each is
bounded by fail_after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import trio_websocket
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from trio_conn.testing import FaultServer, open_fault_server

REAL_TIME_BOUND = 10  # seconds: a TCP test that takes longer is stuck


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


UPGRADE_REQUEST = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


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
