"""configure_logging: every line of every format parsed and checked (ECS against the schema)."""

from __future__ import annotations

import datetime
import functools
import io
import json
import logging
import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
import structlog
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.ecs_schema import SCHEMA_PATH, SHARED_SCHEMA_PATH, check_ecs_line, load_schema
from tests.test_events import (
    CONN_ID,
    ELAPSED,
    REDACTED_URL,
    SCENARIO,
    URL,
    expected_level,
    expected_outcome,
    run_scenario,
)
from trio_conn import RecoveryRecord
from trio_conn._ecs import ECS_VERSION
from trio_conn._events import ConnectionEvents
from trio_conn._logging import TRIO_WEBSOCKET_LOGGER, configure_logging

Format = Literal["json", "ecs", "console"]
FORMATS: tuple[Format, ...] = ("json", "ecs", "console")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
EVENT_NAMES = {
    "connection.state_changed",
    "connection.heartbeat_missed",
    "connection.state_stuck",
    "connection.recovery",
    "connection.hook_failed",
}
N_EVENTS = len(SCENARIO) + 5  # run_scenario adds 5 non-transition events


def render(
    fmt: Format, action: Callable[[], object], *, binary: bool = False, **options: Any
) -> list[str]:
    """Configure ``fmt`` on a fresh in-memory stream, run ``action``, return the lines."""
    structlog.reset_defaults()
    if binary:
        binary_stream = io.BytesIO()
        configure_logging(fmt, stream=binary_stream, **options)
        action()
        text = binary_stream.getvalue().decode("utf-8")
    else:
        text_stream = io.StringIO()
        configure_logging(fmt, stream=text_stream, **options)
        action()
        text = text_stream.getvalue()
    assert text.endswith("\n")
    return text.splitlines()


def scenario_lines(fmt: Format, *, binary: bool = False, **options: Any) -> list[str]:
    return render(
        fmt, lambda: run_scenario(ConnectionEvents(CONN_ID, URL)), binary=binary, **options
    )


def parse(lines: list[str]) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(obj, dict) for obj in parsed)
    return parsed


def utc_instant(text: str) -> datetime.datetime:
    instant = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert instant.utcoffset() == datetime.timedelta(0)
    return instant


# --- arguments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"format": "xml"}, ["format", "'xml'", "'json'", "'ecs'", "'console'"]),
        ({"level": "verbose"}, ["level", "'verbose'", "'debug'", "'critical'"]),
        ({"level": 25}, ["level", "25", "'info'", "20"]),
        ({"level": True}, ["level", "True"]),
        ({"service_name": ""}, ["service_name", "''"]),
    ],
)
def test_invalid_arguments_name_the_argument_value_and_allowed(
    kwargs: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(ValueError) as info:
        configure_logging(stream=io.StringIO(), **kwargs)
    for word in words:
        assert word in str(info.value)
    assert not structlog.is_configured()


# --- json ----------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_json_lines_carry_the_contract(binary: bool) -> None:
    lines = parse(scenario_lines("json", binary=binary))
    assert len(lines) == N_EVENTS
    before = datetime.datetime.now(datetime.UTC)
    for obj in lines:
        assert list(obj)[:3] == ["timestamp", "level", "event"]
        assert obj["timestamp"].endswith("Z")
        assert utc_instant(obj["timestamp"]) <= before
        assert obj["event"] in EVENT_NAMES
        assert (obj["conn_id"], obj["url"]) == (CONN_ID, REDACTED_URL)
    changes = [obj for obj in lines if obj["event"] == "connection.state_changed"]
    assert len(changes) == len(SCENARIO)
    for obj, step in zip(changes, SCENARIO, strict=True):
        assert obj["to_state"] == step.to_state
        assert obj["level"] == expected_level(step)
        assert obj.get("outcome") == expected_outcome(step)
        assert isinstance(obj["from_state"], str)
        assert isinstance(obj["reason"], str)
        assert isinstance(obj["duration_s"], float)
        assert obj["duration_s"] == step.after
        assert isinstance(obj["consecutive_failures"], int)
        assert isinstance(obj["attempt"], int)
    assert sum(obj["duration_s"] for obj in changes) == pytest.approx(ELAPSED)
    closed = changes[2]
    assert (closed["error_type"], closed["close_code"], closed["retry_in_s"]) == (
        "trio_websocket.ConnectionClosed",
        1006,
        3.0,
    )
    levels = {obj["event"]: obj["level"] for obj in lines if obj["event"] != "connection.recovery"}
    assert levels["connection.heartbeat_missed"] == "warning"
    assert levels["connection.state_stuck"] == "warning"
    assert levels["connection.hook_failed"] == "error"


def test_json_through_a_text_stream_with_a_buffer_and_the_default_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    underlying = io.BytesIO()
    wrapper = io.TextIOWrapper(underlying, encoding="utf-8")
    wrapper.write("before\n")
    configure_logging("json", stream=wrapper)
    structlog.get_logger().info("hello", n=1)
    raw = underlying.getvalue()
    assert raw.startswith(b"before\n")  # text written first is flushed first
    assert json.loads(raw.splitlines()[1])["n"] == 1

    structlog.reset_defaults()
    configure_logging("json")
    structlog.get_logger().warning("to stdout")
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["event"] == "to stdout"


def test_context_bound_with_contextvars_appears_in_every_format() -> None:
    structlog.contextvars.bind_contextvars(request_id="req-42")
    (json_line,) = parse(render("json", lambda: structlog.get_logger().info("x")))
    assert json_line["request_id"] == "req-42"
    changes = parse(scenario_lines("json"))
    assert all(obj["request_id"] == "req-42" for obj in changes)
    for obj in parse(scenario_lines("ecs")):
        assert obj["labels"]["request_id"] == "req-42"
        assert check_ecs_line(obj) == []
    assert all("request_id=req-42" in line for line in scenario_lines("console"))


def test_levels_below_the_configured_one_are_dropped() -> None:
    lines = parse(scenario_lines("json", level="warning"))
    assert lines
    assert {obj["level"] for obj in lines} == {"warning", "error"}
    assert (
        len(lines) == sum(1 for step in SCENARIO if expected_level(step) != "info") + 4
    )  # heartbeat_missed, state_stuck, failed recovery, hook_failed
    structlog.reset_defaults()
    configure_logging("json", level=logging.ERROR, stream=io.StringIO())
    logger = structlog.get_logger()
    assert not logger.is_enabled_for(logging.WARNING)
    assert logger.is_enabled_for(logging.ERROR)


def test_unserialisable_values_fall_back_to_repr() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<thing>"

    (obj,) = parse(render("json", lambda: structlog.get_logger().info("x", thing=Thing())))
    assert obj["thing"] == "<thing>"


# --- ecs -----------------------------------------------------------------------------


def expected_event_type(from_state: str, to_state: str) -> list[str]:
    """ECS event.type of a transition: only types ECS expects with category network."""
    if to_state == "connected":
        return ["connection", "start"]
    if to_state in ("closed", "disconnected") or from_state == "connected":
        return ["connection", "end"]
    return ["connection"]


@pytest.mark.parametrize("binary", [False, True])
def test_ecs_lines_are_valid_ecs_and_carry_the_mapping(binary: bool) -> None:
    lines = parse(scenario_lines("ecs", binary=binary, service_name="bot"))
    assert len(lines) == N_EVENTS
    for obj in lines:
        assert check_ecs_line(obj) == []
        assert obj["@timestamp"].endswith("Z")
        utc_instant(obj["@timestamp"])
        assert obj["log.level"] == obj["log.level"].lower()
        assert obj["ecs.version"] == ECS_VERSION
        assert obj["event"]["action"] in EVENT_NAMES
        assert obj["event"]["kind"] == "event"
        assert obj["event"]["category"] == ["network"]
        assert obj["event"]["outcome"] in {"success", "failure", "unknown"}
        assert obj["url"] == {"full": REDACTED_URL}
        assert obj["service"] == {"name": "bot"}
        assert obj["trio_conn"]["conn_id"] == CONN_ID
        # Nothing at the top level collides with an ECS object.
        for key, value in obj.items():
            assert isinstance(value, dict) or key in {
                "@timestamp",
                "log.level",
                "message",
                "ecs.version",
            }
    changes = [obj for obj in lines if obj["event"]["action"] == "connection.state_changed"]
    total_ns = 0
    for obj, step in zip(changes, SCENARIO, strict=True):
        custom = obj["trio_conn"]
        assert custom["to_state"] == step.to_state
        assert obj["log.level"] == expected_level(step)
        assert obj["event"]["type"] == expected_event_type(custom["from_state"], step.to_state)
        assert obj["event"]["dataset"] == "bot.trio_conn"
        assert obj["event"]["outcome"] == (expected_outcome(step) or "unknown")
        assert obj["event"]["duration"] == round(custom["duration_s"] * 1e9)
        assert obj["event"]["reason"] == step.reason
        assert obj["message"].startswith(
            f"connection {CONN_ID} moved from {custom['from_state']} to {step.to_state} after "
        )
        total_ns += obj["event"]["duration"]
    assert total_ns == round(ELAPSED * 1e9)
    closed, rejected = changes[2], changes[4]
    assert closed["message"] == (
        "connection conn-1 moved from connected to reconnecting after 12.5 s: "
        "unexpected_close: ConnectionClosed (code 1006); next attempt in 3 s"
    )
    assert closed["error"]["type"] == "trio_websocket.ConnectionClosed"
    assert closed["error"]["message"].startswith("CloseReason<code=1006")
    assert (closed["trio_conn"]["close_code"], closed["trio_conn"]["retry_in_s"]) == (1006, 3.0)
    assert rejected["http"]["response"]["status_code"] == 403
    assert rejected["trio_conn"]["error_kind"] == "rejected"


def test_ecs_sentences_of_the_other_events() -> None:
    by_action: dict[str, list[dict[str, Any]]] = {}
    for obj in parse(scenario_lines("ecs")):
        by_action.setdefault(obj["event"]["action"], []).append(obj)
    assert by_action["connection.heartbeat_missed"][0]["message"] == (
        "connection conn-1 missed heartbeat 1 of 3 (no reply within 30 s)"
    )
    assert by_action["connection.state_stuck"][0]["message"] == (
        "connection conn-1 has been connecting for 31 s (limit 30 s)"
    )
    failure, success = by_action["connection.recovery"]
    assert failure["message"] == (
        "connection conn-1 recovery hook failed after 0.5 s: on_failed returned None, not a bool"
    )
    assert (failure["log.level"], failure["event"]["outcome"]) == ("error", "failure")
    assert success["message"] == "connection conn-1 recovery hook succeeded after 1.25 s"
    assert success["event"]["duration"] == 1_250_000_000
    (hook,) = by_action["connection.hook_failed"]
    assert hook["message"] == (
        "connection conn-1: on_transition hook raised RuntimeError: app bug; ignored"
    )
    assert hook["error"] == {"type": "RuntimeError", "message": "app bug"}


def test_ecs_keeps_application_lines_valid() -> None:
    def app_logs() -> None:
        log = structlog.get_logger()
        log.info("plain keys", user="bob", url="http://x/", count=3, ok=True, ratio=0.5)
        log.warning("ecs keys", **{"http.request.method": "GET", "user.id": "u-1"})
        log.info("nested", user={"name": "carol"}, labels={"team": "core", "n": 2})
        log.info("tags and none", tags=["a", "b"], nothing=None, payload={"k": [1, 2]})
        log.info("reserved", ecs={"version": "0.1"}, message="shadowed", **{"a.b": 1})

    plain, ecs_keys, nested, tagged, reserved = parse(render("ecs", app_logs))
    for obj in (plain, ecs_keys, nested, tagged, reserved):
        assert check_ecs_line(obj) == []
        assert obj["ecs.version"] == ECS_VERSION
        assert "service" not in obj  # no service name given: neither service nor dataset
        assert "dataset" not in obj.get("event", {})
    assert plain["message"] == "plain keys"
    assert plain["labels"] == {
        "user": "bob",
        "url": "http://x/",
        "count": "3",
        "ok": "true",
        "ratio": "0.5",
    }
    assert ecs_keys["log.level"] == "warning"
    assert ecs_keys["http"] == {"request": {"method": "GET"}}
    assert ecs_keys["user"] == {"id": "u-1"}
    assert nested["user"] == {"name": "carol"}
    assert nested["labels"] == {"team": "core", "n": "2"}
    assert tagged["tags"] == ["a", "b"]
    assert tagged["labels"] == {"payload": '{"k": [1, 2]}'}
    assert reserved["labels"] == {"ecs": '{"version": "0.1"}', "message": "shadowed", "a_b": "1"}
    assert reserved["message"] == "reserved"


def test_ecs_application_exception_is_a_stack_trace_without_locals() -> None:
    def app_fails() -> None:
        try:
            fail_with_secret_local()
        except ValueError:
            structlog.get_logger().exception("job failed")

    (obj,) = parse(render("ecs", app_fails))
    assert check_ecs_line(obj) == []
    assert obj["log.level"] == "error"
    assert obj["error"] == {"type": "ValueError", "message": "bad frame (24 chars)"}
    (obj,) = parse(render("ecs", app_fails, level="debug"))  # the traceback at debug only
    assert check_ecs_line(obj) == []
    assert "ValueError: bad frame" in obj["error"]["stack_trace"]
    assert LOCAL_SECRET not in json.dumps(obj)


# --- console -------------------------------------------------------------------------


def test_console_has_no_colour_codes_off_a_tty() -> None:
    lines = scenario_lines("console")
    assert len(lines) == N_EVENTS
    assert not any(ANSI.search(line) for line in lines)
    # A person reads a sentence, not the fields: the time of day, the level, what happened.
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{6} \[info +\] connection conn-1 moved from disconnected to "
        r"connecting after 1 s: connect requested",
        lines[0].rstrip(),
    )
    drop = next(line for line in lines if "from connected to reconnecting" in line)
    assert "[warning  ]" in drop
    assert drop.rstrip().endswith(
        "connection conn-1 moved from connected to reconnecting after 12.5 s: "
        "unexpected_close: ConnectionClosed (code 1006); next attempt in 3 s "
        "error_message='CloseReason<code=1006, name=ABNORMAL_CLOSURE, reason=None>'"
    )
    assert not any("url=" in line or "conn_id=" in line for line in lines)


def test_console_has_colours_on_a_tty() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    configure_logging("console", stream=stream)
    structlog.get_logger().info("coloured")
    assert ANSI.search(stream.getvalue())


# --- secrets and exceptions, every format ------------------------------------------

LOCAL_SECRET = "hunter2-in-a-frame-local"


def fail_with_secret_local() -> None:
    api_password = LOCAL_SECRET
    raise ValueError(f"bad frame ({len(api_password)} chars)")


@pytest.mark.parametrize("fmt", FORMATS)
def test_exceptions_are_type_and_message_without_frame_locals(fmt: Format) -> None:
    def emit() -> None:
        events = ConnectionEvents(CONN_ID, URL)
        try:
            fail_with_secret_local()
        except ValueError as exc:
            events.hook_failed(hook="on_transition", error=exc)
            structlog.get_logger().exception("app saw it too")

    lines = render(fmt, emit)
    text = "\n".join(lines)
    assert LOCAL_SECRET not in text
    assert "ValueError" in lines[0]
    assert "bad frame (24 chars)" in lines[0]
    assert "Traceback" not in text  # type and message only, above debug
    text = "\n".join(render(fmt, emit, level="debug"))
    assert "Traceback" in text  # the application's traceback, at debug
    assert LOCAL_SECRET not in text


def test_trio_websocket_logger_is_kept_out_of_debug() -> None:
    websocket_logger = logging.getLogger(TRIO_WEBSOCKET_LOGGER)
    websocket_logger.setLevel(logging.DEBUG)
    configure_logging("json", stream=io.StringIO())
    assert websocket_logger.level == logging.INFO
    websocket_logger.setLevel(logging.WARNING)
    configure_logging("json", stream=io.StringIO(), force=True)
    assert websocket_logger.level == logging.WARNING


# Alphanumeric runs of the scenario's output with placeholder secrets: a
# generated secret equal to one of their substrings ("REDACTED", "connecting",
# a duration in nanoseconds such as "00000000") cannot be told from the text.
@functools.cache
def baseline_runs() -> frozenset[str]:
    text = ""
    for fmt in FORMATS:
        text += "\n".join(scenario_lines(fmt)) + "\n"
        structlog.reset_defaults()
    return frozenset(re.findall(r"[A-Za-z0-9]+", text))


SECRET = st.text(alphabet=string.ascii_letters + string.digits, min_size=8, max_size=24)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(user=SECRET, password=SECRET, token=SECRET, cookie=SECRET, bearer=SECRET)
def test_secrets_never_reach_any_line_of_any_format(
    user: str, password: str, token: str, cookie: str, bearer: str
) -> None:
    secrets = (user, password, token, cookie, bearer)
    # A secret sharing an 8-character fragment with what the lines say anyway
    # ("onnectio" of "connection") would be found in them too (by design).
    runs = baseline_runs()
    assume(
        not any(
            secret[i : i + 8] in run
            for secret in secrets
            for run in runs
            for i in range(len(secret) - 7)
        )
    )
    url = f"wss://{user}:{password}@example.com:8443/ws?token={token}&v=1"
    headers = [("Cookie", f"session={cookie}; theme=dark"), ("Authorization", f"Bearer {bearer}")]

    def leaky_error() -> BaseException:
        return ConnectionResetError(f"reset after sending {cookie} and {bearer} to {url}")

    def emit() -> None:
        events = ConnectionEvents(CONN_ID, url)
        events.add_secrets(value for _, value in headers)
        run_scenario(events, error=leaky_error)
        events.hook_failed(hook="on_connect", error=PermissionError(f"token {token} expired"))
        events.recovery(
            RecoveryRecord(
                at=1.0,
                duration=1.0,
                refreshed=False,
                consecutive_failures=5,
                detail=f"user {user}",
            )
        )

    for fmt in FORMATS:
        lines = render(fmt, emit)
        assert len(lines) == N_EVENTS + 2
        for line in lines:
            for secret in secrets:
                assert secret not in line, (fmt, secret, line)
        if fmt == "ecs":
            assert all(check_ecs_line(obj) == [] for obj in parse(lines))


# --- the validator itself ------------------------------------------------------------

GOOD = {
    "@timestamp": "2025-01-02T03:04:05.123456Z",
    "log.level": "info",
    "message": "m",
    "ecs.version": ECS_VERSION,
}


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"url": "ws://x"}, "url: 'ws://x' where ECS has an object"),
        ({"url": {"full": {"x": 1}}}, "url.full.x: not an ECS field"),
        ({"event": {"duration": 1.5}}, "event.duration: 1.5 does not fit ECS type long"),
        ({"event": {"duration": True}}, "event.duration: True does not fit ECS type long"),
        ({"event": {"kind": "happening"}}, "event.kind: 'happening' is not one of"),
        ({"event": {"type": ["connection", "bogus"]}}, "event.type: 'bogus' is not one of"),
        ({"conn_id": "x"}, "conn_id: not an ECS field"),
        ({"labels": {"a": 1}}, "labels.a: labels are one level of string values"),
        ({"@timestamp": "2025-01-02T03:04:05+01:00"}, "@timestamp: '2025-01-02T03:04:05+01:00' is"),
        ({"@timestamp": "yesterday"}, "@timestamp: 'yesterday' does not fit ECS type date"),
        ({"log": {"level": "info"}}, "log.level: given twice"),
        ({"source": {"ip": "not-an-ip"}}, "source.ip: 'not-an-ip' does not fit ECS type ip"),
        ({"error": {"message": 3}}, "error.message: 3 does not fit"),
    ],
)
def test_check_ecs_line_reports_problems(extra: dict[str, Any], problem: str) -> None:
    assert check_ecs_line(GOOD) == []
    problems = check_ecs_line({**GOOD, **extra})
    assert any(found.startswith(problem) for found in problems), problems


def test_check_ecs_line_accepts_custom_and_flattened_fields() -> None:
    line = {
        **GOOD,
        "trio_conn": {"anything": [1, "two"]},
        "labels": {"team": "core"},
        "tags": ["a"],
        "event": {"duration": 5, "type": ["connection", "start"], "outcome": "success"},
        "source": {"ip": "::1", "port": 443},
    }
    assert check_ecs_line(line) == []
    assert check_ecs_line({"message": "m"}) == [
        "@timestamp: missing",
        "log.level: missing",
        "ecs.version: missing",
    ]


def test_missing_schema_file_fails_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="shared/ecs/"):
        load_schema(tmp_path / "ecs-fields.json")
    assert load_schema().version.startswith("9.5")


@pytest.mark.skipif(not SHARED_SCHEMA_PATH.exists(), reason="no shared/ beside the checkout")
def test_vendored_schema_is_the_shared_one() -> None:
    assert SCHEMA_PATH.read_bytes() == SHARED_SCHEMA_PATH.read_bytes()
