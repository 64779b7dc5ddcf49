"""ConnectionConfig: docs/design.md's defaults and a clear error for every bad value."""

from __future__ import annotations

import dataclasses
import math

import pytest

from trio_conn import ConnectionConfig, ConnectionState, RetryPolicy


def test_defaults_are_the_design_defaults() -> None:
    config = ConnectionConfig()
    assert config.heartbeat_interval == 15.0
    assert config.heartbeat_timeout == 30.0
    assert config.max_heartbeat_failures == 3
    assert config.max_connection_failures == 5
    assert config.connect_timeout == 10.0
    assert config.stable_after == 30.0
    assert config.recovery_cooldown == 60.0
    assert config.failed_retry_interval == 300.0
    assert config.retry == RetryPolicy()
    assert config.receive_buffer == 64
    assert config.max_message_size == 1024 * 1024
    assert config.close_timeout == 5.0
    assert config.max_message_fragments == 4096
    assert dict(config.stuck_after) == {
        ConnectionState.CONNECTING: 30.0,
        ConnectionState.RECONNECTING: 120.0,
    }


def test_config_is_frozen() -> None:
    config = ConnectionConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.heartbeat_interval = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.stuck_after[ConnectionState.FAILED] = 1.0  # type: ignore[index]


def test_replace_revalidates() -> None:
    config = dataclasses.replace(ConnectionConfig(), heartbeat_interval=1)
    assert config.heartbeat_interval == 1
    with pytest.raises(ValueError, match="heartbeat_interval"):
        dataclasses.replace(config, heartbeat_interval=0)


POSITIVE_SECONDS = ["heartbeat_interval", "heartbeat_timeout", "connect_timeout", "close_timeout"]
NON_NEGATIVE_SECONDS = ["stable_after", "recovery_cooldown"]
COUNTS = [
    "max_heartbeat_failures",
    "max_connection_failures",
    "receive_buffer",
    "max_message_size",
    "max_message_fragments",
]


def test_every_field_is_covered_by_a_rule() -> None:
    covered = {
        *POSITIVE_SECONDS,
        *NON_NEGATIVE_SECONDS,
        *COUNTS,
        "retry",
        "stuck_after",
        "failed_retry_interval",
    }
    assert {f.name for f in dataclasses.fields(ConnectionConfig)} == covered


@pytest.mark.parametrize("name", POSITIVE_SECONDS)
@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan])
def test_positive_seconds(name: str, value: float) -> None:
    with pytest.raises(ValueError) as info:
        ConnectionConfig(**{name: value})  # type: ignore[arg-type]
    message = str(info.value)
    assert f"ConnectionConfig.{name}" in message
    assert "finite and > 0 seconds" in message
    assert repr(value) in message


@pytest.mark.parametrize("name", NON_NEGATIVE_SECONDS)
def test_non_negative_seconds(name: str) -> None:
    assert getattr(ConnectionConfig(**{name: 0}), name) == 0  # type: ignore[arg-type]
    for value in (-0.5, math.inf, math.nan):
        with pytest.raises(ValueError, match=rf"ConnectionConfig\.{name} must be finite and >= 0"):
            ConnectionConfig(**{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [*POSITIVE_SECONDS, *NON_NEGATIVE_SECONDS])
@pytest.mark.parametrize("value", ["1", None, True])
def test_seconds_must_be_numbers(name: str, value: object) -> None:
    with pytest.raises(TypeError, match=rf"ConnectionConfig\.{name} must be a number of seconds"):
        ConnectionConfig(**{name: value})  # type: ignore[arg-type]


def test_failed_retry_interval_is_positive_seconds_or_none() -> None:
    assert ConnectionConfig(failed_retry_interval=None).failed_retry_interval is None
    assert ConnectionConfig(failed_retry_interval=1).failed_retry_interval == 1
    for value in (0, -1.0, math.inf, math.nan):
        with pytest.raises(
            ValueError,
            match=r"ConnectionConfig\.failed_retry_interval must be finite and > 0 seconds "
            rf"or None, got {value!r}",
        ):
            ConnectionConfig(failed_retry_interval=value)
    for bad_type in ("300", True):
        with pytest.raises(
            TypeError,
            match=r"ConnectionConfig\.failed_retry_interval must be a number of seconds or None",
        ):
            ConnectionConfig(failed_retry_interval=bad_type)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", COUNTS)
def test_counts(name: str) -> None:
    assert getattr(ConnectionConfig(**{name: 1}), name) == 1  # type: ignore[arg-type]
    for value in (0, -3):
        with pytest.raises(
            ValueError, match=rf"ConnectionConfig\.{name} must be >= 1, got {value}"
        ):
            ConnectionConfig(**{name: value})  # type: ignore[arg-type]
    for bad_type in (2.0, "3", True):
        with pytest.raises(TypeError, match=rf"ConnectionConfig\.{name} must be an int"):
            ConnectionConfig(**{name: bad_type})  # type: ignore[arg-type]


def test_retry_must_be_a_policy() -> None:
    with pytest.raises(TypeError, match=r"ConnectionConfig\.retry must be a RetryPolicy"):
        ConnectionConfig(retry={"jitter": 0})  # type: ignore[arg-type]


def test_stuck_after_accepts_states_and_their_values() -> None:
    config = ConnectionConfig(stuck_after={"connecting": 5, ConnectionState.FAILED: 600.0})  # type: ignore[dict-item]
    assert dict(config.stuck_after) == {
        ConnectionState.CONNECTING: 5.0,
        ConnectionState.FAILED: 600.0,
    }
    assert ConnectionConfig(stuck_after={}).stuck_after == {}


@pytest.mark.parametrize(
    ("stuck_after", "error", "match"),
    [
        ({"connectin": 5.0}, ValueError, r"stuck_after keys must be states .* got 'connectin'"),
        ({"closed": 5.0}, ValueError, r"stuck_after keys must be states other than closed"),
        ({"connecting": 10**400}, ValueError, r"stuck_after\[connecting\] .* int of 1329 bits"),
        ({ConnectionState.CONNECTING: 0}, ValueError, r"stuck_after\[connecting\] must be finite"),
        ({ConnectionState.FAILED: -1.0}, ValueError, r"stuck_after\[failed\]"),
        ({ConnectionState.FAILED: "1"}, TypeError, r"stuck_after\[failed\] must be a number"),
        ([("connecting", 1.0)], TypeError, "stuck_after must be a mapping"),
    ],
)
def test_invalid_stuck_after(stuck_after: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ConnectionConfig(stuck_after=stuck_after)  # type: ignore[arg-type]
