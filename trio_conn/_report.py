"""Figures from event logs: what ``trio-conn report`` prints.

Reads lines in either JSON format (plain ``json`` or ``ecs``, detected per
line), keeps the ``connection.state_changed`` and ``connection.state_stuck``
events, and computes per connection and overall: time and share in each
state, transitions per edge, failure rate, mean and longest stay per state,
flaps per hour and stuck events. Nothing here does I/O beyond reading the
lines it is given.

Definitions (the README repeats them):

- time in a state: the sum of ``duration_s`` of the transitions leaving it,
  so only completed stays count;
- failure rate: transitions into ``reconnecting`` (a failed attempt or a lost
  session) divided by attempts (transitions into ``connecting``);
- a flap: a ``connected`` stay shorter than ``flap_threshold`` seconds that
  ended in ``reconnecting``; flaps per hour divide by the observed time (the
  sum of all durations).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ._terminal import printable

STATES = ("disconnected", "connecting", "connected", "reconnecting", "failed", "closed")
#: A stay longer than this (about 31,700 years) is not a measurement: the line is malformed.
MAX_DURATION = 1e12


@dataclass(frozen=True, slots=True)
class StateChange:
    """One ``connection.state_changed`` event, whatever format it came in."""

    conn_id: str
    from_state: str
    to_state: str
    duration_s: float
    timestamp: str


@dataclass
class ConnectionFigures:
    """Figures of one connection (or of all: ``conn_id`` "overall")."""

    conn_id: str
    time_by_state: dict[str, float] = field(default_factory=dict)
    stays: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    attempts: int = 0
    failures: int = 0
    flaps: int = 0
    stuck: int = 0

    @property
    def observed_s(self) -> float:
        return sum(self.time_by_state.values())

    @property
    def failure_rate(self) -> float | None:
        return self.failures / self.attempts if self.attempts else None

    @property
    def flaps_per_hour(self) -> float | None:
        """None when nothing was observed, or so little that the rate is no number
        (a flap in 1e-310 s is infinitely many per hour)."""
        observed = self.observed_s
        return _finite(self.flaps * 3600.0 / observed) if observed > 0 else None

    def share(self, state: str) -> float:
        observed = self.observed_s
        return self.time_by_state.get(state, 0.0) / observed if observed > 0 else 0.0

    def mean_stay(self, state: str) -> float | None:
        stays = self.stays.get(state)
        return sum(stays) / len(stays) if stays else None

    def longest_stay(self, state: str) -> float | None:
        stays = self.stays.get(state)
        return max(stays) if stays else None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``--json``)."""
        states = [s for s in STATES if s in self.time_by_state or s in self.stays]
        # Every figure finite or None: --json is strict JSON, whatever the input.
        return {
            "conn_id": self.conn_id,
            "observed_s": _finite(self.observed_s),
            "states": {
                state: {
                    "time_s": _finite(self.time_by_state.get(state, 0.0)),
                    "share": _finite(self.share(state)),
                    "stays": len(self.stays.get(state, [])),
                    "mean_stay_s": _finite(self.mean_stay(state)),
                    "longest_stay_s": _finite(self.longest_stay(state)),
                }
                for state in states
            },
            "transitions": {f"{a}->{b}": n for (a, b), n in sorted(self.transitions.items())},
            "attempts": self.attempts,
            "failures": self.failures,
            "failure_rate": _finite(self.failure_rate),
            "flaps": self.flaps,
            "flaps_per_hour": self.flaps_per_hour,
            "stuck_events": self.stuck,
        }


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


@dataclass
class Report:
    """Everything read from the input."""

    connections: dict[str, ConnectionFigures]
    overall: ConnectionFigures
    changes: list[StateChange]
    lines: int
    malformed: int
    ignored: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "malformed_lines": self.malformed,
            "other_events": self.ignored,
            "overall": self.overall.as_dict(),
            "connections": [c.as_dict() for c in self.connections.values()],
        }


def parse_line(line: str) -> tuple[str, dict[str, Any]] | None:
    """``(event name, fields)`` of one line in json or ECS form; None if malformed.

    ECS lines keep the library's fields under ``trio_conn`` and the duration
    in ``event.duration`` (nanoseconds); both forms come out the same. Never
    raises: any JSON value at any key, nesting too deep to parse, or a number
    too large for a float makes the line malformed or the field absent.
    """
    try:
        obj = json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    event = obj.get("event")
    if isinstance(event, str):  # plain json
        return event, obj
    if isinstance(event, dict) and isinstance(event.get("action"), str):  # ECS
        library = obj.get("trio_conn")
        fields = dict(library) if isinstance(library, dict) else {}
        duration = event.get("duration")
        if (
            "duration_s" not in fields
            and isinstance(duration, int)
            and not isinstance(duration, bool)
        ):
            fields["duration_s"] = duration / 1e9 if abs(duration) < 10**300 else None
        fields["timestamp"] = obj.get("@timestamp", "")
        return event["action"], fields
    return None


def _no_constant(name: str) -> None:
    """NaN and Infinity are not JSON (RFC 8259 section 6): the line is malformed."""
    raise ValueError(f"{name} is not JSON")


def build_report(lines: Iterable[str], *, flap_threshold: float = 30.0) -> Report:
    """Read event lines and compute every figure. Malformed lines are counted, not fatal."""
    connections: dict[str, ConnectionFigures] = {}
    overall = ConnectionFigures("overall")
    changes: list[StateChange] = []
    count = malformed = ignored = 0
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        count += 1
        parsed = parse_line(line)
        if parsed is None:
            malformed += 1
            continue
        name, fields = parsed
        conn_id = _text(fields.get("conn_id", "?"))
        if conn_id is None:
            malformed += 1
            continue
        if name == "connection.state_stuck":
            for figures in (_figures(connections, conn_id), overall):
                figures.stuck += 1
            continue
        if name != "connection.state_changed":
            ignored += 1
            continue
        change = _state_change(conn_id, fields)
        if change is None:
            malformed += 1
            continue
        changes.append(change)
        for figures in (_figures(connections, conn_id), overall):
            _count(figures, change, flap_threshold)
    return Report(connections, overall, changes, count, malformed, ignored)


def _figures(connections: dict[str, ConnectionFigures], conn_id: str) -> ConnectionFigures:
    if conn_id not in connections:
        connections[conn_id] = ConnectionFigures(conn_id)
    return connections[conn_id]


def _text(value: object) -> str | None:
    """A scalar as text (a conn_id written as a number still names a connection); else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):  # math.isfinite() overflows on an int beyond a float
        return str(value) if abs(value) < 10**300 else None
    if isinstance(value, float):
        return str(value) if math.isfinite(value) else None
    return None


def _state_change(conn_id: str, fields: dict[str, Any]) -> StateChange | None:
    from_state, to_state = fields.get("from_state"), fields.get("to_state")
    duration = fields.get("duration_s")
    if not (isinstance(from_state, str) and isinstance(to_state, str)):
        return None
    if from_state not in STATES or to_state not in STATES:
        return None
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        return None
    try:
        seconds = float(duration)
    except OverflowError:  # an integer beyond any float
        return None
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_DURATION):
        return None
    stamp = fields.get("timestamp", "")
    return StateChange(
        conn_id, from_state, to_state, seconds, stamp if isinstance(stamp, str) else ""
    )


def _count(figures: ConnectionFigures, change: StateChange, flap_threshold: float) -> None:
    left = change.from_state
    figures.time_by_state[left] = figures.time_by_state.get(left, 0.0) + change.duration_s
    figures.stays[left].append(change.duration_s)
    figures.transitions[(left, change.to_state)] += 1
    if change.to_state == "connecting":
        figures.attempts += 1
    if change.to_state == "reconnecting" and left in ("connecting", "connected"):
        figures.failures += 1
        if left == "connected" and change.duration_s < flap_threshold:
            figures.flaps += 1


def _count_of(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def render_text(report: Report) -> str:
    """The human-readable report: overall first, then each connection."""
    out = [
        f"{_count_of(report.lines, 'line')}, {_count_of(len(report.changes), 'transition')}, "
        f"{_count_of(len(report.connections), 'connection')}, "
        f"{_count_of(report.malformed, 'malformed line')}"
    ]
    groups = [report.overall]
    if len(report.connections) > 1:
        groups += list(report.connections.values())
    for figures in groups:
        out.append("")
        out.append(f"== {printable(figures.conn_id)}: {_fmt(figures.observed_s, ' s')} observed")
        out.append(f"{'state':<14}{'time':>10}{'share':>8}{'stays':>7}{'mean':>9}{'longest':>9}")
        for state in STATES:
            if state not in figures.time_by_state:
                continue
            out.append(
                f"{state:<14}{_fmt(figures.time_by_state[state], ' s'):>10}"
                f"{figures.share(state) * 100:>7.1f}%{len(figures.stays[state]):>7}"
                f"{_fmt(figures.mean_stay(state), ' s'):>9}"
                f"{_fmt(figures.longest_stay(state), ' s'):>9}"
            )
        out.append("transitions:")
        for (a, b), n in sorted(figures.transitions.items()):
            out.append(f"  {a} -> {b}: {n}")
        rate = figures.failure_rate
        out.append(
            f"attempts {figures.attempts}, failures {figures.failures}, failure rate "
            f"{'-' if rate is None else f'{rate * 100:.1f}%'}, flaps {figures.flaps} "
            f"({_fmt(figures.flaps_per_hour, '/h')}), stuck events {figures.stuck}"
        )
    return "\n".join(out) + "\n"
