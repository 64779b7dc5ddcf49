"""Library events: fields, levels, error rendering, secret scrubbing, URL redaction.

These tests drive a real StateMachine on a fake clock and feed its records to
ConnectionEvents; they need no connection manager. ``run_scenario`` is also
used by test_logging.py to render the same story in every format.
"""

from __future__ import annotations

import base64
import string
import subprocess
import sys
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
import trio
import trio_websocket
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import CapturingLogger, capture_logs

from trio_conn import (
    ConnectionState,
    ErrorKind,
    HeartbeatTimeout,
    RecoveryRecord,
    StateMachine,
    Transition,
    TransitionRecord,
)
from trio_conn._events import ConnectionEvents
from trio_conn._redact import MAX_ERROR_MESSAGE, error_type_name, redact_url
from trio_conn._secrets import REDACTED

S = ConnectionState
CONN_ID = "conn-1"
URL = "wss://alice:s3cr3t-pass@example.com:8443/ws?token=tok-123456&v=2#frag"
REDACTED_URL = "wss://REDACTED:REDACTED@example.com:8443/ws?token=REDACTED&v=REDACTED"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Step:
    """One transition of the scenario: wait ``after`` seconds, then move."""

    after: float
    to_state: ConnectionState
    reason: str
    consecutive_failures: int
    attempt: int
    extra: dict[str, Any] = field(default_factory=dict)


def closed_1006() -> trio_websocket.ConnectionClosed:
    return trio_websocket.ConnectionClosed(trio_websocket.CloseReason(1006, None))


def rejected_403() -> trio_websocket.ConnectionRejected:
    headers = ((b"set-cookie", b"session=fresh-cookie-value"), (b"content-type", b"text/plain"))
    return trio_websocket.ConnectionRejected(403, headers, b"forbidden: token expired")


SCENARIO: tuple[Step, ...] = (
    Step(1.0, S.CONNECTING, "connect requested", 0, 1),
    Step(0.25, S.CONNECTED, "handshake complete", 0, 1),
    Step(
        12.5,
        S.RECONNECTING,
        "unexpected_close: ConnectionClosed (code 1006)",
        1,
        1,
        {
            "kind": ErrorKind.UNEXPECTED_CLOSE,
            "error": closed_1006(),
            "close_code": 1006,
            "retry_in": 3.0,
        },
    ),
    Step(3.0, S.CONNECTING, "retry", 1, 2),
    Step(
        31.0,
        S.RECONNECTING,
        "rejected: ConnectionRejected (HTTP 403)",
        2,
        2,
        {"kind": ErrorKind.REJECTED, "error": rejected_403(), "status_code": 403},
    ),
    Step(0.0, S.FAILED, "rejected is fatal", 2, 2, {"kind": ErrorKind.REJECTED}),
    Step(60.0, S.RECONNECTING, "credentials refreshed by on_failed", 0, 2),
    Step(0.0, S.CONNECTING, "retry", 0, 3),
    Step(0.5, S.CONNECTED, "handshake complete", 0, 3),
    Step(100.0, S.CLOSED, "shutdown", 0, 3),
)
ELAPSED = sum(step.after for step in SCENARIO)


def expected_level(step: Step) -> str:
    """FAILED is an error; a failure into RECONNECTING a warning; leaving FAILED is info."""
    if step.to_state is S.FAILED:
        return "error"
    return "warning" if "kind" in step.extra else "info"


def expected_outcome(step: Step) -> str | None:
    if step.to_state is S.CONNECTED:
        return "success"
    return "failure" if "kind" in step.extra else None


@dataclass(frozen=True)
class ScenarioRun:
    records: list[TransitionRecord]
    elapsed: float


def with_context(
    change: Transition, consecutive_failures: int = 1, attempt: int = 1, **fields: Any
) -> TransitionRecord:
    """The lifecycle's record of ``change``: the transition and its context."""
    return TransitionRecord(
        change.from_state,
        change.to_state,
        change.reason,
        change.at,
        change.duration,
        attempt=attempt,
        consecutive_failures=consecutive_failures,
        **fields,
    )


def run_scenario(
    events: ConnectionEvents, *, error: Callable[[], BaseException] | None = None
) -> ScenarioRun:
    """Play SCENARIO, with the other four kinds of event in between (5 extra events).

    ``error`` replaces the exception of the network failure (for secret tests).
    """
    clock = FakeClock()
    machine = StateMachine(clock)
    start = clock.now
    records: list[TransitionRecord] = []
    for index, step in enumerate(SCENARIO):
        clock.now += step.after
        if step.to_state is S.RECONNECTING and step.consecutive_failures == 1:
            events.heartbeat_missed(misses=1, max_misses=3, timeout=30.0)
        if index == 4:
            events.state_stuck(state=S.CONNECTING, seconds=31.0, limit=30.0)
        change = machine.transition(step.to_state, step.reason)
        assert change is not None
        extra = dict(step.extra)
        if error is not None and "error" in extra:
            extra["error"] = error()
        record = with_context(change, step.consecutive_failures, step.attempt, **extra)
        records.append(record)
        events.state_changed(record)
        if step.to_state is S.FAILED:
            events.recovery(
                RecoveryRecord(
                    at=clock.now,
                    duration=0.5,
                    refreshed=False,
                    consecutive_failures=2,
                    detail="on_failed returned None, not a bool",
                )
            )
            events.hook_failed(hook="on_transition", error=RuntimeError("app bug"))
            events.recovery(
                RecoveryRecord(at=clock.now, duration=1.25, refreshed=True, consecutive_failures=2)
            )
    return ScenarioRun(records, clock.now - start)


def by_event(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


# --- fields and levels ---------------------------------------------------------------


def test_scenario_transition_events_carry_the_contract_fields() -> None:
    with capture_logs() as logs:
        run = run_scenario(ConnectionEvents(CONN_ID, URL))
    changes = by_event(logs, "connection.state_changed")
    assert len(changes) == len(SCENARIO) == len(run.records)
    for entry, step, record in zip(changes, SCENARIO, run.records, strict=True):
        assert entry["conn_id"] == CONN_ID
        assert entry["url"] == REDACTED_URL
        assert (entry["from_state"], entry["to_state"]) == (record.from_state, record.to_state)
        assert entry["reason"] == step.reason
        assert entry["duration_s"] == record.duration == step.after
        assert entry["consecutive_failures"] == step.consecutive_failures
        assert entry["attempt"] == step.attempt
        assert entry["log_level"] == expected_level(step)
        assert entry.get("outcome") == expected_outcome(step)
        # Optional fields appear exactly when given.
        for name in ("close_code", "status_code"):
            assert entry.get(name) == step.extra.get(name)
        assert entry.get("retry_in_s") == step.extra.get("retry_in")
        assert ("error_kind" in entry) == ("kind" in step.extra)
        assert ("error_type" in entry) == ("error" in step.extra)
        assert ("error_message" in entry) == ("error" in step.extra)
    assert sum(entry["duration_s"] for entry in changes) == pytest.approx(run.elapsed)
    assert run.elapsed == pytest.approx(ELAPSED)


def test_unexpected_close_is_rendered_as_type_and_message() -> None:
    with capture_logs() as logs:
        run_scenario(ConnectionEvents(CONN_ID, URL))
    entry = by_event(logs, "connection.state_changed")[2]
    assert entry["error_kind"] == "unexpected_close"
    assert entry["error_type"] == "trio_websocket.ConnectionClosed"
    assert entry["error_message"] == str(closed_1006())
    assert "exc_info" not in entry
    assert "exception" not in entry


def test_rejection_message_hides_response_headers_and_body() -> None:
    with capture_logs() as logs:
        run_scenario(ConnectionEvents(CONN_ID, URL))
    entry = by_event(logs, "connection.state_changed")[4]
    assert entry["status_code"] == 403
    assert entry["error_type"] == "trio_websocket.ConnectionRejected"
    assert entry["error_message"] == "HTTP status 403"
    assert "fresh-cookie-value" not in repr(logs)


def test_other_events_have_their_fields_and_levels() -> None:
    with capture_logs() as logs:
        run_scenario(ConnectionEvents(CONN_ID, URL))
    (missed,) = by_event(logs, "connection.heartbeat_missed")
    assert missed["log_level"] == "warning"
    assert (missed["misses"], missed["max_misses"], missed["timeout"]) == (1, 3, 30.0)
    (stuck,) = by_event(logs, "connection.state_stuck")
    assert stuck["log_level"] == "warning"
    assert (stuck["state"], stuck["seconds"], stuck["limit"]) == ("connecting", 31.0, 30.0)
    failure, success = by_event(logs, "connection.recovery")
    assert (failure["log_level"], failure["outcome"]) == ("error", "failure")
    assert failure["detail"] == "on_failed returned None, not a bool"
    assert (success["log_level"], success["outcome"]) == ("info", "success")
    assert success["duration_s"] == 1.25
    assert "error_type" not in success
    (hook,) = by_event(logs, "connection.hook_failed")
    assert hook["log_level"] == "error"
    assert (hook["hook"], hook["error_type"], hook["error_message"]) == (
        "on_transition",
        "RuntimeError",
        "app bug",
    )
    for entry in logs:
        assert (entry["conn_id"], entry["url"]) == (CONN_ID, REDACTED_URL)


def test_recovery_that_raised_logs_the_error() -> None:
    with capture_logs() as logs:
        ConnectionEvents(CONN_ID, URL).recovery(
            RecoveryRecord(
                at=1.0,
                duration=2.0,
                refreshed=False,
                consecutive_failures=5,
                error=PermissionError("login refused"),
            )
        )
    (entry,) = logs
    assert entry["log_level"] == "error"
    assert (entry["error_type"], entry["error_message"]) == ("PermissionError", "login refused")


class LocalError(Exception):
    pass


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionResetError(104, "Connection reset by peer"), "ConnectionResetError"),
        (closed_1006(), "trio_websocket.ConnectionClosed"),
        (HeartbeatTimeout(3, 30.0), "trio_conn.HeartbeatTimeout"),
        (trio.TooSlowError(), "trio.TooSlowError"),
        (LocalError("x"), "tests.test_events.LocalError"),
    ],
)
def test_error_type_is_qualified_by_the_public_package(error: BaseException, expected: str) -> None:
    assert error_type_name(type(error)) == expected


def test_long_error_messages_are_cut() -> None:
    with capture_logs() as logs:
        ConnectionEvents(CONN_ID, URL).hook_failed(hook="on_connect", error=ValueError("x" * 5000))
    assert len(logs[0]["error_message"]) == MAX_ERROR_MESSAGE
    assert logs[0]["error_message"].endswith("…")


def test_unprintable_exception_does_not_break_logging() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    with capture_logs() as logs:
        ConnectionEvents(CONN_ID, URL).hook_failed(hook="on_connect", error=Unprintable())
    assert logs[0]["error_message"] == "<unprintable Unprintable>"


# --- secrets -------------------------------------------------------------------------


def fail_record(reason: str, error: BaseException | None = None) -> TransitionRecord:
    return TransitionRecord(
        S.CONNECTING,
        S.RECONNECTING,
        reason,
        at=1.0,
        duration=0.5,
        attempt=1,
        consecutive_failures=1,
        kind=ErrorKind.NETWORK,
        error=error,
    )


def test_header_values_are_scrubbed_from_later_events() -> None:
    events = ConnectionEvents(CONN_ID, "wss://example.com/ws")
    cookie = "session=c00kie-value-42; theme=dark"
    events.add_secrets([cookie, "Bearer tokentokentoken", "abc", ""])
    with capture_logs() as logs:
        events.state_changed(
            fail_record(
                "handshake failed with c00kie-value-42 (token tokentokentoken)",
                OSError(f"sent Cookie: {cookie}; Authorization: Bearer tokentokentoken"),
            )
        )
    (entry,) = logs
    # Each part of a header value is a secret wherever it appears; a cookie's
    # name, a short word ("dark") and the auth scheme stay readable.
    assert entry["reason"] == f"handshake failed with {REDACTED} (token {REDACTED})"
    assert entry["error_message"] == (
        f"sent Cookie: session={REDACTED}; theme=dark; Authorization: Bearer {REDACTED}"
    )


def test_basic_credentials_are_secrets_decoded_too() -> None:
    events = ConnectionEvents(CONN_ID, "wss://example.com/ws")
    events.add_secrets(["Basic " + base64.b64encode(b"alice:correct-horse").decode()])
    with capture_logs() as logs:
        events.state_changed(fail_record("rejected alice:correct-horse and correct-horse"))
    assert logs[0]["reason"] == f"rejected {REDACTED} and {REDACTED}"


def test_short_values_are_ignored_so_text_is_not_mangled() -> None:
    events = ConnectionEvents(CONN_ID, "wss://example.com/ws")
    events.add_secrets(["ws", "443", "on"])
    with capture_logs() as logs:
        events.state_changed(fail_record("connection to ws host on port 443 failed"))
    assert logs[0]["reason"] == "connection to ws host on port 443 failed"


def test_url_userinfo_and_query_values_are_secrets_even_percent_encoded() -> None:
    events = ConnectionEvents(CONN_ID, "wss://bob:p%40ssw0rd@example.com/ws?key=a%2Fb%2Fc%2Fd&x=1")
    with capture_logs() as logs:
        events.state_changed(fail_record("refused: p@ssw0rd, a/b/c/d, a%2Fb%2Fc%2Fd"))
    assert logs[0]["reason"] == f"refused: {REDACTED}, {REDACTED}, {REDACTED}"
    assert logs[0]["url"] == "wss://REDACTED:REDACTED@example.com/ws?key=REDACTED&x=REDACTED"


def test_a_secret_in_the_url_path_is_scrubbed_from_the_url_field() -> None:
    events = ConnectionEvents(CONN_ID, "wss://example.com/ws/tok-abcdef")
    events.add_secrets(["tok-abcdef"])
    with capture_logs() as logs:
        events.heartbeat_missed(misses=1, max_misses=3, timeout=30.0)
    assert logs[0]["url"] == f"wss://example.com/ws/{REDACTED}"
    assert events.url == f"wss://example.com/ws/{REDACTED}"


def test_without_secrets_fields_are_passed_unchanged() -> None:
    events = ConnectionEvents(CONN_ID, "wss://example.com/ws")
    with capture_logs() as logs:
        events.state_changed(fail_record("plain reason"))
    assert logs[0]["reason"] == "plain reason"


# --- logger resolution ---------------------------------------------------------------


def test_configuration_done_after_construction_applies() -> None:
    events = ConnectionEvents(CONN_ID, URL)
    cap = CapturingLogger()
    structlog.configure(processors=[], logger_factory=lambda *args: cap)
    events.heartbeat_missed(misses=2, max_misses=3, timeout=30.0)
    (call,) = cap.calls
    assert call.method_name == "warning"
    assert call.kwargs["event"] == "connection.heartbeat_missed"
    assert call.kwargs["conn_id"] == CONN_ID


def test_a_given_logger_receives_conn_id_and_url_with_every_event() -> None:
    cap = CapturingLogger()
    logger = structlog.wrap_logger(cap, processors=[], app="demo")
    ConnectionEvents(CONN_ID, URL, logger=logger).hook_failed(
        hook="on_transition", error=KeyError("k")
    )
    (call,) = cap.calls
    assert call.method_name == "error"
    assert call.kwargs["app"] == "demo"
    assert (call.kwargs["conn_id"], call.kwargs["url"]) == (CONN_ID, REDACTED_URL)
    assert call.kwargs["error_type"] == "KeyError"


def test_a_given_lazy_logger_stays_lazy() -> None:
    events = ConnectionEvents(CONN_ID, URL, logger=structlog.get_logger("app.ws"))
    cap = CapturingLogger()
    structlog.configure(processors=[], logger_factory=lambda *args: cap)
    events.state_stuck(state=S.RECONNECTING, seconds=121.0, limit=120.0)
    (call,) = cap.calls
    assert call.kwargs["event"] == "connection.state_stuck"
    assert call.kwargs["state"] == "reconnecting"


def test_importing_trio_conn_does_not_configure_structlog() -> None:
    code = (
        "import structlog, trio_conn, trio_conn._events, trio_conn._logging; "
        "print(structlog.is_configured())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


# --- redact_url ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("wss://user:pw@example.com/ws", "wss://REDACTED:REDACTED@example.com/ws"),
        ("ws://user@example.com/", "ws://REDACTED@example.com/"),
        ("ws://a:b@c@example.com/", "ws://REDACTED:REDACTED@example.com/"),
        (
            "wss://example.com/ws?token=abc&token=def&empty=&flag",
            "wss://example.com/ws?token=REDACTED&token=REDACTED&empty=&REDACTED",
        ),
        ("wss://example.com/ws", "wss://example.com/ws"),
        ("wss://example.com", "wss://example.com"),
        ("ws://example.com:8080/p?q=1#secret-fragment", "ws://example.com:8080/p?q=REDACTED"),
        ("ws://[::1]:9000/ws?k=v", "ws://[::1]:9000/ws?k=REDACTED"),
        ("ws://u:p@[2001:db8::1]/", "ws://REDACTED:REDACTED@[2001:db8::1]/"),
        ("ws://127.0.0.1:80/", "ws://127.0.0.1:80/"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "garbage",
    ["", "not a url", "user:hunter2@host", "ws://[::1", "ws://h:notaport/", "\x00\n\t", "%zz"],
)
def test_redact_url_on_garbage_never_raises_nor_leaks(garbage: str) -> None:
    result = redact_url(garbage)
    assert isinstance(result, str)
    assert "hunter2" not in result


def test_redact_url_on_a_non_string_returns_redacted() -> None:
    assert redact_url(None) == REDACTED  # type: ignore[arg-type]
    assert redact_url(b"ws://u:p@h/") == REDACTED  # type: ignore[arg-type]


@given(st.text())
def test_redact_url_never_raises(text: str) -> None:
    assert isinstance(redact_url(text), str)


SECRET = st.text(alphabet=string.ascii_letters + string.digits, min_size=8, max_size=24).filter(
    lambda text: text != REDACTED
)


@given(user=SECRET, password=SECRET, key=SECRET, value=SECRET)
def test_redact_url_hides_userinfo_and_query_values(
    user: str, password: str, key: str, value: str
) -> None:
    url = f"wss://{user}:{password}@example.com:443/ws?{key}={value}#{value}"
    redacted = redact_url(url)
    assert redacted.startswith("wss://REDACTED:REDACTED@example.com:443/ws?")
    assert redacted.endswith(f"?{key}=REDACTED")
    for secret in (user, password, value):
        assert secret not in redacted.replace(key, "", 1)


@settings(max_examples=25)
@given(secret=SECRET)
def test_registered_secret_never_survives_in_any_string_field(secret: str) -> None:
    events = ConnectionEvents(CONN_ID, "wss://example.com/ws")
    events.add_secrets([f"Bearer {secret}"])
    with capture_logs() as logs:
        events.state_changed(fail_record(f"failed ({secret})", OSError(f"x{secret}x")))
        events.recovery(
            RecoveryRecord(
                at=1.0, duration=1.0, refreshed=False, consecutive_failures=1, detail=secret * 2
            )
        )
    texts = [
        value
        for entry in logs
        for key, value in entry.items()
        # States and error kinds are the library's fixed vocabulary, not text.
        if type(value) is str and key not in {"event", "log_level"}
    ]
    assert texts
    assert not [text for text in texts if secret in text]
