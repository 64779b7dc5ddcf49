"""The managed connection at the edges a reviewer found: the hand-over after
``on_connect``, rejections ended by the stream, hostile extension answers, a
peer's close whose answer fails, a send cancelled on a full buffer, what
``NotConnected(lost=True)`` says of the state, and the ``Session`` handle.

Virtual time, over the fault server's memory streams or a scripted server on
a memory stream pair.
"""

from __future__ import annotations

import base64
import hashlib
import random
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import wsproto
from wsproto.events import AcceptConnection, Request

from tests.helpers import faulty_opener
from trio_conn import (
    ConnectionConfig,
    ConnectionState,
    ErrorKind,
    FailureInfo,
    NotConnected,
    RetryPolicy,
    Session,
    TransitionRecord,
    open_connection,
)
from trio_conn.testing import open_fault_server

S = ConnectionState
NO_JITTER = RetryPolicy(jitter=0.0)
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
Serve = Callable[[trio.abc.Stream], Awaitable[None]]
BLOCK = random.Random(7).randbytes(300)


@asynccontextmanager
async def scripted_server(
    serve: Serve,
) -> AsyncIterator[Callable[[str, int], Awaitable[trio.abc.Stream]]]:
    """An ``open_stream`` whose every connection is served by ``serve`` on a memory pair."""
    async with trio.open_nursery() as nursery:

        async def open_stream(host: str, port: int) -> trio.abc.Stream:
            client, server = trio.testing.memory_stream_pair()
            nursery.start_soon(serve, server)
            return client

        yield open_stream
        nursery.cancel_scope.cancel()


async def first_failure(serve: Serve) -> TransitionRecord:
    """The record of the first attempt's failure against a server that ``serve`` plays."""
    records: list[TransitionRecord] = []
    async with (
        scripted_server(serve) as open_stream,
        open_connection(
            "ws://example.test/",
            open_stream=open_stream,
            on_transition=records.append,
            config=ConnectionConfig(retry=NO_JITTER),
        ) as conn,
    ):
        await conn.wait_for_state(S.RECONNECTING)
    return records[1]


async def read_head(stream: trio.abc.Stream) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        head += bytes(await stream.receive_some(65536))
    return head


def accept_key(head: bytes) -> bytes:
    (key,) = [
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key")
    ]
    return base64.b64encode(hashlib.sha1(key + GUID).digest())  # the RFC's


async def test_messages_received_during_on_connect_beyond_the_buffer_all_arrive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Ten echoes during on_connect into a buffer of four: the reader waits for room
    when the session takes over; its message follows the buffered ones."""
    records: list[TransitionRecord] = []

    async def on_connect(session: Session) -> None:
        for i in range(10):
            await session.send(f"m{i}")  # echoed
        await trio.sleep(1)

    async with (
        open_fault_server() as server,
        open_connection(
            server.url,
            open_stream=server.open_stream,
            on_connect=on_connect,
            on_transition=records.append,
            config=ConnectionConfig(receive_buffer=4, retry=NO_JITTER),
            heartbeat=None,
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        assert [await conn.receive() for _ in range(10)] == [f"m{i}" for i in range(10)]
        assert conn.state is S.CONNECTED
    assert [r.to_state for r in records] == [S.CONNECTING, S.CONNECTED, S.CLOSED]


@pytest.mark.parametrize(
    ("status", "kind", "retry_in"),
    [(429, ErrorKind.THROTTLED, 120.0), (403, ErrorKind.REJECTED, None)],
)
async def test_a_rejection_whose_body_ends_with_the_stream_is_the_rejection(
    autojump_clock: trio.testing.MockClock, status: int, kind: ErrorKind, retry_in: float | None
) -> None:
    """No Content-Length: the body is delimited by the end of the stream (RFC 9112
    section 6.3). 429 honours its Retry-After; 403 goes to FAILED."""

    async def serve(stream: trio.abc.Stream) -> None:
        await read_head(stream)
        await stream.send_all(
            b"HTTP/1.1 %d Nope\r\nRetry-After: 120\r\nContent-Type: text/plain\r\n"
            b"Connection: close\r\n\r\nslow down" % status
        )
        await stream.aclose()

    failed = await first_failure(serve)
    assert (failed.kind, failed.status_code, failed.retry_in) == (kind, status, retry_in)
    assert getattr(failed.error, "body", None) == b"slow down"


@pytest.mark.parametrize(
    "extension",
    [
        b"permessage-deflate; client_max_window_bits",  # a value is required in an answer
        b"permessage-deflate; server_max_window_bits=abc",
        b"permessage-deflate; server_max_window_bits=99",
        b"permessage-deflate; server_max_window_bits=08",
        b"permessage-deflate; client_max_window_bits=8",  # zlib cannot honour it
        b"permessage-deflate; server_no_context_takeover=1",
        b"permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        b"permessage-deflate; x-unknown=1",
        b"permessage-deflate, permessage-deflate",
        b"x-unknown",
    ],
)
async def test_a_hostile_extension_answer_fails_the_handshake_as_a_protocol_error(
    autojump_clock: trio.testing.MockClock, extension: bytes
) -> None:
    async def serve(stream: trio.abc.Stream) -> None:
        head = await read_head(stream)
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(head) + b"\r\n"
            b"Sec-WebSocket-Extensions: " + extension + b"\r\n\r\n"
        )
        await trio.sleep_forever()

    failed = await first_failure(serve)
    assert failed.reason == "other: RemoteProtocolError during the handshake"


async def test_an_answer_with_a_small_server_window_is_accepted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """server_max_window_bits=8 is valid (RFC 7692 section 7.1.2.1): the client
    inflates with a window at least that large."""

    async def serve(stream: trio.abc.Stream) -> None:
        head = await read_head(stream)
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(head) + b"\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8\r\n\r\n"
        )
        # zlib compresses with a 9-bit window when asked for 8; a block repeated
        # 300 bytes back needs more than 256 bytes of window to inflate.
        compressor = zlib.compressobj(wbits=-9)
        data = compressor.compress(BLOCK * 2) + compressor.flush(zlib.Z_SYNC_FLUSH)
        await stream.send_all(bytes([0xC2, 126]) + struct.pack("!H", len(data) - 4) + data[:-4])
        await trio.sleep_forever()

    async with (
        scripted_server(serve) as open_stream,
        open_connection("ws://example.test/", open_stream=open_stream, heartbeat=None) as conn,
    ):
        assert await conn.receive() == BLOCK * 2


async def test_the_peers_close_code_is_kept_when_answering_it_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server says 1013 (try again later) and goes away at once: the code, not
    1006, is why the session ended, and 1013 counts as throttled."""
    records: list[TransitionRecord] = []

    async def serve(stream: trio.abc.Stream) -> None:
        server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        while not any(isinstance(e, Request) for e in server.events()):
            server.receive_data(bytes(await stream.receive_some(65536)))
        await stream.send_all(server.send(AcceptConnection()))
        await trio.sleep(1)
        await stream.send_all(b"\x88\x02" + struct.pack("!H", 1013))
        await stream.aclose()

    async with (
        scripted_server(serve) as open_stream,
        open_connection(
            "ws://example.test/",
            open_stream=open_stream,
            on_transition=records.append,
            heartbeat=None,
            config=ConnectionConfig(retry=NO_JITTER),
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await conn.wait_for_state(S.RECONNECTING)
    dropped = records[2]
    assert (dropped.close_code, dropped.kind) == (1013, ErrorKind.THROTTLED)


async def test_a_send_cancelled_on_a_full_send_buffer_fails_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Nothing of the frame was written: the connection goes on."""
    async with open_fault_server() as server:
        open_stream, streams = faulty_opener(server)
        async with open_connection(
            server.url, open_stream=open_stream, heartbeat=None, config=ConnectionConfig()
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            streams[0].block()
            with trio.move_on_after(0.5) as scope:
                await conn.send("x" * 50)
            assert scope.cancelled_caught
            streams[0].unblock()
            await conn.send("after")
            assert await conn.receive() == "after"
            assert conn.state is S.CONNECTED
            assert conn.statistics().total_failures == 0
    assert server.connections[0].received == ["after"]


@pytest.mark.parametrize("how", ["broken", "cut"])
async def test_not_connected_lost_is_raised_once_the_state_has_left_connected(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    """A retry loop on wait_for_state(CONNECTED) must wait for the reconnect, not spin."""
    async with open_fault_server() as server:
        open_stream, streams = faulty_opener(server)
        async with open_connection(
            server.url, open_stream=open_stream, config=ConnectionConfig(retry=NO_JITTER)
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            if how == "broken":
                streams[0].broken = True  # the peer resets during the send
            else:
                streams[0].stall = True
                with trio.move_on_after(0.5):  # cut in the middle of its frame
                    await conn.send(b"x" * 1000)
            with pytest.raises(NotConnected) as info:
                await conn.send("hello")
            assert info.value.lost
            assert conn.state is not S.CONNECTED
            assert info.value.state == conn.state
            await conn.wait_for_state(S.CONNECTED)  # the next session: 3 s later
            await conn.send("again")
            assert await conn.receive() == "again"


async def test_connect_timeout_is_named_in_the_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server:
        server.hang_next(1)
        async with open_connection(
            server.url,
            open_stream=server.open_stream,
            on_transition=records.append,
            config=ConnectionConfig(connect_timeout=4.0, retry=NO_JITTER),
        ) as conn:
            await conn.wait_for_state(S.RECONNECTING)
    failed = records[1]
    assert failed.kind is ErrorKind.NETWORK
    assert isinstance(failed.error, trio.TooSlowError)
    assert str(failed.error) == "connect_timeout (4 s) passed during the handshake"
    assert failed.duration == 4.0


async def test_a_session_is_made_by_trio_conn_and_receives_in_on_connect_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.raises(TypeError, match="made by trio_conn"):
        Session()
    kept: list[Session] = []

    async def on_connect(session: Session) -> None:
        kept.append(session)
        await session.send("hi")
        assert await session.receive() == "hi"

    async with (
        open_fault_server() as server,
        open_connection(server.url, open_stream=server.open_stream, on_connect=on_connect) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        with pytest.raises(RuntimeError, match="on_connect only"):
            await kept[0].receive()
        await kept[0].send("still writable")  # send goes on working while it lives
        assert await conn.receive() == "still writable"


# -- a peer's close while a frame waits for room in the send buffer -----------------


async def test_a_send_waiting_for_room_when_the_peer_closes_is_not_connected(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    """The peer closes while our send waits on a full buffer: NotConnected, the
    peer's code kept as the end, and never the message's text in an error."""
    records: list[TransitionRecord] = []
    async with open_fault_server() as server:
        open_stream, streams = faulty_opener(server)
        async with open_connection(
            server.url,
            open_stream=open_stream,
            heartbeat=None,
            on_transition=records.append,
            config=ConnectionConfig(retry=NO_JITTER),
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            streams[0].block()
            outcome: list[BaseException] = []

            async def send_login() -> None:
                try:
                    await conn.send('{"op":"login","token":"tok_SECRET_1"}')
                except NotConnected as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_login)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(server.close_all, 1001, "going away")
                await trio.testing.wait_all_tasks_blocked()  # the reader has the close
                streams[0].unblock()  # room again, as a peer reads after its close
                await conn.wait_for_state(S.RECONNECTING)
            (raised,) = outcome
            assert isinstance(raised, NotConnected)
            assert raised.lost
            assert "tok_SECRET" not in repr(raised.__cause__)
    ended = records[2]
    assert (ended.kind, ended.close_code) == (ErrorKind.UNEXPECTED_CLOSE, 1001)
    assert not [e for e in events if "tok_SECRET" in repr(e)]


async def test_a_ping_waiting_for_room_when_the_peer_closes_keeps_the_peers_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A rejection close code (mapped by the application) arriving while the
    heartbeat's ping waits: the session ends rejected with that code, and
    on_failed runs, instead of the ping's failure hiding it."""
    records: list[TransitionRecord] = []
    failures: list[FailureInfo] = []

    async def on_failed(info: FailureInfo) -> bool:
        failures.append(info)
        return False

    config = ConnectionConfig(
        heartbeat_interval=1.0,
        heartbeat_timeout=10.0,
        retry=RetryPolicy(jitter=0.0, close_codes={4401: ErrorKind.REJECTED}),
    )
    async with open_fault_server() as server:
        open_stream, streams = faulty_opener(server)
        async with open_connection(
            server.url,
            open_stream=open_stream,
            config=config,
            on_transition=records.append,
            on_failed=on_failed,
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            await trio.testing.wait_all_tasks_blocked()  # the first beat answered
            streams[0].block()
            await trio.sleep(1.5)  # the next ping waits for room
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.close_all, 4401, "token expired")
                await trio.testing.wait_all_tasks_blocked()  # the reader has the close
                streams[0].unblock()
                await conn.wait_for_state(S.FAILED)
    ended = records[2]
    assert (ended.kind, ended.close_code) == (ErrorKind.REJECTED, 4401)
    assert [info.close_code for info in failures] == [4401]


async def test_send_is_a_checkpoint_even_when_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A retry loop on NotConnected must let other tasks (the supervisor) run."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await trio.lowlevel.checkpoint()
            ticks += 1

    async with (
        open_fault_server() as server,
        open_connection(server.url, open_stream=server.open_stream) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await server.drop()
        await conn.wait_for_state(S.RECONNECTING)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            for _ in range(100):
                with pytest.raises(NotConnected):
                    await conn.send("order")
            assert ticks >= 90
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("status", "kind", "retry_in"),
    [(401, ErrorKind.REJECTED, None), (429, ErrorKind.THROTTLED, 120.0)],
)
async def test_a_rejection_whose_body_never_ends_is_still_the_rejection(
    autojump_clock: trio.testing.MockClock, status: int, kind: ErrorKind, retry_in: float | None
) -> None:
    """Content-Length 1000, 9 bytes sent, then silence: the rejection is raised
    with what came of its body after a second, not a connect_timeout."""

    async def serve(stream: trio.abc.Stream) -> None:
        await read_head(stream)
        await stream.send_all(
            b"HTTP/1.1 %d Nope\r\nRetry-After: 120\r\nContent-Length: 1000\r\n\r\nslow down"
            % status
        )
        await trio.sleep_forever()

    failed = await first_failure(serve)
    assert (failed.kind, failed.status_code, failed.retry_in) == (kind, status, retry_in)
    assert failed.duration == 1.0  # REJECTION_BODY_GRACE, not connect_timeout
    assert getattr(failed.error, "body", None) == b"slow down"


async def test_a_rejection_with_an_endless_body_stops_reading_at_the_kept_size(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    sent = 0

    async def serve(stream: trio.abc.Stream) -> None:
        nonlocal sent
        await read_head(stream)
        await stream.send_all(b"HTTP/1.1 403 No\r\nContent-Length: 100000000\r\n\r\n")
        try:
            for _ in range(10_000):
                await stream.send_all(b"x" * 4096)
                sent += 4096
        except trio.BrokenResourceError:
            pass  # the client stopped reading and closed

    async with (
        scripted_server(serve) as open_stream,
        open_connection(
            "ws://example.test/", open_stream=open_stream, on_transition=records.append
        ) as conn,
    ):
        await conn.wait_for_state(S.FAILED)
    assert records[1].status_code == 403
    assert len(getattr(records[1].error, "body", b"")) == 65536
    assert sent < 200_000  # stopped reading soon after the kept size
