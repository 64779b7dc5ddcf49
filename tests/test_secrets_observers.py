"""Secrets never reach an observer: records printed.

An application prints what ``on_transition`` and ``on_failed`` receive, logs
them with its own logging, binds whatever it likes to a connection: none of
it may carry a registered secret, even once the connection (and its secrets)
are gone.
"""

from __future__ import annotations

import trio
import trio.testing

from trio_conn import (
    ConnectionClosed,
    ConnectionConfig,
    ConnectionRejected,
    ConnectionState,
    FailureInfo,
    RecoveryRecord,
    TransitionRecord,
    open_connection,
)
from trio_conn._events import ConnectionEvents
from trio_conn.testing import open_fault_server

S = ConnectionState
TOKEN = "tok_LIVE_9f8e7d6c5b4a"


# --- records, printed after the connection is gone ---------------------------------------


async def test_printed_records_never_show_a_close_reason_that_echoes_a_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    infos: list[FailureInfo] = []

    async def on_failed(info: FailureInfo) -> bool:
        infos.append(info)
        return False

    async with (
        open_fault_server() as server,
        open_connection(
            server.url,
            open_stream=server.open_stream,
            headers=[("Authorization", f"Bearer {TOKEN}")],
            heartbeat=None,
            config=ConnectionConfig(max_connection_failures=1),
            on_transition=records.append,
            on_failed=on_failed,
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        await server.close_all(4401, f"bad token {TOKEN}")
        await conn.wait_for_state(S.FAILED)
    # Printed now, when the connection's secrets are forgotten: nothing left to scrub.
    failed = [r for r in records if r.error is not None]
    assert failed
    assert infos
    for shown in [*map(repr, failed), *map(str, failed), *map(repr, infos)]:
        assert TOKEN not in shown
        assert "error=ConnectionClosed(code=4401)" in shown
    error = failed[0].error
    assert isinstance(error, ConnectionClosed)
    assert error.reason == f"bad token {TOKEN}"  # the attribute keeps the peer's words
    assert TOKEN not in str(error)  # scrubbed while the connection was alive


def test_a_record_scrubs_an_exception_message_when_it_is_built() -> None:
    events = ConnectionEvents("c", "ws://127.0.0.1:1/")
    events.add_secrets([f"Bearer {TOKEN}"])
    try:
        recovery = RecoveryRecord(
            at=1.0,
            duration=0.5,
            refreshed=False,
            consecutive_failures=1,
            error=RuntimeError(f"refresh with {TOKEN} refused"),
        )
    finally:
        events.forget_secrets()
    assert repr(recovery).endswith(
        "error=RuntimeError('refresh with REDACTED refused'), detail=None)"
    )
    rejected = ConnectionRejected(401, [(b"set-cookie", TOKEN.encode())], TOKEN.encode())
    assert repr(rejected) == "ConnectionRejected(status_code=401)"
    info = FailureInfo(1, "rejected", rejected, status_code=401)  # type: ignore[arg-type]
    assert TOKEN not in repr(info)
