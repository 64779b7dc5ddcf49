"""Retry delays: the seed's rows, caps, jitter and Retry-After."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_conn import Backoff, ErrorKind, RetryPolicy

K = ErrorKind

# Expected delays for n = 1..10 with no jitter, worked out from the seed's
# formulas: min(3n, 15), min(10n, 60), min(5n, 30).
SHORT = [3, 6, 9, 12, 15, 15, 15, 15, 15, 15]
LONG = [10, 20, 30, 40, 50, 60, 60, 60, 60, 60]
MEDIUM = [5, 10, 15, 20, 25, 30, 30, 30, 30, 30]
EXPECTED = {
    K.UNEXPECTED_CLOSE: SHORT,
    K.NETWORK: LONG,
    K.HEARTBEAT: LONG,
    K.THROTTLED: LONG,
    K.REJECTED: MEDIUM,
    K.OTHER: MEDIUM,
}


def test_kinds_are_lower_case_str_enum() -> None:
    as_str: str = K.UNEXPECTED_CLOSE
    assert as_str == "unexpected_close"
    assert {k.value for k in K} == {
        "unexpected_close",
        "network",
        "rejected",
        "throttled",
        "heartbeat",
        "other",
    }


@pytest.mark.parametrize("kind", list(K))
def test_delay_table_without_jitter(kind: ErrorKind) -> None:
    policy = RetryPolicy(jitter=0.0)
    assert [policy.delay(kind, n) for n in range(1, 11)] == EXPECTED[kind]


@pytest.mark.parametrize("kind", list(K))
@pytest.mark.parametrize("sample", [0.0, 0.25, 0.5, 1.0])
def test_jitter_scales_down_from_the_row(kind: ErrorKind, sample: float) -> None:
    policy = RetryPolicy(jitter=0.2, random=lambda: sample)
    for n in range(1, 11):
        assert policy.delay(kind, n) == pytest.approx(EXPECTED[kind][n - 1] * (1 - 0.2 * sample))


@given(
    kind=st.sampled_from(list(K)),
    failures=st.integers(min_value=1, max_value=10_000),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    sample=st.floats(min_value=0.0, max_value=1.0),
)
def test_jitter_never_exceeds_the_cap_nor_drops_below_the_floor(
    kind: ErrorKind, failures: int, jitter: float, sample: float
) -> None:
    policy = RetryPolicy(jitter=jitter, random=lambda: sample)
    plain = RetryPolicy(jitter=0.0).delay(kind, failures)
    delay = policy.delay(kind, failures)
    assert plain * (1 - jitter) - 1e-9 <= delay <= plain


def test_default_policy() -> None:
    policy = RetryPolicy()
    assert policy.jitter == 0.2
    assert policy.fatal == frozenset({K.REJECTED})
    assert policy.is_fatal(K.REJECTED)
    assert not any(policy.is_fatal(k) for k in K if k is not K.REJECTED)
    assert policy.max_retry_after == 300.0


def test_default_random_source_jitters_within_bounds() -> None:
    policy = RetryPolicy(jitter=0.5)
    delays = {policy.delay(K.NETWORK, 1) for _ in range(200)}
    assert all(5.0 <= d <= 10.0 for d in delays)
    assert len(delays) > 1  # it really is random


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(7.0, 7.0), (0.0, 0.0), (299.5, 299.5), (300.0, 300.0), (3600.0, 300.0)],
)
def test_throttled_honours_retry_after_capped_without_jitter(
    retry_after: float, expected: float
) -> None:
    policy = RetryPolicy(jitter=1.0, random=lambda: 1.0)
    for n in (1, 4):
        assert policy.delay(K.THROTTLED, n, retry_after=retry_after) == expected


def test_throttled_without_retry_after_uses_the_network_row() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert policy.delay(K.THROTTLED, 2) == 20.0
    assert policy.delay(K.THROTTLED, 2, retry_after=float("nan")) == 20.0
    assert policy.delay(K.THROTTLED, 2, retry_after=-1.0) == 20.0


def test_retry_after_is_ignored_for_other_kinds() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert policy.delay(K.NETWORK, 1, retry_after=7.0) == 10.0
    assert policy.delay(K.UNEXPECTED_CLOSE, 1, retry_after=7.0) == 3.0


def test_custom_rows_and_fatal_kinds() -> None:
    policy = RetryPolicy(
        jitter=0.0,
        backoff={K.OTHER: Backoff(1.0, 2.5)},
        fatal=frozenset({K.REJECTED, K.HEARTBEAT}),
        max_retry_after=30.0,
    )
    assert [policy.delay(K.OTHER, n) for n in (1, 2, 3)] == [1.0, 2.0, 2.5]
    assert policy.delay(K.NETWORK, 1) == 10.0  # rows not given keep the seed's
    assert policy.is_fatal(K.HEARTBEAT)
    assert policy.delay(K.THROTTLED, 1, retry_after=100.0) == 30.0


def test_fatal_accepts_kind_values() -> None:
    policy = RetryPolicy(fatal=frozenset({"network"}))  # type: ignore[arg-type]
    assert policy.fatal == frozenset({K.NETWORK})


@pytest.mark.parametrize("failures", [0, -1, 1.5, True])
def test_failures_must_be_a_positive_int(failures: object) -> None:
    with pytest.raises(ValueError, match="failures must be an int >= 1"):
        RetryPolicy().delay(K.NETWORK, failures)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"jitter": -0.1}, ValueError, "jitter must be between 0 and 1"),
        ({"jitter": 1.5}, ValueError, "jitter must be between 0 and 1"),
        ({"jitter": float("nan")}, ValueError, "jitter"),
        ({"jitter": "0.2"}, TypeError, "jitter must be a number"),
        ({"fatal": frozenset({"bogus"})}, ValueError, "bogus"),
        ({"backoff": {"network": Backoff(1, 2)}}, ValueError, "backoff keys"),
        ({"backoff": {K.NETWORK: (1, 2)}}, TypeError, r"backoff\[network\] must be a Backoff"),
        ({"max_retry_after": -1}, ValueError, "max_retry_after must be finite and >= 0"),
        ({"max_retry_after": float("inf")}, ValueError, "max_retry_after"),
        ({"random": 0.5}, TypeError, "random must be callable"),
    ],
)
def test_invalid_policy(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_random_source_out_of_range_is_an_error() -> None:
    policy = RetryPolicy(random=lambda: 2.0)
    with pytest.raises(ValueError, match=r"must return a value in \[0, 1\]"):
        policy.delay(K.NETWORK, 1)


@pytest.mark.parametrize(
    ("step", "cap", "match"),
    [(-1, 5, "Backoff.step"), (1, float("inf"), "Backoff.cap"), (1, -2, "Backoff.cap")],
)
def test_invalid_backoff_row(step: float, cap: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Backoff(step, cap)
