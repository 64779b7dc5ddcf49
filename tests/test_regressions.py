"""Regressions found in review: each test failed before its fix."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from tests.helpers import all_tasks, faulty_opener
from trio_conn import (
    ConnectionConfig,
    ConnectionState,
    FailureInfo,
    PingHeartbeat,
    RetryPolicy,
    Session,
    TransitionRecord,
    open_connection,
)
from trio_conn.testing import FaultServer, open_fault_server

S = ConnectionState
NO_JITTER = RetryPolicy(jitter=0.0)


async def test_send_cancelled_mid_frame_drops_the_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server:
        open_stream, streams = faulty_opener(server)
        records: list[TransitionRecord] = []
        async with open_connection(
            server.url,
            open_stream=open_stream,
            on_transition=records.append,
            config=ConnectionConfig(retry=NO_JITTER),
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            streams[0].stall = True
            with trio.move_on_after(1):
                await conn.send("x" * 1000)  # half of the frame is on the wire
            await conn.wait_for_state(S.RECONNECTING)
            await conn.wait_for_state(S.CONNECTED)
            await conn.send("clean")
            assert await conn.receive() == "clean"
    assert records[2].reason == "other: SendInterrupted while connected"
    assert server.connections[0].received == []  # the peer never read a corrupt frame
    assert server.connections[1].received == ["clean"]


async def test_reset_during_the_hook_is_not_kept_for_the_next_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answers = [True, False]
    hook_running = trio.Event()
    let_hook_answer = trio.Event()

    async def on_failed(info: FailureInfo) -> bool:
        if len(answers) == 2:
            hook_running.set()
            await let_hook_answer.wait()
        return answers.pop(0)

    config = ConnectionConfig(retry=NO_JITTER, recovery_cooldown=0, failed_retry_interval=None)
    async with open_fault_server() as server:
        server.reject_next(1, 403)
        async with open_connection(
            server.url, open_stream=server.open_stream, on_failed=on_failed, config=config
        ) as conn:
            await hook_running.wait()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.reset, "operator")
                await trio.testing.wait_all_tasks_blocked()
                let_hook_answer.set()
            await conn.wait_for_state(S.CONNECTED)
            server.reject_next(1, 403)
            await server.drop()
            await conn.wait_for_state(S.FAILED)
            await trio.sleep(600)
            assert conn.state is S.FAILED  # the hook said False, and no reset is pending


async def test_reset_cuts_the_recovery_cooldown_short(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def on_failed(info: FailureInfo) -> bool:
        return False

    async with open_fault_server() as server:
        server.reject_next(2, 403)
        async with open_connection(
            server.url,
            open_stream=server.open_stream,
            on_failed=on_failed,
            config=ConnectionConfig(retry=NO_JITTER, recovery_cooldown=60),
        ) as conn:
            await conn.wait_for_state(S.FAILED)
            await trio.testing.wait_all_tasks_blocked()  # the hook said False
            assert await conn.reset("first")
            await conn.wait_for_state(S.FAILED)  # the second 403: cooldown running
            started = trio.current_time()
            assert await conn.reset("second")
            assert trio.current_time() == started  # not 60 s later
            await conn.wait_for_state(S.CONNECTED)


def session_tasks() -> list[str]:
    """The tasks of the running session: its reader and its heartbeat."""
    return sorted(
        task.name
        for task in all_tasks()
        if task.name.endswith(("WebSocket.run_reader", "_live._run_heartbeat"))
    )


async def test_unanswered_pings_do_not_pile_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def chatter(server: FaultServer) -> None:
        while True:  # data keeps the peer alive although it ignores pings
            await server.push("tick")
            await trio.sleep(5)

    async with (
        open_fault_server() as server,
        open_connection(server.url, open_stream=server.open_stream) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        server.answer_pings = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chatter, server)
            nursery.start_soon(_drain, conn)
            await trio.sleep(607)  # 40 unanswered beats; 7 s off the beat boundaries
            assert conn.state is S.CONNECTED
            # Beats follow one another in one task: an unanswered one holds
            # nothing (before the fix: a task per beat, 40 of them).
            assert session_tasks() == [
                "trio_conn._live._run_heartbeat",
                "trio_conn._transport.WebSocket.run_reader",
            ]
            nursery.cancel_scope.cancel()


async def _drain(conn: Any) -> None:
    async for _ in conn:
        pass


async def test_disconnect_returns_when_on_transition_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    holder: list[Any] = []

    def on_transition(record: TransitionRecord) -> None:
        if record.to_state is S.DISCONNECTED:
            holder[0].connect()  # an application that always wants to be connected

    async with (
        open_fault_server() as server,
        open_connection(
            server.url, open_stream=server.open_stream, on_transition=on_transition
        ) as conn,
    ):
        holder.append(conn)
        await conn.wait_for_state(S.CONNECTED)
        with trio.fail_after(60):
            await conn.disconnect("bounce")
        await conn.wait_for_state(S.CONNECTED)
        assert server.accepted == 2


class RaisesWhenTornDown(PingHeartbeat):
    """A beat whose task raises, instead of ending quietly, when the session is torn down."""

    async def beat(self, session: Session) -> None:
        try:
            await trio.sleep_forever()
        finally:
            raise RuntimeError("beat torn down")


async def test_forced_close_does_not_raise_teardown_errors_into_the_application(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Found by bench/idle_scale.py: with 10,000 connections closing at once a close
    outlived its bound, and the errors of the torn-down session escaped
    open_connection as an ExceptionGroup."""
    async with open_fault_server() as server:
        async with open_connection(
            server.url, open_stream=server.open_stream, heartbeat=RaisesWhenTornDown()
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            await trio.testing.wait_all_tasks_blocked()  # a beat is in flight
            # What open_connection does when the close outlives close_timeout + 1 s:
            conn._supervisor.request_stop(S.CLOSED, "closed by the application")
            conn._supervisor.scope.cancel()
            await conn.wait_for_state(S.CLOSED)
        assert conn.state is S.CLOSED
