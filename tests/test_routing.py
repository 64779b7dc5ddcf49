"""Where events go, for each kind of application (docs/design.md, "Events").

- nothing configured: the standard library's silent-library behaviour
  (warnings and errors on stderr, nothing on stdout);
- only the standard library's ``logging``: records of the logger ``trio_conn``
  with the fields as attributes;
- structlog: through its pipeline; ``configure_logging`` does not replace it
  unless forced;
- context: contextvars bound before ``open_connection``, and
  ``ManagedConnection.bind`` at any time.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import subprocess
import sys
import textwrap
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import structlog
import trio
import trio.testing
from structlog.testing import CapturingLogger

from trio_conn import (
    ConnectionConfig,
    ConnectionState,
    ManagedConnection,
    RetryPolicy,
    configure_logging,
    open_connection,
)
from trio_conn._events import ConnectionEvents
from trio_conn.testing import FaultServer, open_fault_server

S = ConnectionState
TOKEN = "tok-9a8b7c6d5e4f"
CONFIG = ConnectionConfig(retry=RetryPolicy(jitter=0.0))


@asynccontextmanager
async def dropped_once(server: FaultServer, **kwargs: object) -> AsyncIterator[ManagedConnection]:
    """A connection that connects, is dropped, and reconnects; yields it reconnected."""
    async with open_connection(
        f"ws://127.0.0.1:{server.port}/feed?token={TOKEN}",
        open_stream=server.open_stream,
        config=CONFIG,
        name="feed",
        **kwargs,  # type: ignore[arg-type]
    ) as conn:
        await conn.wait_for_state(S.CONNECTED)
        await server.drop()
        await conn.wait_for_state(S.RECONNECTING)
        await conn.wait_for_state(S.CONNECTED)
        yield conn


# --- nothing configured ------------------------------------------------------------------

# Runs in a fresh interpreter: pytest itself installs logging handlers, which
# would hide what an application that configured nothing sees.
SILENT_APP = textwrap.dedent(
    f"""
    import trio, trio.testing
    from trio_conn import ConnectionConfig, ConnectionState, RetryPolicy, open_connection
    from trio_conn.testing import open_fault_server

    async def main():
        async with open_fault_server() as server:
            async with open_connection(
                f"ws://127.0.0.1:{{server.port}}/feed?token={TOKEN}",
                open_stream=server.open_stream,
                config=ConnectionConfig(retry=RetryPolicy(jitter=0.0)),
                name="feed",
            ) as conn:
                await conn.wait_for_state(ConnectionState.CONNECTED)
                await server.drop()
                await conn.wait_for_state(ConnectionState.RECONNECTING)
                await conn.wait_for_state(ConnectionState.CONNECTED)
        print("app output")

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    """
)


def test_an_application_that_configured_nothing_sees_warnings_on_stderr_only() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SILENT_APP], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "app output\n"  # no event mixed into the application's output
    (warning,) = result.stderr.splitlines()
    assert warning.startswith(
        "connection feed moved from connected to reconnecting after 0 s: unexpected_close"
    )
    assert warning.endswith("; next attempt in 3 s")
    assert TOKEN not in result.stderr


# --- the standard library only -------------------------------------------------------------


async def test_a_stdlib_application_gets_records_with_every_field(
    autojump_clock: trio.testing.MockClock, stdlib_records: list[logging.LogRecord]
) -> None:
    assert not structlog.is_configured()
    async with open_fault_server() as server, dropped_once(server) as conn:
        conn.bind(account="acct-7", name="shadows a record attribute")
    changes = [r for r in stdlib_records if r.__dict__["event"] == "connection.state_changed"]
    assert [(r.from_state, r.to_state) for r in changes] == [  # type: ignore[attr-defined]
        (S.DISCONNECTED, S.CONNECTING),
        (S.CONNECTING, S.CONNECTED),
        (S.CONNECTED, S.RECONNECTING),
        (S.RECONNECTING, S.CONNECTING),
        (S.CONNECTING, S.CONNECTED),
        (S.CONNECTED, S.CLOSED),
    ]
    drop = changes[2]
    assert drop.levelno == logging.WARNING
    assert drop.name == "trio_conn"
    assert drop.getMessage() == (
        "connection feed moved from connected to reconnecting after 0 s: "
        "unexpected_close: ConnectionClosed (close code 1006) while connected; "
        "next attempt in 3 s"
    )
    fields = drop.__dict__
    assert (fields["conn_id"], fields["error_kind"], fields["close_code"]) == (
        "feed",
        "unexpected_close",
        1006,
    )
    assert fields["retry_in_s"] == 3.0
    assert fields["url"].endswith("/feed?token=REDACTED")
    closed = changes[-1].__dict__
    assert closed["account"] == "acct-7"  # bound while connected: in the later events
    assert closed["trio_conn_name"] == "shadows a record attribute"
    assert closed["name"] == "trio_conn"  # the record's own attribute is kept
    assert all(TOKEN not in repr(r.__dict__) for r in stdlib_records)


async def test_a_records_msg_is_its_events_template_so_handlers_group_by_event(
    autojump_clock: trio.testing.MockClock, stdlib_records: list[logging.LogRecord]
) -> None:
    async with open_fault_server() as server:
        for name, stay in (("feed", 0.0), ("other", 1.5)):
            async with open_connection(
                server.url, open_stream=server.open_stream, config=CONFIG, name=name
            ) as conn:
                await conn.wait_for_state(S.CONNECTED)
                await trio.sleep(stay)  # another duration, in the sentence
                await server.drop()
                await conn.wait_for_state(S.RECONNECTING)
    drops = [r for r in stdlib_records if "to reconnecting" in r.getMessage()]
    assert [r.getMessage() for r in drops] == [
        f"connection {name} moved from connected to reconnecting after {stay} s: "
        "unexpected_close: ConnectionClosed (close code 1006) while connected; "
        "next attempt in 3 s"
        for name, stay in (("feed", "0"), ("other", "1.5"))
    ]
    template = "connection %s moved from connected to reconnecting after %s s: %s"
    assert drops[0].msg == drops[1].msg == template + "; next attempt in %s s"
    assert drops[1].args == (
        "other",
        "1.5",
        "unexpected_close: ConnectionClosed (close code 1006) while connected",
        "3",
    )
    # One template per edge, whatever the connection, the durations or the reason.
    edges = {(r.from_state, r.to_state) for r in stdlib_records}  # type: ignore[attr-defined]
    assert len({r.msg for r in stdlib_records}) == len(edges) == 4
    assert all(r.__dict__["event"] == "connection.state_changed" for r in stdlib_records)


def test_records_below_the_logger_level_are_not_built(
    stdlib_records: list[logging.LogRecord],
) -> None:
    logging.getLogger("trio_conn").setLevel(logging.ERROR)
    events = ConnectionEvents("c", "ws://127.0.0.1:1/")
    events.heartbeat_missed(misses=1, max_misses=3, timeout=30.0)
    events.hook_failed(hook="on_transition", error=RuntimeError("app bug"))
    (record,) = stdlib_records
    assert record.getMessage() == (
        "connection c: on_transition hook raised RuntimeError: app bug; ignored"
    )


# --- structlog ------------------------------------------------------------------------------


def test_configure_logging_leaves_an_application_configuration_alone() -> None:
    captured = CapturingLogger()
    structlog.configure(processors=[], logger_factory=lambda *args: captured)
    before = structlog.get_config()
    stream = io.StringIO()
    with pytest.warns(RuntimeWarning, match=r"already configured.*force=True"):
        configure_logging("json", stream=stream)
    assert structlog.get_config() == before
    ConnectionEvents("c", "ws://127.0.0.1:1/").heartbeat_missed(misses=1, max_misses=3, timeout=1.0)
    assert [call.kwargs["event"] for call in captured.calls] == ["connection.heartbeat_missed"]
    assert stream.getvalue() == ""

    configure_logging("json", stream=stream, force=True)
    ConnectionEvents("c", "ws://127.0.0.1:1/").heartbeat_missed(misses=2, max_misses=3, timeout=1.0)
    assert json.loads(stream.getvalue())["misses"] == 2
    assert len(captured.calls) == 1


def test_bad_arguments_are_refused_even_when_already_configured() -> None:
    structlog.configure(processors=[])
    with pytest.raises(ValueError, match="level"):
        configure_logging("json", level="loud")


@pytest.mark.parametrize("fmt", ["json", "ecs", "console"])
def test_the_stream_given_is_kept_alive(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / "events.log"
    stream = open(path, "w", encoding="utf-8")  # noqa: SIM115  # handed over to the configuration
    alive = weakref.ref(stream)
    configure_logging(fmt, stream=stream)  # type: ignore[arg-type]
    del stream
    gc.collect()  # the caller kept no reference: the configuration must
    events = ConnectionEvents("c", "ws://127.0.0.1:1/")
    events.heartbeat_missed(misses=1, max_misses=3, timeout=1.0)
    events.heartbeat_missed(misses=2, max_misses=3, timeout=1.0)
    kept = alive()
    assert kept is not None
    kept.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    if fmt == "json":
        assert json.loads(lines[1])["misses"] == 2
    else:  # ecs's message and console's line are the sentence
        assert "missed heartbeat 2 of 3" in lines[1]


# --- context ------------------------------------------------------------------------------


async def test_context_bound_before_opening_appears_and_bind_adds_fields_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    structlog.contextvars.bind_contextvars(request_id="req-1")
    async with open_fault_server() as server, dropped_once(server) as conn:
        structlog.contextvars.bind_contextvars(too_late="x")  # the tasks copied the context
        conn.bind(account="acct-7", request_id="overridden")
        with pytest.raises(TypeError, match="identifiers"):
            conn.bind(**{"not an identifier": 1})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 6  # the six transitions of dropped_once
    assert all(line["request_id"] in ("req-1", "overridden") for line in lines)
    assert not any("too_late" in line for line in lines)
    closed = lines[-1]
    assert (closed["to_state"], closed["account"]) == ("closed", "acct-7")
    assert all("account" not in line for line in lines[:-1])


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_names_structlog_or_ecs_own_are_refused_by_bind(
    fmt: str, autojump_clock: trio.testing.MockClock
) -> None:
    stream = io.StringIO()
    configure_logging(fmt, stream=stream)  # type: ignore[arg-type]
    async with open_fault_server() as server, dropped_once(server) as conn:
        for name in ("level", "timestamp", "exc_info", "logger", "exception", "message"):
            # Accepted, each was dropped, overwritten, or took over the line.
            with pytest.raises(ValueError, match=f"cannot bind '{name}'.*level, timestamp"):
                conn.bind(**{name: "x", "fine": 1})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 6
    assert not any("fine" in line for line in lines)  # a refused call binds nothing
