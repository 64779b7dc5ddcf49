"""The README's examples run as written."""

from __future__ import annotations

import ast
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
import trio.testing

from trio_conn import (
    TRANSITIONS,
    ConnectionConfig,
    ConnectionState,
    RetryPolicy,
    configure_logging,
)
from trio_conn import open_connection as open_managed
from trio_conn.testing import open_fault_server

README = Path(__file__).parent.parent / "README.md"


def python_block(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"no python block under {heading!r}"
    return match.group(1)


async def test_quick_start_refreshes_the_cookie_and_survives_a_server_restart() -> None:
    """Real clock: the example connects over TCP, as an application would. Its
    first cookie is refused (on_failed logs in again); later the server
    restarts (every connection dropped, the port closed for a while) and its
    data flows again, because the subscription is made in on_connect."""
    printed: list[str] = []
    got = {"before": trio.Event(), "after": trio.Event()}

    def fake_print(message: Any) -> None:
        printed.append(message)
        if message in got:
            got[message].set()

    namespace: dict[str, Any] = {"__name__": "quickstart", "print": fake_print}
    exec(compile(python_block("## Quick start"), "README quick start", "exec"), namespace)
    subscribe = '{"op": "subscribe", "channel": "prices"}'
    with trio.fail_after(30):
        async with open_fault_server() as server:
            # The fault server answers heartbeats without the space json.dumps writes.
            server.is_heartbeat = lambda m: m == '{"op": "ping"}'
            server.heartbeat_reply = lambda m: '{"op":"pong"}'
            server.echo = False
            server.reject_next(1, 403)  # the first cookie is refused
            async with trio.open_nursery() as nursery:
                nursery.start_soon(namespace["main"], server.url)
                await server.wait_accepted(1)
                await server.wait_received(1)  # the subscription
                await server.push("before")
                await got["before"].wait()
                await server.stop()  # the restart: the port closed,
                await server.drop()  # every connection cut
                await server.start()
                await server.wait_accepted(2)
                while len(server.connections[-1].received) < 1:  # bounded by fail_after
                    await server.wait_received(sum(len(c.received) for c in server.connections) + 1)
                await server.push("after")
                await got["after"].wait()
                nursery.cancel_scope.cancel()
    assert printed == ["before", "after"]  # pongs consumed, never printed
    assert [c.header("cookie") for c in server.connections] == [
        "session=initial",
        "session=refreshed",
        "session=refreshed",
    ]
    ping = '{"op": "ping"}'  # the application heartbeat, sent from CONNECTED on
    for accepted in server.connections[1:]:
        assert [m for m in accepted.received if m != ping][:1] == [subscribe]


async def test_testing_section_example_passes(autojump_clock: trio.testing.MockClock) -> None:
    namespace: dict[str, Any] = {"__name__": "readme_testing"}
    exec(compile(python_block("## Testing your application"), "README testing", "exec"), namespace)
    await namespace["test_bot_resubscribes_after_a_drop"](autojump_clock)


def test_state_machine_snippet_runs() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(python_block("## The state machine"), "README state machine", "exec"), namespace)
    assert namespace["record"].to_state == "connecting"


def test_close_codes_snippet_maps_4401_to_rejected() -> None:
    from trio_conn import ErrorKind

    namespace: dict[str, Any] = {}
    exec(compile(python_block("**Close codes.**"), "README close codes", "exec"), namespace)
    assert namespace["config"].retry.close_codes[4401] is ErrorKind.REJECTED
    assert namespace["config"].retry.is_fatal(ErrorKind.REJECTED)


async def dropped_after_12_5_s(fmt: str) -> str:
    """The README's example: a connection dropped after 12.5 s, its transition line."""
    structlog.reset_defaults()
    out = io.StringIO()
    configure_logging(fmt, stream=out, service_name="market-bot" if fmt == "ecs" else None)  # type: ignore[arg-type]
    async with open_fault_server() as server:
        url = f"ws://bot:hunter2@127.0.0.1:{server.port}/feed?token=abc123xyz"
        async with open_managed(
            url,
            open_stream=server.open_stream,
            name="market-feed",
            config=ConnectionConfig(retry=RetryPolicy(jitter=0.0)),
        ) as conn:
            await conn.wait_for_state(ConnectionState.CONNECTED)
            await trio.sleep(12.5)
            await server.drop()
            await conn.wait_for_state(ConnectionState.RECONNECTING)
    (line,) = [
        ln
        for ln in out.getvalue().splitlines()
        if "from connected to reconnecting" in ln
        or '"from_state":"connected","to_state":"reconnecting"' in ln
    ]
    return line


def normalised(line: str) -> str:
    """Without what changes from run to run: the time and the port."""
    line = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", "<time>", line)
    line = re.sub(r"^\d\d:\d\d:\d\d\.\d{6}", "<time>", line)
    return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", line)


async def test_the_log_examples_are_what_the_library_writes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    text = README.read_text(encoding="utf-8")
    for fmt, heading, fence in (
        ("json", '### `format="json"`', "```json\n"),
        ("ecs", '### `format="ecs"`', "```json\n"),
        ("console", '### `format="console"`', "```\n"),
    ):
        section = text[text.index(heading) :]
        shown = section[section.index(fence) + len(fence) :].split("\n", 1)[0]
        assert normalised(shown) == normalised(await dropped_after_12_5_s(fmt)), fmt


async def test_the_connection_group_example_runs_the_seeds_shape(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Virtual time (its two minutes of sleeps): every account registers with its
    cookie and answers the heartbeat; bob's restart brings the new cookie;
    each handler prints its own account's messages."""
    printed: list[str] = []

    def fake_print(*parts: Any) -> None:
        printed.append(" ".join(map(str, parts)))

    namespace: dict[str, Any] = {"__name__": "readme_group", "print": fake_print}
    block = python_block("## Connection groups")
    exec(compile(block, "README connection groups", "exec"), namespace)
    async with open_fault_server() as server:
        server.is_heartbeat = lambda m: m == '{"op": "ping"}'
        server.heartbeat_reply = lambda m: '{"op": "pong"}'
        server.echo = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: namespace["main"](server.url, open_stream=server.open_stream)
            )
            await trio.sleep(10)
            await server.push("hello")
        registered = {
            c.header("cookie"): [m for m in c.received if "register" in str(m)]
            for c in server.connections
        }
    assert registered == {
        "session=a1": ['{"op": "register", "account": "alice"}'],
        "session=b1": ['{"op": "register", "account": "bob"}'],
        "session=c1": ['{"op": "register", "account": "carol"}'],
        "session=b2": ['{"op": "register", "account": "bob"}'],
    }
    assert sorted(line for line in printed if "got" in line) == [
        "alice got hello",
        "bob got hello",
        "carol got hello",
    ]
    assert all(c.received.count('{"op": "ping"}') >= 4 for c in server.connections)
    (stats,) = [line for line in printed if line.startswith("GroupStatistics(")]
    assert "members=3" in stats


def test_the_state_diagram_and_table_are_transitions() -> None:
    """The Mermaid diagram and the table under "The state machine" say exactly
    what TRANSITIONS says (regenerate the diagram from this test on a change)."""
    lines = ["stateDiagram-v2", "    [*] --> disconnected"]
    for source in ConnectionState:
        for target in ConnectionState:
            if target in TRANSITIONS[source]:
                lines.append(f"    {source} --> {target}")
    lines.append("    closed --> [*]")
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The state machine") : text.index("## Retry delays")]
    match = re.search(r"```mermaid\n(.*?)```", section, re.DOTALL)
    assert match is not None
    assert match.group(1).rstrip("\n") == "\n".join(lines)

    rows = [line for line in section.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")][1:]
    table = {}
    for row in rows[1:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        table[cells[0]] = {
            target for target, cell in zip(header, cells[1:], strict=True) if cell == "✓"
        }
    assert table == {str(s): {str(t) for t in TRANSITIONS[s]} for s in ConnectionState}


#: The program blocks and the test that runs each (by the heading above it).
PROGRAMS = {
    "## Quick start": "test_quick_start_refreshes_the_cookie_and_survives_a_server_restart",
    "## The state machine": "test_state_machine_snippet_runs",
    "## Retry delays": "test_close_codes_snippet_maps_4401_to_rejected",
    "## Metrics for Prometheus": "test_the_metrics_example_exposes_the_connection",
    "## Connection groups: one connection per account": (
        "test_the_connection_group_example_runs_the_seeds_shape"
    ),
    "## Logs to ELK": "test_the_configure_logging_example_runs",
    "## Testing your application": "test_testing_section_example_passes",
}
FRAGMENT = "# A fragment"


def python_blocks() -> list[tuple[str, str]]:
    """Every ```python block of the README with the ``##`` heading it is under."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"```python\n(.*?)```", text, re.DOTALL):
        heading = text.rfind("\n## ", 0, match.start())
        blocks.append((text[heading + 1 : text.index("\n", heading + 1)], match.group(1)))
    return blocks


def test_every_python_block_is_a_tested_program_or_a_marked_fragment() -> None:
    tests = {name for name in globals() if name.startswith("test_")}
    for heading, code in python_blocks():
        # Fragments too must be valid Python (awaits as if in an async function).
        compile(code, f"README {heading}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        if code.startswith(FRAGMENT):
            continue
        assert heading in PROGRAMS, f"an unmarked block under {heading!r} that no test runs"
        assert PROGRAMS[heading] in tests


async def test_the_metrics_example_exposes_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real clock: the example as written, its HTTP server not started (the test
    reads the registry); the connection and the group member appear in the
    exposition. Its collector leaves the global registry at the end."""
    import prometheus_client

    ports: list[int] = []
    monkeypatch.setattr(prometheus_client, "start_http_server", ports.append)
    block = dict(python_blocks())["## Metrics for Prometheus"]
    namespace: dict[str, Any] = {"__name__": "readme_metrics", "print": lambda *_: None}
    exec(compile(block, "README metrics", "exec"), namespace)
    try:
        with trio.fail_after(10):
            async with open_fault_server() as server, trio.open_nursery() as nursery:
                nursery.start_soon(namespace["main"], server.url)
                exposition = ""
                while 'conn_id="alice",state="connected"} 1.0' not in exposition:
                    await trio.sleep(0.01)  # polled: CONNECTED follows the handshakes
                    exposition = prometheus_client.generate_latest().decode()
                nursery.cancel_scope.cancel()
    finally:
        prometheus_client.REGISTRY.unregister(namespace["metrics"])
    assert ports == [9464]
    assert 'trio_conn_connection_state{conn_id="prices",state="connected"} 1.0' in exposition


def test_the_configure_logging_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    block = next(code for heading, code in python_blocks() if heading == "## Logs to ELK")
    exec(compile(block, "README configure_logging", "exec"), {"__name__": "readme_logs"})
    structlog.get_logger("trio_conn").info("connection.probe", conn_id="x")
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (line["service"]["name"], line["message"]) == ("market-bot", "connection.probe")
