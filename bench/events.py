"""Cost of one transition event rendered in json and in ecs.

    python bench/events.py [--events 20000] [--runs 7]

configure_logging() writes to /dev/null; each run emits the same
connection.state_changed event ``--events`` times: a plain one (connecting ->
connected) and one with an error (a drop: exception, close code, retry
delay), with the URL's and a cookie's secrets registered; each figure is the
median of the runs' microseconds per event. For scale, a bare structlog event
through the same json chain (no trio_conn fields) is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import structlog
from _common import machine, median
from trio_websocket import CloseReason, ConnectionClosed

from trio_conn import (
    ConnectionState,
    ErrorKind,
    StateMachine,
    TransitionRecord,
    configure_logging,
)
from trio_conn._events import ConnectionEvents

S = ConnectionState


def transition_cost(fmt: str, events: int, *, with_error: bool) -> float:
    """Microseconds per event: connecting -> connected, or a drop with its error."""
    clock = iter(range(1_000_000)).__next__
    machine_ = StateMachine(lambda: float(clock()))
    machine_.transition(S.CONNECTING, "start")
    change = machine_.transition(S.CONNECTED, "handshake complete")
    if with_error:
        change = machine_.transition(
            S.RECONNECTING, "unexpected_close: ConnectionClosed (close code 1006) while connected"
        )
    assert change is not None
    extra: dict[str, Any] = {}
    if with_error:
        extra = {
            "kind": ErrorKind.UNEXPECTED_CLOSE,
            "error": ConnectionClosed(CloseReason(1006, None)),
            "close_code": 1006,
            "retry_in": 3.0,
        }
    record = TransitionRecord(
        *(change.from_state, change.to_state, change.reason, change.at, change.duration),
        attempt=3,
        consecutive_failures=1,
        **extra,
    )
    with open(os.devnull, "w", encoding="utf-8") as sink:
        configure_logging(fmt, stream=sink)  # type: ignore[arg-type]
        conn_events = ConnectionEvents("feed-1", "wss://bot:pw@example.com/ws?token=abc123")
        conn_events.add_secrets(["session=0123456789abcdef"])
        started = time.perf_counter()
        for _ in range(events):
            conn_events.state_changed(record)
        elapsed = time.perf_counter() - started
    structlog.reset_defaults()
    return elapsed / events * 1e6


def bare_cost(events: int) -> float:
    with open(os.devnull, "w", encoding="utf-8") as sink:
        configure_logging("json", stream=sink)
        logger = structlog.get_logger("bench")
        started = time.perf_counter()
        for _ in range(events):
            logger.info("bare")
        elapsed = time.perf_counter() - started
    structlog.reset_defaults()
    return elapsed / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    runs: dict[str, list[float]] = {
        "json": [],
        "json_with_error": [],
        "ecs": [],
        "ecs_with_error": [],
        "bare_structlog_json": [],
    }
    for _ in range(args.runs):
        for fmt in ("json", "ecs"):
            runs[fmt].append(transition_cost(fmt, args.events, with_error=False))
            runs[f"{fmt}_with_error"].append(transition_cost(fmt, args.events, with_error=True))
        runs["bare_structlog_json"].append(bare_cost(args.events))
    print(
        json.dumps(
            {
                "machine": machine(),
                "runs": args.runs,
                "events_per_run": args.events,
                "us_per_event": {name: median(values) for name, values in runs.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
