"""Secrets never reach an observer: records printed, records of the stdlib route, bound fields.

An application prints what ``on_transition`` and ``on_failed`` receive, logs
them with its own logging, binds whatever it likes to a connection: none of
it may carry a registered secret, even once the connection (and its secrets)
are gone.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import structlog
import trio
import trio.testing
from structlog.testing import capture_logs

from trio_conn import (
    ConnectionClosed,
    ConnectionConfig,
    ConnectionRejected,
    ConnectionState,
    FailureInfo,
    RecoveryRecord,
    RetryPolicy,
    TransitionRecord,
    open_connection,
)
from trio_conn._events import ConnectionEvents
from trio_conn.testing import open_fault_server

S = ConnectionState
TOKEN = "tok_LIVE_9f8e7d6c5b4a"


class Pair(NamedTuple):
    name: str
    value: str


class Holder:
    """An object whose repr shows what it holds, as many do."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def __repr__(self) -> str:
        return f"Holder(secret={self.secret!r})"


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


# --- the stdlib route and an application's own pipeline -----------------------------------


def nested_values() -> dict[str, Any]:
    return {
        "request": {"auth": f"Bearer {TOKEN}", (1, TOKEN): [TOKEN]},
        "tokens": [TOKEN, (TOKEN,), {TOKEN}],
        "pair": Pair("key", TOKEN),
        "holder": Holder(TOKEN),
    }


async def test_context_and_bound_values_of_any_type_reach_stdlib_records_scrubbed(
    autojump_clock: trio.testing.MockClock, stdlib_records: list[logging.LogRecord]
) -> None:
    assert not structlog.is_configured()
    structlog.contextvars.bind_contextvars(auth_header=f"Bearer {TOKEN}", ctx=nested_values())
    async with (
        open_fault_server() as server,
        open_connection(
            server.url,
            open_stream=server.open_stream,
            headers=[("Authorization", f"Bearer {TOKEN}")],
            heartbeat=None,
            config=ConnectionConfig(retry=RetryPolicy(jitter=0.0)),
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        conn.bind(**nested_values())
        await server.drop()
        await conn.wait_for_state(S.CONNECTED)
    assert len(stdlib_records) >= 5
    for record in stdlib_records:
        assert TOKEN not in repr(record.__dict__)
    last = stdlib_records[-1].__dict__
    assert last["auth_header"] == "Bearer REDACTED"
    assert last["request"] == {"auth": "Bearer REDACTED", (1, "REDACTED"): ["REDACTED"]}
    assert last["tokens"] == ["REDACTED", ("REDACTED",), {"REDACTED"}]
    assert last["pair"] == ("key", "REDACTED")
    assert last["holder"] == "Holder(secret='REDACTED')"
    assert last["ctx"]["holder"] == "Holder(secret='REDACTED')"


def test_bound_values_of_any_type_reach_an_application_pipeline_scrubbed() -> None:
    events = ConnectionEvents("c", f"ws://127.0.0.1:1/?key={TOKEN}")
    events.bind(nested_values() | {"plain": Holder("nothing secret")})
    try:
        with capture_logs() as logs:
            events.heartbeat_missed(misses=1, max_misses=3, timeout=1.0)
    finally:
        events.forget_secrets()
    (entry,) = logs
    assert TOKEN not in repr(entry)
    assert entry["request"]["auth"] == "Bearer REDACTED"
    assert isinstance(entry["plain"], Holder)  # nothing to hide: the object itself
