"""Long outages, close codes, Retry-After, observers: the lifecycle through the real driver.

Each test reproduces a fault found by running the library against real
servers, under the autojump clock with the fault server's in-memory streams,
so every figure below is exact virtual time.
"""

from __future__ import annotations

import io
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
import trio
import trio.testing

from tests.helpers import faulty_opener
from trio_conn import (
    ConnectionConfig,
    ConnectionState,
    ErrorKind,
    FailureInfo,
    ManagedConnection,
    NotConnected,
    RetryPolicy,
    TransitionRecord,
    configure_logging,
    open_connection,
)
from trio_conn.testing import FaultServer, open_fault_server

S = ConnectionState
K = ErrorKind
NO_JITTER = RetryPolicy(jitter=0.0)


async def readme_on_failed(info: FailureInfo) -> bool:
    """The README's hook: it can only help with rejected credentials."""
    return info.kind is K.REJECTED


@asynccontextmanager
async def managed(
    server: FaultServer, records: list[TransitionRecord], **kwargs: Any
) -> AsyncIterator[ManagedConnection]:
    kwargs.setdefault("config", ConnectionConfig(retry=NO_JITTER))
    async with open_connection(
        server.url, open_stream=server.open_stream, on_transition=records.append, **kwargs
    ) as conn:
        yield conn


def entered(records: list[TransitionRecord], state: ConnectionState) -> list[float]:
    return [r.at for r in records if r.to_state is state]


# 1. A routine outage no longer ends in FAILED forever. ----------------------------


async def test_a_ten_minute_outage_is_over_at_most_one_interval_after_the_server_is_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    config = ConnectionConfig(retry=NO_JITTER, failed_retry_interval=60.0)
    async with (
        open_fault_server() as server,
        managed(server, records, config=config, on_failed=readme_on_failed) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await server.stop()
        await trio.sleep(600)
        assert conn.state in (S.FAILED, S.RECONNECTING, S.CONNECTING)
        await server.start()
        back = trio.current_time()
        await conn.wait_for_state(S.CONNECTED)
        assert trio.current_time() - back <= 60.0
    probes = [r for r in records if r.reason.startswith("probe after")]
    assert probes  # it was FAILED, and left FAILED by probing
    assert all(r.duration >= 60.0 for r in probes if r.from_state is S.FAILED)


async def test_503_with_retry_after_for_twelve_seconds_then_recovery_by_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The issue's example: FAILED at 8 s (2 s apart), CONNECTED at the first probe."""
    records: list[TransitionRecord] = []
    async with open_fault_server() as server:
        server.reject_next(5, 503, [("Retry-After", "2")])  # the attempts at 0, 2, 4, 6, 8 s
        async with managed(server, records, on_failed=readme_on_failed) as conn:
            await conn.wait_for_state(S.FAILED)
            assert trio.current_time() == 8.0
            await trio.sleep(10)  # the server has been back for 6 s
            assert conn.state is S.FAILED  # until the probe: 300 s after the entry
            await conn.wait_for_state(S.CONNECTED)
            assert trio.current_time() == 308.0
    assert [r.retry_in for r in records if r.to_state is S.RECONNECTING and r.retry_in] == [2.0] * 4
    probe = next(r for r in records if r.from_state is S.FAILED)
    assert (probe.reason, probe.duration) == ("probe after 300 s in failed", 300.0)


async def test_a_server_that_closes_with_1008_is_retried_slowly_and_probed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    config = ConnectionConfig(retry=NO_JITTER, failed_retry_interval=120.0)
    async with open_fault_server() as server:
        server.close_after, server.close_after_abrupt = 0.5, False
        server.close_after_code = 1008
        async with managed(server, records, config=config) as conn:
            await conn.wait_for_state(S.FAILED)
            server.close_after = None  # the policy problem is fixed
            await conn.wait_for_state(S.CONNECTED)
            await trio.sleep(60)
            assert conn.state is S.CONNECTED
    drops = [r for r in records if r.close_code == 1008]
    assert {r.kind for r in drops} == {K.OTHER}
    assert [r.retry_in for r in drops if r.retry_in] == [5.0, 10.0, 15.0, 20.0]  # the other row


# 2. An application close code that means "token expired". -------------------------


async def test_4401_mapped_to_rejected_calls_the_hook_after_the_first_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    infos: list[FailureInfo] = []
    token = {"value": "stale-token-0001"}

    async def headers() -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {token['value']}")]

    async def on_failed(info: FailureInfo) -> bool:
        infos.append(info)
        token["value"] = "fresh-token-0002"
        server.close_after = None  # the server accepts the fresh token
        return True

    policy = RetryPolicy(jitter=0.0, close_codes={4401: K.REJECTED})
    async with open_fault_server() as server:
        server.close_after, server.close_after_abrupt = 0.0, False
        server.close_after_code, server.close_after_reason = 4401, "token expired"
        async with managed(
            server,
            records,
            config=ConnectionConfig(retry=policy),
            headers=headers,
            on_failed=on_failed,
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            await conn.wait_for_state(S.FAILED)
            await conn.wait_for_state(S.CONNECTED)
            assert trio.current_time() == 0.0  # no backoff anywhere
            await trio.sleep(30)
            assert conn.state is S.CONNECTED
    (info,) = infos
    assert (info.kind, info.close_code, info.consecutive_failures) == (K.REJECTED, 4401, 1)
    sent = [c.header("authorization") for c in server.connections]
    assert sent == ["Bearer stale-token-0001", "Bearer fresh-token-0002"]  # the stale one once
    drop = records[2]
    assert drop.reason == "rejected: ConnectionClosed (close code 4401) while connected"
    assert records[3].reason == "rejected is fatal"


# 3. Clients refused together do not retry together. -------------------------------


async def test_twenty_clients_told_retry_after_1_come_back_spread(
    autojump_clock: trio.testing.MockClock,
) -> None:
    retries: list[float] = []

    def on_transition(record: TransitionRecord) -> None:
        if record.to_state is S.CONNECTING and record.attempt == 2:
            retries.append(record.at)

    async with open_fault_server() as server:
        server.reject_next(20, 503, [("Retry-After", "1")])
        async with trio.open_nursery() as nursery:
            for index in range(20):
                config = ConnectionConfig(retry=RetryPolicy(random=random.Random(index).random))

                async def client(config: ConnectionConfig = config) -> None:
                    async with open_connection(
                        server.url,
                        open_stream=server.open_stream,
                        config=config,
                        on_transition=on_transition,
                    ) as conn:
                        await conn.wait_for_state(S.CONNECTED)

                nursery.start_soon(client)
    assert len(retries) == 20
    assert all(1.0 <= at <= 1.2 for at in retries)  # never earlier than asked
    assert max(retries) - min(retries) > 0.1  # spread over the jitter window, not one wave
    assert len(set(retries)) == 20


# 4. The count is of failures of any kind. -------------------------------------------


async def test_a_refused_attempt_after_a_drop_waits_the_network_rows_second_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server, managed(server, records) as conn:
        await conn.wait_for_state(S.CONNECTED)
        await server.stop()
        await conn.wait_for_state(S.RECONNECTING)  # the drop: 3 s
        await conn.wait_for_state(S.CONNECTING)
        await conn.wait_for_state(S.RECONNECTING)  # refused: n = 2
    drop, refused = (r for r in records if r.to_state is S.RECONNECTING)
    assert (drop.kind, drop.retry_in) == (K.UNEXPECTED_CLOSE, 3.0)
    assert (refused.kind, refused.consecutive_failures, refused.retry_in) == (K.NETWORK, 2, 20.0)


# 5. An observer that fails never harms the connection. ------------------------------


def raising_processor(logger: Any, method: str, event_dict: Any) -> Any:
    raise RuntimeError("the application's processor is broken")


async def test_a_raising_structlog_processor_is_reported_once_and_the_connection_goes_on(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    structlog.configure(processors=[raising_processor])
    records: list[TransitionRecord] = []
    async with open_fault_server() as server, managed(server, records, name="feed") as conn:
        await conn.wait_for_state(S.CONNECTED)
        for _ in range(3):
            await server.drop()
            await conn.wait_for_state(S.RECONNECTING)
            await conn.wait_for_state(S.CONNECTED)
        await conn.send("still here")
        assert await conn.receive() == "still here"
    assert records[-1].to_state is S.CLOSED
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("trio_conn: logging an event of connection feed failed ")
    assert "RuntimeError: the application's processor is broken" in lines[0]


async def test_a_closed_log_stream_does_not_end_the_connection(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    async with open_fault_server() as server, managed(server, []) as conn:
        await conn.wait_for_state(S.CONNECTED)
        stream.close()
        await server.drop()
        await conn.wait_for_state(S.CONNECTED)
        assert conn.statistics().total_failures == 1
    assert capsys.readouterr().err.count("trio_conn: logging an event") == 1


async def test_a_logging_error_message_is_scrubbed_before_it_reaches_stderr(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    def echoing_processor(logger: Any, method: str, event_dict: Any) -> Any:
        raise ValueError(f"cannot render {event_dict['url']} with cookie sid-7a8b9c0d1e")

    structlog.configure(processors=[echoing_processor])
    async with open_fault_server() as server:
        url = f"ws://bob:pw-0f1e2d3c@127.0.0.1:{server.port}/?token=tok-99887766"
        async with open_connection(
            url, open_stream=server.open_stream, headers=[("Cookie", "sid=sid-7a8b9c0d1e")]
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            await server.drop()
            await conn.wait_for_state(S.CONNECTED)
    err = capsys.readouterr().err
    assert "ValueError" in err
    for secret in ("pw-0f1e2d3c", "tok-99887766", "sid-7a8b9c0d1e"):
        assert secret not in err


# 6. The hook sees what the log sees. --------------------------------------------------


async def test_on_transition_gets_the_records_the_log_events_are_built_from(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    records: list[TransitionRecord] = []
    infos: list[FailureInfo] = []

    async def on_failed(info: FailureInfo) -> bool:
        infos.append(info)
        return True

    async with open_fault_server() as server, managed(server, records, on_failed=on_failed) as conn:
        await conn.wait_for_state(S.CONNECTED)
        await server.close_all(4000, "maintenance")
        await conn.wait_for_state(S.CONNECTED)
        server.reject_next(1, 403)
        await server.drop()
        await conn.wait_for_state(S.FAILED)
        await conn.wait_for_state(S.CONNECTED)
    logged = [e for e in events if e["event"] == "connection.state_changed"]
    assert len(logged) == len(records)
    for entry, record in zip(logged, records, strict=True):
        assert (entry["from_state"], entry["to_state"]) == (record.from_state, record.to_state)
        assert entry["reason"] == record.reason
        assert entry["duration_s"] == round(record.duration, 6)
        assert entry["attempt"] == record.attempt
        assert entry["consecutive_failures"] == record.consecutive_failures
        assert entry.get("error_kind") == record.kind
        assert entry.get("close_code") == record.close_code
        assert entry.get("status_code") == record.status_code
        assert entry.get("retry_in_s") == record.retry_in
        assert ("error_type" in entry) == (record.error is not None)
    closed = records[2]
    assert (closed.kind, closed.close_code, closed.retry_in, closed.attempt) == (
        K.UNEXPECTED_CLOSE,
        4000,
        3.0,
        1,
    )
    rejected = next(r for r in records if r.status_code == 403)
    assert (rejected.kind, rejected.retry_in) == (K.REJECTED, None)
    (info,) = infos
    assert (info.kind, info.status_code, info.close_code) == (K.REJECTED, 403, None)


# 7. Small faults. ----------------------------------------------------------------


async def test_a_send_that_loses_the_connection_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server:
        open_stream, streams = faulty_opener(server)
        records: list[TransitionRecord] = []
        async with open_connection(
            server.url,
            open_stream=open_stream,
            heartbeat=None,  # nothing else would notice: the session must see it
            on_transition=records.append,
            config=ConnectionConfig(retry=NO_JITTER),
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            streams[0].broken = True
            with pytest.raises(NotConnected) as info:
                await conn.send("hello")
            assert info.value.lost
            assert str(info.value) == (
                "not connected: the WebSocket connection was lost during the send"
            )
            await conn.wait_for_state(S.RECONNECTING)
            assert trio.current_time() == 0.0  # at once, not at a heartbeat
            await conn.wait_for_state(S.CONNECTED)
            await conn.send("again")
            assert await conn.receive() == "again"
    assert (
        records[2].reason == "unexpected_close: ConnectionClosed (close code 1006) while connected"
    )


async def test_a_refreshed_credential_is_logged_as_good_news(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    async def on_failed(info: FailureInfo) -> bool:
        return True

    async with open_fault_server() as server:
        server.reject_next(1, 401)
        async with managed(server, [], on_failed=on_failed) as conn:
            await conn.wait_for_state(S.CONNECTED)
    (leave,) = [e for e in events if e.get("from_state") == S.FAILED]
    assert leave["reason"] == "credentials refreshed by on_failed"
    assert leave["log_level"] == "info"
    assert "outcome" not in leave
    (recovery,) = [e for e in events if e["event"] == "connection.recovery"]
    assert (recovery["log_level"], recovery["outcome"]) == ("info", "success")


async def test_last_close_code_is_the_last_failures_and_none_without_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server, managed(server, []) as conn:
        await conn.wait_for_state(S.CONNECTED)
        await server.close_all(4000, "maintenance")
        await conn.wait_for_state(S.RECONNECTING)
        assert conn.statistics().last_close_code == 4000
        await server.stop()
        await conn.wait_for_state(S.CONNECTING)
        await conn.wait_for_state(S.RECONNECTING)  # refused: no close code
        stats = conn.statistics()
        assert (stats.last_close_code, stats.last_error_kind) == (None, K.NETWORK)


@pytest.mark.parametrize("seed", range(5))
async def test_the_readmes_long_outage_timeline_holds(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    """README "When the server stays away": the defaults, jitter 0.2, a 30-minute outage."""
    records: list[TransitionRecord] = []
    config = ConnectionConfig(retry=RetryPolicy(random=random.Random(seed).random))
    async with (
        open_fault_server() as server,
        managed(server, records, config=config, on_failed=readme_on_failed) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await server.stop()
        await conn.wait_for_state(S.RECONNECTING)
        (drop,) = records[2:]
        dropped = drop.at
        await trio.sleep(30 * 60)
        await server.start()
        back = trio.current_time()
        await conn.wait_for_state(S.CONNECTED)
        recovered = trio.current_time()

    def since_drop(state: ConnectionState) -> list[float]:
        return [at - dropped for at in entered(records[3:], state)]

    attempts = since_drop(S.CONNECTING)
    assert 2.4 <= attempts[0] <= 3.0
    assert 18.4 <= attempts[1] <= 23.0
    assert 42.4 <= attempts[2] <= 53.0
    assert 74.4 <= attempts[3] <= 93.0
    first_failed = since_drop(S.FAILED)[0]
    assert first_failed == attempts[3]  # the fifth failure: FAILED at once
    probes = [
        r for r in records if r.reason.startswith("probe after") and r.to_state is S.RECONNECTING
    ]
    assert 300.0 <= probes[0].duration <= 360.0
    assert 374.4 <= probes[0].at - dropped <= 453.0
    assert all(300.0 <= probe.duration <= 360.0 for probe in probes)
    assert recovered - back <= 360.0
