"""``trio-conn report`` reads any input: no line is ever fatal, ``--json`` is strict JSON.

A log file holds what was written, and whatever else ended up there: any JSON
value at any key, numbers beyond a float, nesting deeper than the parser's
recursion, NaN (not JSON), bytes that are not UTF-8, escape sequences in a
connection id. The figures come only from well-formed events; everything
else is counted as malformed; the text output is safe to print.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_cli import ENV, trio_conn_command
from trio_conn._report import build_report, render_text

GOOD_JSON: dict[str, Any] = {
    "timestamp": "2026-11-29T10:00:00Z",
    "level": "warning",
    "event": "connection.state_changed",
    "conn_id": "feed",
    "from_state": "connected",
    "to_state": "reconnecting",
    "duration_s": 12.5,
}
GOOD_ECS: dict[str, Any] = {
    "@timestamp": "2026-11-29T10:00:00Z",
    "event": {"action": "connection.state_changed", "duration": 12_500_000_000},
    "trio_conn": {"conn_id": "feed", "from_state": "connected", "to_state": "reconnecting"},
}
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
KEYS = [
    ("event",),
    ("conn_id",),
    ("from_state",),
    ("to_state",),
    ("duration_s",),
    ("timestamp",),
    ("trio_conn",),
    ("trio_conn", "conn_id"),
    ("trio_conn", "duration_s"),
    ("trio_conn", "from_state"),
    ("event", "duration"),
    ("event", "action"),
    ("@timestamp",),
]


def replaced(base: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(json.dumps(base))
    target = obj
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value
    return obj


@st.composite
def lines(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["value", "good-with-a-bad-field", "text", "deep"]))
    if kind == "value":
        return json.dumps(draw(JSON_VALUES))  # NaN and Infinity included: not JSON
    if kind == "good-with-a-bad-field":
        base = draw(st.sampled_from([GOOD_JSON, GOOD_ECS]))
        return json.dumps(replaced(base, draw(st.sampled_from(KEYS)), draw(JSON_VALUES)))
    if kind == "deep":
        depth = draw(st.integers(1, 100_000))
        return "[" * depth + "]" * draw(st.integers(0, depth))
    return draw(st.text(max_size=60))


def not_json(name: str) -> None:
    raise AssertionError(f"{name} is not JSON (RFC 8259 section 6)")


def check_output(text_lines: list[str]) -> None:
    report = build_report(text_lines)
    assert report.lines == sum(1 for line in text_lines if line.strip())
    text = render_text(report)
    assert all(ch.isprintable() or ch == "\n" for ch in text)
    strict = json.dumps(report.as_dict(), allow_nan=False)  # raises on NaN or Infinity
    assert json.loads(strict, parse_constant=not_json)["lines"] == report.lines
    for change in report.changes:
        assert math.isfinite(change.duration_s)
        assert change.duration_s >= 0


@settings(max_examples=300, deadline=None)
@given(st.lists(lines(), max_size=6))
def test_no_line_is_fatal_and_the_output_is_strict(text_lines: list[str]) -> None:
    check_output([*text_lines, json.dumps(GOOD_JSON), json.dumps(GOOD_ECS)])


def test_the_reported_lines_are_malformed_not_fatal(tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    bad = [
        json.dumps({**GOOD_ECS, "trio_conn": 5}),  # was a TypeError traceback
        json.dumps({**GOOD_ECS, "trio_conn": "ab"}),  # was exit 2
        "[" * 100_000,  # was a RecursionError
        json.dumps({**GOOD_JSON, "duration_s": float("nan")}),  # NaN: not JSON
        json.dumps({**GOOD_JSON, "duration_s": 10**400}),  # beyond a float
        json.dumps({**GOOD_JSON, "conn_id": {"a": 1}}),
    ]
    hostile = {**GOOD_JSON, "conn_id": "\x1b[2J\x1b]52;c;ZXZpbA==\x07feed"}
    log.write_bytes(
        "\n".join([*bad, json.dumps(GOOD_JSON), json.dumps(hostile)]).encode() + b"\n\xff\xfe\n"
    )
    for extra in ([], ["--json"]):
        result = subprocess.run(
            trio_conn_command("report", str(log), *extra),
            capture_output=True,
            text=True,
            timeout=30,
            env=ENV,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == "trio-conn: 7 malformed lines skipped\n"
        assert "\x1b" not in result.stdout
        if extra:
            report = json.loads(result.stdout, parse_constant=not_json)
            assert report["overall"]["observed_s"] == 25.0
        else:
            assert "== \\x1b[2J\\x1b]52;c;ZXZpbA==\\x07feed: 12.5 s observed" in result.stdout


def run_report(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        trio_conn_command("report", *args),
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
        check=False,
        **kwargs,
    )


def test_a_rate_too_large_for_a_float_is_null_not_a_refusal(tmp_path: Path) -> None:
    log = tmp_path / "tiny.ndjson"
    log.write_text(json.dumps({**GOOD_JSON, "duration_s": 1e-310}) + "\n")  # a flap in 1e-310 s
    result = run_report(str(log), "--json")
    assert result.returncode == 0, result.stderr
    connection = json.loads(result.stdout, parse_constant=not_json)["connections"][0]
    assert (connection["flaps"], connection["flaps_per_hour"]) == (1, None)
    text = run_report(str(log)).stdout
    assert "flaps 1 (-)" in text
    check_output([json.dumps({**GOOD_JSON, "conn_id": 10**400})])  # was an OverflowError


def test_a_closed_stdin_is_one_error_line() -> None:
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *trio_conn_command("report", "-")],
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
        check=False,
    )
    assert (result.returncode, result.stderr) == (
        2,
        "trio-conn: error: cannot read -: stdin is closed\n",
    )


def test_a_plot_that_cannot_be_written_is_one_error_line(tmp_path: Path) -> None:
    log = tmp_path / "events.ndjson"
    log.write_text(json.dumps(GOOD_JSON) + "\n")
    target = tmp_path / "missing" / "timeline.png"
    result = run_report(str(log), "--plot", str(target))
    assert result.returncode == 2
    assert result.stderr == f"trio-conn: error: cannot write {target}: No such file or directory\n"
    assert "== overall" in result.stdout  # the report itself is printed first


def test_a_dollar_in_a_connection_id_is_text_on_the_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from trio_conn._plot import draw_timeline

    odd = {**GOOD_JSON, "conn_id": "cost $\\frac{1}$"}
    lines = [json.dumps(GOOD_JSON), json.dumps(odd)]
    log = tmp_path / "events.ndjson"
    log.write_text("\n".join(lines) + "\n")
    target = tmp_path / "timeline.png"
    result = run_report(str(log), "--plot", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figure = draw_timeline(build_report(lines))
    try:
        figure.canvas.draw()  # mathtext would fail here
        labels = figure.axes[0].get_yticklabels()
        assert [label.get_text() for label in labels] == ["feed", "cost $\\\\frac{1}$"]
    finally:
        plt.close(figure)
