"""Retry delays: the rows, caps, jitter, Retry-After, probes and the close-code table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_conn import Backoff, ErrorKind, RetryPolicy
from trio_conn._policy import FailureDetails

K = ErrorKind

# Expected delays for n = 1..10 with no jitter, worked out from the
# default rows (docs/design.md, "The delay"): min(3n, 15), min(10n, 60), min(5n, 30).
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
    ("retry_after", "sample", "expected"),
    [
        (7.0, 0.0, 7.0),
        (7.0, 0.5, 7.7),
        (7.0, 1.0, 8.4),
        (0.0, 1.0, 0.0),
        (299.5, 0.0, 299.5),
        (299.5, 1.0, 300.0),
        (3600.0, 0.0, 300.0),
    ],
)
def test_retry_after_is_spread_upwards_then_capped(
    retry_after: float, sample: float, expected: float
) -> None:
    policy = RetryPolicy(jitter=0.2, random=lambda: sample)
    for n in (1, 4):
        assert policy.delay(K.THROTTLED, n, retry_after=retry_after) == pytest.approx(expected)


@given(
    retry_after=st.floats(min_value=0.0, max_value=10_000.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    sample=st.floats(min_value=0.0, max_value=1.0),
)
def test_retry_after_is_never_shortened_below_what_was_asked(
    retry_after: float, jitter: float, sample: float
) -> None:
    policy = RetryPolicy(jitter=jitter, random=lambda: sample)
    delay = policy.delay(K.THROTTLED, 1, retry_after=retry_after)
    assert min(retry_after, policy.max_retry_after) <= delay <= policy.max_retry_after
    assert delay <= retry_after * (1 + jitter) + 1e-9


def test_clients_told_the_same_retry_after_come_back_spread() -> None:
    import random

    rng = random.Random(11)
    policy = RetryPolicy(random=rng.random)
    delays = [policy.delay(K.THROTTLED, 1, retry_after=1.0) for _ in range(20)]
    assert all(1.0 <= delay <= 1.2 for delay in delays)
    assert max(delays) - min(delays) > 0.1  # not one wave


def test_probe_delay_is_the_interval_or_retry_after_spread_upwards() -> None:
    policy = RetryPolicy(jitter=0.2, random=lambda: 0.5)
    assert policy.probe_delay(300.0) == pytest.approx(330.0)
    assert policy.probe_delay(100.0, retry_after=200.0) == pytest.approx(220.0)
    assert policy.probe_delay(300.0, retry_after=60.0) == pytest.approx(330.0)
    # Retry-After is capped at max_retry_after before it is compared.
    assert policy.probe_delay(10.0, retry_after=10_000.0) == pytest.approx(330.0)
    assert RetryPolicy(jitter=0.0).probe_delay(60.0) == 60.0


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
    assert policy.delay(K.NETWORK, 1) == 10.0  # rows not given keep the defaults
    assert policy.is_fatal(K.HEARTBEAT)
    assert policy.delay(K.THROTTLED, 1, retry_after=100.0) == 30.0


def test_default_close_codes_follow_rfc_6455_and_the_iana_registry() -> None:
    codes = RetryPolicy().close_codes
    assert codes[1013] is K.THROTTLED  # Try Again Later
    for code in (1002, 1003, 1007, 1008, 1009, 1010):
        assert codes[code] is K.OTHER
    for code in (1000, 1001, 1006, 1011, 1012, 4000):  # ordinary drops and restarts
        assert code not in codes


def test_close_codes_are_merged_over_the_defaults_and_resolve_failures() -> None:
    policy = RetryPolicy(close_codes={4401: K.REJECTED, 1008: "rejected"})  # type: ignore[dict-item]
    assert policy.close_codes[4401] is K.REJECTED
    assert policy.close_codes[1008] is K.REJECTED  # the user's wins
    assert policy.close_codes[1013] is K.THROTTLED  # defaults kept
    closed = ConnectionResetError("closed")

    def resolved(code: int | None) -> ErrorKind:
        return policy.resolve(FailureDetails(K.UNEXPECTED_CLOSE, closed, close_code=code)).kind

    assert resolved(4401) is K.REJECTED
    assert resolved(1013) is K.THROTTLED
    assert resolved(4000) is K.UNEXPECTED_CLOSE
    assert resolved(1006) is K.UNEXPECTED_CLOSE
    assert resolved(None) is K.UNEXPECTED_CLOSE
    details = policy.resolve(FailureDetails(K.UNEXPECTED_CLOSE, closed, close_code=4401))
    assert (details.error, details.close_code) == (closed, 4401)


@pytest.mark.parametrize(
    ("close_codes", "error", "match"),
    [
        ({999: K.OTHER}, ValueError, r"close_codes key 999 can never be received"),
        ({5000: K.OTHER}, ValueError, r"key 5000 .* 1000-1003, 1007-1013 .* or 3000-4999"),
        ({1006: K.NETWORK}, ValueError, r"key 1006 .*RFC 6455 section 7.4.1"),
        ({1005: K.NETWORK}, ValueError, r"key 1005"),
        ({1015: K.NETWORK}, ValueError, r"key 1015"),
        ({1004: K.NETWORK}, ValueError, r"key 1004"),
        ({1014: K.NETWORK}, ValueError, r"key 1014"),  # wsproto refuses it as reserved
        ({2999: K.NETWORK}, ValueError, r"key 2999"),
        ({"4401": K.REJECTED}, TypeError, r"close_codes keys must be int close codes, got '4401'"),
        ({True: K.REJECTED}, TypeError, r"close_codes keys must be int"),
        ({4401: "denied"}, ValueError, r"close_codes\[4401\] must be an ErrorKind .* 'denied'"),
        ([(4401, K.REJECTED)], TypeError, r"close_codes must be a mapping"),
    ],
)
def test_invalid_close_codes_name_the_rule(
    close_codes: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        RetryPolicy(close_codes=close_codes)  # type: ignore[arg-type]


def test_kinds_may_be_given_by_value_in_any_collection() -> None:
    policy = RetryPolicy(
        fatal=["rejected", "heartbeat"],  # type: ignore[arg-type]
        backoff={"other": Backoff(1.0, 2.0)},  # type: ignore[dict-item]
    )
    assert policy.fatal == frozenset({K.REJECTED, K.HEARTBEAT})
    assert policy.backoff[K.OTHER] == Backoff(1.0, 2.0)


def test_a_value_that_cannot_be_printed_is_described() -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    with pytest.raises(TypeError, match=r"RetryPolicy.jitter must be a number, got a Unprintable"):
        RetryPolicy(jitter=Unprintable())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Backoff.step must be finite .* got an int of \d+ bits"):
        Backoff(10**400, 1)


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
        ({"fatal": frozenset({"bogus"})}, ValueError, r"fatal must be an ErrorKind .* 'bogus'"),
        ({"fatal": "rejected"}, TypeError, r"fatal must be a set of ErrorKind"),
        ({"backoff": {"bogus": Backoff(1, 2)}}, ValueError, r"backoff keys must be an ErrorKind"),
        ({"max_retry_after": 10**400}, ValueError, r"max_retry_after .* got an int of 1329 bits"),
        ({"jitter": 10**400}, ValueError, r"jitter must be between 0 and 1"),
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
