"""The managed connection on its wsproto transport: sends, closes, liveness, limits.

Each test reproduces a fault found with the transport built on trio-websocket
internals, with its right value. Virtual time (``autojump_clock``) with the
fault server's in-memory streams, except where a real clock is the point.
"""

from __future__ import annotations

import select
import time
from typing import Any

import pytest
import trio
import trio.testing

from tests.helpers import PassThroughStream, faulty_opener, start_server_process
from trio_conn import (
    Backoff,
    ConnectionConfig,
    ConnectionState,
    ErrorKind,
    NotConnected,
    RetryPolicy,
    Session,
    TransitionRecord,
    open_connection,
)
from trio_conn.testing import open_fault_server

S = ConnectionState
NO_JITTER = RetryPolicy(jitter=0.0)
FAST_BEATS = ConnectionConfig(
    heartbeat_interval=0.5, heartbeat_timeout=1.0, max_heartbeat_failures=2, retry=NO_JITTER
)


def misses(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "connection.heartbeat_missed"]


# 2. A cancelled send fails alone. -------------------------------------------------


async def test_sends_cancelled_before_their_first_byte_fail_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    async with (
        open_fault_server() as server,
        open_connection(
            server.url, open_stream=server.open_stream, on_transition=records.append
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        for _ in range(5):  # five in a row used to reach FAILED
            with trio.CancelScope() as scope:
                scope.cancel()
                await conn.send("x")
        await conn.send("still here")
        assert await conn.receive() == "still here"
    assert [r.to_state for r in records] == [S.CONNECTING, S.CONNECTED, S.CLOSED]
    assert server.connections[0].received == ["still here"]


async def test_a_send_that_times_out_behind_a_large_one_does_not_take_it_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server:
        server.echo = False
        open_stream, streams = faulty_opener(server)
        async with open_connection(server.url, open_stream=open_stream, config=FAST_BEATS) as conn:
            await conn.wait_for_state(S.CONNECTED)
            streams[0].delay = 0.1  # a slow link: 2 MB takes about 13 s
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.send, "L" * 2_000_000)
                await trio.sleep(1)
                with trio.move_on_after(1) as scope:
                    await conn.send("impatient")
                assert scope.cancelled_caught
            streams[0].delay = 0.0
            await conn.send("after")
            await server.wait_received(2)
            assert conn.state is S.CONNECTED
    assert server.connections[0].received == ["L" * 2_000_000, "after"]
    assert server.accepted == 1  # no reconnect: a slow link is not a dead peer


async def test_a_send_cut_mid_frame_in_on_connect_never_becomes_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server:
        open_stream, streams = faulty_opener(server)

        async def on_connect(session: Session) -> None:
            if len(streams) == 1:
                streams[0].stall = True
                with trio.move_on_after(1):
                    await session.send("hello " * 200)  # half of it is on the wire

        async with open_connection(
            server.url,
            open_stream=open_stream,
            on_connect=on_connect,
            on_transition=records.append,
            config=ConnectionConfig(retry=NO_JITTER),
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
    assert records[1].reason == "other: SendInterrupted in on_connect"
    assert (records[1].from_state, records[1].to_state) == (S.CONNECTING, S.RECONNECTING)
    assert server.connections[0].received == []  # the peer never read a corrupt frame


# 3. Closing right after CONNECTED is fast. -------------------------------------------


async def test_disconnect_right_after_connected_takes_no_time_with_pings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_fault_server() as server,
        open_connection(server.url, open_stream=server.open_stream) as conn,
    ):
        started = trio.current_time()
        for _ in range(200):
            await conn.wait_for_state(S.CONNECTED)
            await conn.disconnect()
            conn.connect()
        await conn.wait_for_state(S.CONNECTED)
        assert trio.current_time() == started  # used to wait close_timeout half the time
    assert all(c.close_code == 1000 for c in server.connections[:200])  # each a clean close


# 4. A disconnect never drops a message from the middle. -----------------------------


async def test_a_disconnect_with_a_full_buffer_loses_a_tail_never_the_middle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ConnectionConfig(receive_buffer=8, retry=NO_JITTER)
    received: list[str | bytes] = []
    async with open_fault_server() as server:
        server.echo = False
        async with open_connection(
            server.url, open_stream=server.open_stream, config=config
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)

            async def slow_reader() -> None:
                async for message in conn:
                    received.append(message)
                    await trio.sleep(0.01)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_reader)
                for index in range(200):
                    await server.push(f"{index}")
                await trio.sleep(0.2)
                await conn.disconnect()
                await trio.sleep(5)
                nursery.cancel_scope.cancel()
    numbers = [int(m) for m in received]
    assert numbers == list(range(len(numbers)))  # a prefix: no gap
    assert len(numbers) >= 8


# 5. Limits in bytes. --------------------------------------------------------------


async def test_max_message_size_is_bytes_of_utf8(autojump_clock: trio.testing.MockClock) -> None:
    records: list[TransitionRecord] = []
    config = ConnectionConfig(max_message_size=1000, retry=NO_JITTER)
    async with open_fault_server() as server:
        server.echo = False
        async with open_connection(
            server.url,
            open_stream=server.open_stream,
            config=config,
            on_transition=records.append,
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            await server.push("é" * 500)  # 1000 bytes: at the limit
            assert await conn.receive() == "é" * 500
            await server.push("€" * 1000)  # 1,000 characters, 3,000 bytes
            await conn.wait_for_state(S.RECONNECTING)
    drop = records[2]
    assert (drop.close_code, drop.kind) == (1009, ErrorKind.OTHER)
    assert server.connections[0].close_code == 1009


# Liveness judged from the wire (the bound and a slow reading peer: test_heartbeat_bound.py).


class PingWatch(PassThroughStream):
    """A TCP stream that tells when a ping frame (first byte 0x89) has been written."""

    def __init__(self, inner: trio.SocketStream) -> None:
        super().__init__(inner)
        self.ping_written = trio.Event()
        self.fileno = inner.socket.fileno()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await super().send_all(data)
        if bytes(data[:1]) == b"\x89":
            self.ping_written.set()


async def test_an_application_that_stalls_its_event_loop_is_not_charged_to_the_peer(
    events: list[dict[str, Any]],
) -> None:
    """Real clock: right after each ping is written, the application blocks the event
    loop (time.sleep) for twice the heartbeat timeout while the peer, in another
    process, answers at once: the pong waits in the kernel, the deadline passes,
    and both wake together. With one miss allowed, any miss would reconnect."""
    config = ConnectionConfig(
        heartbeat_interval=0.2, heartbeat_timeout=0.3, max_heartbeat_failures=1
    )
    streams: list[PingWatch] = []

    async def open_stream(host: str, port: int) -> trio.abc.Stream:
        streams.append(PingWatch(await trio.open_tcp_stream(host, port)))
        return streams[-1]

    process, port = await start_server_process("tests.echo_server")  # answers meanwhile
    try:
        with trio.fail_after(30):
            async with open_connection(
                f"ws://127.0.0.1:{port}/", config=config, open_stream=open_stream
            ) as conn:
                await conn.wait_for_state(S.CONNECTED)
                for _ in range(8):
                    stream = streams[-1]
                    stream.ping_written = trio.Event()
                    await stream.ping_written.wait()
                    # The stall under test: until the pong is in the kernel (a loaded
                    # machine may be slow to run the peer), and at least 0.6 s.
                    stalled_at = time.monotonic()
                    select.select([stream.fileno], [], [], 5.0)
                    time.sleep(max(0.0, 0.6 - (time.monotonic() - stalled_at)))  # noqa: ASYNC251
                assert conn.statistics().total_failures == 0
    finally:
        process.kill()
        await process.wait()
    assert misses(events) == []


async def test_compression_with_a_real_permessage_deflate_peer() -> None:
    """Real clock: the peer is websockets' server in another process."""
    process, port = await start_server_process("tests.ws_peer")
    try:
        with trio.fail_after(20):
            async with open_connection(f"ws://127.0.0.1:{port}/echo") as conn:
                await conn.wait_for_state(S.CONNECTED)
                for message in ("hello " * 5000, b"\x00\x01" * 40_000, "é" * 1000):
                    await conn.send(message)
                    assert await conn.receive() == message
                assert conn.statistics().total_failures == 0
    finally:
        process.kill()
        await process.wait()


async def test_a_compression_bomb_from_a_real_peer_is_refused_with_1009() -> None:
    """Real clock: websockets sends 50 MiB of zeros, about 50 KiB compressed."""
    records: list[TransitionRecord] = []
    process, port = await start_server_process("tests.ws_peer")
    try:
        with trio.fail_after(20):
            async with open_connection(
                f"ws://127.0.0.1:{port}/bomb",
                on_transition=records.append,
                config=ConnectionConfig(max_message_size=1 << 20),
            ) as conn:
                await conn.wait_for_state(S.RECONNECTING)
    finally:
        process.kill()
        await process.wait()
    drop = records[2]
    assert (drop.close_code, drop.kind) == (1009, ErrorKind.OTHER)
    assert drop.duration < 5.0  # noticed at once, not after inflating 50 MiB


async def test_a_control_frame_between_compressed_fragments_from_a_real_peer() -> None:
    """Real clock: websockets sends a message in two compressed fragments with a ping
    (or an unsolicited pong) between them; wsproto 1.3.2's own permessage-deflate
    corrupted binary and closed text with 1007 there."""
    process, port = await start_server_process("tests.ws_peer")
    try:
        with trio.fail_after(20):
            for kind in ("binary", "text"):
                part: str | bytes = "abc" * 1000 if kind == "text" else b"abc" * 1000
                for control in ("ping", "pong"):
                    url = f"ws://127.0.0.1:{port}/fragments?kind={kind}&control={control}"
                    async with open_connection(url) as conn:
                        assert await conn.receive() == part * 2
                        assert await conn.receive() == part
                        assert conn.statistics().total_failures == 0
    finally:
        process.kill()
        await process.wait()


class FrameLog(PassThroughStream):
    """A TCP stream that records the first byte of each write (a frame's opcode byte:
    the writer writes each frame whole) and takes ``delay`` seconds per write."""

    def __init__(self, inner: trio.abc.Stream, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay
        self.first_bytes: list[int] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.sleep(self.delay)
        await super().send_all(data)
        self.first_bytes.append(bytes(data[:1])[0])


async def test_long_compressed_messages_go_to_a_real_peer_as_fragments_with_pings_between() -> None:
    """Real clock: each frame takes 20 ms to write and beats go every 10 ms, so pings
    go between the fragments of a compressed message; websockets echoes it intact."""
    config = ConnectionConfig(heartbeat_interval=0.01, heartbeat_timeout=5.0)
    text = "".join(f'{{"seq": {i}, "price": {i * 7 % 1000}}}\n' for i in range(30_000))
    binary = bytes(range(256)) * 3500
    streams: list[FrameLog] = []

    async def open_stream(host: str, port: int) -> trio.abc.Stream:
        streams.append(FrameLog(await trio.open_tcp_stream(host, port), delay=0.02))
        return streams[-1]

    process, port = await start_server_process("tests.ws_peer")
    try:
        with trio.fail_after(30):
            async with open_connection(
                f"ws://127.0.0.1:{port}/echo", config=config, open_stream=open_stream
            ) as conn:
                await conn.wait_for_state(S.CONNECTED)
                for message in (text, binary):
                    await conn.send(message)
                    assert await conn.receive() == message
                assert conn.statistics().total_failures == 0
    finally:
        process.kill()
        await process.wait()
    ops = streams[0].first_bytes
    first = ops.index(0x41)  # the text message's first frame: RSV1 (compressed), no FIN
    last = ops.index(0x80, first)  # its last: a continuation with FIN
    assert last - first >= 14  # 905 kB before compression: 14 fragments of 64 KiB
    assert 0x89 in ops[first:last]  # masked ping frames between them (first byte 0x89)


# -- the kernel's buffers: real TCP, so the real clock --------------------------------


async def test_a_frozen_peer_is_dead_in_time_while_a_large_send_fills_the_kernel_buffers(
    events: list[dict[str, Any]],
) -> None:
    """Real clock: the kernel's buffers are the point. The fault server stops reading;
    a 64 MiB send fills both sides' buffers and blocks; the beats wait behind the
    blocked fragment, their clocks running. Bound: 2 * max(1, 0.5) + 1 = 3 s."""
    outcome: list[BaseException] = []
    async with (
        open_fault_server() as server,
        open_connection(server.url, config=FAST_BEATS) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await trio.sleep(0.1)  # the first beat is answered
        server.freeze()
        frozen_at = trio.current_time()

        async def send_big() -> None:
            try:
                await conn.send(b"x" * (64 << 20))
            except NotConnected as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_big)
            with trio.fail_after(10):
                await conn.wait_for_state(S.RECONNECTING)
            assert trio.current_time() - frozen_at < 3.0 + 0.5  # scheduling slack
        server.thaw()
    assert [e["misses"] for e in misses(events)] == [1, 2]
    (error,) = outcome  # aborting the session's stream ended the blocked send
    assert isinstance(error, NotConnected)
    assert error.lost


async def test_a_send_cancelled_on_a_full_kernel_buffer_fails_alone() -> None:
    """Real clock: the kernel's buffer is the point. The fault server stops reading;
    small sends fill the buffers until one cannot start: cancelled before its
    first byte, it fails alone and the connection stays CONNECTED."""
    records: list[TransitionRecord] = []
    async with (
        open_fault_server() as server,
        open_connection(server.url, heartbeat=None, on_transition=records.append) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        server.freeze()
        with trio.fail_after(30):
            while True:
                with trio.move_on_after(0.2) as scope:
                    await conn.send("x" * 4000)
                if scope.cancelled_caught:
                    break
        await trio.sleep(0.2)
        assert conn.state is S.CONNECTED
        server.thaw()
    assert [r.to_state for r in records] == [S.CONNECTING, S.CONNECTED, S.CLOSED]


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_compression_is_offered_unless_turned_off(
    autojump_clock: trio.testing.MockClock, compression: str | None
) -> None:
    async with (
        open_fault_server() as server,
        open_connection(
            server.url, open_stream=server.open_stream, compression=compression
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        offered = server.connections[0].header("sec-websocket-extensions")
        if compression is None:
            assert offered is None
        else:
            assert offered is not None
            assert "permessage-deflate" in offered
        await conn.send("ok")
        assert await conn.receive() == "ok"


async def test_subprotocols_are_offered_and_the_choice_is_readable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_fault_server() as server,
        open_connection(
            server.url, open_stream=server.open_stream, subprotocols=["chat.v2", "json"]
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        assert server.connections[0].header("sec-websocket-protocol") == "chat.v2, json"
        assert conn.subprotocol is None  # the fault server chooses none


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"compression": "gzip"}, r"compression must be 'deflate' .* or None, got 'gzip'"),
        ({"compression": True}, r"compression must be 'deflate' or None, got a bool"),
        ({"subprotocols": "chat"}, r"subprotocols must be a sequence of str"),
        ({"subprotocols": ["a b"]}, r"subprotocols\[0\] \(3 characters, not shown\) is not an"),
    ],
)
async def test_bad_transport_options_are_refused_at_construction(
    kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        async with open_connection("ws://127.0.0.1:9/", **kwargs):
            raise AssertionError("the block must not run")


# 1. A peer sending one large message is alive while its bytes arrive. ---------------


async def test_a_peer_trickling_one_large_message_is_not_declared_dead(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    """900 kB at 150 kB/s: its pong can only follow the frame, 6 s later; with a 1 s
    timeout and 2 misses the old transport declared it dead at 2.5 s."""
    records: list[TransitionRecord] = []
    async with (
        open_fault_server() as server,
        open_connection(
            server.url,
            open_stream=server.open_stream,
            config=FAST_BEATS,
            on_transition=records.append,
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        server.send_rate = 150_000
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.push, "x" * 900_000)
            with trio.fail_after(30):  # virtual: the old transport never delivered it
                assert await conn.receive() == "x" * 900_000
        assert 5.9 <= trio.current_time() - started <= 6.2
        assert conn.state is S.CONNECTED
    assert [r.to_state for r in records] == [S.CONNECTING, S.CONNECTED, S.CLOSED]
    assert misses(events) == []


@pytest.mark.parametrize("after", [0, 20, 80])
async def test_a_peer_that_ends_the_stream_inside_the_101_fails_the_attempt_at_once(
    autojump_clock: trio.testing.MockClock, after: int
) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server:
        server.cut_handshake_next(1, after=after)
        async with open_connection(
            server.url,
            open_stream=server.open_stream,
            config=ConnectionConfig(retry=NO_JITTER),
            on_transition=records.append,
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
    failed = records[1]
    assert failed.kind is ErrorKind.NETWORK
    assert failed.reason == "network: BrokenResourceError during the handshake"
    assert failed.duration == 0.0  # at once, not at connect_timeout
    assert failed.retry_in == 10.0


async def test_a_peer_that_resets_inside_the_101_fails_the_attempt_as_network() -> None:
    """Real clock: a TCP reset needs a real socket."""
    records: list[TransitionRecord] = []
    with trio.fail_after(20):
        async with open_fault_server() as server:
            server.cut_handshake_next(1, after=20, reset=True)
            async with open_connection(
                server.url,
                config=ConnectionConfig(
                    retry=RetryPolicy(jitter=0.0, backoff={ErrorKind.NETWORK: Backoff(0.1, 0.1)})
                ),
                on_transition=records.append,
            ) as conn:
                await conn.wait_for_state(S.CONNECTED)
    failed = records[1]
    assert failed.kind is ErrorKind.NETWORK
    assert failed.reason.endswith("during the handshake")
    assert failed.duration < 1.0
