"""The heartbeat's bound, proved in virtual time, and what counts as proof of life.

A silent peer is declared dead no later than ``heartbeat_interval +
max_heartbeat_failures * max(heartbeat_timeout, heartbeat_interval)`` after the
last byte it sent: idle, while the application sends small messages (bytes
we write prove nothing), while a large send is blocked on it (a beat's clock
starts at its scheduled time), and with a slow ``beat()`` of the
application's (bounded by the beat's deadline). A peer that is slow but
reads our large message is not declared dead: pings go between fragments.
Every test runs on the autojump clock over the fault server's memory streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from tests.helpers import faulty_opener
from trio_conn import (
    ConnectionConfig,
    ConnectionState,
    ErrorKind,
    Heartbeat,
    ManagedConnection,
    MessageHeartbeat,
    NotConnected,
    PingHeartbeat,
    RetryPolicy,
    Session,
    TransitionRecord,
    open_connection,
)
from trio_conn.testing import FaultServer, open_fault_server

S = ConnectionState
NO_JITTER = RetryPolicy(jitter=0.0)
FAST = ConnectionConfig(
    heartbeat_interval=0.5, heartbeat_timeout=1.0, max_heartbeat_failures=2, retry=NO_JITTER
)
PING_OP = '{"op":"ping"}'
PONG_OP = '{"op":"pong"}'


def bound(config: ConnectionConfig) -> float:
    """The documented bound, in seconds after the peer's last byte."""
    wait = max(config.heartbeat_timeout, config.heartbeat_interval)
    return config.heartbeat_interval + config.max_heartbeat_failures * wait


def misses(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "connection.heartbeat_missed"]


async def test_an_idle_frozen_peer_is_dead_at_the_last_beats_deadline(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    records: list[TransitionRecord] = []
    async with (
        open_fault_server() as server,
        open_connection(
            server.url, open_stream=server.open_stream, config=FAST, on_transition=records.append
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await trio.testing.wait_all_tasks_blocked()  # the first beat is answered
        last_byte = trio.current_time()
        server.freeze()
        await conn.wait_for_state(S.RECONNECTING)
        # Beats at 0.5 and 1.5 go unanswered, judged at 1.5 and 2.5.
        assert trio.current_time() - last_byte == 2.5 <= bound(FAST)
    assert records[2].reason == "heartbeat: HeartbeatTimeout (2 missed) while connected"
    assert [e["misses"] for e in misses(events)] == [1, 2]


@pytest.mark.parametrize(
    "config", [FAST, ConnectionConfig(retry=NO_JITTER)], ids=["fast", "defaults"]
)
async def test_the_worst_case_is_exactly_the_bound(
    autojump_clock: trio.testing.MockClock, config: ConnectionConfig
) -> None:
    """The peer's last byte arrives just after a beat was scheduled, and that beat's
    pong never comes: the beat is judged alive at its first checkpoint (one
    interval in), the next ones miss. 105 s with the defaults."""
    async with (
        open_fault_server() as server,
        open_connection(server.url, open_stream=server.open_stream, config=config) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        server.answer_pings = False
        await trio.sleep_until(start + config.heartbeat_interval)
        await trio.testing.wait_all_tasks_blocked()  # the second beat's ping is out
        await server.push("last words")
        last_byte = trio.current_time()
        server.freeze()
        await conn.wait_for_state(S.RECONNECTING)
        assert trio.current_time() - last_byte == bound(config)
        assert await conn.receive() == "last words"


async def test_a_frozen_peer_is_dead_in_time_while_the_application_sends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The application's small sends are all accepted (the stream takes them
    without the peer reading): they are not proof of life."""
    sent = 0
    async with (
        open_fault_server() as server,
        open_connection(server.url, open_stream=server.open_stream, config=FAST) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await trio.testing.wait_all_tasks_blocked()
        last_byte = trio.current_time()
        server.freeze()

        async def publish() -> None:
            nonlocal sent
            while True:
                try:
                    await conn.send('{"op":"tick"}')
                except NotConnected:
                    return
                sent += 1
                await trio.sleep(0.2)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            await conn.wait_for_state(S.RECONNECTING)
            assert trio.current_time() - last_byte == 2.5
    assert sent >= 12  # one every 0.2 s until the end, each written


async def test_a_frozen_peer_is_dead_in_time_while_a_large_send_is_blocked_on_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The peer's window closes inside the first fragment: the beats wait behind
    it, their clocks running from their scheduled times."""
    outcome: list[BaseException] = []
    async with open_fault_server() as server:
        open_stream, streams = faulty_opener(server)
        async with open_connection(server.url, open_stream=open_stream, config=FAST) as conn:
            await conn.wait_for_state(S.CONNECTED)
            await trio.testing.wait_all_tasks_blocked()
            last_byte = trio.current_time()
            server.freeze()
            streams[0].stall = True

            async def send_big() -> None:
                try:
                    await conn.send(b"x" * 1_000_000)
                except NotConnected as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_big)
                await conn.wait_for_state(S.RECONNECTING)
                assert trio.current_time() - last_byte == 2.5
    (error,) = outcome  # the session's end closed the stream under the blocked send
    assert isinstance(error, NotConnected)
    assert error.lost


@pytest.mark.parametrize("kind", ["ping", "message"])
async def test_a_slow_but_reading_peer_is_alive_through_a_large_message(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]], kind: str
) -> None:
    """5 MB to a peer that reads 200 kB/s: 25 s, ten times the bound. Each 64 KiB
    fragment takes 0.33 s, the pings go between fragments and are answered. An
    application-message beat cannot go between them: a ping goes first."""
    heartbeat = (
        PingHeartbeat()
        if kind == "ping"
        else MessageHeartbeat(lambda: PING_OP, lambda message: message == PONG_OP)
    )
    async with open_fault_server() as server:
        server.echo = False
        server.is_heartbeat = lambda message: message == PING_OP
        server.heartbeat_reply = lambda message: PONG_OP
        open_stream, streams = faulty_opener(server)
        async with open_connection(
            server.url, open_stream=open_stream, config=FAST, heartbeat=heartbeat
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            streams[0].rate = 200_000
            started = trio.current_time()
            await conn.send(b"\x01" * 5_000_000)
            assert 25.0 < trio.current_time() - started < 25.1
            await trio.testing.wait_all_tasks_blocked()  # the server has read it all
            data = [m for m in server.connections[0].received if m != PING_OP]
            assert data == [b"\x01" * 5_000_000]
            assert conn.state is S.CONNECTED
            assert conn.statistics().total_failures == 0
    assert misses(events) == []


class SlowBeat(Heartbeat):
    """A beat that awaits something slow (a lock, a token refresh) before its ping."""

    def __init__(self) -> None:
        self.started = 0
        self.finished = 0

    async def beat(self, session: Session) -> None:
        self.started += 1
        await trio.sleep(60)
        await session.ping()
        self.finished += 1


async def test_a_slow_beat_is_bounded_by_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Nothing comes from the peer and no ping is ever written: two misses, at the
    deadlines of the beats scheduled at 0 and 1 s."""
    heartbeat = SlowBeat()
    records: list[TransitionRecord] = []
    async with (
        open_fault_server() as server,
        open_connection(
            server.url,
            open_stream=server.open_stream,
            config=FAST,
            heartbeat=heartbeat,
            on_transition=records.append,
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        connected_at = trio.current_time()  # the 101: the peer's last byte
        server.freeze()
        await conn.wait_for_state(S.RECONNECTING)
        assert trio.current_time() - connected_at == 2.0 <= bound(FAST)
    assert (heartbeat.started, heartbeat.finished) == (2, 0)
    assert records[2].kind is ErrorKind.HEARTBEAT


class JsonPing(Heartbeat):
    """An application heartbeat written from the Heartbeat docstring: beat and is_response."""

    async def beat(self, session: Session) -> None:
        await session.send(PING_OP)

    def is_response(self, message: str | bytes) -> bool:
        return message == PONG_OP


def test_overriding_is_response_is_enough_to_have_replies_looked_for() -> None:
    class Inherited(JsonPing):
        pass

    class Declined(JsonPing):
        replies_are_messages = False

    assert JsonPing.replies_are_messages is True
    assert Inherited.replies_are_messages is True
    assert Declined.replies_are_messages is False
    assert PingHeartbeat.replies_are_messages is False


@asynccontextmanager
async def json_ping_peer(
    heartbeat: Heartbeat,
) -> AsyncIterator[tuple[FaultServer, ManagedConnection]]:
    """A fault server that answers PING_OP with PONG_OP, and a CONNECTED
    connection to it beating with ``heartbeat``."""
    async with open_fault_server() as server:
        server.is_heartbeat = lambda message: message == PING_OP
        server.heartbeat_reply = lambda message: PONG_OP
        async with open_connection(
            server.url, open_stream=server.open_stream, config=FAST, heartbeat=heartbeat
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            yield server, conn


async def test_a_heartbeat_that_overrides_is_response_has_its_replies_consumed(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    async with json_ping_peer(JsonPing()) as (server, conn):
        await trio.sleep(10)  # 20 beats, 20 replies
        await server.push("data")
        assert await conn.receive() == "data"  # no reply in front of it
        assert conn.statistics().heartbeat_rtt == 0.0
        assert conn.state is S.CONNECTED
    assert server.connections[0].received.count(PING_OP) >= 20
    assert misses(events) == []


class WaitsForItsReply(Heartbeat):
    """A beat that waits for its reply with session.receive(), which is not for a beat."""

    async def beat(self, session: Session) -> None:
        await session.send(PING_OP)
        await session.receive()


async def test_receive_in_a_beat_raises_a_clear_error_not_a_peers_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    async with (
        open_fault_server() as server,
        open_connection(
            server.url,
            open_stream=server.open_stream,
            config=FAST,
            heartbeat=WaitsForItsReply(),
            on_transition=records.append,
        ) as conn,
    ):
        await conn.wait_for_state(S.RECONNECTING)
    failed = records[2]
    assert (failed.kind, failed.close_code) == (ErrorKind.OTHER, None)
    assert failed.reason == "other: RuntimeError while connected"
    assert "on_connect only" in str(failed.error)
    assert "is_response()" in str(failed.error)


def test_a_heartbeat_of_the_wrong_colour_is_refused_at_its_class_statement() -> None:
    """An async is_response would answer a coroutine (truthy) for every message and
    swallow them all; a plain beat could not be awaited."""
    with pytest.raises(TypeError, match=r"is_response must be a plain method .* not async def"):

        class AsyncReply(JsonPing):
            async def is_response(self, message: str | bytes) -> bool:  # type: ignore[override]
                return message == PONG_OP

    with pytest.raises(TypeError, match="beat must be an async method"):

        class PlainBeat(Heartbeat):
            def beat(self, session: Session) -> None:  # type: ignore[override]
                pass


class AnswersNotABool(JsonPing):
    def is_response(self, message: str | bytes) -> bool:
        return "pong" if message == PONG_OP else ""  # type: ignore[return-value]


async def test_an_is_response_that_answers_no_bool_delivers_the_message_and_says_so(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    async with json_ping_peer(AnswersNotABool()) as (server, conn):
        await trio.sleep(FAST.heartbeat_interval * 2)  # a beat and its reply
        await server.push("data")
        assert await conn.receive() == PONG_OP  # delivered, not swallowed
        assert conn.state is S.CONNECTED
    failed = [e for e in events if e["event"] == "connection.hook_failed"]
    assert failed
    assert failed[0]["hook"] == "heartbeat.is_response"
    assert "must return a bool, returned str" in failed[0]["error_message"]
