"""Faults found by attacking the lifecycle change: each reproduced, each with its right value.

Hostile servers (a Retry-After no clock can hold), hostile hooks (a nursery
torn down by a stop, a reset from inside on_failed), hostile applications (a
send after a cut-off frame, text with no UTF-8 form, an exception group of
their own) and odd corners of the API (a no-op disconnect overtaken by
connect, a planned wait reported as stuck). Virtual time throughout.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import pytest
import trio
import trio.testing

from tests.helpers import faulty_opener, library_tasks
from trio_conn import (
    ConnectionConfig,
    ConnectionRejected,
    ConnectionState,
    ErrorKind,
    FailureInfo,
    ManagedConnection,
    NotConnected,
    RetryPolicy,
    TransitionRecord,
    classify,
    open_connection,
)
from trio_conn.testing import open_fault_server

S = ConnectionState
NO_JITTER = ConnectionConfig(retry=RetryPolicy(jitter=0.0))


@pytest.mark.parametrize(
    "header",
    [
        "Mon, 01 Jan 2024 00:00:00 +9999999999999",  # a zone beyond any clock
        "Mon, 01 Jan 99999999999 00:00:00 GMT",  # a year beyond any clock
        "9" * 400,  # delta-seconds beyond any float: the cap
    ],
)
async def test_a_retry_after_no_clock_can_hold_is_a_throttle_not_a_crash(
    autojump_clock: trio.testing.MockClock, header: str
) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server:
        server.reject_next(1, 503, [("Retry-After", header)])
        async with open_connection(
            server.url,
            open_stream=server.open_stream,
            config=NO_JITTER,
            on_transition=records.append,
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
    throttled = records[1]
    assert throttled.kind is ErrorKind.THROTTLED
    assert throttled.retry_in in (10.0, 300.0)  # the network row, or the cap for "9" * 400


def test_a_retry_after_date_without_a_zone_is_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 9110 dates are UTC; "-0000" parses to a naive datetime, which Python would
    otherwise read in the machine's local time zone."""
    from trio_conn._failure import _retry_after

    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: 14 hours in the future
    time.tzset()
    try:
        soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=600)
        header = soon.strftime("%a, %d %b %Y %H:%M:%S -0000").encode()
        assert 590 <= (_retry_after([(b"retry-after", header)]) or 0) <= 600
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_a_hook_whose_nursery_raises_while_a_stop_interrupts_it(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    hook_running = trio.Event()

    async def on_failed(info: FailureInfo) -> bool:
        async def helper() -> None:
            try:
                await trio.sleep_forever()
            finally:
                raise RuntimeError("refresh helper torn down")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(helper)
            hook_running.set()
            await trio.sleep_forever()
        return True

    async with open_fault_server() as server:
        server.reject_next(100, 401)
        async with open_connection(
            server.url, open_stream=server.open_stream, on_failed=on_failed
        ) as conn:
            await hook_running.wait()
            await conn.disconnect()
            assert conn.state is S.DISCONNECTED  # not CLOSED by a crashed supervisor
    (failed,) = [e for e in events if e["event"] == "connection.hook_failed"]
    assert (failed["hook"], failed["error_type"]) == ("on_failed", "ExceptionGroup")


async def test_no_send_is_written_after_a_frame_was_cut_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server:
        open_stream, streams = faulty_opener(server)
        async with open_connection(server.url, open_stream=open_stream, heartbeat=None) as conn:
            await conn.wait_for_state(S.CONNECTED)
            streams[0].stall = True
            with trio.move_on_after(1):
                await conn.send("A" * 5000)
            with pytest.raises(NotConnected) as info:
                await conn.send("B" * 3000)  # would be read as the rest of the A frame
            assert info.value.lost
        assert server.connections[0].close_code != 1007  # the peer never read garbage


async def test_text_with_no_utf8_form_fails_that_send_only(
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
        with pytest.raises(UnicodeEncodeError):
            await conn.send(json.loads('"\\ud800"'))  # a lone surrogate
        await conn.send("fine")
        assert await conn.receive() == "fine"
    assert [r.to_state for r in records] == [S.CONNECTING, S.CONNECTED, S.CLOSED]


async def test_an_exception_group_raised_in_the_block_comes_out_as_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mine = ExceptionGroup("application", [ValueError("boom"), KeyError("k")])

    async def opener(host: str, port: int) -> trio.abc.Stream:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with pytest.raises(ExceptionGroup) as info:
        async with open_connection("ws://127.0.0.1:9/", open_stream=opener):
            raise mine
    assert info.value is mine
    assert library_tasks() == []


async def test_on_failed_may_call_reset_itself(autojump_clock: trio.testing.MockClock) -> None:
    holder: list[ManagedConnection] = []

    async def on_failed(info: FailureInfo) -> bool:
        assert await holder[0].reset("token refreshed") is True  # returns, does not wait
        return False

    async with open_fault_server() as server:
        server.reject_next(1, 401)
        async with open_connection(
            server.url, open_stream=server.open_stream, on_failed=on_failed
        ) as conn:
            holder.append(conn)
            await conn.wait_for_state(S.FAILED)
            await conn.wait_for_state(S.CONNECTED)
            assert trio.current_time() == 0.0  # not after connect_timeout (10 s)


async def test_a_no_op_disconnect_returns_even_when_connect_follows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_fault_server() as server,
        open_connection(server.url, open_stream=server.open_stream) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await conn.disconnect()
        returned = trio.Event()

        async def second_disconnect() -> None:
            await conn.disconnect()  # already DISCONNECTED: a no-op
            returned.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(second_disconnect)
            await trio.lowlevel.checkpoint()
            conn.connect()
            with trio.fail_after(60):
                await returned.wait()
        await conn.wait_for_state(S.CONNECTED)


async def test_an_observer_error_of_an_odd_class_never_harms_the_connection(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    class Odd(Exception):
        pass

    Odd.__module__ = None  # type: ignore[assignment]

    def on_transition(record: TransitionRecord) -> None:
        raise Odd("observer bug")

    async with (
        open_fault_server() as server,
        open_connection(
            server.url, open_stream=server.open_stream, on_transition=on_transition
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await conn.send("still")
        assert await conn.receive() == "still"
    assert "logging an event" not in capsys.readouterr().err  # the odd class was named


async def test_a_retry_after_wait_is_not_a_stay_held_too_long(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    async with open_fault_server() as server:
        server.reject_next(1, 503, [("Retry-After", "200")])
        async with open_connection(
            server.url, open_stream=server.open_stream, config=NO_JITTER
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            assert trio.current_time() == 200.0
    assert [e for e in events if e["event"] == "connection.state_stuck"] == []


async def test_a_send_during_a_requested_disconnect_says_closing_not_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_fault_server() as server,
        open_connection(server.url, open_stream=server.open_stream) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        server.freeze()  # the close handshake waits
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.disconnect)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(NotConnected) as info:
                await conn.send("x")
            server.thaw()
    assert (info.value.closing, info.value.lost) == (True, False)
    assert "closing" in str(info.value)


def test_classify_survives_what_a_peer_sends() -> None:
    headers = [(b"retry-after", b"Mon, 01 Jan 2024 00:00:00 +9999999999999")]
    assert classify(ConnectionRejected(503, headers, b"")) is ErrorKind.THROTTLED
