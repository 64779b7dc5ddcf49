"""The Prometheus collector (trio_conn.metrics), checked on the exposition text a scrape gets.

Every scenario runs against the fault server in virtual time, through its
in-memory streams (exact clock readings), and reads the registry as
Prometheus would: ``generate_latest`` parsed back into samples.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trio_conn import (
    ConnectionConfig,
    ConnectionState,
    ErrorKind,
    FailureInfo,
    ManagedConnection,
    MessageHeartbeat,
    PingHeartbeat,
    RetryPolicy,
    TransitionRecord,
    open_connection,
    open_connection_group,
)
from trio_conn._meters import Traffic
from trio_conn.metrics import PrometheusMetrics
from trio_conn.testing import FaultServer, open_fault_server

S = ConnectionState
NO_JITTER = RetryPolicy(jitter=0.0)
Samples = dict[str, float]


def scrape(registry: CollectorRegistry) -> dict[str, Samples]:
    """The exposition text, parsed: per conn_id, ``'name{label="v",...}' -> value``."""
    text = generate_latest(registry).decode()
    found: dict[str, Samples] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            conn_id = labels.pop("conn_id")
            shown = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
            found.setdefault(conn_id, {})[f"{sample.name}{{{shown}}}"] = sample.value
    return found


def nonzero(samples: Samples) -> Samples:
    return {name: value for name, value in samples.items() if value != 0}


@asynccontextmanager
async def connect(
    server: FaultServer, metrics: PrometheusMetrics, name: str, **kwargs: Any
) -> AsyncIterator[ManagedConnection]:
    kwargs.setdefault("heartbeat", None)
    async with open_connection(
        server.url, name=name, open_stream=server.open_stream, metrics=metrics, **kwargs
    ) as conn:
        await conn.wait_for_state(S.CONNECTED)
        yield conn


async def handshake_sizes(server: FaultServer) -> tuple[int, int]:
    """Bytes a session receives: ``(the handshake's answer, our close's answer)``."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry=registry)
    async with connect(server, metrics, "dropped") as conn:
        await server.drop()
        await conn.wait_for_state(S.RECONNECTING)
    async with connect(server, metrics, "closed"):
        pass
    found = scrape(registry)
    answer = found["dropped"]["trio_conn_received_bytes_total{}"]
    return int(answer), int(found["closed"]["trio_conn_received_bytes_total{}"] - answer)


async def test_a_connections_life_as_a_scrape_shows_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Connect, messages both ways, a slow pong, drop, reconnect, FAILED (401),
    recovery, close: every non-zero sample of the connection, exactly."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry=registry)
    records: list[TransitionRecord] = []

    async def on_failed(info: FailureInfo) -> bool:
        return True  # credentials refreshed

    config = ConnectionConfig(
        retry=NO_JITTER, stable_after=0, heartbeat_interval=10.0, heartbeat_timeout=5.0
    )
    async with open_fault_server() as server:
        answer, close_answer = await handshake_sizes(server)
        start = trio.current_time()
        async with open_connection(
            server.url,
            name="feed",
            config=config,
            open_stream=server.open_stream,
            on_failed=on_failed,
            on_transition=records.append,
            metrics=metrics,
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)  # t=0, a beat at once
            await conn.send("hello")
            await conn.send("world")
            assert [await conn.receive(), await conn.receive()] == ["hello", "world"]
            live = scrape(registry)["feed"]  # the live session's counters, read now
            assert live['trio_conn_connection_state{state="connected"}'] == 1
            assert live['trio_conn_connection_state{state="connecting"}'] == 0
            assert live["trio_conn_received_messages_total{}"] == 2
            assert live["trio_conn_sent_messages_total{}"] == 2
            await trio.sleep(1)
            server.freeze()
            await trio.sleep_until(start + 10.3)  # the beat of t=10 waits 0.3 s for its pong
            server.thaw()
            await trio.sleep_until(start + 15)
            await server.drop()  # connected 15 s; retry in 3 s
            await conn.wait_for_state(S.CONNECTED)  # t=18, a beat at once
            await server.push("pushed")
            assert await conn.receive() == "pushed"
            await trio.sleep(1)  # its beat answered
            server.reject_next(1, 401)
            await server.drop()  # retry in 3 s (stable_after=0: the first failure again)
            await conn.wait_for_state(S.FAILED)  # t=22: rejected is fatal
            await conn.wait_for_state(S.CONNECTED)  # on_failed refreshed: at once
            await trio.sleep(1)  # its beat answered
        assert trio.current_time() - start == 23.0

    found = scrape(registry)
    assert set(found) == {"feed"}
    edge = 'trio_conn_transitions_total{from_state="%s",kind="%s",to_state="%s"}'
    rtt = 'trio_conn_heartbeat_round_trip_seconds_bucket{le="%s"}'
    retry = 'trio_conn_retry_delay_seconds_bucket{le="%s"}'
    # Frames each way: client frames carry a 4-byte mask; pings and pongs 8 bytes.
    sent = (6 + 5) * 2 + 14 * 2 + 14 + 14 + (6 + 2)  # hello, world, 4 pings, our close
    received = (2 + 5) * 2 + 10 * 2 + 10 + (2 + 6) + 10  # echoes, 4 pongs, "pushed"
    expected: Samples = {
        'trio_conn_connection_state{state="closed"}': 1,
        edge % ("disconnected", "", "connecting"): 1,
        edge % ("connecting", "", "connected"): 3,
        edge % ("connected", "unexpected_close", "reconnecting"): 2,
        edge % ("reconnecting", "", "connecting"): 3,
        edge % ("connecting", "rejected", "reconnecting"): 1,
        edge % ("reconnecting", "rejected", "failed"): 1,
        edge % ("failed", "", "reconnecting"): 1,
        edge % ("connected", "", "closed"): 1,
        'trio_conn_state_seconds_total{state="connected"}': 15 + 1 + 1,
        'trio_conn_state_seconds_total{state="reconnecting"}': 3 + 3,
        "trio_conn_attempts_total{}": 4,
        'trio_conn_failures_total{kind="unexpected_close"}': 2,
        'trio_conn_failures_total{kind="rejected"}': 1,
        'trio_conn_recoveries_total{outcome="success"}': 1,
        **{rtt % le: 3 for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25")},
        **{rtt % le: 4 for le in ("0.5", "1.0", "2.5", "5.0", "10.0", "+Inf")},
        "trio_conn_heartbeat_round_trip_seconds_count{}": 4,
        **{retry % le: 2 for le in ("5.0", "10.0", "15.0", "30.0", "60.0", "120.0", "300.0")},
        retry % "+Inf": 2,
        "trio_conn_retry_delay_seconds_count{}": 2,
        "trio_conn_retry_delay_seconds_sum{}": 6.0,
        "trio_conn_received_messages_total{}": 3,
        "trio_conn_sent_messages_total{}": 2,
        "trio_conn_received_bytes_total{}": 3 * answer + received + close_answer,
        "trio_conn_sent_bytes_total{}": sent,
    }
    rtt_sum = found["feed"].pop("trio_conn_heartbeat_round_trip_seconds_sum{}")
    assert rtt_sum == pytest.approx(0.3, abs=1e-9)  # 10.3 - 10.0, in floating point
    assert nonzero(found["feed"]) == expected
    # The time per state is the records' durations, summed: the lifecycle's own figures.
    by_state = dict.fromkeys(S, 0.0)
    for record in records:
        by_state[record.from_state] += record.duration
    for state, seconds in by_state.items():
        assert found["feed"][f'trio_conn_state_seconds_total{{state="{state}"}}'] == seconds


async def test_recovery_outcomes_declined_and_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry=registry)
    answers = iter([False, "yes"])  # declined, then not a bool: an error

    async def on_failed(info: FailureInfo) -> Any:
        return next(answers)

    config = ConnectionConfig(retry=NO_JITTER, recovery_cooldown=0, failed_retry_interval=10)
    async with open_fault_server() as server:
        server.reject_next(2, 401)
        async with open_connection(
            server.url,
            name="r",
            config=config,
            heartbeat=None,
            open_stream=server.open_stream,
            on_failed=on_failed,
            metrics=metrics,
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)  # after a probe failed and one succeeded
    outcomes = {
        name: value
        for name, value in scrape(registry)["r"].items()
        if name.startswith("trio_conn_recoveries_total")
    }
    assert outcomes == {
        'trio_conn_recoveries_total{outcome="success"}': 0,
        'trio_conn_recoveries_total{outcome="declined"}': 1,
        'trio_conn_recoveries_total{outcome="error"}': 1,
    }


async def test_a_message_heartbeats_round_trip_is_observed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry=registry)
    heartbeat = MessageHeartbeat(lambda: "ping?", lambda message: message == "pong!")
    async with open_fault_server() as server:
        server.is_heartbeat = lambda message: message == "ping?"
        server.heartbeat_reply = lambda message: "pong!"
        async with connect(server, metrics, "app", heartbeat=heartbeat):
            await trio.sleep(1)
            found = scrape(registry)["app"]
    assert found["trio_conn_heartbeat_round_trip_seconds_count{}"] == 1
    assert found["trio_conn_received_messages_total{}"] == 1  # the reply, consumed
    assert found["trio_conn_sent_messages_total{}"] == 1


class Broken:
    """A metrics backend that raises everywhere (a broken registry, a bug)."""

    def __init__(self, *, in_attach: bool = False) -> None:
        self.in_attach = in_attach
        self.calls = 0

    def attach(self, conn_id: str, traffic: object) -> Broken:
        if self.in_attach:
            raise RuntimeError("the registry is broken")
        return self

    def record(self, record: object) -> None:
        self.calls += 1
        raise RuntimeError("the registry is broken")

    def heartbeat_rtt(self, seconds: float) -> None:
        self.calls += 1
        raise ValueError("the registry is broken")

    def heartbeat_missed(self) -> None:
        self.calls += 1
        raise ValueError("the registry is broken")

    def closed(self) -> None:
        self.calls += 1
        raise RuntimeError("the registry is broken")


@pytest.mark.parametrize("in_attach", [False, True], ids=["meter raises", "attach raises"])
async def test_a_backend_that_raises_never_affects_the_connection(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]], in_attach: bool
) -> None:
    broken = Broken(in_attach=in_attach)
    records: list[TransitionRecord] = []
    config = ConnectionConfig(retry=NO_JITTER)
    async with (
        open_fault_server() as server,
        open_connection(
            server.url,
            name="b",
            config=config,
            open_stream=server.open_stream,
            on_transition=records.append,
            metrics=broken,  # duck-typed: any object with attach()
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await conn.send("x")
        assert await conn.receive() == "x"
        await trio.sleep(1)  # the beat answered
        await server.drop()
        await conn.wait_for_state(S.RECONNECTING)
        await conn.wait_for_state(S.CONNECTED)
        await trio.sleep(1)
    moves = [(r.from_state, r.to_state) for r in records]
    assert moves == [
        (S.DISCONNECTED, S.CONNECTING),
        (S.CONNECTING, S.CONNECTED),
        (S.CONNECTED, S.RECONNECTING),
        (S.RECONNECTING, S.CONNECTING),
        (S.CONNECTING, S.CONNECTED),
        (S.CONNECTED, S.CLOSED),
    ]
    failed = [e for e in events if e["event"] == "connection.hook_failed"]
    assert [(e["hook"], e["error_type"]) for e in failed] == [("metrics", "RuntimeError")]
    assert broken.calls == (0 if in_attach else len(records) + 1 + 2)  # + closed + 2 beats


async def test_label_cardinality_is_capped(autojump_clock: trio.testing.MockClock) -> None:
    """Two conn_id values at most; beyond: "other"; the oldest closed series goes first."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry=registry, max_connections=2, keep_closed=1)
    state = 'trio_conn_connection_state{state="%s"}'
    async with open_fault_server() as server:
        async with connect(server, metrics, "a"):
            async with connect(server, metrics, "b"), connect(server, metrics, "c") as c:
                found = scrape(registry)
                assert set(found) == {"a", "b", "other"}
                assert found["other"][state % "connected"] == 1
                await c.disconnect()  # "other" for its whole life
                assert scrape(registry)["other"][state % "disconnected"] == 1
            found = scrape(registry)
            assert found["b"][state % "closed"] == 1  # kept, closed
            assert nonzero({k: v for k, v in found["other"].items() if "state{" in k}) == {}
            async with connect(server, metrics, "d"):  # room made: "b" (closed) goes
                assert set(scrape(registry)) == {"a", "d", "other"}
            assert scrape(registry)["d"][state % "closed"] == 1  # the last closed one stays
        found = scrape(registry)
        assert set(found) == {"a", "other"}  # keep_closed=1: "d" made room for "a"
        assert found["other"]["trio_conn_attempts_total{}"] == 1  # c's: never goes back


async def test_a_closed_series_is_continued_by_its_successor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry=registry, keep_closed=0)
    async with open_fault_server() as server:
        async with connect(server, metrics, "x"):
            pass
        assert "x" not in scrape(registry)  # keep_closed=0: gone at CLOSED
        async with connect(server, metrics, "y"), connect(server, metrics, "y"):
            pass  # two connections, one name: one series
        assert scrape(registry) == {}


async def test_group_members_are_labelled_by_key(autojump_clock: trio.testing.MockClock) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry=registry)
    state = 'trio_conn_connection_state{state="%s"}'
    async with (
        open_fault_server() as server,
        open_connection_group(
            heartbeat=None, open_stream=server.open_stream, metrics=metrics
        ) as group,
    ):
        for key in ("alice", "bob"):
            await group.add(key, server.url)
        for conn in group.values():
            await conn.wait_for_state(S.CONNECTED)
        found = scrape(registry)
        assert set(found) == {"alice", "bob"}
        assert all(found[key][state % "connected"] == 1 for key in found)
        await group.restart("bob")
        await group["bob"].wait_for_state(S.CONNECTED)
        found = scrape(registry)
        assert found["bob"]["trio_conn_attempts_total{}"] == 2  # the series continues
        assert found["bob"][state % "connected"] == 1
        assert found["bob"][state % "closed"] == 0  # the old member's place was taken
        assert found["alice"]["trio_conn_attempts_total{}"] == 1


def test_bad_arguments_are_refused() -> None:
    registry = CollectorRegistry()
    with pytest.raises(ValueError, match="max_connections"):
        PrometheusMetrics(registry=registry, max_connections=-1)
    with pytest.raises(TypeError, match="keep_closed"):
        PrometheusMetrics(registry=registry, keep_closed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="increasing"):
        PrometheusMetrics(registry=registry, heartbeat_buckets=(1.0, 0.5))
    with pytest.raises(ValueError, match="Inf"):
        PrometheusMetrics(registry=registry, retry_buckets=(1.0, float("inf")))
    PrometheusMetrics(registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        PrometheusMetrics(registry=registry)  # one per registry
    unregistered = PrometheusMetrics(registry=None)
    assert "trio_conn_connection_state" in generate_latest(registry).decode()
    del unregistered


async def test_open_connection_refuses_a_non_backend() -> None:
    with pytest.raises(TypeError, match="metrics must be"):
        async with open_connection("ws://127.0.0.1:1/", metrics=object()):  # type: ignore[arg-type]
            pass
    with pytest.raises(TypeError, match="metrics must be"):
        async with open_connection_group(metrics=42):  # type: ignore[arg-type]
            pass


async def test_missed_heartbeats_are_counted_and_every_failure_kind_starts_at_zero(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A frozen peer: the round trips stop, the misses are counted (an alert can
    see a peer that stopped answering); the failure kinds are all exposed from
    the start, so increase() sees each kind's first failure."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry=registry)
    config = ConnectionConfig(
        heartbeat_interval=1.0, heartbeat_timeout=1.0, max_heartbeat_failures=3, retry=NO_JITTER
    )
    async with (
        open_fault_server() as server,
        connect(server, metrics, "feed", heartbeat=PingHeartbeat(), config=config),
    ):
        failures = {
            name: value
            for name, value in scrape(registry)["feed"].items()
            if name.startswith("trio_conn_failures_total")
        }
        assert failures == {f'trio_conn_failures_total{{kind="{k}"}}': 0.0 for k in ErrorKind}
        server.freeze()
        await trio.sleep(2.5)  # two beats judged missed
        assert scrape(registry)["feed"]["trio_conn_heartbeat_misses_total{}"] == 2.0


def test_a_value_that_is_no_duration_is_not_observed() -> None:
    metrics = PrometheusMetrics(registry=None)
    meter: Any = metrics.attach("x", Traffic())
    for value in (float("nan"), float("inf"), -1.0, 0.25):
        meter.heartbeat_rtt(value)
    registry = CollectorRegistry()
    registry.register(metrics)
    samples = scrape(registry)["x"]
    assert samples["trio_conn_heartbeat_round_trip_seconds_count{}"] == 1.0
    assert samples["trio_conn_heartbeat_round_trip_seconds_sum{}"] == 0.25
