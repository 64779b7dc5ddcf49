"""Idle scale: many connections that only heartbeat; memory, CPU and missed beats.

    python bench/idle_scale.py [--counts 1000 5000 10000] [--runs 5] [--stress-window 5]

For each count, raw trio-websocket (a task per connection pinging every
interval, one draining messages) and trio_conn (``open_connection`` with
``PingHeartbeat``) each run in a fresh client process against the server in
another process. A child opens the connections (200 at a time), collects
garbage, and reads its RSS; then it watches a window of one heartbeat
interval with the GC at its defaults, and another after ``gc.freeze()``,
reporting client CPU (process time / wall time) and missed beats in each.
Heartbeats: the default 15 s (window 15 s), and a 1 s stress variant (window
``--stress-window`` s). Each figure is the median over ``--runs`` children.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import subprocess
import sys
import time
from typing import Any

import structlog
import trio
from _common import HERE, machine, median, raise_fd_limit, rss_bytes, server_process
from trio_websocket import open_websocket_url

from trio_conn import ConnectionConfig, ConnectionState, PingHeartbeat, open_connection

BATCH = 200


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


CONFIGS: dict[float, ConnectionConfig] = {}  # one per interval, shared as an app would


async def managed_connection(url: str, interval: float, counters: Counters) -> None:
    config = CONFIGS.get(interval)
    if config is None:
        config = CONFIGS[interval] = ConnectionConfig(
            heartbeat_interval=interval, heartbeat_timeout=interval * 2
        )
    async with open_connection(url, config=config, heartbeat=PingHeartbeat()) as conn:
        await conn.wait_for_state(ConnectionState.CONNECTED)
        counters.one_connected()
        async for _ in conn:
            pass


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
    connect = raw_connection if kind == "raw" else managed_connection
    async with trio.open_nursery() as nursery:
        started = time.perf_counter()
        for first in range(0, count, BATCH):
            for _ in range(min(BATCH, count - first)):
                nursery.start_soon(connect, url, interval, counters)
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


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    saturated = sum(bool(s.get("saturated")) for s in samples)
    if saturated:
        return {"saturated_runs": saturated}
    return {
        "rss_per_connection_kb": median([s["rss_per_connection"] for s in samples]) / 1024,
        "connect_seconds": median([s["connect_seconds"] for s in samples]),
        "cpu_share_gc_default": median([s["gc_default"]["cpu_share"] for s in samples]),
        "cpu_share_gc_frozen": median([s["gc_frozen"]["cpu_share"] for s in samples]),
        "missed_gc_default": max(s["gc_default"]["missed"] for s in samples),
        "missed_gc_frozen": max(s["gc_frozen"]["missed"] for s in samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stress-window", type=float, default=5.0)
    parser.add_argument(
        "--intervals", type=float, nargs="+", default=[15.0, 1.0], help="heartbeat intervals"
    )
    parser.add_argument(
        "--child-timeout",
        type=float,
        default=240.0,
        help="seconds; a child still busy then has saturated its core (reported as such)",
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_fd_limit()
    if args.child:
        kind, port, count, interval, seconds = args.child
        url = f"ws://127.0.0.1:{port}/"
        trio.run(child, kind, url, int(count), float(interval), float(seconds))
        return
    results: dict[str, Any] = {"machine": machine(), "runs": args.runs, "figures": []}
    with server_process() as port:
        for interval in args.intervals:
            seconds = interval if interval >= 15.0 else args.stress_window
            for count in args.counts:
                row: dict[str, Any] = {"connections": count, "heartbeat_interval": interval}
                samples: dict[str, list[dict[str, Any]]] = {"raw": [], "managed": []}
                for _ in range(args.runs):
                    for kind in ("raw", "managed"):
                        samples[kind].append(
                            run_child(kind, port, count, interval, seconds, args.child_timeout)
                        )
                row["raw"] = summarise(samples["raw"])
                row["managed"] = summarise(samples["managed"])
                if "saturated_runs" not in row["raw"] and "saturated_runs" not in row["managed"]:
                    row["rss_ratio"] = (
                        row["managed"]["rss_per_connection_kb"]
                        / row["raw"]["rss_per_connection_kb"]
                    )
                results["figures"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
