"""Chaos harness: managed connections against fault servers under a seeded schedule.

Each connection has its own fault server (in-memory streams, virtual time), a
consumer reading every message and a pusher sending numbered messages. A
scheduler injects faults of every kind the server offers, each undone after a
random while; then everything is healed and the invariants are checked:

- only table transitions, each leaving the state the previous one entered;
- per connection, the durations of its transitions sum to its lifetime;
- at most one open socket per manager at any time;
- every message is received at most once and in order; what a server
  connection sent reached the client as a prefix of what it sent (a lost tail
  only where that session ended with a failure transition);
- after healing, every connection is CONNECTED within the retry bound, and
  messages sent then all arrive;
- after close, no task of the manager and no file descriptor remains.

The schedule comes from ``random.Random(seed)``; Trio's own task order is not
seeded, so a replay repeats the faults and their timing, not every interleaving.
"""

from __future__ import annotations

import collections
import itertools
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.lowlevel
import trio.testing

from tests.helpers import PassThroughStream, library_tasks
from trio_conn import (
    TRANSITIONS,
    ConnectionConfig,
    ConnectionState,
    FailureInfo,
    Heartbeat,
    ManagedConnection,
    MessageHeartbeat,
    PingHeartbeat,
    RetryPolicy,
    TransitionRecord,
    open_connection,
)
from trio_conn.testing import FaultServer, open_fault_server

S = ConnectionState
KINDS = (
    "drop",
    "close",
    "freeze",
    "ignore_heartbeats",
    "reject_auth",
    "throttle",
    "hang",
    "garbage",
    "flap",
    "down",
    "oversized",
)
MAX_MESSAGE_SIZE = 64 * 1024
MAX_RETRY_AFTER = 20


class CountedStream(PassThroughStream):
    """A client stream that tells its opener when it is closed."""

    def __init__(self, inner: trio.abc.Stream, opener: CountingOpener) -> None:
        super().__init__(inner)
        self._opener = opener
        self._closed = False

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._opener.open -= 1
        await super().aclose()


class CountingOpener:
    """``open_stream`` for one manager: counts the streams it holds open."""

    def __init__(self, server: FaultServer) -> None:
        self._server = server
        self.open = 0
        self.opened = 0
        self.violations: list[str] = []

    async def __call__(self, host: str, port: int) -> trio.abc.Stream:
        inner = await self._server.open_stream(host, port)
        if self.open != 0:  # recorded, not raised: the manager would classify it
            self.violations.append(f"a socket opened while {self.open} was open")
        self.open += 1
        self.opened += 1
        return CountedStream(inner, self)


@dataclass
class Lane:
    """One managed connection with its server and bookkeeping."""

    index: int
    server: FaultServer
    opener: CountingOpener
    records: list[TransitionRecord] = field(default_factory=list)
    received: list[str | bytes] = field(default_factory=list)
    pushed: int = 0
    conn: ManagedConnection | None = None


@dataclass
class ChaosReport:
    seed: int
    connections: int
    faults: collections.Counter[str]
    transitions: int
    messages_pushed: int
    messages_received: int
    sockets_opened: int
    virtual_seconds: float
    recovery_seconds: float
    problems: list[str]

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.faults.items()))
        return (
            f"seed {self.seed}: {self.connections} connections, "
            f"{sum(self.faults.values())} faults ({kinds}); {self.transitions} transitions, "
            f"{self.sockets_opened} sockets, {self.messages_pushed} messages pushed, "
            f"{self.messages_received} received; {self.virtual_seconds:.0f} s of virtual "
            f"time; all CONNECTED {self.recovery_seconds:.1f} s after healing; "
            f"{len(self.problems)} problems"
        )


def retry_bound(config: ConnectionConfig) -> float:
    """Longest time from healing to CONNECTED: a hung attempt, the longest
    backoff (or Retry-After), a recovery cooldown, then one more attempt."""
    longest_delay = max(max(row.cap for row in config.retry.backoff.values()), MAX_RETRY_AFTER)
    return 2 * config.connect_timeout + longest_delay + config.recovery_cooldown


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


PING_OP, PONG_OP = '{"op":"ping"}', '{"op":"pong"}'


def heartbeat_for(index: int) -> Heartbeat:
    if index % 2:
        return MessageHeartbeat(lambda: PING_OP, lambda m: m == PONG_OP)
    return PingHeartbeat()


async def inject(rng: random.Random, lane: Lane, kind: str, nursery: trio.Nursery) -> None:
    """Apply one fault to ``lane``'s server; schedule its undo when it has one."""
    server = lane.server

    def later(seconds: float, undo: Callable[[], Any]) -> None:
        async def run() -> None:
            await trio.sleep(seconds)
            result = undo()
            if hasattr(result, "__await__"):
                await result

        nursery.start_soon(run)

    if kind == "drop":
        await server.drop()
    elif kind == "close":
        await server.close_all(rng.choice([1000, 1001, 1011, 4000]), "chaos")
    elif kind == "freeze":
        server.freeze()
        later(rng.uniform(5, 150), server.thaw)
    elif kind == "ignore_heartbeats":
        server.answer_pings = server.answer_heartbeats = False

        def answer() -> None:
            server.answer_pings = server.answer_heartbeats = True

        later(rng.uniform(5, 150), answer)
    elif kind == "reject_auth":
        server.reject_next(1, rng.choice([401, 403]))
    elif kind == "throttle":
        status = rng.choice([429, 503])
        server.reject_next(1, status, [("Retry-After", str(rng.randint(1, MAX_RETRY_AFTER)))])
    elif kind == "hang":
        server.hang_next(1)
    elif kind == "garbage":
        server.garbage_next(1)
    elif kind == "flap":
        server.close_after = rng.uniform(0.5, 3)

        def steady() -> None:
            server.close_after = None

        later(rng.uniform(10, 60), steady)
    elif kind == "down":
        await server.stop()
        later(rng.uniform(5, 120), server.start)
    elif kind == "oversized":
        with trio.move_on_after(5):
            await server.push("x" * (MAX_MESSAGE_SIZE + 1))
    else:  # pragma: no cover - the kinds are a closed list
        raise ValueError(kind)


async def run_chaos(seed: int, *, connections: int, faults: int) -> ChaosReport:
    """Run one seeded chaos scenario (call under a MockClock with autojump)."""
    rng = random.Random(seed)
    config = ConnectionConfig(
        retry=RetryPolicy(random=rng.random),
        max_message_size=MAX_MESSAGE_SIZE,
        recovery_cooldown=60.0,
    )
    problems: list[str] = []
    counts: collections.Counter[str] = collections.Counter()
    fds_before = open_fds()
    started = trio.current_time()
    recovery_seconds = 0.0

    stop_pushing = trio.Event()

    async def pushing(lane: Lane) -> None:
        while not stop_pushing.is_set():
            await trio.sleep(rng.uniform(0.5, 2.0))
            with trio.move_on_after(5):  # a frozen server holds sends at its gate
                await lane.server.push(f"{lane.index}:{lane.pushed}")
            lane.pushed += 1

    async with trio.open_nursery() as outer:
        lanes: list[Lane] = []
        for index in range(connections):
            server = await outer.start(_serve_for_lane)
            server.echo = False
            server.is_heartbeat = lambda m: m == PING_OP
            server.heartbeat_reply = lambda m: PONG_OP
            lanes.append(Lane(index, server, CountingOpener(server)))

        async with trio.open_nursery() as clients:
            for lane in lanes:
                clients.start_soon(_run_lane, lane, config, pushing)
            for lane in lanes:
                while lane.conn is None:
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as undo:
                order = list(itertools.islice(itertools.cycle(KINDS), faults))
                rng.shuffle(order)
                for kind in order:
                    await trio.sleep(rng.uniform(1, 10))
                    lane = rng.choice(lanes)
                    await inject(rng, lane, kind, undo)
                    counts[kind] += 1
                undo.cancel_scope.cancel()

            for lane in lanes:
                await lane.server.heal()
            healed_at = trio.current_time()
            bound = retry_bound(config)
            with trio.move_on_after(bound) as scope:
                for lane in lanes:
                    assert lane.conn is not None
                    await lane.conn.wait_for_state(S.CONNECTED)
            if scope.cancelled_caught:
                late = [(lane.index, lane.conn.state) for lane in lanes if lane.conn]
                problems.append(f"not all CONNECTED {bound} s after healing: {late}")
            recovery_seconds = trio.current_time() - healed_at

            # Messages sent now, with no fault, must all arrive.
            await trio.sleep(30)
            stop_pushing.set()
            await trio.testing.wait_all_tasks_blocked()
            clients.cancel_scope.cancel()

        for lane in lanes:
            problems += check_lane(lane)
        outer.cancel_scope.cancel()

    await trio.testing.wait_all_tasks_blocked()
    left = library_tasks()
    if left:
        problems.append(f"tasks left after close: {left}")
    if open_fds() != fds_before:
        problems.append(f"file descriptors: {fds_before} before, {open_fds()} after")
    return ChaosReport(
        seed=seed,
        connections=connections,
        faults=counts,
        transitions=sum(len(lane.records) for lane in lanes),
        messages_pushed=sum(lane.pushed for lane in lanes),
        messages_received=sum(len(lane.received) for lane in lanes),
        sockets_opened=sum(lane.opener.opened for lane in lanes),
        virtual_seconds=trio.current_time() - started,
        recovery_seconds=recovery_seconds,
        problems=problems,
    )


async def _serve_for_lane(task_status: trio.TaskStatus[FaultServer]) -> None:
    async with open_fault_server() as server:
        task_status.started(server)
        await trio.sleep_forever()


async def _always_retry(info: FailureInfo) -> bool:
    return True  # "credentials refreshed": retry


async def _consume(lane: Lane) -> None:
    assert lane.conn is not None
    async for message in lane.conn:
        lane.received.append(message)


async def _run_lane(lane: Lane, config: ConnectionConfig, pushing: Callable[[Lane], Any]) -> None:
    async with open_connection(
        lane.server.url,
        open_stream=lane.opener,
        config=config,
        heartbeat=heartbeat_for(lane.index),
        on_transition=lane.records.append,
        on_failed=_always_retry,
        name=f"chaos-{lane.index}",
    ) as conn:
        lane.conn = conn
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_consume, lane)
            nursery.start_soon(pushing, lane)


def check_lane(lane: Lane) -> list[str]:
    """Every invariant of one lane, as a list of problems (empty: all held)."""
    name = f"connection {lane.index}"
    problems = [f"{name}: {violation}" for violation in lane.opener.violations]
    records = lane.records
    if lane.conn is not None and lane.conn.state is not S.CLOSED:
        problems.append(f"{name}: ended {lane.conn.state}, not closed")
    previous = S.DISCONNECTED
    for record in records:
        if record.from_state is not previous or record.to_state not in TRANSITIONS[previous]:
            problems.append(f"{name}: {record.from_state} -> {record.to_state} after {previous}")
        previous = record.to_state
    lifetime = records[-1].at - (records[0].at - records[0].duration)
    total = sum(record.duration for record in records)
    if abs(total - lifetime) > 1e-6 * max(1.0, lifetime):
        problems.append(f"{name}: durations sum to {total}, lifetime {lifetime}")

    prefix = f"{lane.index}:"
    numbers = [int(str(m).split(":")[1]) for m in lane.received if str(m).startswith(prefix)]
    if any(b <= a for a, b in itertools.pairwise(numbers)):
        problems.append(f"{name}: messages duplicated or out of order")
    unexpected = [m for m in lane.received if not str(m).startswith(prefix)]
    if unexpected:
        problems.append(f"{name}: received messages never pushed: {unexpected[:3]}")
    received = set(lane.received)
    lost_tails = 0
    for seen in lane.server.connections:
        sent = [m for m in seen.sent if str(m).startswith(prefix)]
        got = [m for m in sent if m in received]
        if got != sent[: len(got)]:
            problems.append(f"{name}: server connection {seen.id} delivered a non-prefix")
        if len(got) < len(sent):
            lost_tails += 1
    session_failures = sum(
        1 for r in records if r.from_state is S.CONNECTED and r.to_state is S.RECONNECTING
    )
    if lost_tails > session_failures:
        problems.append(
            f"{name}: {lost_tails} sessions lost messages, only {session_failures} failed"
        )
    last = lane.server.connections[-1] if lane.server.connections else None
    if last is not None and [
        m for m in last.sent if str(m).startswith(prefix) and m not in received
    ]:
        problems.append(f"{name}: messages of the final, healthy session were lost")
    return problems
