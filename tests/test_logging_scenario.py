"""Full scenarios through the real manager, every line parsed, in each format."""

from __future__ import annotations

import datetime
import io
import json
import re

import pytest
import trio
import trio.testing

from tests.ecs_schema import check_ecs_line
from tests.test_logging import expected_event_type
from trio_conn import (
    ConnectionConfig,
    ConnectionState,
    FailureInfo,
    RetryPolicy,
    TransitionRecord,
    configure_logging,
    open_connection,
)
from trio_conn.testing import open_fault_server

S = ConnectionState
USER, PASSWORD, TOKEN, COOKIE = "alice", "pw-9f8e7d6c", "tok-0a1b2c3d4e", "sid-5f6e7d8c9b"
SECRETS = (PASSWORD, TOKEN, COOKIE)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


async def run_scenario(records: list[TransitionRecord]) -> None:
    """connect, drop, heartbeat timeout, 403 -> FAILED -> recovery, close."""
    config = ConnectionConfig(retry=RetryPolicy(jitter=0.0))

    async def on_failed(info: FailureInfo) -> bool:
        return True

    async with open_fault_server() as server:
        url = f"ws://{USER}:{PASSWORD}@127.0.0.1:{server.port}/feed?token={TOKEN}&v=2"
        async with open_connection(
            url,
            open_stream=server.open_stream,
            config=config,
            headers=[("Cookie", f"session={COOKIE}")],
            on_failed=on_failed,
            on_transition=records.append,
            name="scenario",
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            await server.drop()
            await conn.wait_for_state(S.CONNECTED)
            server.freeze()
            await conn.wait_for_state(S.RECONNECTING)
            server.thaw()
            server.reject_next(1, 403)
            await conn.wait_for_state(S.FAILED)
            await conn.wait_for_state(S.CONNECTED)
            await trio.sleep(1)


async def emitted(fmt: str, records: list[TransitionRecord]) -> list[str]:
    stream = io.StringIO()
    configure_logging(fmt, stream=stream, level="debug", service_name="feed-bot")  # type: ignore[arg-type]
    await run_scenario(records)
    lines = stream.getvalue().splitlines()
    assert lines
    for line in lines:
        for secret in SECRETS:
            assert secret not in line, line
    return lines


EXPECTED_EDGES = [
    (S.DISCONNECTED, S.CONNECTING),
    (S.CONNECTING, S.CONNECTED),
    (S.CONNECTED, S.RECONNECTING),  # drop
    (S.RECONNECTING, S.CONNECTING),
    (S.CONNECTING, S.CONNECTED),
    (S.CONNECTED, S.RECONNECTING),  # heartbeat timeout
    (S.RECONNECTING, S.CONNECTING),
    (S.CONNECTING, S.RECONNECTING),  # 403
    (S.RECONNECTING, S.FAILED),
    (S.FAILED, S.RECONNECTING),  # recovery
    (S.RECONNECTING, S.CONNECTING),
    (S.CONNECTING, S.CONNECTED),
    (S.CONNECTED, S.CLOSED),
]


def lifetime(records: list[TransitionRecord]) -> float:
    return records[-1].at - (records[0].at - records[0].duration)


async def test_json_lines(autojump_clock: trio.testing.MockClock) -> None:
    records: list[TransitionRecord] = []
    objs = [json.loads(line) for line in await emitted("json", records)]
    changes = [o for o in objs if o["event"] == "connection.state_changed"]
    assert [(o["from_state"], o["to_state"]) for o in changes] == EXPECTED_EDGES
    for obj in objs:
        assert obj["timestamp"].endswith("Z")
        stamp = datetime.datetime.fromisoformat(obj["timestamp"].replace("Z", "+00:00"))
        assert stamp.utcoffset() == datetime.timedelta(0)
        assert obj["conn_id"] == "scenario"
        assert obj["url"].startswith("ws://REDACTED:REDACTED@127.0.0.1:")
        assert obj["url"].endswith("/feed?token=REDACTED&v=REDACTED")
    for obj, record in zip(changes, records, strict=True):
        assert obj["reason"] == record.reason
        assert obj["duration_s"] == record.duration
        assert isinstance(obj["consecutive_failures"], int)
        assert isinstance(obj["attempt"], int)
        if record.to_state is S.FAILED:
            assert obj["level"] == "error"
        elif record.kind is not None:  # a failure
            assert obj["level"] == "warning"
            assert obj["outcome"] == "failure"
        else:  # leaving FAILED after the refresh is good news, not a warning
            assert obj["level"] == "info"
            assert obj.get("outcome") in (None, "success")
    assert changes[1]["outcome"] == "success"
    assert changes[2]["error_kind"] == "unexpected_close"
    assert changes[2]["close_code"] == 1006
    assert changes[2]["retry_in_s"] == 3.0
    assert changes[5]["error_kind"] == "heartbeat"
    assert changes[7]["status_code"] == 403
    assert "retry_in_s" not in changes[7]  # fatal: no delay
    assert sum(o["duration_s"] for o in changes) == pytest.approx(lifetime(records))
    missed = [o for o in objs if o["event"] == "connection.heartbeat_missed"]
    assert [o["misses"] for o in missed] == [1, 2, 3]
    assert all(o["level"] == "warning" for o in missed)
    (recovery,) = [o for o in objs if o["event"] == "connection.recovery"]
    assert (recovery["outcome"], recovery["level"]) == ("success", "info")
    refreshed = changes[9]
    assert refreshed["reason"] == "credentials refreshed by on_failed"
    assert (refreshed["level"], refreshed.get("outcome")) == ("info", None)


async def test_ecs_lines(autojump_clock: trio.testing.MockClock) -> None:
    records: list[TransitionRecord] = []
    objs = [json.loads(line) for line in await emitted("ecs", records)]
    for obj in objs:
        assert check_ecs_line(obj) == [], obj
        assert obj["@timestamp"].endswith("Z")
        assert obj["log.level"] == obj["log.level"].lower()
        assert obj["ecs.version"]
        assert obj["event"]["kind"] == "event"
        assert obj["event"]["category"] == ["network"]
        assert obj["service"]["name"] == "feed-bot"
        assert obj["event"]["dataset"] == "feed-bot.trio_conn"
        assert isinstance(obj["message"], str)
        assert obj["message"]
    changes = [o for o in objs if o["event"]["action"] == "connection.state_changed"]
    assert len(changes) == len(EXPECTED_EDGES)
    for obj, record in zip(changes, records, strict=True):
        assert obj["event"]["duration"] == round(record.duration * 1e9)
        assert isinstance(obj["event"]["duration"], int)
        assert obj["event"]["reason"] == record.reason
        assert obj["trio_conn"]["from_state"] == record.from_state
        assert obj["event"]["type"] == expected_event_type(record.from_state, record.to_state)
        assert obj["url"]["full"].startswith("ws://REDACTED:REDACTED@")
    assert changes[1]["event"]["outcome"] == "success"
    assert changes[2]["error"]["type"] == "trio_conn.ConnectionClosed"
    assert changes[8]["event"]["outcome"] == "failure"
    total_ns = sum(o["event"]["duration"] for o in changes)
    assert total_ns == pytest.approx(lifetime(records) * 1e9, abs=len(changes))


async def test_console_lines(autojump_clock: trio.testing.MockClock) -> None:
    records: list[TransitionRecord] = []
    lines = await emitted("console", records)
    assert not any(ANSI.search(line) for line in lines)  # StringIO is not a TTY
    changes = [line for line in lines if "connection scenario moved from" in line]
    assert [re.search(r"moved from (\w+) to (\w+)", line).groups() for line in changes] == [  # type: ignore[union-attr]
        (a.value, b.value) for a, b in EXPECTED_EDGES
    ]
    assert "[error" in changes[8]
    assert "rejected is fatal error_message='HTTP status 403'" in changes[8]
