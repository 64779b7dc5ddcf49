"""The sink of ``configure_logging``'s pipelines: safe lines whatever an event holds.

A peer's close reason is written into every JSON line: no character in it
may act on a terminal or hide text in an editor, and the line must still
read back as the same text. An application logs, and binds to a connection,
whatever it likes: the sink writes a line for it and never raises.
"""

from __future__ import annotations

import io
import json
import unicodedata
from typing import Any

import pytest
import structlog
import trio
import trio.testing

from tests.test_secrets import FORMATS, Format
from trio_conn import ConnectionState, configure_logging, open_connection
from trio_conn._events import ConnectionEvents
from trio_conn.testing import open_fault_server

S = ConnectionState
# A right-to-left override, a line separator, an 8-bit CSI, DEL, a byte order
# mark, a Unicode tag beyond the BMP; and text that must stay as it is.
HOSTILE = "ok\u202egnp.exe\u2028\x9b2J\x7f\ufeff\U000e0041 Zürich\u00a0€"
INVISIBLE = "\u202e\u2028\x9b\x7f\ufeff\U000e0041"


@pytest.mark.parametrize("fmt", ["json", "ecs"])
async def test_a_close_reason_reaches_a_json_line_escaped_and_reads_back_whole(
    fmt: Format, autojump_clock: trio.testing.MockClock
) -> None:
    stream = io.StringIO()
    configure_logging(fmt, stream=stream)
    async with (
        open_fault_server() as server,
        open_connection(
            server.url, open_stream=server.open_stream, heartbeat=None, name="feed"
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await server.close_all(4000, HOSTILE)
        await conn.wait_for_state(S.CONNECTED)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 4
    for line in lines:
        assert not any(ch in line for ch in INVISIBLE), ascii(line)
        assert all(ch.isprintable() or unicodedata.category(ch) == "Zs" for ch in line)
    messages = [
        event.get("error_message") or event.get("error", {}).get("message")
        for event in map(json.loads, lines)
    ]
    assert f"WebSocket connection closed with code 4000: {HOSTILE}" in messages
    if fmt == "json":
        assert "Zürich\u00a0€" in stream.getvalue()  # printable text stays raw


# --- whatever an event holds, the sink writes a line and never raises -----------------


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class BadHook:
    def __structlog__(self) -> str:
        raise RuntimeError("no")


TOKEN = "tok_LIVE_9f8e7d6c5b4a"
AWKWARD: dict[str, dict[str, Any]] = {
    "tuple key": {"counts": {("EURUSD", "bid"): 3, (TOKEN,): TOKEN}},
    "frozenset key": {"d": {frozenset({1}): 2}},
    "nested tuple key": {"v": [{(1,): TOKEN}]},
    "repr raises": {"v": BadRepr(), "w": [BadRepr()]},
    "__structlog__ raises": {"v": BadHook()},
    "lone surrogate": {"v": "a\ud800b", "\udfffkey": 1},
    "int beyond 64 bits": {"v": 2**70, "w": [2**70]},
}


@pytest.mark.parametrize("secrets", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", sorted(AWKWARD))
def test_an_application_log_call_never_raises_and_writes_one_line(
    name: str, fmt: Format, secrets: bool
) -> None:
    stream = io.StringIO()
    configure_logging(fmt, stream=stream)
    events = ConnectionEvents("c", f"ws://127.0.0.1:1/?key={TOKEN if secrets else 'x'}")
    try:
        structlog.get_logger("app").info("app event", **AWKWARD[name])
    finally:
        events.forget_secrets()
    (line,) = stream.getvalue().splitlines()
    assert "app event" in line
    if fmt != "console":
        json.loads(line)
    if secrets:
        assert TOKEN not in line


async def test_a_bound_tuple_key_loses_no_later_event_of_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for fmt in FORMATS:
        stream = io.StringIO()
        configure_logging(fmt, stream=stream, force=True)
        async with (
            open_fault_server() as server,
            open_connection(
                server.url,
                open_stream=server.open_stream,
                headers=[("Authorization", f"Bearer {TOKEN}")],
                heartbeat=None,
                name="feed",
            ) as conn,
        ):
            await conn.wait_for_state(S.CONNECTED)
            conn.bind(counts={("EURUSD", "bid"): 3})
            await server.drop()
            await conn.wait_for_state(S.CONNECTED)
        lines = stream.getvalue().splitlines()
        after_bind = [line for line in lines if "EURUSD" in line]
        assert len(after_bind) == 4, (fmt, lines)  # reconnecting, connecting, connected, closed
        assert TOKEN not in stream.getvalue()
