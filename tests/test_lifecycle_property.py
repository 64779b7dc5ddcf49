"""A simulated year per example: the lifecycle driven by random events, every invariant checked.

The simulated world alternates healthy days and outages of every kind (refused,
throttled with Retry-After, rejected credentials, flapping), with application
requests (disconnect, connect, reset) at random moments and a hook that
sometimes refreshes. The driver obeys the actions exactly as the supervisor
does. Hypothesis draws the configuration and the seed of the world; each
example runs at least a year of clock time and at least ``MIN_EVENTS`` calls,
so the example set covers well over 10^5 events.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_conn import (
    TRANSITIONS,
    ConnectionConfig,
    ConnectionState,
    ErrorKind,
    RetryPolicy,
    TransitionRecord,
)
from trio_conn._lifecycle import Lifecycle
from trio_conn._policy import FailureDetails
from trio_conn._records import CallHook, Connect, Finish, Record, Wait

S = ConnectionState
K = ErrorKind
YEAR = 365 * 86_400.0
MIN_EVENTS = 2_000
EXAMPLES = 60
HOOK_SECONDS = 10.0  # the longest a simulated hook runs
OUTAGES = ("refused", "throttled", "rejected", "flapping")


@dataclass
class World:
    """The server and the application, seen from the driver."""

    rng: random.Random
    healthy_until: float = 0.0
    outage: str | None = None
    outage_until: float = 0.0

    def advance(self, now: float) -> None:
        """Move the world's own schedule forward to ``now``."""
        while True:
            if self.outage is None and now >= self.healthy_until:
                self.outage = self.rng.choice(OUTAGES)
                self.outage_until = self.healthy_until + self.rng.expovariate(1 / 7_200)
            elif self.outage is not None and now >= self.outage_until:
                self.outage = None
                self.healthy_until = self.outage_until + self.rng.expovariate(1 / 172_800)
            else:
                return

    def attempt_failure(self) -> FailureDetails | None:
        """How an attempt made now fails (None: it succeeds)."""
        outage, rng = self.outage, self.rng
        if outage == "refused" or (outage is None and rng.random() < 0.02):
            return FailureDetails(K.NETWORK, ConnectionRefusedError(111, "refused"))
        if outage == "throttled":
            retry_after = float(rng.choice([1, 30, 120, 600, 7_200]))
            return FailureDetails(
                K.THROTTLED, OSError("503"), status_code=503, retry_after=retry_after
            )
        if outage == "rejected":
            return FailureDetails(K.REJECTED, PermissionError("401"), status_code=401)
        return None

    def session_length(self) -> float:
        return 1.0 if self.outage == "flapping" else self.rng.expovariate(1 / 21_600)

    def drop(self) -> FailureDetails:
        code = self.rng.choice([1000, 1001, 1006, 1006, 1011, 1013, 4401])
        if self.rng.random() < 0.2:
            return FailureDetails(K.HEARTBEAT, TimeoutError("missed"))
        return FailureDetails(K.UNEXPECTED_CLOSE, EOFError("closed"), close_code=code)


@dataclass
class Checker:
    """Every invariant, checked on each record and action as it comes."""

    config: ConnectionConfig
    previous: ConnectionState = S.DISCONNECTED
    records: list[TransitionRecord] = field(default_factory=list)
    attempts: int = 0
    failed_entered: float | None = None
    hook_calls: list[float] = field(default_factory=list)
    hook_called_this_stay: bool = False
    last_retry_after: float | None = None
    total_duration: float = 0.0
    probing: bool = False  # a probe's attempt runs (left FAILED, not yet CONNECTED)
    probe_failed: bool = False

    def records_at(self, records: tuple[Record, ...], now: float) -> None:
        config = self.config
        ceiling = config.max_connection_failures
        for record in records:
            if not isinstance(record, TransitionRecord):
                continue
            assert record.at == now
            assert record.from_state is self.previous, (record, self.previous)
            assert record.to_state in TRANSITIONS[record.from_state], record
            assert 0 <= record.consecutive_failures <= ceiling, record
            if record.to_state is S.CONNECTING:
                self.attempts += 1
            assert record.attempt == self.attempts
            if self.probe_failed:  # the move right after a failed probe's failure
                assert record.to_state in (S.FAILED, S.DISCONNECTED, S.CLOSED), record
                self.probe_failed = False
            if self.probing and record.kind is not None and record.to_state is S.RECONNECTING:
                assert record.retry_in is None, f"a failed probe backed off: {record}"
                self.probe_failed = True
            if record.from_state is S.FAILED:
                self.probing = record.reason.startswith("probe after")
            elif record.to_state is not S.CONNECTING:
                self.probing = self.probing and record.to_state is S.RECONNECTING
            if record.retry_in is not None:
                self.check_delay(record)
            if record.to_state is S.FAILED:
                self.failed_entered = now
                self.hook_called_this_stay = False
            if record.from_state is S.FAILED:
                assert self.failed_entered is not None
                stay = now - self.failed_entered
                if record.reason.startswith("probe after"):
                    self.check_probe(stay)
                else:
                    assert record.reason.startswith(("reset: ", "credentials refreshed")) or (
                        record.to_state in (S.DISCONNECTED, S.CLOSED)
                    ), record
                self.failed_entered = None
            self.previous = record.to_state
            self.total_duration += record.duration
            self.records.append(record)

    def check_delay(self, record: TransitionRecord) -> None:
        policy = self.config.retry
        delay, kind = record.retry_in, record.kind
        assert delay is not None
        assert kind is not None
        if kind is K.THROTTLED and self.last_retry_after is not None:
            asked = min(self.last_retry_after, policy.max_retry_after)
            assert asked <= delay <= policy.max_retry_after
            assert delay <= self.last_retry_after * (1 + policy.jitter) + 1e-9
            return
        row = policy.backoff[kind].delay(record.consecutive_failures)
        assert row * (1 - policy.jitter) - 1e-9 <= delay <= row

    def check_probe(self, stay: float) -> None:
        config = self.config
        interval = config.failed_retry_interval
        assert interval is not None, "a probe with failed_retry_interval=None"
        wait = interval
        if self.last_retry_after is not None:
            wait = max(wait, min(self.last_retry_after, config.retry.max_retry_after))
        assert stay >= wait - 1e-6, (stay, wait)  # never earlier than asked
        # ... and never much later: a connection never gives up for good.
        assert stay <= wait * (1 + config.retry.jitter) + HOOK_SECONDS + 1e-6, (stay, wait)

    def hook_called(self, now: float, state: ConnectionState) -> None:
        assert state is S.FAILED
        assert not self.hook_called_this_stay, "the hook twice in one FAILED stay"
        if self.hook_calls:
            assert now - self.hook_calls[-1] >= self.config.recovery_cooldown - 1e-6
        self.hook_calls.append(now)
        self.hook_called_this_stay = True


def simulate(config: ConnectionConfig, has_hook: bool, seed: int) -> int:
    """Run one simulated year (at least MIN_EVENTS calls); return the number of calls."""
    rng = random.Random(seed)
    # The policy's jitter comes from the same seed: an example replays exactly.
    config = dataclasses.replace(config, retry=dataclasses.replace(config.retry, random=rng.random))
    world = World(rng, healthy_until=rng.expovariate(1 / 86_400))
    life = Lifecycle(config, now=0.0, has_hook=has_hook)
    check = Checker(config)
    now, calls, failures_counted = 0.0, 0, 0

    def reported(records: tuple[Record, ...]) -> None:
        check.records_at(records, now)

    while now < YEAR or calls < MIN_EVENTS:
        world.advance(now)
        step = life.next_action(now)
        calls += 1
        reported(step.records)
        action = step.action
        assert isinstance(action, Connect | Wait | CallHook)
        if isinstance(action, Connect):
            assert life.state is S.CONNECTING
            stop_during = rng.random() < 0.01
            problem = world.attempt_failure()
            if problem is None:
                now += rng.uniform(0.0, 2.0)
                reported(life.connected(now))
                now += world.session_length()
                world.advance(now)
                problem, phase = world.drop(), "while connected"
            else:
                now += rng.uniform(0.0, 10.0)
                phase = "during the handshake"
            if stop_during:
                life.request_stop(S.DISCONNECTED, "application paused")
            if not life.stop_pending:
                failures_counted += 1
                check.last_retry_after = problem.retry_after
            reported(life.session_ended(now, problem, phase))
            calls += 2
        elif isinstance(action, Wait):
            assert action.until > now
            # The application acts now and then; otherwise the wait runs out.
            request_at = now + rng.expovariate(1 / 40_000)
            if request_at < action.until:
                now = request_at
                state = life.state
                if state is S.DISCONNECTED:
                    assert life.request_connect()
                elif state is S.FAILED and rng.random() < 0.5:
                    assert life.request_reset("operator")
                else:
                    assert life.request_stop(S.DISCONNECTED, "application paused")
                calls += 1
            else:
                now = action.until
        elif isinstance(action, CallHook):
            check.hook_called(now, life.state)
            assert action.info.consecutive_failures == check.records[-1].consecutive_failures
            started = now
            now += rng.uniform(0.0, HOOK_SECONDS)
            refreshed = rng.random() < 0.5
            if refreshed and world.outage == "rejected":
                world.outage_until = now  # the new credentials end the rejection
            reported(life.hook_answered(now, started_at=started, refreshed=refreshed))
            calls += 1
        # The clock's account: durations of the stays add up to the elapsed time.
        total = check.total_duration + life.machine.time_in_state(now)
        assert math.isclose(total, now, rel_tol=1e-9, abs_tol=1e-6), (total, now)

    life.request_stop(S.CLOSED, "the year is over")
    if life.state in (S.CONNECTING, S.CONNECTED):
        reported(life.session_ended(now, None, "while connected"))
    step = life.next_action(now)
    reported(step.records)
    assert isinstance(step.action, Finish)
    assert check.previous is S.CLOSED
    stats = life.statistics(now, heartbeat_rtt=None)
    assert stats.attempts == check.attempts
    assert stats.total_failures == failures_counted
    assert math.isclose(sum(stats.time_by_state.values()), now, rel_tol=1e-9)
    return calls


configs = st.builds(
    lambda failures, stable, cooldown, interval, jitter, fatal_4401: ConnectionConfig(
        max_connection_failures=failures,
        stable_after=stable,
        recovery_cooldown=cooldown,
        failed_retry_interval=interval,
        retry=RetryPolicy(
            jitter=jitter,
            close_codes={4401: K.REJECTED} if fatal_4401 else {},
            max_retry_after=900.0,
        ),
    ),
    failures=st.integers(min_value=1, max_value=8),
    stable=st.sampled_from([0.0, 30.0, 600.0]),
    cooldown=st.sampled_from([0.0, 60.0, 3_600.0]),
    interval=st.sampled_from([None, 60.0, 300.0, 3_600.0]),
    jitter=st.sampled_from([0.0, 0.2, 1.0]),
    fatal_4401=st.booleans(),
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(config=configs, has_hook=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_a_simulated_year_keeps_every_invariant(
    config: ConnectionConfig, has_hook: bool, seed: int
) -> None:
    calls = simulate(config, has_hook, seed)
    assert calls >= MIN_EVENTS  # EXAMPLES * MIN_EVENTS >= 10^5 events per run


def test_one_fixed_year_for_the_record() -> None:
    """A fixed seed with the defaults, so a regression shows the same numbers each run."""
    assert simulate(ConnectionConfig(), has_hook=False, seed=7) >= MIN_EVENTS
