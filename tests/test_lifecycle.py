"""The lifecycle alone: every decision about a connection's life, on a float clock, no Trio.

Each test plays the driver: it reports what happened with a clock reading and
checks the records and the next action the lifecycle answers.
"""

from __future__ import annotations

import math

import pytest

from trio_conn import (
    ConnectionConfig,
    ConnectionState,
    ErrorKind,
    HeartbeatTimeout,
    RetryPolicy,
    TransitionRecord,
)
from trio_conn._lifecycle import Lifecycle
from trio_conn._policy import FailureDetails
from trio_conn._records import CallHook, Connect, Finish, Record, Step, Wait

S = ConnectionState
K = ErrorKind
NO_JITTER = RetryPolicy(jitter=0.0)
HANDSHAKE, CONNECTED = "during the handshake", "while connected"


def failure(
    kind: ErrorKind = K.NETWORK,
    *,
    close_code: int | None = None,
    status_code: int | None = None,
    retry_after: float | None = None,
) -> FailureDetails:
    error: BaseException = ConnectionRefusedError(111, "refused")
    if kind is K.HEARTBEAT:
        error = HeartbeatTimeout(3, 30.0)
    return FailureDetails(kind, error, close_code, status_code, retry_after)


def closed(code: int) -> FailureDetails:
    return FailureDetails(K.UNEXPECTED_CLOSE, EOFError("closed"), close_code=code)


def transitions(records: tuple[Record, ...]) -> list[TransitionRecord]:
    return [r for r in records if isinstance(r, TransitionRecord)]


def edges(records: tuple[Record, ...]) -> list[tuple[ConnectionState, ConnectionState]]:
    return [(r.from_state, r.to_state) for r in transitions(records)]


class Driver:
    """A lifecycle and its clock, with the calls a test needs in one word each."""

    def __init__(self, has_hook: bool = False, **config: object) -> None:
        config.setdefault("retry", NO_JITTER)
        self.config = ConnectionConfig(**config)  # type: ignore[arg-type]
        self.now = 0.0
        self.life = Lifecycle(self.config, now=self.now, has_hook=has_hook)

    def at(self, now: float) -> Driver:
        self.now = now
        return self

    def step(self) -> Step:
        return self.life.next_action(self.now)

    def attempt(self) -> Step:
        """The next action must be an attempt; take it."""
        step = self.step()
        assert isinstance(step.action, Connect), step
        assert self.life.state is S.CONNECTING
        return step

    def connect(self) -> tuple[Record, ...]:
        self.attempt()
        return self.life.connected(self.now)

    def fail(
        self, what: FailureDetails | None = None, phase: str = HANDSHAKE
    ) -> tuple[Record, ...]:
        return self.life.session_ended(self.now, what or failure(), phase)

    def wait_until(self) -> float:
        step = self.step()
        assert isinstance(step.action, Wait), step
        return step.action.until

    def sleep_out(self) -> Step:
        """Let the current Wait run out, then take the next action."""
        self.now = self.wait_until()
        return self.step()


# -- the start and a drop ------------------------------------------------------------


def test_a_new_connection_connects_at_once() -> None:
    driver = Driver()
    assert driver.life.state is S.DISCONNECTED
    step = driver.attempt()
    (record,) = transitions(step.records)
    assert (record.from_state, record.to_state, record.reason) == (
        S.DISCONNECTED,
        S.CONNECTING,
        "connect requested",
    )
    assert (record.attempt, record.consecutive_failures, record.kind) == (1, 0, None)
    (connected,) = transitions(driver.at(0.25).life.connected(0.25))
    assert (connected.to_state, connected.duration, connected.reason) == (
        S.CONNECTED,
        0.25,
        "handshake complete",
    )


def test_a_drop_backs_off_on_the_unexpected_close_row_and_the_record_says_why() -> None:
    driver = Driver()
    driver.connect()
    (record,) = transitions(driver.at(100.0).fail(closed(1006), CONNECTED))
    assert (record.from_state, record.to_state) == (S.CONNECTED, S.RECONNECTING)
    assert record.reason == "unexpected_close: EOFError (close code 1006) while connected"
    assert (record.kind, record.close_code, record.retry_in) == (K.UNEXPECTED_CLOSE, 1006, 3.0)
    assert isinstance(record.error, EOFError)
    assert record.consecutive_failures == 1
    assert driver.wait_until() == 103.0
    step = driver.sleep_out()
    assert isinstance(step.action, Connect)
    (retry,) = transitions(step.records)
    assert (retry.reason, retry.duration, retry.attempt, retry.retry_in) == (
        "retry after 3 s",
        3.0,
        2,
        None,
    )


@pytest.mark.parametrize(
    ("kind", "delays"),
    [
        (K.UNEXPECTED_CLOSE, [3, 6, 9, 12]),
        (K.NETWORK, [10, 20, 30, 40]),
        (K.HEARTBEAT, [10, 20, 30, 40]),
        (K.THROTTLED, [10, 20, 30, 40]),
        (K.OTHER, [5, 10, 15, 20]),
    ],
)
def test_every_row_of_the_failure_path_then_failed_at_the_threshold(
    kind: ErrorKind, delays: list[float]
) -> None:
    driver = Driver()
    slept: list[float] = []
    for n in range(1, 5):
        (record,) = transitions(driver.attempt().records[-1:])
        assert record.to_state is S.CONNECTING
        (failed,) = transitions(driver.fail(failure(kind)))
        assert failed.consecutive_failures == n
        assert failed.retry_in is not None
        slept.append(failed.retry_in)
        driver.at(driver.wait_until())
    assert slept == delays
    driver.attempt()
    fifth = driver.fail(failure(kind))
    assert edges(fifth) == [(S.CONNECTING, S.RECONNECTING), (S.RECONNECTING, S.FAILED)]
    into_reconnecting, into_failed = transitions(fifth)
    assert into_reconnecting.retry_in is None  # no sleep: straight on to FAILED
    assert into_failed.reason == "5 consecutive failures"
    assert into_failed.duration == 0.0
    assert (into_failed.kind, into_failed.consecutive_failures) == (kind, 5)
    assert driver.life.state is S.FAILED


def test_the_count_is_of_failures_of_any_kind() -> None:
    driver = Driver()
    driver.connect()
    driver.fail(closed(1006), CONNECTED)  # n = 1
    driver.at(driver.wait_until())
    driver.attempt()
    (record,) = transitions(driver.fail(failure(K.NETWORK)))  # n = 2: the network row's second step
    assert (record.consecutive_failures, record.retry_in) == (2, 20.0)


# -- fatal kinds and close codes ------------------------------------------------------


def test_a_fatal_kind_goes_to_failed_at_once_and_the_hook_is_due_at_once() -> None:
    driver = Driver(has_hook=True)
    driver.attempt()
    records = driver.fail(failure(K.REJECTED, status_code=403))
    assert edges(records) == [(S.CONNECTING, S.RECONNECTING), (S.RECONNECTING, S.FAILED)]
    assert transitions(records)[1].reason == "rejected is fatal"
    assert transitions(records)[1].status_code == 403
    step = driver.step()
    assert isinstance(step.action, CallHook)
    info = step.action.info
    assert (info.kind, info.consecutive_failures, info.status_code, info.close_code) == (
        K.REJECTED,
        1,
        403,
        None,
    )


def test_a_close_code_mapped_to_a_fatal_kind_reaches_the_hook_on_its_first_occurrence() -> None:
    policy = RetryPolicy(jitter=0.0, close_codes={4401: K.REJECTED})
    driver = Driver(has_hook=True, retry=policy)
    driver.connect()
    records = driver.at(60.0).fail(closed(4401), CONNECTED)
    assert edges(records) == [(S.CONNECTED, S.RECONNECTING), (S.RECONNECTING, S.FAILED)]
    drop = transitions(records)[0]
    assert drop.reason == "rejected: EOFError (close code 4401) while connected"
    assert (drop.kind, drop.close_code) == (K.REJECTED, 4401)
    step = driver.step()
    assert isinstance(step.action, CallHook)
    assert (step.action.info.kind, step.action.info.close_code) == (K.REJECTED, 4401)
    assert driver.life.last_failure is not None
    assert driver.life.last_failure.kind is K.REJECTED


def test_without_a_mapping_4401_is_just_another_drop() -> None:
    driver = Driver()
    driver.connect()
    (record,) = transitions(driver.at(60.0).fail(closed(4401), CONNECTED))
    assert (record.kind, record.retry_in) == (K.UNEXPECTED_CLOSE, 3.0)


def test_1013_try_again_later_counts_as_throttled() -> None:
    driver = Driver()
    driver.connect()
    (record,) = transitions(driver.at(60.0).fail(closed(1013), CONNECTED))
    assert (record.kind, record.retry_in) == (K.THROTTLED, 10.0)


# -- stability ----------------------------------------------------------------------


def test_the_count_resets_only_after_stable_after_seconds_connected() -> None:
    driver = Driver()
    driver.connect()
    driver.fail(closed(1006), CONNECTED)
    driver.at(driver.wait_until()).connect()
    connected_at = driver.now
    assert driver.life.consecutive_failures(connected_at + 29.9) == 1
    assert driver.life.consecutive_failures(connected_at + 30.0) == 0
    (drop,) = transitions(driver.at(connected_at + 29.9).fail(closed(1006), CONNECTED))
    assert drop.consecutive_failures == 2  # not stable: counted on
    driver.at(driver.wait_until()).connect()
    (drop,) = transitions(driver.at(driver.now + 30.0).fail(closed(1006), CONNECTED))
    assert drop.consecutive_failures == 1  # stable: the count had reset


def test_a_flapping_connection_reaches_failed() -> None:
    driver = Driver()
    for n in range(1, 6):
        driver.connect()
        records = driver.at(driver.now + 1.0).fail(closed(1000), CONNECTED)
        if n < 5:
            driver.at(driver.wait_until())
    assert transitions(records)[-1].to_state is S.FAILED


def test_stable_after_zero_resets_on_connect() -> None:
    driver = Driver(stable_after=0)
    for _ in range(20):
        (connected,) = transitions(driver.connect())
        assert connected.consecutive_failures == 0
        (drop,) = transitions(driver.at(driver.now + 1.0).fail(closed(1000), CONNECTED))
        assert drop.consecutive_failures == 1
        driver.at(driver.wait_until())


# -- FAILED: the hook, its cooldown, probes -------------------------------------------


def reach_failed(driver: Driver, what: FailureDetails | None = None) -> float:
    """Fail attempts until FAILED; return the clock reading of the entry."""
    for _ in range(driver.config.max_connection_failures):
        driver.attempt()
        records = driver.fail(what)
        if driver.life.state is S.FAILED:
            return transitions(records)[-1].at
        driver.at(driver.wait_until())
    raise AssertionError("never reached FAILED")


def test_hook_true_resets_the_count_and_retries_at_once() -> None:
    driver = Driver(has_hook=True)
    entered = reach_failed(driver)
    step = driver.step()
    assert isinstance(step.action, CallHook)
    assert step.action.info.consecutive_failures == 5
    (recovery,) = driver.at(entered + 2.0).life.hook_answered(
        driver.now, started_at=entered, refreshed=True
    )
    assert not isinstance(recovery, TransitionRecord)
    assert (recovery.refreshed, recovery.duration, recovery.consecutive_failures) == (
        True,
        2.0,
        5,
    )
    step = driver.step()
    assert isinstance(step.action, Connect)
    leave, retry = transitions(step.records)
    assert (leave.from_state, leave.to_state) == (S.FAILED, S.RECONNECTING)
    assert leave.reason == retry.reason == "credentials refreshed by on_failed"
    assert leave.kind is None  # good news: no failure fields
    assert (leave.consecutive_failures, retry.duration) == (0, 0.0)


def test_declined_hook_then_a_probe_every_failed_retry_interval() -> None:
    driver = Driver(has_hook=True, failed_retry_interval=300.0, recovery_cooldown=60.0)
    entered = reach_failed(driver)
    step = driver.step()
    assert isinstance(step.action, CallHook)
    driver.life.hook_answered(driver.now, started_at=driver.now, refreshed=False)
    assert driver.wait_until() == entered + 300.0
    step = driver.sleep_out()
    assert isinstance(step.action, Connect)
    leave, probe = transitions(step.records)
    assert leave.reason == probe.reason == "probe after 300 s in failed"
    assert (leave.duration, leave.consecutive_failures) == (300.0, 5)
    # A failed probe goes back to FAILED at once; the count stays at the threshold.
    records = driver.fail()
    assert edges(records) == [(S.CONNECTING, S.RECONNECTING), (S.RECONNECTING, S.FAILED)]
    assert [r.consecutive_failures for r in transitions(records)] == [5, 5]
    assert transitions(records)[1].reason == "probe failed"
    assert driver.life.statistics(driver.now, heartbeat_rtt=None).total_failures == 6
    # The hook again, at once: its cooldown (60 s) is long over.
    assert isinstance(driver.step().action, CallHook)


def test_a_probe_that_connects_ends_the_outage() -> None:
    driver = Driver(failed_retry_interval=60.0)
    reach_failed(driver)
    driver.sleep_out()
    (connected,) = transitions(driver.life.connected(driver.now))
    assert connected.consecutive_failures == 0
    # A drop soon after is an ordinary drop, not another failed_retry_interval.
    (drop,) = transitions(driver.at(driver.now + 10.0).fail(closed(1006), CONNECTED))
    assert (drop.consecutive_failures, drop.retry_in) == (1, 3.0)


def test_a_flapping_server_after_a_probe_reaches_failed_again() -> None:
    driver = Driver(failed_retry_interval=60.0)
    reach_failed(driver)
    driver.sleep_out()
    for n in range(1, 6):
        if n > 1:
            driver.at(driver.wait_until()).attempt()
        driver.life.connected(driver.now)
        records = driver.at(driver.now + 1.0).fail(closed(1000), CONNECTED)
    assert transitions(records)[-1].to_state is S.FAILED
    assert transitions(records)[-1].reason == "5 consecutive failures"


def test_a_fatal_failure_on_a_probe_is_named_and_a_network_one_is_a_failed_probe() -> None:
    driver = Driver(failed_retry_interval=60.0)
    driver.attempt()
    driver.fail(failure(K.REJECTED))
    driver.sleep_out()
    records = driver.fail(failure(K.NETWORK))
    assert transitions(records)[-1].reason == "probe failed"
    assert transitions(records)[-1].consecutive_failures == 2
    driver.sleep_out()
    assert transitions(driver.fail(failure(K.REJECTED)))[-1].reason == "rejected is fatal"


def test_the_hook_is_called_at_most_once_per_entry_and_not_within_its_cooldown() -> None:
    driver = Driver(has_hook=True, recovery_cooldown=600.0, failed_retry_interval=60.0)
    entered = reach_failed(driver)
    assert isinstance(driver.step().action, CallHook)
    driver.life.hook_answered(entered, started_at=entered, refreshed=False)
    # Once per entry: the next action is the probe, not the hook again.
    assert driver.wait_until() == entered + 60.0
    driver.sleep_out()
    driver.fail()  # probe failed: FAILED again at entered + 60
    # Hook due at entered + 600 (cooldown), probe at entered + 120: the probe comes first.
    assert driver.wait_until() == entered + 120.0
    for _ in range(8):  # probes at +120 ... +540 all fail
        driver.sleep_out()
        driver.fail()
    assert driver.now == entered + 540.0
    # The probe at +600 and the hook at +600: the hook first.
    assert driver.wait_until() == entered + 600.0
    driver.at(entered + 600.0)
    assert isinstance(driver.step().action, CallHook)


def test_without_a_hook_and_without_probes_failed_waits_for_reset() -> None:
    driver = Driver(failed_retry_interval=None)
    reach_failed(driver)
    assert driver.wait_until() == math.inf
    assert driver.at(driver.now + 86_400.0).wait_until() == math.inf
    assert driver.life.next_retry_at() is None
    assert driver.life.request_reset("operator") is True
    step = driver.step()
    assert isinstance(step.action, Connect)
    leave = transitions(step.records)[0]
    assert (leave.reason, leave.consecutive_failures) == ("reset: operator", 0)


def test_a_probe_waits_at_least_the_last_retry_after() -> None:
    policy = RetryPolicy(jitter=0.0, max_retry_after=3600.0)
    driver = Driver(retry=policy, failed_retry_interval=300.0)
    entered = reach_failed(driver, failure(K.THROTTLED, status_code=503, retry_after=900.0))
    assert driver.wait_until() == entered + 900.0
    assert driver.life.next_retry_at() == entered + 900.0


def test_probe_jitter_only_lengthens_the_wait() -> None:
    samples = iter([0.5] * 100)
    policy = RetryPolicy(jitter=0.2, random=lambda: next(samples))
    driver = Driver(retry=policy, failed_retry_interval=300.0)
    entered = reach_failed(driver)
    assert driver.wait_until() == pytest.approx(entered + 330.0)


# -- requests: stop, reset, connect, and which wins ------------------------------------


def test_a_stop_during_a_session_is_carried_out_and_its_failure_not_counted() -> None:
    driver = Driver()
    driver.connect()
    assert driver.life.request_stop(S.DISCONNECTED, "bye") is True
    assert driver.life.stop_pending
    assert driver.at(5.0).fail(closed(1006), CONNECTED) == ()  # part of the stop
    step = driver.step()
    assert edges(step.records) == [(S.CONNECTED, S.DISCONNECTED)]
    assert transitions(step.records)[0].reason == "bye"
    assert step.action == Wait(math.inf)
    assert driver.life.statistics(5.0, heartbeat_rtt=None).total_failures == 0


def test_a_stop_interrupts_the_backoff() -> None:
    driver = Driver()
    driver.attempt()
    driver.fail()
    driver.life.request_stop(S.DISCONNECTED, "operator")
    step = driver.at(1.0).step()
    assert edges(step.records) == [(S.RECONNECTING, S.DISCONNECTED)]
    assert driver.life.next_retry_at() is None


def test_close_wins_over_disconnect_and_connect_over_a_pending_disconnect() -> None:
    driver = Driver()
    driver.connect()
    driver.life.request_stop(S.DISCONNECTED, "first")
    driver.life.request_stop(S.DISCONNECTED, "second")
    driver.life.request_stop(S.CLOSED, "shutdown")
    driver.life.request_stop(S.DISCONNECTED, "late")
    assert driver.life.closing
    assert driver.life.request_connect() is False
    driver.fail(closed(1000), CONNECTED)
    step = driver.step()
    assert edges(step.records) == [(S.CONNECTED, S.CLOSED)]
    assert transitions(step.records)[0].reason == "shutdown"
    assert isinstance(step.action, Finish)
    assert driver.life.request_stop(S.CLOSED, "again") is False


def test_connect_after_disconnect_starts_afresh() -> None:
    driver = Driver()
    driver.attempt()
    driver.fail()
    driver.life.request_stop(S.DISCONNECTED, "pause")
    assert driver.step().action == Wait(math.inf)
    assert driver.life.state is S.DISCONNECTED
    assert driver.life.request_connect() is True
    step = driver.attempt()
    (start,) = transitions(step.records)
    assert (start.reason, start.consecutive_failures, start.attempt) == ("connect requested", 0, 2)


def test_connect_is_refused_outside_disconnected() -> None:
    driver = Driver()
    driver.connect()
    assert driver.life.request_connect() is False


def test_reset_is_refused_unless_failed_and_not_stopping() -> None:
    driver = Driver(failed_retry_interval=None)
    assert driver.life.request_reset("early") is False
    reach_failed(driver)
    driver.life.request_stop(S.DISCONNECTED, "bye")
    assert driver.life.request_reset("late") is False
    step = driver.step()
    assert edges(step.records) == [(S.FAILED, S.DISCONNECTED)]


def test_reset_during_the_hook_is_used_when_the_hook_declines() -> None:
    driver = Driver(has_hook=True)
    reach_failed(driver)
    assert isinstance(driver.step().action, CallHook)
    assert driver.life.request_reset("operator") is True  # while the hook runs
    driver.life.hook_answered(driver.now, started_at=driver.now, refreshed=False)
    step = driver.step()
    assert transitions(step.records)[0].reason == "reset: operator"


def test_reset_during_the_hook_is_used_up_when_the_hook_refreshes() -> None:
    driver = Driver(has_hook=True, failed_retry_interval=None)
    reach_failed(driver)
    driver.step()
    driver.life.request_reset("operator")
    driver.life.hook_answered(driver.now, started_at=driver.now, refreshed=True)
    step = driver.step()
    assert transitions(step.records)[0].reason == "credentials refreshed by on_failed"
    driver.fail(failure(K.REJECTED))  # FAILED again: nothing pending from the last stay
    assert isinstance(driver.at(driver.now + 60.0).step().action, CallHook)
    driver.life.hook_answered(driver.now, started_at=driver.now, refreshed=False)
    assert driver.wait_until() == math.inf


def test_reset_cuts_the_hooks_cooldown_short() -> None:
    driver = Driver(has_hook=True, recovery_cooldown=60.0)
    reach_failed(driver, failure(K.REJECTED))
    driver.step()
    driver.life.hook_answered(driver.now, started_at=driver.now, refreshed=False)
    driver.life.request_reset("first")
    driver.step()
    driver.fail(failure(K.REJECTED))
    assert driver.wait_until() == driver.now + 60.0  # the cooldown
    driver.life.request_reset("second")
    step = driver.step()
    assert isinstance(step.action, Connect)
    assert transitions(step.records)[0].reason == "reset: second"


def test_a_stop_while_the_hook_runs_wins_over_its_refresh() -> None:
    driver = Driver(has_hook=True)
    reach_failed(driver)
    driver.step()
    driver.life.request_stop(S.CLOSED, "shutdown")
    driver.life.hook_answered(driver.now, started_at=driver.now, refreshed=True)
    step = driver.step()
    assert edges(step.records) == [(S.FAILED, S.CLOSED)]
    assert isinstance(step.action, Finish)


# -- statistics and misuse -------------------------------------------------------------


def test_last_close_code_follows_the_last_failure() -> None:
    driver = Driver()
    driver.connect()
    driver.fail(closed(1006), CONNECTED)
    assert driver.life.statistics(driver.now, heartbeat_rtt=None).last_close_code == 1006
    driver.at(driver.wait_until()).attempt()
    driver.fail(failure(K.NETWORK))
    stats = driver.life.statistics(driver.now, heartbeat_rtt=0.25)
    assert stats.last_close_code is None
    assert (stats.last_error, stats.last_error_kind) == (
        "network: ConnectionRefusedError",
        K.NETWORK,
    )
    assert (stats.next_retry_at, stats.heartbeat_rtt) == (driver.now + 20.0, 0.25)


def test_statistics_times_add_up_to_the_elapsed_time() -> None:
    driver = Driver()
    driver.connect()
    driver.at(40.0).fail(closed(1006), CONNECTED)
    stats = driver.life.statistics(41.5, heartbeat_rtt=None)
    assert sum(stats.time_by_state.values()) == 41.5
    assert (stats.state_since, stats.time_in_state, stats.connected_since) == (40.0, 1.5, None)
    assert stats.transitions[(S.CONNECTED, S.RECONNECTING)] == 1


def test_the_driver_cannot_skip_a_session_or_go_back_in_time() -> None:
    driver = Driver()
    driver.attempt()
    with pytest.raises(RuntimeError, match="next_action while connecting"):
        driver.step()
    with pytest.raises(ValueError, match="a session ends by a failure or by a stop"):
        driver.life.session_ended(driver.now, None, HANDSHAKE)
    driver.at(10.0).fail()
    with pytest.raises(ValueError, match="monotonic"):
        driver.life.next_action(9.0)
    with pytest.raises(ValueError, match="monotonic"):
        driver.life.next_action(math.nan)
    with pytest.raises(ValueError, match="a stop goes to disconnected or closed"):
        driver.life.request_stop(S.FAILED, "no")


def test_close_now_closes_from_any_state_with_a_pending_stops_reason() -> None:
    driver = Driver()
    driver.connect()
    driver.life.request_stop(S.CLOSED, "closed by the application")
    (record,) = transitions(driver.at(7.0).life.close_now(7.0, "supervisor ended"))
    assert (record.from_state, record.to_state, record.reason) == (
        S.CONNECTED,
        S.CLOSED,
        "closed by the application",
    )
    assert isinstance(driver.step().action, Finish)


def test_a_stop_drops_a_pending_reset_for_good() -> None:
    driver = Driver(failed_retry_interval=None)
    reach_failed(driver, failure(K.REJECTED))
    assert driver.life.request_reset("operator") is True
    driver.life.request_stop(S.DISCONNECTED, "pause")  # before the supervisor woke
    assert edges(driver.step().records) == [(S.FAILED, S.DISCONNECTED)]
    driver.life.request_connect()
    driver.attempt()
    driver.fail(failure(K.REJECTED))
    assert driver.wait_until() == math.inf  # FAILED again, and no stale reset leaves it
