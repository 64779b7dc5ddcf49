"""Admission control alone (a float clock, no Trio), and the lifecycle's use of it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_conn import ConnectionConfig, ConnectionState, RetryPolicy, TransitionRecord
from trio_conn._admission import Admission
from trio_conn._lifecycle import Lifecycle
from trio_conn._policy import ErrorKind, FailureDetails
from trio_conn._records import Connect, Wait

S = ConnectionState


@given(
    rate=st.floats(min_value=0.5, max_value=1000.0),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=300),
)
def test_starts_never_exceed_the_rate_after_the_burst(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """For requests at any times: each start is at or after its request, starts
    keep the order of requests, and any window of w seconds holds at most
    burst + rate * w starts."""
    admission = Admission(rate, burst)
    now, starts = 0.0, []
    for gap in gaps:
        now += gap
        start = admission.reserve(now)
        assert start >= now
        starts.append(start)
    assert starts == sorted(starts)
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            window = starts[j] - first
            assert j - i + 1 <= burst + rate * window + 1e-6


def test_a_full_bucket_admits_the_burst_at_once_then_one_per_interval() -> None:
    admission = Admission(10.0, 3)
    assert [admission.reserve(5.0) for _ in range(5)] == pytest.approx([5.0, 5.0, 5.0, 5.1, 5.2])
    assert admission.backlog(5.0) == pytest.approx(0.3)
    assert admission.reserve(100.0) == 100.0  # refilled after a quiet spell
    assert admission.backlog(100.0) == 0.0


@pytest.mark.parametrize(
    ("rate", "burst", "error", "match"),
    [
        (0.0, 1, ValueError, "finite number from 1e-06 to 1e"),
        (-1.0, 1, ValueError, "finite number from 1e-06 to 1e"),
        (math.inf, 1, ValueError, "finite number from 1e-06 to 1e"),
        ("10", 1, TypeError, "must be a number"),
        (10.0, 0, ValueError, "attempt_burst must be from 1 to 1,000,000"),
        (10.0, 10**400, ValueError, "attempt_burst must be from 1 to 1,000,000"),
        (1e-309, 1, ValueError, "finite number from 1e-06 to 1e"),
        (1e10, 1, ValueError, "cannot space attempts closer"),
        (10.0, True, TypeError, "attempt_burst must be an int"),
    ],
)
def test_bad_limits_are_refused(
    rate: object, burst: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Admission(rate, burst)  # type: ignore[arg-type]


def _transitions(records: tuple[object, ...]) -> list[TransitionRecord]:
    return [r for r in records if isinstance(r, TransitionRecord)]


def test_the_lifecycle_waits_for_admission_in_the_state_it_starts_from() -> None:
    """A first connect waits in DISCONNECTED, a retry in RECONNECTING; the
    CONNECTING record says how long admission held it; a stop gives it up."""
    admission = Admission(1.0, 1)
    config = ConnectionConfig(retry=RetryPolicy(jitter=0.0))
    first = Lifecycle(config, now=0.0, has_hook=False, admission=admission)
    second = Lifecycle(config, now=0.0, has_hook=False, admission=admission)
    assert isinstance(first.next_action(0.0).action, Connect)
    step = second.next_action(0.0)
    assert step.action == Wait(1.0)
    assert step.records == ()
    assert second.state is S.DISCONNECTED
    step = second.next_action(1.0)
    assert isinstance(step.action, Connect)
    (record,) = _transitions(step.records)
    assert record.reason == "connect requested; admitted after 1 s"

    refused = FailureDetails(ErrorKind.NETWORK, ConnectionRefusedError(111, "refused"))
    first.session_ended(0.5, refused, "during the handshake")
    assert first.state is S.RECONNECTING
    retry_at = first.next_retry_at()
    assert retry_at is not None
    admission.reserve(retry_at)  # another member takes the slot the retry falls due in
    step = first.next_action(retry_at)
    assert isinstance(step.action, Wait)
    assert step.action.until == pytest.approx(retry_at + 1.0)
    assert first.state is S.RECONNECTING
    assert first.next_retry_at() == step.action.until
    first.request_stop(S.DISCONNECTED, "disconnect requested")
    step = first.next_action(retry_at + 0.5)
    assert first.state is S.DISCONNECTED
    assert step.action == Wait(math.inf)


def test_a_slot_given_back_is_the_next_one_taken_and_the_rate_still_holds() -> None:
    """Fifty reserved, then all given back (their members removed while they
    waited): the next member does not wait behind them."""
    admission = Admission(10.0, 1)
    slots = [admission.reserve(0.0) for _ in range(50)]
    assert slots[-1] == pytest.approx(4.9)
    for slot in slots:
        admission.release(slot, 0.5)
    assert admission.backlog(0.5) == pytest.approx(0.1)  # the first slot ahead
    taken = [admission.reserve(0.5) for _ in range(5)]
    assert taken == pytest.approx([0.6, 0.7, 0.8, 0.9, 1.0])  # never closer than 0.1 s
    admission.release(0.2, 0.5)  # already passed: nothing to give back
    assert admission.reserve(0.5) == pytest.approx(1.1)


def test_a_member_stopped_while_it_waits_gives_its_slot_to_the_next() -> None:
    admission = Admission(1.0, 1)
    config = ConnectionConfig(retry=RetryPolicy(jitter=0.0))
    lives = [Lifecycle(config, now=0.0, has_hook=False, admission=admission) for _ in range(30)]
    for life in lives:
        life.next_action(0.0)
    for life in lives[1:]:
        life.request_stop(S.CLOSED, "removed")
        life.next_action(0.0)
    newcomer = Lifecycle(config, now=0.0, has_hook=False, admission=admission)
    step = newcomer.next_action(0.0)
    assert step.action == Wait(1.0)  # the slot right after the one member left
