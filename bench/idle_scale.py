"""Idle scale: many connections that only heartbeat; memory, CPU and missed beats.

    python bench/idle_scale.py [--counts 1000 5000 10000] [--intervals 15 1] [--runs 5]
                               [--kinds raw websockets managed group] [--stress-window 5]
                               [--json PATH]

Four clients, each in a fresh client process per run, against the server
(bench/server.py) in another process:

- ``raw``: trio-websocket, a task per connection pinging every interval
  (``ws.ping``, judged at a 2x interval timeout), one draining messages;
- ``websockets``: websockets' own Trio client, ``websockets.trio.client.connect``
  with its keepalive at ``ping_interval=interval, ping_timeout=2 * interval``,
  a task draining messages (``async for``);
- ``managed``: trio_conn, ``open_connection`` with ``PingHeartbeat`` and
  ``heartbeat_interval=interval, heartbeat_timeout=2 * interval``, a task
  draining messages (``async for``);
- ``group``: trio_conn, the members of one ``open_connection_group`` with the
  same heartbeat and config, each with a handler draining messages. The
  group is opened with ``attempts_per_second=None``: its admission control
  would hold the connect phase to 100 attempts per second (the default), and
  what is measured here is the idle state after it, not the connect.

A child opens the connections (200 at a time), collects garbage, and reads
its RSS; then it watches a window of one heartbeat interval with the GC at its
defaults, and another after ``gc.freeze()``, reporting client CPU (process
time / wall time) and missed beats in each (trio_conn: its
``connection.heartbeat_missed`` events; raw: pings unanswered in 2 intervals;
websockets: connections its keepalive closed; trio_conn and its group alike:
their ``connection.heartbeat_missed`` events). Heartbeats: the default 15 s
(window 15 s), and a 1 s stress variant (window ``--stress-window`` s).

Each figure is the median over ``--runs`` children, the order of the kinds
rotating from run to run; CPU per connection is the child's CPU share over
the window divided by the connections (microseconds of CPU per second per
connection); ratios (trio_conn / websockets, trio_conn / raw, and the group's:
group / websockets, group / raw, group / trio_conn) are medians of the
per-run ratios. A child still busy after ``--child-timeout`` has
saturated its core and is reported as such.

The comparison (about 8 minutes) and the 10,000-connection check of missed
beats for trio_conn (about 1 minute):

    python bench/idle_scale.py --counts 1000 --intervals 15
    python bench/idle_scale.py --counts 10000 --intervals 15 --runs 1 --kinds managed
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import structlog
import trio
from _common import (
    HERE,
    describe_build,
    machine,
    median,
    raise_fd_limit,
    rss_bytes,
    server_process,
    trio_conn_build,
)
from trio_websocket import open_websocket_url
from websockets.exceptions import ConnectionClosed as WebsocketsClosed
from websockets.trio.client import connect as websockets_connect

from trio_conn import (
    ConnectionConfig,
    ConnectionGroup,
    ConnectionState,
    ManagedConnection,
    PingHeartbeat,
    open_connection,
    open_connection_group,
)

BATCH = 200
KINDS = ("raw", "websockets", "managed", "group")
LABELS = {
    "raw": "trio-websocket",
    "websockets": "websockets.trio",
    "managed": "trio_conn",
    "group": "trio_conn group",
}
#: The figures compared as ratios: (subject, baseline) -> the results' key.
RATIOS = {
    ("managed", "websockets"): "managed_vs_websockets",
    ("managed", "raw"): "managed_vs_raw",
    ("group", "websockets"): "group_vs_websockets",
    ("group", "raw"): "group_vs_raw",
    ("group", "managed"): "group_vs_managed",
}


class Counters:
    def __init__(self) -> None:
        self.connected = 0
        self.missed = 0
        self._changed = trio.Event()

    def one_connected(self) -> None:
        self.connected += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_connected(self, count: int) -> None:
        while self.connected < count:
            await self._changed.wait()


async def raw_connection(url: str, interval: float, counters: Counters) -> None:
    async with open_websocket_url(url) as ws:
        counters.one_connected()

        async def drain() -> None:
            while True:
                await ws.get_message()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            beat = 0
            while True:
                beat += 1
                sent_at = trio.current_time()
                with trio.move_on_after(interval * 2) as scope:  # the default 2:1 timeout
                    await ws.ping(beat.to_bytes(8, "big"))
                if scope.cancelled_caught:
                    counters.missed += 1
                await trio.sleep_until(sent_at + interval)


async def websockets_connection(url: str, interval: float, counters: Counters) -> None:
    connect = websockets_connect(url, proxy=None, ping_interval=interval, ping_timeout=interval * 2)
    async with connect as ws:
        counters.one_connected()
        try:
            async for _ in ws:
                pass
        except WebsocketsClosed:
            pass
        counters.missed += 1  # only its keepalive closes an idle connection


CONFIGS: dict[float, ConnectionConfig] = {}  # one per interval, shared as an app would


def managed_config(interval: float) -> ConnectionConfig:
    config = CONFIGS.get(interval)
    if config is None:
        config = CONFIGS[interval] = ConnectionConfig(
            heartbeat_interval=interval, heartbeat_timeout=interval * 2
        )
    return config


async def managed_connection(url: str, interval: float, counters: Counters) -> None:
    config = managed_config(interval)
    async with open_connection(url, config=config, heartbeat=PingHeartbeat()) as conn:
        await conn.wait_for_state(ConnectionState.CONNECTED)
        counters.one_connected()
        async for _ in conn:
            pass


CONNECT = {
    "raw": raw_connection,
    "websockets": websockets_connection,
    "managed": managed_connection,
}


def group_handler(counters: Counters) -> Callable[[ManagedConnection], Awaitable[None]]:
    """A member's handler: count it connected once, then drain its messages."""

    async def handler(conn: ManagedConnection) -> None:
        await conn.wait_for_state(ConnectionState.CONNECTED)
        counters.one_connected()
        async for _ in conn:
            pass

    return handler


def count_missed_beats(counters: Counters) -> None:
    """Route trio_conn's events to a counter of missed beats; drop everything."""

    def processor(logger: Any, method: str, event_dict: Any) -> Any:
        if event_dict.get("event") == "connection.heartbeat_missed":
            counters.missed += 1
        raise structlog.DropEvent

    structlog.configure(
        processors=[processor],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=True,
    )
    logging.getLogger("websockets").setLevel(logging.CRITICAL)


async def window(seconds: float, counters: Counters) -> dict[str, float]:
    missed_before = counters.missed
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    await trio.sleep(seconds)
    cpu = time.process_time() - cpu_before
    wall = time.perf_counter() - wall_before
    return {"cpu_share": cpu / wall, "missed": counters.missed - missed_before}


async def child(kind: str, url: str, count: int, interval: float, seconds: float) -> None:
    counters = Counters()
    count_missed_beats(counters)
    gc.collect()
    rss_before = rss_bytes()
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        group: ConnectionGroup | None = None
        if kind == "group":  # no admission control: the connect phase is not measured
            group = await stack.enter_async_context(
                open_connection_group(
                    attempts_per_second=None,
                    config=managed_config(interval),
                    heartbeat=PingHeartbeat(),
                )
            )
        handler = group_handler(counters)
        started = time.perf_counter()
        for first in range(0, count, BATCH):
            for index in range(first, min(first + BATCH, count)):
                if group is None:
                    nursery.start_soon(CONNECT[kind], url, interval, counters)
                else:
                    await group.add(f"member-{index}", url, handler=handler)
            await counters.wait_connected(min(first + BATCH, count))
        connect_seconds = time.perf_counter() - started
        gc.collect()
        rss_per_connection = (rss_bytes() - rss_before) / count
        default_gc = await window(seconds, counters)
        gc.freeze()
        frozen_gc = await window(seconds, counters)
        print(
            json.dumps(
                {
                    "rss_per_connection": rss_per_connection,
                    "connect_seconds": connect_seconds,
                    "gc_default": default_gc,
                    "gc_frozen": frozen_gc,
                }
            ),
            flush=True,
        )
        nursery.cancel_scope.cancel()


def run_child(
    kind: str, port: int, count: int, interval: float, seconds: float, timeout: float
) -> dict[str, Any]:
    """One child's figures, or ``{"saturated": True}`` if it could not finish in time."""
    command = [
        sys.executable,
        str(HERE / "idle_scale.py"),
        "--child",
        kind,
        str(port),
        str(count),
        str(interval),
        str(seconds),
    ]
    try:
        output = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"saturated": True}
    result: dict[str, Any] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def cpu_us_per_connection(sample: dict[str, Any], window_name: str, count: int) -> float:
    """Microseconds of CPU per second of wall time, per connection."""
    share: float = sample[window_name]["cpu_share"]
    return share * 1e6 / count


def summarise(samples: list[dict[str, Any]], count: int) -> dict[str, Any]:
    saturated = sum(bool(s.get("saturated")) for s in samples)
    if saturated:
        return {"saturated_runs": saturated}
    return {
        "rss_per_connection_kb": median([s["rss_per_connection"] for s in samples]) / 1024,
        "connect_seconds": median([s["connect_seconds"] for s in samples]),
        "cpu_share_gc_default": median([s["gc_default"]["cpu_share"] for s in samples]),
        "cpu_share_gc_frozen": median([s["gc_frozen"]["cpu_share"] for s in samples]),
        "cpu_us_per_s_per_connection_gc_default": median(
            [cpu_us_per_connection(s, "gc_default", count) for s in samples]
        ),
        "cpu_us_per_s_per_connection_gc_frozen": median(
            [cpu_us_per_connection(s, "gc_frozen", count) for s in samples]
        ),
        "missed_gc_default": max(s["gc_default"]["missed"] for s in samples),
        "missed_gc_frozen": max(s["gc_frozen"]["missed"] for s in samples),
    }


def ratios(subject: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, float] | None:
    """One kind / another: medians of the per-run ratios (None if one saturated)."""
    pairs = list(zip(subject, other, strict=True))
    if any(s.get("saturated") or o.get("saturated") for s, o in pairs):
        return None
    return {
        "rss": median([s["rss_per_connection"] / o["rss_per_connection"] for s, o in pairs]),
        "cpu_gc_default": median(
            [s["gc_default"]["cpu_share"] / o["gc_default"]["cpu_share"] for s, o in pairs]
        ),
        "cpu_gc_frozen": median(
            [s["gc_frozen"]["cpu_share"] / o["gc_frozen"]["cpu_share"] for s, o in pairs]
        ),
    }


def table(results: dict[str, Any]) -> str:
    """A markdown table, a line per count, heartbeat and client."""
    rows = [
        [
            "connections",
            "heartbeat",
            "client",
            "RSS per conn",
            "CPU us/s per conn (GC default; frozen)",
            "missed beats (default; frozen)",
            "connect s",
            "trio_conn / this (RSS; CPU)",
            "group / this (RSS; CPU)",
        ]
    ]

    def versus(found: dict[str, float] | None) -> str:
        return f"{found['rss']:.2f}x; {found['cpu_gc_default']:.2f}x" if found else "-"

    for row in results["figures"]:
        for kind in results["kinds"]:
            figure = row[kind]
            if "saturated_runs" in figure:
                cells = ["saturated", "saturated", "-", "-"]
            else:
                cells = [
                    f"{figure['rss_per_connection_kb']:.1f} KB",
                    f"{figure['cpu_us_per_s_per_connection_gc_default']:.1f};"
                    f" {figure['cpu_us_per_s_per_connection_gc_frozen']:.1f}",
                    f"{figure['missed_gc_default']}; {figure['missed_gc_frozen']}",
                    f"{figure['connect_seconds']:.1f}",
                ]
            rows.append(
                [
                    f"{row['connections']:,}",
                    f"{row['heartbeat_interval']:g} s",
                    LABELS[kind],
                    *cells,
                    versus(row.get(f"managed_vs_{kind}")),
                    versus(row.get(f"group_vs_{kind}")),
                ]
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        describe_build(results["trio_conn"]),
        f"{results['machine']}; median of {results['runs']} child processes per figure",
        "CPU us/s per conn: microseconds of client CPU per second per connection, over one"
        " heartbeat interval (below 15 s: --stress-window seconds)",
        "missed beats: the most in any run; ratios: medians of the per-run ratios"
        " (CPU: GC at its defaults)",
        "",
    ]
    for index, cells in enumerate(rows):
        aligned = [cells[0].rjust(widths[0]), cells[1].rjust(widths[1]), cells[2].ljust(widths[2])]
        aligned += [c.rjust(w) for c, w in zip(cells[3:], widths[3:], strict=True)]
        lines.append("| " + " | ".join(aligned) + " |")
        if index == 0:
            lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stress-window", type=float, default=5.0)
    parser.add_argument(
        "--intervals", type=float, nargs="+", default=[15.0, 1.0], help="heartbeat intervals"
    )
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument(
        "--child-timeout",
        type=float,
        default=240.0,
        help="seconds; a child still busy then has saturated its core (reported as such)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_fd_limit()
    if args.child:
        kind, port, count, interval, seconds = args.child
        url = f"ws://127.0.0.1:{port}/"
        trio.run(child, kind, url, int(count), float(interval), float(seconds))
        return
    kinds = [k for k in KINDS if k in args.kinds]
    results: dict[str, Any] = {
        "machine": machine(),
        "trio_conn": trio_conn_build(),
        "runs": args.runs,
        "kinds": kinds,
        "figures": [],
    }
    with server_process() as port:
        for interval in args.intervals:
            seconds = interval if interval >= 15.0 else args.stress_window
            for count in args.counts:
                row: dict[str, Any] = {"connections": count, "heartbeat_interval": interval}
                samples: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
                for run in range(args.runs):
                    for kind in kinds[run % len(kinds) :] + kinds[: run % len(kinds)]:
                        samples[kind].append(
                            run_child(kind, port, count, interval, seconds, args.child_timeout)
                        )
                for kind in kinds:
                    row[kind] = summarise(samples[kind], count)
                for (subject, other), key in RATIOS.items():
                    if subject in kinds and other in kinds:
                        row[key] = ratios(samples[subject], samples[other])
                results["figures"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(table(results))
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
