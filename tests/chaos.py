"""Chaos harness: managed connections against fault servers under a seeded schedule.

Each connection has its own fault server (in-memory streams, virtual time), a
consumer reading every message and a pusher sending numbered messages. A
scheduler injects faults of every kind the server offers, each undone after a
random while (among them outages long enough to reach FAILED); then everything
is healed and the invariants are checked:

- only table transitions, each leaving the state the previous one entered;
- per connection, the durations of its transitions sum to its lifetime;
- at most one open socket per manager at any time;
- every message is received at most once and in order; what a server
  connection sent reached the client as a prefix of what it sent (a lost tail
  only where that session ended with a failure transition);
- every stay in FAILED ends the way the lane's configuration says: by a
  probe no sooner than ``failed_retry_interval`` (and no later than the
  longest probe wait) after it began on a lane with no ``on_failed`` hook, by
  the hook within ``recovery_cooldown`` on a lane with one, or by the close;
- after healing, every connection is CONNECTED within the retry bound (which
  covers a connection that entered FAILED just before healing and has no
  hook), and messages sent then all arrive;
- after close, no task of the manager and no file descriptor remains;
- the fault server carries out each fault within its bound (a ``close_all``
  that never returns is reported, not waited for).

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
    "outage",
    "oversized",
)
MAX_MESSAGE_SIZE = 64 * 1024
#: Largest ``Retry-After`` a throttling server sends, in seconds.
MAX_RETRY_AFTER = 20
#: Seconds between probes while FAILED: short enough that a probe comes within
#: the run (virtual time is free, but probes are what the run should reach).
FAILED_RETRY_INTERVAL = 120.0
#: How long a flapping server keeps each connection open, in seconds.
FLAP_CLOSE_AFTER = (0.5, 3.0)
#: How long "freeze" holds a server, in seconds.
FREEZE_SECONDS = (5.0, 150.0)
#: Longest a "close" fault may take: ``close_all`` gives each WebSocket 5 s to
#: answer, then waits for every stream to end, which on a frozen server is at
#: the thaw (at most FREEZE_SECONDS[1] later), and for a hung or garbled
#: handshake when the client gives up (connect_timeout). Past this, it is
#: reported, not waited for: ``FaultServer.close_all`` also waits for a stream
#: whose handshake was under way when it was called, which nothing closes once
#: accepted (a frozen server holds such handshakes).
CLOSE_ALL_BOUND = 300.0
#: Seconds between two messages a lane's server pushes.
PUSH_EVERY = (0.5, 2.0)
#: How long "down" stops a server: short, retries while RECONNECTING only.
DOWN_SECONDS = (5.0, 120.0)
#: How long "outage" stops a server: long enough for FAILED from any state. With
#: the default rows, refused attempts (network, 10n/60 shortened by jitter) reach
#: the 5th consecutive failure within 10 + 20 + 30 + 40 = 100 s of a first
#: failure; before that a lane may finish a hung attempt (connect_timeout, 10 s),
#: a backoff already begun (at most 40 s: a longer one needs a 5th failure, which
#: is FAILED) or, with a hook, wait for it (recovery_cooldown, 60 s).
OUTAGE_SECONDS = (200.0, 400.0)


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
    #: Whether the lane's connection has an ``on_failed`` hook (see :func:`has_hook`).
    hook: bool
    records: list[TransitionRecord] = field(default_factory=list)
    received: list[str | bytes] = field(default_factory=list)
    pushed: int = 0
    conn: ManagedConnection | None = None
    #: "down" and "outage" faults in force: the server starts again at the last undo.
    stops: int = 0
    #: Faults the fault server could not carry out in their bound.
    stuck_faults: list[str] = field(default_factory=list)


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
    recovery_bound: float
    #: Stays in FAILED (entries), and those left by a probe.
    failed_stays: int
    probes: int
    problems: list[str]

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.faults.items()))
        return (
            f"seed {self.seed}: {self.connections} connections, "
            f"{sum(self.faults.values())} faults ({kinds}); {self.transitions} transitions, "
            f"{self.sockets_opened} sockets, {self.messages_pushed} messages pushed, "
            f"{self.messages_received} received; {self.failed_stays} stays in FAILED, "
            f"{self.probes} left by a probe; {self.virtual_seconds:.0f} s of virtual "
            f"time; all CONNECTED {self.recovery_seconds:.1f} s after healing "
            f"(bound {self.recovery_bound:g} s); {len(self.problems)} problems"
        )


def longest_probe_wait(config: ConnectionConfig) -> float:
    """Longest stay in FAILED before a probe: ``RetryPolicy.probe_delay`` at its
    largest, ``max(interval, min(Retry-After, max_retry_after)) * (1 + jitter)``,
    with the largest ``Retry-After`` the chaos servers send."""
    interval = config.failed_retry_interval
    if interval is None:
        raise ValueError("no probes: failed_retry_interval is None")
    retry = config.retry
    return max(interval, min(MAX_RETRY_AFTER, retry.max_retry_after)) * (1 + retry.jitter)


def retry_bound(config: ConnectionConfig) -> float:
    """Longest time from healing to CONNECTED, for a lane with or without the hook.

    With C = ``connect_timeout`` and j = the retry jitter:

    1. What a fault injected before healing still does afterwards: it ends the
       attempt or session under way at healing, at most R = max(C, flap, push)
       seconds after healing: a hung or garbled handshake (or one a freeze held)
       fails within C of its start; a flapping server, with ``close_after`` already
       set for a session it accepted, drops it within ``FLAP_CLOSE_AFTER[1]``; a
       heartbeat whose reply was lost before healing can count a miss only until
       the next pushed message, within ``PUSH_EVERY[1]`` (any message answers a
       beat). Every attempt begun after healing succeeds, so there is at most one
       such failure per lane, and a lane with none is CONNECTED or on its way by
       step 2.
    2. The wait that failure (or the state at healing) starts, the longest of:
       - a backoff: the largest row cap (jitter only shortens it);
       - a throttle: ``min(MAX_RETRY_AFTER * (1 + j), max_retry_after)``;
       - FAILED with no hook (a 5th failure, a fatal one or a failed probe):
         :func:`longest_probe_wait`, counted from the FAILED entry, itself at
         most R after healing (``failed_retry_interval * (1 + j)`` here, 144 s);
       - FAILED with the hook: it is called ``recovery_cooldown`` after its
         previous call at the latest and answers True at once.
    3. One attempt, which succeeds: at most C.

    So R + max(step 2) + C: 10 + 144 + 10 = 164 s with the chaos config. The
    wait for CONNECTED goes lane by lane, so a lane CONNECTED at healing that a
    flap drops afterwards is caught again; its failure is a step-1 failure.

    :raises ValueError: ``failed_retry_interval`` is None (with no hook, FAILED
        would last until ``reset()``: no bound).
    """
    retry = config.retry
    c = config.connect_timeout
    residual = max(c, FLAP_CLOSE_AFTER[1], PUSH_EVERY[1])
    wait = max(
        max(row.cap for row in retry.backoff.values()),
        min(MAX_RETRY_AFTER * (1 + retry.jitter), retry.max_retry_after),
        longest_probe_wait(config),
        config.recovery_cooldown,
    )
    return residual + wait + c


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
        code = rng.choice([1000, 1001, 1011, 4000])
        started = trio.current_time()
        with trio.move_on_after(CLOSE_ALL_BOUND) as scope:
            await server.close_all(code, "chaos")
        if scope.cancelled_caught:
            lane.stuck_faults.append(
                f"close_all({code}) called at {started:g} had not returned "
                f"{CLOSE_ALL_BOUND:g} s later"
            )
    elif kind == "freeze":
        server.freeze()
        later(rng.uniform(*FREEZE_SECONDS), server.thaw)
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
        server.close_after = rng.uniform(*FLAP_CLOSE_AFTER)

        def steady() -> None:
            server.close_after = None

        later(rng.uniform(10, 60), steady)
    elif kind in ("down", "outage"):
        # Overlapping stops of one server nest: a short "down" inside an outage
        # must not cut the outage short.
        lane.stops += 1
        await server.stop()

        async def start() -> None:
            lane.stops -= 1
            if lane.stops == 0:
                await server.start()

        later(rng.uniform(*(DOWN_SECONDS if kind == "down" else OUTAGE_SECONDS)), start)
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
        failed_retry_interval=FAILED_RETRY_INTERVAL,
    )
    bound = retry_bound(config)
    problems: list[str] = []
    counts: collections.Counter[str] = collections.Counter()
    fds_before = open_fds()
    started = trio.current_time()
    recovery_seconds = 0.0

    stop_pushing = trio.Event()

    async def pushing(lane: Lane) -> None:
        while not stop_pushing.is_set():
            await trio.sleep(rng.uniform(*PUSH_EVERY))
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
            lanes.append(Lane(index, server, CountingOpener(server), has_hook(index)))

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
            problems += check_lane(lane, config)
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
        recovery_bound=bound,
        failed_stays=sum(
            1 for lane in lanes for record in lane.records if record.to_state is S.FAILED
        ),
        probes=sum(1 for lane in lanes for record in lane.records if is_probe(record)),
        problems=problems,
    )


async def _serve_for_lane(task_status: trio.TaskStatus[FaultServer]) -> None:
    async with open_fault_server() as server:
        task_status.started(server)
        await trio.sleep_forever()


def has_hook(index: int) -> bool:
    """Whether lane ``index`` gets the ``on_failed`` hook: lanes 2, 3, 6, 7 (4 of 10).

    Most lanes have none, so FAILED is left by probing, as the recovery bound
    must hold with no hook; the others keep a hook that always refreshes, so
    a hook and a pending probe meet in one FAILED stay. Pairs of lanes, not
    odd or even ones: :func:`heartbeat_for` alternates by index, and each kind
    of heartbeat should run with and without the hook.
    """
    return index // 2 % 2 == 1


def is_probe(record: TransitionRecord) -> bool:
    """Whether ``record`` left FAILED by a probe."""
    return record.from_state is S.FAILED and record.reason.startswith("probe after")


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
        on_failed=_always_retry if lane.hook else None,
        name=f"chaos-{lane.index}",
    ) as conn:
        lane.conn = conn
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_consume, lane)
            nursery.start_soon(pushing, lane)


def check_lane(lane: Lane, config: ConnectionConfig) -> list[str]:
    """Every invariant of one lane, as a list of problems (empty: all held)."""
    name = f"connection {lane.index}"
    problems = [f"{name}: {violation}" for violation in lane.opener.violations]
    problems += [f"{name}: fault server: {stuck}" for stuck in lane.stuck_faults]
    records = lane.records
    if lane.conn is not None and lane.conn.state is not S.CLOSED:
        problems.append(f"{name}: ended {lane.conn.state}, not closed")
    previous = S.DISCONNECTED
    for record in records:
        if record.from_state is not previous or record.to_state not in TRANSITIONS[previous]:
            problems.append(f"{name}: {record.from_state} -> {record.to_state} after {previous}")
        previous = record.to_state
    problems += [f"{name}: {problem}" for problem in check_failed_stays(lane, config)]
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


def check_failed_stays(lane: Lane, config: ConnectionConfig) -> list[str]:
    """How each stay in FAILED ended, as a list of problems (empty: all as configured).

    With no hook, only a probe or a stop leaves FAILED (nothing calls
    ``reset()``), and a probe comes ``failed_retry_interval`` to
    :func:`longest_probe_wait` after the entry. The hook is due
    ``recovery_cooldown`` after its previous call at the latest, sooner than any
    probe when the cooldown is below the interval, and always refreshes.
    """
    problems: list[str] = []
    interval = config.failed_retry_interval
    assert interval is not None
    longest = longest_probe_wait(config)
    hook_first = config.recovery_cooldown < interval
    slack = 1e-9 * max(1.0, longest)  # the clock readings are floats
    for record in lane.records:
        if record.from_state is not S.FAILED or record.to_state in (S.DISCONNECTED, S.CLOSED):
            continue
        stay = f"FAILED left after {record.duration:g} s at {record.at:g} ({record.reason!r})"
        if is_probe(record):
            if lane.hook and hook_first:
                problems.append(f"{stay}: a probe, although the hook was due first")
            if not interval - slack <= record.duration <= longest + slack:
                problems.append(f"{stay}: a probe outside [{interval:g}, {longest:g}] s")
        elif record.reason == "credentials refreshed by on_failed" and lane.hook:
            if record.duration > config.recovery_cooldown + slack:
                problems.append(f"{stay}: the hook came after recovery_cooldown")
        else:
            problems.append(f"{stay}: neither a probe nor the hook")
    return problems
