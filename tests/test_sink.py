"""The sink of ``configure_logging``'s pipelines: safe lines whatever an event holds.

A peer's close reason is written into every JSON line: no character in it
may act on a terminal or hide text in an editor, and the line must still
read back as the same text.
"""

from __future__ import annotations

import io
import json
import unicodedata

import pytest
import trio
import trio.testing

from tests.test_secrets import Format
from trio_conn import ConnectionState, configure_logging, open_connection
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
