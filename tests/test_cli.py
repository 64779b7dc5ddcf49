"""The trio-conn command, through its real entry points."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_conn
from tests.ecs_schema import check_ecs_line
from tests.helpers import interrupt_after_lines
from tests.test_field_types import JSON_TYPE_OF, template_types, types_by_field
from trio_conn._connect_command import format_message, parse_header, reply_matcher
from trio_conn.cli import main
from trio_conn.testing import open_fault_server

ROOT = Path(__file__).parent.parent
FIXTURE = Path(__file__).parent / "data" / "report-fixture.ndjson"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def trio_conn_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trio_conn", *args]


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "trio-conn"
    assert script.exists(), "pip install . did not install the trio-conn script"
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0
    for command in ("demo", "connect", "report"):
        assert command in result.stdout


def run_demos() -> dict[str, subprocess.CompletedProcess[str]]:
    """The demo in each format, the three at once (each is ~18 s of real time, mostly asleep)."""
    processes = {
        fmt: subprocess.Popen(
            trio_conn_command("demo", "--log-format", fmt),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for fmt in ("json", "ecs", "console")
    }
    results = {}
    for fmt, process in processes.items():
        try:
            out, err = process.communicate(timeout=45)
        finally:
            process.kill()
        results[fmt] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return results


@pytest.mark.timeout(90)
def test_demo_plays_the_whole_story_in_every_format() -> None:
    """Real clock: the demo is a real-time story (about 20 s; at most 30 s is allowed)."""
    results = run_demos()
    for fmt, result in results.items():
        assert result.returncode == 0, (fmt, result.stderr[-2000:])
        story = result.stdout
        for step in range(1, 7):
            assert f"[{step}/6]" in story
        assert "recovery hook: the cookie was refused" in story
        assert "failed is not for good" in story
        assert "final state closed" in story
    check_json_demo(results["json"])
    check_ecs_demo(results["ecs"])
    check_console_demo(results["console"])


def check_json_demo(result: subprocess.CompletedProcess[str]) -> None:
    assert "   -> connected (after" in result.stdout  # off a terminal the story tells them too
    events = [json.loads(line) for line in result.stderr.splitlines()]
    changes = [e for e in events if e["event"] == "connection.state_changed"]
    reasons = [e["reason"] for e in changes]
    assert any(r.startswith("unexpected_close") for r in reasons)
    assert any(r.startswith("heartbeat: HeartbeatTimeout") for r in reasons)
    assert any(r.startswith("rejected") for r in reasons)
    assert any(r.startswith("network: ConnectionRefusedError") for r in reasons)
    assert any(r.startswith("probe after") for r in reasons)  # FAILED is left by itself
    assert [e["to_state"] for e in changes][-1] == "closed"
    assert {"connection.heartbeat_missed", "connection.recovery"} <= {e["event"] for e in events}
    network = [e for e in changes if e.get("error_kind") == "network"]
    retries = [e["retry_in_s"] for e in network if "retry_in_s" in e]
    assert retries == sorted(retries)
    assert len(retries) >= 2  # the backoff grows while the server is down, then FAILED
    assert retries[0] < retries[-1]
    assert {k: v for k, v in types_by_field(events).items() if len(v) > 1} == {}


def check_ecs_demo(result: subprocess.CompletedProcess[str]) -> None:
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert len(lines) > 30
    assert [problem for line in lines for problem in check_ecs_line(line)] == []
    seen = types_by_field(lines)
    assert {k: v for k, v in seen.items() if len(v) > 1} == {}
    mapped = template_types()
    for path, kinds in seen.items():
        if path.startswith("trio_conn."):
            assert JSON_TYPE_OF[mapped[path]] in kinds, path
    assert {line["event"]["dataset"] for line in lines} == {"trio-conn.trio_conn"}
    assert {line["service"]["name"] for line in lines} == {"trio-conn"}


def check_console_demo(result: subprocess.CompletedProcess[str]) -> None:
    # Events are sentences; the story does not tell the transitions again.
    assert "   -> connected (after" not in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) > 30
    assert all(re.match(r"\d\d:\d\d:\d\d\.\d{6} \[(info|warning|error) *\] ", ln) for ln in lines)
    assert not any("conn_id=" in line or "url=" in line for line in lines)
    assert any("connection demo moved from connected to reconnecting" in ln for ln in lines)
    assert max(len(line) for line in lines) < 300  # was over 500 with every field


# -- connect -------------------------------------------------------------------------


async def test_connect_prints_messages_and_closes_on_ctrl_c() -> None:
    """Real clock: a real process connected over TCP, stopped with SIGINT."""
    with trio.fail_after(30):
        async with open_fault_server() as server:
            process = await trio.lowlevel.open_process(
                trio_conn_command(
                    "connect",
                    server.url,
                    "-H",
                    "Cookie: session=s3cr3t-value",
                    "--send",
                    '{"op": "subscribe"}',
                    "--log-format",
                    "json",
                    "--heartbeat-interval",
                    "1",
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=ENV,
            )
            await server.wait_received(1)
            await server.push("line one\nline two")
            await server.push(b"\x00\x01")
            # A hostile server: a clipboard write (OSC 52), a cursor move, a
            # bidirectional override, and the client's own cookie echoed.
            await server.push("\x1b]52;c;ZXZpbA==\x07\x1b[2Aok\u202e your s3cr3t-value")
            # The subscription's echo, then the pushes:
            stdout, stderr = await interrupt_after_lines(process, 4)
            assert process.returncode == 128 + signal.SIGINT  # the shell's 130
            assert server.connections[0].header("cookie") == "session=s3cr3t-value"
    assert stdout.decode().splitlines() == [
        '{"op": "subscribe"}',
        "line one\\nline two",
        "base64:AAE=",
        "\\x1b]52;c;ZXZpbA==\\x07\\x1b[2Aok\\u202e your REDACTED",
    ]
    text = stderr.decode()
    assert "s3cr3t" not in text
    events = [json.loads(line) for line in text.splitlines()]
    last = events[-1]
    assert (last["event"], last["to_state"]) == ("connection.state_changed", "closed")
    assert server.connections[0].close_code == 1000  # closed with a close frame


def test_connect_rejects_bad_input_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["connect", "http://example.com/"]) == 2
    assert "must start with ws:// or wss://" in capsys.readouterr().err
    assert main(["connect", "ws://example.com/", "-H", "no colon here"]) == 2
    assert "-H[0] must be 'Name: value' and has no ':'" in capsys.readouterr().err
    assert main(["connect", "ws://example.com/", "-H", "Bad Header: s3cr3t"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trio-conn: error: -H[0] has an invalid header name")
    assert "s3cr3t" not in err
    assert "Traceback" not in err
    assert main(["connect", "ws://example.com/", "-H", "X-Token: a\x7fb"]) == 2
    assert "-H[0] (X-Token) value must be Latin-1 text" in capsys.readouterr().err
    assert main(["connect", "ws://example.com/", "--subprotocol", "not a token"]) == 2
    assert "is not an HTTP token" in capsys.readouterr().err
    assert main(["connect", "ws://x/", "--heartbeat", "message", "--heartbeat-reply", "[1]"]) == 2
    assert "--heartbeat-reply must be a JSON object" in capsys.readouterr().err
    assert main(["connect", "ws://x/", "--heartbeat-timeout", "0"]) == 2
    assert "--heartbeat-timeout must be finite and > 0" in capsys.readouterr().err


def test_connect_helpers() -> None:
    assert parse_header("Authorization: Bearer a:b") == ("Authorization", "Bearer a:b")
    with pytest.raises(ValueError, match="Name: value"):
        parse_header(": value")
    matches = reply_matcher('{"op": "pong"}')
    assert matches('{"op": "pong", "t": 1}')
    assert not matches('{"op": "ping"}')
    assert not matches("not json")
    assert not matches("[1]")
    assert format_message("a\\b\r\n") == "a\\\\b\\r\\n"
    assert format_message("\x1b[31mred\x9b\u2028\U000e0041") == (
        "\\x1b[31mred\\x9b\\u2028\\U000e0041"
    )
    assert format_message(b"hi") == "base64:aGk="


# -- report --------------------------------------------------------------------------
#
# The fixture holds two connections. feed-a (plain json lines):
#   disconnected->connecting 0.0, connecting->connected 0.5, connected->reconnecting 10.0,
#   reconnecting->connecting 3.0, connecting->connected 0.5, connected->reconnecting 100.0,
#   reconnecting->connecting 6.0, connecting->reconnecting 2.0, reconnecting->failed 0.0,
#   failed->reconnecting 60.0, reconnecting->connecting 0.0, connecting->connected 1.0,
#   connected->closed 50.0; and one state_stuck event.
# feed-b (ECS lines, half of them with the duration only in event.duration):
#   disconnected->connecting 0.0, connecting->connected 1.0, connected->disconnected 20.0,
#   disconnected->connecting 5.0, connecting->connected 1.0, connected->closed 30.0.
# Plus a line that is not JSON, a state_changed with an unknown state (both
# malformed), a heartbeat_missed event (other) and an empty line (not counted).
#
# Worked out by hand:
#   feed-a: connecting 0.5+0.5+2+1 = 4; connected 10+100+50 = 160; reconnecting
#   3+6+0+0 = 9; failed 60; disconnected 0; observed 233. Attempts (into connecting)
#   4; failures (into reconnecting from connecting or connected) 3, rate 0.75;
#   flaps (connected < 30 s then reconnecting) 1, per hour 3600/233.
#   feed-b: disconnected 0+5 = 5; connecting 2; connected 50; observed 57; attempts 2.
#   overall: observed 290; attempts 6; failures 3; rate 0.5.


def fixture_report(*extra: str) -> dict[str, Any]:
    result = subprocess.run(
        trio_conn_command("report", str(FIXTURE), "--json", *extra),
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "2 malformed lines skipped" in result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_report_figures_worked_out_by_hand() -> None:
    report = fixture_report()
    assert (report["lines"], report["malformed_lines"], report["other_events"]) == (23, 2, 1)
    a, b = report["connections"]
    assert a["conn_id"] == "feed-a"
    assert a["observed_s"] == 233.0
    times = {state: figures["time_s"] for state, figures in a["states"].items()}
    assert times == {
        "disconnected": 0.0,
        "connecting": 4.0,
        "connected": 160.0,
        "reconnecting": 9.0,
        "failed": 60.0,
    }
    assert a["states"]["connected"]["share"] == pytest.approx(160 / 233)
    assert a["states"]["connected"]["mean_stay_s"] == pytest.approx(160 / 3)
    assert a["states"]["connected"]["longest_stay_s"] == 100.0
    assert a["states"]["connecting"]["stays"] == 4
    assert (a["attempts"], a["failures"], a["failure_rate"]) == (4, 3, 0.75)
    assert a["flaps"] == 1
    assert a["flaps_per_hour"] == pytest.approx(3600 / 233)
    assert a["stuck_events"] == 1
    assert a["transitions"]["connected->reconnecting"] == 2
    assert a["transitions"]["reconnecting->failed"] == 1

    assert b["conn_id"] == "feed-b"
    assert b["observed_s"] == 57.0
    assert {s: f["time_s"] for s, f in b["states"].items()} == {
        "disconnected": 5.0,
        "connecting": 2.0,
        "connected": 50.0,
    }
    assert (b["attempts"], b["failures"], b["failure_rate"], b["flaps"]) == (2, 0, 0.0, 0)

    overall = report["overall"]
    assert overall["observed_s"] == 290.0
    assert (overall["attempts"], overall["failures"], overall["failure_rate"]) == (6, 3, 0.5)
    assert overall["states"]["connected"]["time_s"] == 210.0
    assert overall["stuck_events"] == 1


def test_report_flap_threshold_option() -> None:
    report = fixture_report("--flap-threshold", "200")
    assert report["connections"][0]["flaps"] == 2  # the 100 s stay counts now


def test_report_text_and_stdin() -> None:
    result = subprocess.run(
        trio_conn_command("report", "-"),
        input=FIXTURE.read_text(),
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
        check=False,
    )
    assert result.returncode == 0
    text = result.stdout
    assert "23 lines, 19 transitions, 2 connections, 2 malformed lines" in text
    assert "== overall: 290.0 s observed" in text
    assert "== feed-a: 233.0 s observed" in text
    assert "attempts 4, failures 3, failure rate 75.0%, flaps 1 (15.5/h), stuck events 1" in text


def test_report_missing_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "/nonexistent/events.ndjson"]) == 2
    assert "cannot read /nonexistent/events.ndjson" in capsys.readouterr().err


def test_report_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # the optional plot extra
    target = tmp_path / "timeline.png"
    fixture_report("--plot", str(target))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("connections", [["feed-a"], ["feed-a", "feed-b"]])
def test_the_plot_legend_covers_nothing_and_short_stays_show(connections: list[str]) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from trio_conn._plot import draw_timeline
    from trio_conn._report import build_report

    lines = FIXTURE.read_text(encoding="utf-8").splitlines()
    report = build_report(line for line in lines if any(f'"{c}"' in line for c in connections))
    assert list(report.connections) == connections
    figure = draw_timeline(report)
    try:
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        (axes,) = figure.axes
        (legend,) = figure.legends
        box = legend.get_window_extent(renderer)
        for other in (axes.get_window_extent(renderer), axes.xaxis.label.get_window_extent()):
            assert not box.overlaps(other)
        assert box.y0 > axes.get_window_extent(renderer).y1  # above the plot
        # feed-a's first connecting stay lasts 0.5 s of 233 s: drawn 0.4 % wide, outlined.
        assert len(axes.collections) >= 10  # one per stay
        outlined = [
            bars
            for bars in axes.collections
            if len(bars.get_edgecolor()) and tuple(bars.get_edgecolor()[0]) == (0, 0, 0, 1)
        ]
        assert outlined
        least = 233.0 * 0.004
        for bars in outlined:
            extent = bars.get_paths()[0].get_extents()
            assert extent.width == pytest.approx(least)
    finally:
        plt.close(figure)


def test_report_plot_without_matplotlib_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if missing
    assert main(["report", str(FIXTURE), "--plot", str(tmp_path / "t.png")]) == 2
    captured = capsys.readouterr()
    assert "pip install 'trio-conn[plot]'" in captured.err
    assert "== overall" in captured.out  # the report itself is still printed
    assert not (tmp_path / "t.png").exists()


def test_version_is_the_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"trio-conn {trio_conn.__version__}\n"
    assert importlib.metadata.version("trio-conn") == trio_conn.__version__


async def test_connect_says_what_it_waits_for_when_failed() -> None:
    """Real clock: a server that answers 401 sends the connection to failed at its
    first attempt; trio-conn says, in one line, when it probes again."""
    with trio.fail_after(30):
        async with open_fault_server() as server:
            server.reject_next(100, 401)
            process = await trio.lowlevel.open_process(
                trio_conn_command("connect", server.url, "--log-format", "console"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=ENV,
            )
            assert process.stderr is not None
            stderr = b""
            try:
                while not re.search(rb"trio-conn: failed[^\n]*\n", stderr):  # fail_after
                    chunk = await process.stderr.receive_some(4096)
                    assert chunk, "trio-conn connect exited early"
                    stderr += chunk
                process.send_signal(signal.SIGINT)
                await process.wait()
            finally:
                process.kill()
                await process.wait()
    (line,) = [ln for ln in stderr.decode().splitlines() if ln.startswith("trio-conn:")]
    assert line.startswith(
        "trio-conn: failed (rejected is fatal); probing again in 3"  # 300 s, jitter upwards
    )
    assert line.endswith("; Ctrl-C to stop")
    assert re.search(r"\(at \d\d:\d\d:\d\d UTC\)", line)
    assert process.returncode == 130


def test_connect_exits_on_failed_when_asked() -> None:
    """Real clock: --exit-on-failed closes and exits with status 3 at FAILED."""

    async def run() -> subprocess.CompletedProcess[bytes]:
        async with open_fault_server() as server:
            server.reject_next(100, 403)
            return await trio.run_process(
                trio_conn_command(
                    "connect", server.url, "--exit-on-failed", "--log-format", "json"
                ),
                capture_stdout=True,
                capture_stderr=True,
                env=ENV,
                check=False,
            )

    result = trio.run(run)
    assert result.returncode == 3
    # JSON on stderr stays one event per line: the FAILED line is an event too.
    events = [json.loads(line) for line in result.stderr.decode().splitlines()]
    (waiting,) = [e for e in events if e["event"] == "cli.waiting_in_failed"]
    assert waiting["detail"] == (
        "failed (rejected is fatal); exiting with status 3 (--exit-on-failed)"
    )
    assert waiting["level"] == "warning"


async def test_connect_piped_into_head_ends_quietly() -> None:
    """Real clock: `trio-conn connect URL | head -1`: when the reader of stdout
    goes, connect closes and exits 0, with no traceback."""
    with trio.fail_after(30):
        async with open_fault_server() as server:
            process = await trio.lowlevel.open_process(
                trio_conn_command("connect", server.url, "--log-level", "critical"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=ENV,
            )
            assert process.stdout is not None
            assert process.stderr is not None
            try:
                await server.wait_accepted(1)
                await server.push("first")
                assert (await process.stdout.receive_some(100)).startswith(b"first")
                await process.stdout.aclose()  # head -1 has its line
                await server.push("second")  # the write that finds the pipe closed
                stderr = b""
                while chunk := await process.stderr.receive_some(65536):
                    stderr += chunk
                await process.wait()
            finally:
                process.kill()
                await process.wait()
    assert process.returncode == 0
    assert b"Traceback" not in stderr


def test_connect_names_options_as_typed_and_refuses_a_lone_reply(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["connect", "ws://x/", "--heartbeat-interval", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trio-conn: error: --heartbeat-interval must be")
    assert "ConnectionConfig" not in err
    assert main(["connect", "ws://x/", "--heartbeat-reply", '{"op": "pong"}']) == 2
    assert "only go with --heartbeat message" in capsys.readouterr().err


def test_connect_in_ecs_tells_what_it_waits_for_as_a_library_event() -> None:
    """Real clock: in ECS the FAILED notice is a sentence in `message`, its
    action and its wait typed (not labels), as the library's own events."""

    async def run() -> subprocess.CompletedProcess[bytes]:
        async with open_fault_server() as server:
            server.reject_next(100, 401)
            command = ["connect", server.url, "--log-format", "ecs", "--name", "feed"]
            return await trio.run_process(
                trio_conn_command(*command, "--exit-on-failed"),
                capture_stdout=True,
                capture_stderr=True,
                env=ENV,
                check=False,
            )

    result = trio.run(run)
    assert result.returncode == 3
    lines = [json.loads(line) for line in result.stderr.decode().splitlines()]
    (waiting,) = [e for e in lines if e.get("event", {}).get("action") == "cli.waiting_in_failed"]
    assert waiting["message"] == (
        "trio-conn: failed (rejected is fatal); exiting with status 3 (--exit-on-failed)"
    )
    assert waiting["trio_conn"]["conn_id"] == "feed"
    assert isinstance(waiting["trio_conn"]["probe_in_s"], float)
    assert "labels" not in waiting
