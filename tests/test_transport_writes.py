"""The transport's writes against a scripted peer: fragments, control frames between
them, cancellations before and after the first byte, and the pongs owed to the peer.

Virtual time; the client's stream is a :class:`~tests.helpers.FaultyStream`
(``delay``: each write takes that long; ``block()``: a full send buffer).
"""

from __future__ import annotations

import tracemalloc

import trio
import trio.testing
from wsproto.events import BytesMessage, Ping, Pong, TextMessage

from tests.scripted_peer import PING, Link, connected, frame
from trio_conn import ConnectionClosed, SendInterrupted
from trio_conn._frames import FRAGMENT_SIZE


async def drain(link: Link, seconds: float = 1.0) -> list[object]:
    """Everything the peer parsed of what the client wrote, read for ``seconds``."""
    with trio.move_on_after(seconds):
        await link.peer.read_events()
    return link.peer.received


def texts(events: list[object]) -> list[str]:
    return [e.data for e in events if isinstance(e, TextMessage)]


async def test_a_long_message_goes_as_fragments_with_a_ping_between_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as link, trio.open_nursery() as nursery:
        websocket = link.websocket
        link.stream.delay = 1.0  # each frame takes a second
        nursery.start_soon(websocket.run_reader)
        nursery.start_soon(websocket.send, b"L" * (3 * FRAGMENT_SIZE + 10))
        await trio.sleep(0.5)  # inside the first fragment
        await websocket.ping()  # waits for that fragment only
        assert trio.current_time() == 2.0  # the fragment at 1 s, the ping at 2 s
        link.stream.delay = 0.0
        events = await drain(link)
        nursery.cancel_scope.cancel()
    frames: list[str | int] = []  # a fragment's length, or "ping", in wire order
    size = 0
    for event in events:
        if isinstance(event, Ping):
            frames.append("ping")
        elif isinstance(event, BytesMessage):  # the peer may read a frame in pieces
            size += len(event.data)
            if event.frame_finished:
                frames.append(size)
                size = 0
    assert frames == [FRAGMENT_SIZE, "ping", FRAGMENT_SIZE, FRAGMENT_SIZE, 10]
    assert [e.message_finished for e in events if isinstance(e, BytesMessage)][-1]


async def test_long_text_is_cut_at_characters_within_the_fragment_size(
    autojump_clock: trio.testing.MockClock,
) -> None:
    message = "é€😀x" * 40_000  # 400,000 bytes of UTF-8
    async with connected() as link:
        await link.websocket.send(message)
        events = await drain(link)
    pieces = [e for e in events if isinstance(e, TextMessage)]
    assert "".join(e.data for e in pieces) == message
    assert len(pieces) > 1
    assert all(len(e.data.encode()) <= FRAGMENT_SIZE for e in pieces)


async def test_a_long_compressed_message_reaches_the_peer_whole(
    autojump_clock: trio.testing.MockClock,
) -> None:
    message = "".join(f"{i:08d} is a line of text\n" for i in range(20_000))  # 560 kB
    async with connected(compression=True) as link:
        assert link.websocket.compressed
        await link.websocket.send(message)
        await link.websocket.send(b"\x00\x01" * 100_000)
        events = await drain(link)
    pieces = [e for e in events if isinstance(e, TextMessage)]
    assert len(pieces) == 9  # one frame per 64 KiB before compression
    assert "".join(e.data for e in pieces) == message
    assert b"".join(e.data for e in events if isinstance(e, BytesMessage)) == b"\x00\x01" * 100_000


async def test_a_send_cancelled_between_fragments_makes_the_connection_unusable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No frame was cut, but the peer holds the start of a message that will never end."""
    async with connected() as link:
        websocket = link.websocket
        link.stream.delay = 1.0
        async with trio.open_nursery() as nursery, trio.open_nursery() as sender:
            sender.start_soon(websocket.send, "F" * (2 * FRAGMENT_SIZE))
            await trio.sleep(0.5)
            nursery.start_soon(websocket.ping)  # takes the frame lock after fragment 1
            await trio.sleep(1.0)  # fragment 1 written at 1 s; the ping is being written
            sender.cancel_scope.cancel()  # the send waits for the lock, for fragment 2
        assert trio.current_time() == 2.0  # the ping was written whole
        assert isinstance(websocket.send_error, SendInterrupted)
        assert "between fragments" in str(websocket.send_error)
        assert link.changes  # the session was woken


async def test_a_send_cancelled_on_a_full_send_buffer_writes_nothing_and_fails_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as link:
        websocket = link.websocket
        link.stream.block()  # a full kernel buffer: the frame is not generated
        with trio.move_on_after(1.0) as scope:
            await websocket.send("x" * 50)
        assert scope.cancelled_caught
        assert websocket.send_error is None
        link.stream.unblock()
        await websocket.send("after")
        assert texts(await drain(link)) == ["after"]


async def test_an_owed_pong_cancelled_with_the_applications_scope_cuts_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A ping arrives while "hello" is written: its pong is written by a task of its
    own, so the application's timeout, expiring after "hello" is out, cuts nothing."""
    async with connected() as link:
        websocket = link.websocket
        link.stream.delay = 1.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(websocket.run_reader)
            with trio.move_on_after(1.5):  # the application's send timeout
                async with trio.open_nursery() as inner:
                    inner.start_soon(websocket.send, "hello")  # written at 1 s
                    await trio.sleep(0.5)
                    await link.peer.send(frame(PING, b"p"))
                await trio.sleep_forever()
            link.stream.delay = 0.0
            events = await drain(link, 3.0)
            nursery.cancel_scope.cancel()
    assert texts(events) == ["hello"]
    assert [e.payload for e in events if isinstance(e, Pong)] == [b"p"]  # at 2 s
    assert websocket.send_error is None


async def test_a_pong_that_fails_after_the_message_is_out_does_not_fail_the_send(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The order is out whole at 1 s; the peer resets while the owed pong is written.
    send() returned: reporting the order as lost would have it sent twice."""
    outcome: list[object] = []
    async with connected() as link:
        websocket = link.websocket
        link.stream.delay = 1.0

        async def send() -> None:
            try:
                await websocket.send("order #1: buy 100")
                outcome.append("sent")
            except ConnectionClosed as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(websocket.run_reader)
            nursery.start_soon(send)
            await trio.sleep(0.5)
            await link.peer.send(frame(PING, b"p"))  # while the order is written
            await trio.sleep(1.0)
            link.stream.broken = True  # the peer resets at 1.5 s
            await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
        events = await drain(link)
    assert texts(events) == ["order #1: buy 100"]
    assert outcome == ["sent"]
    assert isinstance(websocket.send_error, ConnectionClosed)  # the session ends


async def test_a_burst_of_pings_is_answered_once_with_the_latest_payload(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected() as link, trio.open_nursery() as nursery:
        nursery.start_soon(link.websocket.run_reader)
        await link.peer.send(b"".join(frame(PING, b"%d" % i) for i in range(1000)))
        events = await drain(link)
        nursery.cancel_scope.cancel()
    assert [e.payload for e in events if isinstance(e, Pong)] == [b"999"]


async def test_pings_while_a_send_is_stalled_hold_no_memory(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """32,768 empty pings while the peer reads nothing: one payload is owed."""
    async with connected() as link:
        websocket = link.websocket
        async with trio.open_nursery() as nursery:
            nursery.start_soon(websocket.run_reader)
            link.stream.stall = True  # the peer stops reading in the middle of a frame
            nursery.start_soon(websocket.send, b"x" * 200_000)
            await trio.sleep(1)
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                await link.peer.send(frame(PING) * 32768)  # 64 KiB
                await trio.testing.wait_all_tasks_blocked()
                held = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            nursery.cancel_scope.cancel()
    assert held < 128 * 1024  # the last read's bytes, not a pong per ping (was 1.6 MB)


async def test_a_ping_frame_waits_only_for_the_frame_being_written(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A beat's ping behind a 1 MB message waits for one fragment, not sixteen."""
    async with connected() as link, trio.open_nursery() as nursery:
        link.stream.delay = 1.0
        nursery.start_soon(link.websocket.send, b"m" * 1_000_000)
        await trio.testing.wait_all_tasks_blocked()
        await link.websocket.ping()
        assert trio.current_time() == 2.0
        nursery.cancel_scope.cancel()
    assert isinstance(link.websocket.send_error, SendInterrupted)  # cancelled mid-message
    assert not any(isinstance(e, Ping) for e in link.peer.received)  # nothing read yet
