"""Reconnect overhead: from a server's drop to CONNECTED again, minus the computed delay.

    python bench/reconnect.py [--reconnects 200] [--runs 5]

The managed connection runs with a zero backoff, so the whole time from the
drop to CONNECTED is overhead: detecting the end of the stream, the
transitions and their events, a new TCP connection and handshake. Beside it,
in the same run, a raw trio-websocket client opens a fresh connection the
same number of times: the part of the overhead that is the new connection
itself. Each figure is the median over the runs of the per-reconnect median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import trio
from _common import machine, median, quiet_logging, server_process
from trio_websocket import open_websocket_url

from trio_conn import (
    Backoff,
    ConnectionConfig,
    ConnectionState,
    ErrorKind,
    RetryPolicy,
    Transition,
    open_connection,
)

S = ConnectionState
ZERO = Backoff(0.0, 0.0)
CONFIG = ConnectionConfig(
    retry=RetryPolicy(jitter=0.0, backoff=dict.fromkeys(ErrorKind, ZERO)),
    max_connection_failures=1_000_000,
)


async def managed_reconnects(url: str, count: int) -> list[float]:
    times: list[float] = []
    connected = trio.Event()

    def on_transition(record: Transition) -> None:
        if record.to_state is S.CONNECTED:
            connected.set()

    async with open_connection(url, config=CONFIG, on_transition=on_transition) as conn:
        await conn.wait_for_state(S.CONNECTED)
        for _ in range(count):
            connected = trio.Event()
            started = time.perf_counter()
            await conn.send("drop")  # the server closes the TCP connection at once
            await connected.wait()
            times.append(time.perf_counter() - started)
    return times


async def raw_connects(url: str, count: int) -> list[float]:
    times: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        async with open_websocket_url(url):
            times.append(time.perf_counter() - started)
    return times


async def run(url: str, reconnects: int, runs: int) -> dict[str, object]:
    managed: list[float] = []
    raw: list[float] = []
    for _ in range(runs):
        managed.append(statistics.median(await managed_reconnects(url, reconnects)))
        raw.append(statistics.median(await raw_connects(url, reconnects)))
    return {
        "machine": machine(),
        "runs": runs,
        "reconnects_per_run": reconnects,
        "computed_delay_ms": 0.0,
        "managed_drop_to_connected_ms": median(managed) * 1e3,
        "raw_fresh_connect_ms": median(raw) * 1e3,
        "ratio": median(managed) / median(raw),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reconnects", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    quiet_logging()
    with server_process() as port:
        results = trio.run(run, f"ws://127.0.0.1:{port}/", args.reconnects, args.runs)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
