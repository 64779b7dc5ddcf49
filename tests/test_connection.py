"""The managed connection against the fault server, in virtual time.

Every test but the last runs under the autojump clock with the fault server's
in-memory streams (``open_stream=server.open_stream``), so each delay below is
exact: no byte is ever in flight on a real socket when the clock jumps.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from tests.helpers import library_tasks, start_server_process
from trio_conn import (
    Backoff,
    ConnectionConfig,
    ConnectionState,
    ErrorKind,
    FailureInfo,
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
Edge = tuple[ConnectionState, ConnectionState]


def edges(records: list[TransitionRecord]) -> list[Edge]:
    return [(r.from_state, r.to_state) for r in records]


def durations(records: list[TransitionRecord], edge: Edge) -> list[float]:
    return [r.duration for r in records if (r.from_state, r.to_state) == edge]


@asynccontextmanager
async def managed(
    server: FaultServer,
    records: list[TransitionRecord] | None = None,
    **kwargs: Any,
) -> AsyncIterator[ManagedConnection]:
    kwargs.setdefault("config", ConnectionConfig(retry=NO_JITTER))
    async with open_connection(
        server.url,
        open_stream=server.open_stream,
        on_transition=records.append if records is not None else None,
        **kwargs,
    ) as conn:
        yield conn


# 1 -------------------------------------------------------------------------


async def test_connect_exchange_leave(autojump_clock: trio.testing.MockClock) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server:
        async with managed(server, records) as conn:
            assert conn.state in (S.DISCONNECTED, S.CONNECTING)
            await conn.wait_for_state(S.CONNECTED)
            await conn.send("hello")
            assert await conn.receive() == "hello"
            await conn.send(b"\x01\x02")
            assert await conn.receive() == b"\x01\x02"
            stats = conn.statistics()
            assert stats.state is S.CONNECTED
            assert stats.attempts == 1
            assert stats.heartbeat_rtt is not None
        assert conn.state is S.CLOSED
        assert edges(records) == [
            (S.DISCONNECTED, S.CONNECTING),
            (S.CONNECTING, S.CONNECTED),
            (S.CONNECTED, S.CLOSED),
        ]
        await server.wait_closed()
        (seen,) = server.connections
        assert seen.received == ["hello", b"\x01\x02"]
        assert seen.close_code == 1000  # a close frame, not a dropped socket
    assert library_tasks() == []


# 2 -------------------------------------------------------------------------


async def test_drop_reconnects_after_three_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server, managed(server, records) as conn:
        await conn.wait_for_state(S.CONNECTED)
        await server.drop()
        await conn.wait_for_state(S.RECONNECTING)
        await conn.wait_for_state(S.CONNECTED)
        assert edges(records)[2:] == [
            (S.CONNECTED, S.RECONNECTING),
            (S.RECONNECTING, S.CONNECTING),
            (S.CONNECTING, S.CONNECTED),
        ]
        drop = records[2]
        assert drop.reason.startswith("unexpected_close: ConnectionClosed (close code 1006)")
        assert durations(records, (S.RECONNECTING, S.CONNECTING)) == [3.0]
        stats = conn.statistics()
        assert stats.last_close_code == 1006
        assert stats.last_error_kind is ErrorKind.UNEXPECTED_CLOSE
        assert stats.total_failures == 1
        assert server.accepted == 2


async def test_clean_close_by_the_server_backs_off_and_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server, managed(server, records) as conn:
        await conn.wait_for_state(S.CONNECTED)
        await server.close_all(1000, "bye")
        assert trio.current_time() == 0.0  # the close handshake completed at once
        await conn.wait_for_state(S.CONNECTED)
        assert records[2].reason.startswith("unexpected_close: ConnectionClosed (close code 1000)")
        assert durations(records, (S.RECONNECTING, S.CONNECTING)) == [3.0]
        assert conn.statistics().consecutive_failures == 1


# 3 -------------------------------------------------------------------------

PING_OP = '{"op":"ping"}'
PONG_OP = '{"op":"pong"}'


def answer_app_heartbeats(server: FaultServer) -> None:
    server.is_heartbeat = lambda m: m == PING_OP
    server.heartbeat_reply = lambda m: PONG_OP


HEARTBEATS: dict[str, Callable[[], Any]] = {
    "ping": PingHeartbeat,
    "message": lambda: MessageHeartbeat(lambda: PING_OP, lambda m: m == PONG_OP),
}


@pytest.mark.parametrize("kind", list(HEARTBEATS))
async def test_silent_peer_declared_dead_exactly_at_the_bound(
    autojump_clock: trio.testing.MockClock, kind: str, events: list[dict[str, Any]]
) -> None:
    config = ConnectionConfig(retry=NO_JITTER)
    # docs/design.md, "Heartbeat": interval + max_failures * max(timeout, interval) = 15 + 3 * 30.
    bound = 15.0 + 3 * 30.0
    records: list[TransitionRecord] = []
    async with open_fault_server() as server:
        answer_app_heartbeats(server)
        async with managed(server, records, heartbeat=HEARTBEATS[kind](), config=config) as conn:
            await conn.wait_for_state(S.CONNECTED)
            await trio.testing.wait_all_tasks_blocked()
            assert conn.statistics().heartbeat_rtt == 0.0  # the first beat was answered
            last_reply = trio.current_time()
            server.freeze()
            await conn.wait_for_state(S.RECONNECTING)
            assert trio.current_time() - last_reply == bound
            assert records[-1].reason == "heartbeat: HeartbeatTimeout (3 missed) while connected"
            misses = [e for e in events if e["event"] == "connection.heartbeat_missed"]
            assert [e["misses"] for e in misses] == [1, 2, 3]
            server.thaw()
            await conn.wait_for_state(S.CONNECTED)
            # heartbeat kind backs off on the network row: 10 s.
            assert durations(records, (S.RECONNECTING, S.CONNECTING)) == [10.0]


async def test_short_timeout_is_within_the_bound(autojump_clock: trio.testing.MockClock) -> None:
    config = ConnectionConfig(
        heartbeat_interval=10.0, heartbeat_timeout=4.0, max_heartbeat_failures=2, retry=NO_JITTER
    )
    async with open_fault_server() as server, managed(server, config=config) as conn:
        await conn.wait_for_state(S.CONNECTED)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        server.freeze()
        await conn.wait_for_state(S.RECONNECTING)
        # Beats at 10 and 20 go unanswered; the second times out at 24, inside
        # the bound 10 + 2 * max(4, 10) = 30.
        assert trio.current_time() - start == 24.0


async def test_message_heartbeat_replies_are_consumed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server:
        answer_app_heartbeats(server)
        async with managed(server, heartbeat=HEARTBEATS["message"]()) as conn:
            await conn.wait_for_state(S.CONNECTED)
            await trio.sleep(100)  # several beats and replies
            await conn.send("data")
            assert await conn.receive() == "data"  # no pong in between
            received = server.connections[0].received
            assert received.count(PING_OP) >= 6
            assert conn.statistics().heartbeat_rtt == 0.0


async def test_any_message_counts_as_life(autojump_clock: trio.testing.MockClock) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server, managed(server, records) as conn:
        await conn.wait_for_state(S.CONNECTED)
        server.answer_pings = False
        for _ in range(20):  # a message every 10 s for 200 s, no pong at all
            await server.push("tick")
            assert await conn.receive() == "tick"
            await trio.sleep(10)
        assert conn.state is S.CONNECTED
        assert len(records) == 2


# 4 -------------------------------------------------------------------------


async def test_server_down_backs_off_then_fails_and_the_hook_recovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    infos: list[FailureInfo] = []

    async with open_fault_server() as server:

        async def on_failed(info: FailureInfo) -> bool:
            infos.append(info)
            await server.start()
            return True

        await server.stop()
        async with managed(server, records, on_failed=on_failed) as conn:
            await conn.wait_for_state(S.FAILED)
            assert durations(records, (S.RECONNECTING, S.CONNECTING)) == [10, 20, 30, 40]
            await conn.wait_for_state(S.CONNECTED)
            assert edges(records)[-4:] == [
                (S.RECONNECTING, S.FAILED),
                (S.FAILED, S.RECONNECTING),
                (S.RECONNECTING, S.CONNECTING),
                (S.CONNECTING, S.CONNECTED),
            ]
            (info,) = infos
            assert info.consecutive_failures == 5
            assert info.kind is ErrorKind.NETWORK
            assert isinstance(info.error, ConnectionRefusedError)
            assert conn.statistics().consecutive_failures == 0
            assert conn.statistics().attempts == 6


async def test_hook_false_stays_failed_until_reset(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    calls: list[float] = []

    async def on_failed(info: FailureInfo) -> bool:
        calls.append(trio.current_time())
        return False

    config = ConnectionConfig(retry=NO_JITTER, failed_retry_interval=None)
    async with open_fault_server() as server:
        await server.stop()
        async with managed(server, on_failed=on_failed, config=config) as conn:
            await conn.wait_for_state(S.FAILED)
            attempts = conn.statistics().attempts
            await trio.sleep(3600)
            assert conn.state is S.FAILED
            assert conn.statistics().attempts == attempts  # no attempt while FAILED
            assert len(calls) == 1  # once per FAILED entry
            recovery = [e for e in events if e["event"] == "connection.recovery"]
            assert [e["outcome"] for e in recovery] == ["failure"]
            await server.start()
            assert await conn.reset("operator") is True
            await conn.wait_for_state(S.CONNECTED)


async def test_reset_leaves_failed_and_retries_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server:
        await server.stop()
        async with managed(server, records) as conn:
            assert await conn.reset("not failed yet") is False
            await conn.wait_for_state(S.FAILED)
            await trio.sleep(600)
            await server.start()
            failed_at = trio.current_time()
            assert await conn.reset("operator restarted the server") is True
            await conn.wait_for_state(S.CONNECTED)
            assert trio.current_time() == failed_at
            assert records[-3].reason == "reset: operator restarted the server"
            assert conn.statistics().consecutive_failures == 0


async def test_recovery_cooldown_spaces_hook_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[float] = []
    fourth_call = trio.Event()

    async def on_failed(info: FailureInfo) -> bool:
        calls.append(trio.current_time())
        if len(calls) == 4:
            fourth_call.set()
        return True  # claims success, but the server stays down

    config = ConnectionConfig(retry=NO_JITTER, max_connection_failures=1, recovery_cooldown=60)
    async with open_fault_server() as server:
        await server.stop()
        async with managed(server, on_failed=on_failed, config=config):
            await fourth_call.wait()
    assert [b - a for a, b in itertools.pairwise(calls)] == [60.0, 60.0, 60.0]


# 5 -------------------------------------------------------------------------


async def test_rejected_goes_straight_to_failed_and_hook_refreshes_credentials(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    cookie = {"value": "session=old"}
    infos: list[FailureInfo] = []

    async def headers() -> list[tuple[str, str]]:
        return [("Cookie", cookie["value"])]

    async def on_failed(info: FailureInfo) -> bool:
        infos.append(info)
        cookie["value"] = "session=new"  # e.g. a password login
        return True

    async with open_fault_server() as server:
        server.reject_next(1, 403)
        async with managed(server, records, headers=headers, on_failed=on_failed) as conn:
            await conn.wait_for_state(S.CONNECTED)
            assert edges(records) == [
                (S.DISCONNECTED, S.CONNECTING),
                (S.CONNECTING, S.RECONNECTING),
                (S.RECONNECTING, S.FAILED),
                (S.FAILED, S.RECONNECTING),
                (S.RECONNECTING, S.CONNECTING),
                (S.CONNECTING, S.CONNECTED),
            ]
            assert (
                records[1].reason == "rejected: ConnectionRejected (HTTP 403) during the handshake"
            )
            assert records[2].reason == "rejected is fatal"
            assert trio.current_time() == 0.0  # no backoff anywhere
            (info,) = infos
            assert (info.kind, info.consecutive_failures) == (ErrorKind.REJECTED, 1)
            assert [c.header("cookie") for c in server.connections] == [
                "session=old",
                "session=new",
            ]


# 6 -------------------------------------------------------------------------


async def test_throttled_waits_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server:
        server.reject_next(1, 429, [("Retry-After", "7")])
        config = ConnectionConfig()  # default jitter: Retry-After is spread upwards
        async with managed(server, records, config=config) as conn:
            await conn.wait_for_state(S.CONNECTED)
            assert records[1].reason.startswith("throttled: ConnectionRejected (HTTP 429)")
            (slept,) = durations(records, (S.RECONNECTING, S.CONNECTING))
            assert slept == records[1].retry_in
            assert 7.0 <= slept <= 7.0 * 1.2


# 7 -------------------------------------------------------------------------


async def test_flapping_reaches_failed(autojump_clock: trio.testing.MockClock) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server:
        server.close_after = 1.0
        async with managed(server, records) as conn:
            await conn.wait_for_state(S.FAILED)
            assert server.accepted == 5
            assert durations(records, (S.CONNECTED, S.RECONNECTING)) == [1.0] * 5
            assert durations(records, (S.RECONNECTING, S.CONNECTING)) == [3, 6, 9, 12]


async def test_flapping_never_fails_with_stable_after_zero(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    config = ConnectionConfig(stable_after=0, retry=NO_JITTER)
    async with open_fault_server() as server:
        server.close_after = 1.0
        async with managed(server, records, config=config) as conn:
            await server.wait_accepted(20)
            assert S.FAILED not in {r.to_state for r in records}
            assert set(durations(records, (S.RECONNECTING, S.CONNECTING))) == {3.0}
            assert conn.statistics().consecutive_failures <= 1


async def test_stable_connection_resets_the_count(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fault_server() as server, managed(server) as conn:
        await conn.wait_for_state(S.CONNECTED)
        await server.drop()
        await conn.wait_for_state(S.CONNECTED)
        assert conn.statistics().consecutive_failures == 1
        await trio.sleep(29.9)
        assert conn.statistics().consecutive_failures == 1
        await trio.sleep(0.2)  # stable_after (30 s) has passed
        assert conn.statistics().consecutive_failures == 0


# 8 -------------------------------------------------------------------------


async def test_upgrade_never_answered_fails_at_connect_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server:
        server.hang_next()
        async with managed(server, records) as conn:
            await conn.wait_for_state(S.CONNECTED)
            assert records[1].to_state is S.RECONNECTING
            assert records[1].duration == 10.0  # connect_timeout
            assert records[1].reason == "network: TooSlowError during the handshake"
            assert durations(records, (S.RECONNECTING, S.CONNECTING)) == [10.0]
            assert server.hung == 1


async def test_connect_timeout_bounds_a_slow_headers_callable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    calls = 0

    async def headers() -> list[tuple[str, str]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await trio.sleep_forever()
        return []

    async with open_fault_server() as server, managed(server, records, headers=headers) as conn:
        await conn.wait_for_state(S.CONNECTED)
        assert records[1].duration == 10.0
        assert records[1].reason.startswith("network: TooSlowError")


# 9 -------------------------------------------------------------------------


async def test_disconnect_while_connected_then_connect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server, managed(server, records) as conn:
        await conn.wait_for_state(S.CONNECTED)
        await conn.disconnect("maintenance window")
        assert conn.state is S.DISCONNECTED
        assert records[-1].reason == "maintenance window"
        await server.wait_closed()
        assert server.connections[0].close_code == 1000
        await trio.sleep(3600)
        assert conn.state is S.DISCONNECTED  # stays there
        conn.connect()
        await conn.wait_for_state(S.CONNECTED)
        assert server.accepted == 2
        assert edges(records)[2:] == [
            (S.CONNECTED, S.DISCONNECTED),
            (S.DISCONNECTED, S.CONNECTING),
            (S.CONNECTING, S.CONNECTED),
        ]


async def test_disconnect_while_reconnecting_interrupts_the_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server, managed(server) as conn:
        await conn.wait_for_state(S.CONNECTED)
        await server.stop()
        await conn.wait_for_state(S.RECONNECTING)
        started = trio.current_time()
        await conn.disconnect()
        assert conn.state is S.DISCONNECTED
        assert trio.current_time() == started  # the 3 s delay was not slept
        await server.start()
        conn.connect()
        await conn.wait_for_state(S.CONNECTED)


async def test_disconnect_and_connect_are_idempotent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server, managed(server) as conn:
        await conn.wait_for_state(S.CONNECTED)
        conn.connect()  # already connected: nothing
        await conn.disconnect()
        await conn.disconnect()
        assert conn.state is S.DISCONNECTED
    with pytest.raises(trio.ClosedResourceError):
        conn.connect()
    await conn.disconnect()  # closed: nothing to do
    assert conn.state is S.CLOSED


# 10 ------------------------------------------------------------------------


def _prepare(server: FaultServer, state: ConnectionState) -> None:
    """Before the connection opens: what the first attempt will meet."""
    if state is S.CONNECTING:
        server.hang_next()
    elif state is S.FAILED:
        server.reject_next(1, 403)


async def _reach(server: FaultServer, conn: ManagedConnection, state: ConnectionState) -> None:
    if state is S.DISCONNECTED:
        await conn.wait_for_state(S.CONNECTED)
        await conn.disconnect()
    elif state is S.CONNECTING:
        await trio.testing.wait_all_tasks_blocked()  # hung in the handshake
    elif state is S.RECONNECTING:
        await conn.wait_for_state(S.CONNECTED)
        await server.drop()
        await conn.wait_for_state(S.RECONNECTING)
    else:
        await conn.wait_for_state(state)


@pytest.mark.parametrize(
    "state", [S.DISCONNECTED, S.CONNECTING, S.CONNECTED, S.RECONNECTING, S.FAILED]
)
async def test_leaving_the_block_in_each_state_closes_everything(
    autojump_clock: trio.testing.MockClock, state: ConnectionState
) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server:
        _prepare(server, state)
        async with managed(server, records) as conn:
            await _reach(server, conn, state)
            assert conn.state is state
            assert library_tasks() != []
            started = trio.current_time()
        assert trio.current_time() - started <= conn.config.close_timeout
        assert records[-1].from_state is state
        assert records[-1].to_state is S.CLOSED
        assert library_tasks() == []
        await server.wait_closed()
        assert server.open_connections == 0
        with pytest.raises(trio.EndOfChannel):
            await conn.receive()
        with pytest.raises(trio.ClosedResourceError):
            await conn.wait_for_state(S.CONNECTED)
        await conn.wait_for_state(S.CLOSED)


async def test_user_exception_comes_out_as_itself(autojump_clock: trio.testing.MockClock) -> None:
    opened: list[ManagedConnection] = []

    async def application(server: FaultServer) -> None:
        async with managed(server) as conn:
            opened.append(conn)
            await conn.wait_for_state(S.CONNECTED)
            raise KeyError("mine")

    async with open_fault_server() as server:
        with pytest.raises(KeyError, match="mine") as info:
            await application(server)
        assert info.type is KeyError  # not an ExceptionGroup
        assert opened[0].state is S.CLOSED
        assert library_tasks() == []


async def test_outer_cancellation_closes_gracefully(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server:
        with trio.move_on_after(5) as scope:
            async with managed(server) as conn:
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert conn.state is S.CLOSED
        assert library_tasks() == []
        await server.wait_closed()
        assert server.connections[0].close_code == 1000  # a close frame, even so


async def test_receive_ends_after_buffered_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server:
        async with managed(server) as conn:
            await conn.wait_for_state(S.CONNECTED)
            for text in ("a", "b", "c"):
                await conn.send(text)
            await server.wait_received(3)
            await trio.testing.wait_all_tasks_blocked()
        assert [message async for message in conn] == ["a", "b", "c"]


# 11 ------------------------------------------------------------------------


async def test_slow_reader_is_not_a_dead_peer(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    records: list[TransitionRecord] = []
    config = ConnectionConfig(retry=NO_JITTER)
    bound = 15.0 + 3 * 30.0
    count = 10 * config.receive_buffer
    async with open_fault_server() as server, managed(server, records, config=config) as conn:
        await conn.wait_for_state(S.CONNECTED)
        for i in range(count):
            await server.push(f"m{i}")
        await trio.sleep(3 * bound)  # the application reads nothing
        assert conn.state is S.CONNECTED
        received = [await conn.receive() for _ in range(count)]
        assert received == [f"m{i}" for i in range(count)]
        await trio.sleep(60)
        assert conn.state is S.CONNECTED
        assert edges(records) == [(S.DISCONNECTED, S.CONNECTING), (S.CONNECTING, S.CONNECTED)]
        assert not [e for e in events if e["event"] == "connection.heartbeat_missed"]
        with trio.move_on_after(1):
            extra = await conn.receive()
            raise AssertionError(f"a message was delivered twice: {extra!r}")


async def test_messages_survive_a_reconnect(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fault_server() as server, managed(server) as conn:
        await conn.wait_for_state(S.CONNECTED)
        await server.push("before")
        await trio.testing.wait_all_tasks_blocked()
        await server.drop()
        await conn.wait_for_state(S.CONNECTED)
        await server.push("after")
        assert [await conn.receive(), await conn.receive()] == ["before", "after"]


# 12 ------------------------------------------------------------------------


async def test_on_connect_runs_before_connected_and_its_errors_fail_the_attempt(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    records: list[TransitionRecord] = []
    calls: list[str] = []

    async def on_connect(session: Session) -> None:
        calls.append("called")
        if len(calls) == 1:
            raise ValueError("init refused")
        await session.send('{"op":"register"}')
        assert await session.receive() == '{"op":"register"}'  # the echo, read by init

    async with (
        open_fault_server() as server,
        managed(server, records, on_connect=on_connect) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        assert records[1].reason == "other: ValueError in on_connect"
        assert durations(records, (S.RECONNECTING, S.CONNECTING)) == [5.0]
        failed = [e for e in events if e.get("to_state") == S.RECONNECTING]
        assert failed[0]["error_type"] == "ValueError"
        assert failed[0]["error_message"] == "init refused"
        assert server.connections[1].received == ['{"op":"register"}']
        await conn.send("app")
        assert await conn.receive() == "app"  # the init reply was not re-delivered


async def test_on_failed_raising_is_logged_and_stays_failed(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    async def on_failed(info: FailureInfo) -> bool:
        raise RuntimeError("login service down")

    async with open_fault_server() as server:
        server.reject_next(1, 401)
        async with managed(server, on_failed=on_failed) as conn:
            await conn.wait_for_state(S.FAILED)
            await trio.sleep(299)  # the first probe is due after failed_retry_interval
            assert conn.state is S.FAILED
            (recovery,) = [e for e in events if e["event"] == "connection.recovery"]
            assert recovery["outcome"] == "failure"
            assert recovery["error_type"] == "RuntimeError"
            assert await conn.reset() is True
            await conn.wait_for_state(S.CONNECTED)


async def test_on_failed_non_bool_and_hang(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    answers: list[Callable[[], Awaitable[object]]] = []

    async def yes() -> object:
        return "yes"

    async def hang() -> object:
        await trio.sleep_forever()

    answers += [yes, hang]

    async def on_failed(info: FailureInfo) -> bool:
        return await answers.pop(0)()  # type: ignore[return-value]

    config = ConnectionConfig(retry=NO_JITTER, recovery_cooldown=0)
    async with open_fault_server() as server:
        server.reject_next(2, 403)
        async with managed(server, on_failed=on_failed, config=config) as conn:
            await conn.wait_for_state(S.FAILED)
            await trio.testing.wait_all_tasks_blocked()
            assert await conn.reset()
            await conn.wait_for_state(S.FAILED)
            await trio.sleep(conn.config.connect_timeout + 1)  # the hook is cut off at 10 s
            recovery = [e for e in events if e["event"] == "connection.recovery"]
            assert [e["outcome"] for e in recovery] == ["failure", "failure"]
            assert recovery[0]["detail"] == "on_failed returned str, not bool"
            assert recovery[1]["detail"] == "on_failed took over 10 s"
            assert recovery[1]["duration_s"] == 10.0
            assert conn.state is S.FAILED


async def test_on_transition_raising_is_logged_and_ignored(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    def on_transition(record: TransitionRecord) -> None:
        raise RuntimeError(f"hook broke on {record.to_state}")

    async with (
        open_fault_server() as server,
        open_connection(
            server.url, open_stream=server.open_stream, on_transition=on_transition
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await conn.send("still works")
        assert await conn.receive() == "still works"
    failures = [e for e in events if e["event"] == "connection.hook_failed"]
    assert len(failures) == 3  # connecting, connected, closed
    assert failures[0]["hook"] == "on_transition"


# 13 ------------------------------------------------------------------------


async def test_send_outside_connected_raises_not_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server, managed(server) as conn:
        await conn.wait_for_state(S.CONNECTED)
        await server.stop()
        await conn.wait_for_state(S.RECONNECTING)
        with pytest.raises(NotConnected, match="reconnecting") as info:
            await conn.send("lost")
        assert info.value.state == "reconnecting"
        with pytest.raises(TypeError, match="str or bytes"):
            await conn.send(42)  # type: ignore[arg-type]


async def test_wait_for_state_sees_brief_states(autojump_clock: trio.testing.MockClock) -> None:
    async with open_fault_server() as server:
        server.reject_next(1, 403)

        async def on_failed(info: FailureInfo) -> bool:
            return True

        async with managed(server, on_failed=on_failed) as conn:
            # FAILED lasts zero seconds and is left in the same task step.
            with trio.fail_after(1):
                await conn.wait_for_state(S.FAILED)
            await conn.wait_for_state(S.CONNECTED)


# 14 ------------------------------------------------------------------------


async def test_real_server_process_killed_and_restarted() -> None:
    """Real clock: a real process and a real TCP socket (see test_testing's note)."""
    fast = Backoff(0.2, 1.0)
    config = ConnectionConfig(
        heartbeat_interval=0.5,
        heartbeat_timeout=0.5,
        retry=RetryPolicy(
            jitter=0.0,
            backoff={ErrorKind.UNEXPECTED_CLOSE: fast, ErrorKind.NETWORK: fast},
        ),
    )
    records: list[TransitionRecord] = []
    fds_before = len(os.listdir("/proc/self/fd"))
    with trio.fail_after(30):
        process, port = await start_server_process("tests.echo_server", 0)
        try:
            async with open_connection(
                f"ws://127.0.0.1:{port}/", config=config, on_transition=records.append
            ) as conn:
                await conn.wait_for_state(S.CONNECTED)
                await conn.send(json.dumps({"n": 1}))
                assert json.loads(await conn.receive()) == {"n": 1}
                process.send_signal(signal.SIGKILL)
                await process.wait()
                await conn.wait_for_state(S.RECONNECTING)
                process, _ = await start_server_process("tests.echo_server", port)
                await conn.wait_for_state(S.CONNECTED)
                await conn.send("again")
                assert await conn.receive() == "again"
        finally:
            process.kill()
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()
    assert records[2].reason.startswith("unexpected_close: ConnectionClosed (close code 1006)")
    assert records[-1].to_state is S.CLOSED
    assert len(os.listdir("/proc/self/fd")) == fds_before  # no socket left open
