"""Throughput and round trip: trio_conn beside raw trio-websocket, in one run.

    python bench/throughput.py [--rounds 11] [--messages 20000] [--round-trips 2000]

The server (bench/server.py) runs in a second process on loopback. Each round
measures raw trio-websocket and the managed connection one after the other,
the order alternating between rounds (single rounds vary by +-30% here);
every figure is the median over the rounds, and each ratio is managed / raw.

- receive: the server floods N 32-byte text messages; messages per second
  from the request to the N-th message (raw: ``get_message``; managed:
  ``receive()``);
- send: N 32-byte messages to a server that answers once it has read them all;
- round trip: sequential echoes of a 32-byte message; p50 and p99.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable

import trio
from _common import machine, median, percentile, quiet_logging, server_process
from trio_websocket import open_websocket_url

from trio_conn import ConnectionState, open_connection

PAYLOAD = "x" * 32


async def raw_receive(url: str, count: int) -> float:
    async with open_websocket_url(url) as ws:
        await ws.send_message(f"flood {count}")
        started = time.perf_counter()
        for _ in range(count):
            await ws.get_message()
        return count / (time.perf_counter() - started)


async def managed_receive(url: str, count: int) -> float:
    async with open_connection(url) as conn:
        await conn.wait_for_state(ConnectionState.CONNECTED)
        await conn.send(f"flood {count}")
        started = time.perf_counter()
        for _ in range(count):
            await conn.receive()
        return count / (time.perf_counter() - started)


async def raw_send(url: str, count: int) -> float:
    async with open_websocket_url(url) as ws:
        await ws.send_message(f"sink {count}")
        started = time.perf_counter()
        for _ in range(count):
            await ws.send_message(PAYLOAD)
        assert await ws.get_message() == "done"
        return count / (time.perf_counter() - started)


async def managed_send(url: str, count: int) -> float:
    async with open_connection(url) as conn:
        await conn.wait_for_state(ConnectionState.CONNECTED)
        await conn.send(f"sink {count}")
        started = time.perf_counter()
        for _ in range(count):
            await conn.send(PAYLOAD)
        assert await conn.receive() == "done"
        return count / (time.perf_counter() - started)


async def raw_round_trips(url: str, count: int) -> list[float]:
    async with open_websocket_url(url) as ws:
        await ws.send_message("echo")
        times = []
        for _ in range(count):
            started = time.perf_counter()
            await ws.send_message(PAYLOAD)
            await ws.get_message()
            times.append(time.perf_counter() - started)
        return times


async def managed_round_trips(url: str, count: int) -> list[float]:
    async with open_connection(url) as conn:
        await conn.wait_for_state(ConnectionState.CONNECTED)
        await conn.send("echo")
        times = []
        for _ in range(count):
            started = time.perf_counter()
            await conn.send(PAYLOAD)
            await conn.receive()
            times.append(time.perf_counter() - started)
        return times


async def interleaved(
    rounds: int,
    raw: Callable[[], Awaitable[float]],
    managed: Callable[[], Awaitable[float]],
) -> tuple[list[float], list[float]]:
    raws: list[float] = []
    manageds: list[float] = []
    for index in range(rounds):
        pair = [(raw, raws), (managed, manageds)]
        for measure, into in pair if index % 2 == 0 else reversed(pair):
            into.append(await measure())
    return raws, manageds


async def run(url: str, rounds: int, messages: int, round_trips: int) -> dict[str, object]:
    results: dict[str, object] = {"machine": machine(), "rounds": rounds, "messages": messages}
    for name, raw, managed in (
        ("receive", raw_receive, managed_receive),
        ("send", raw_send, managed_send),
    ):
        raws, manageds = await interleaved(
            rounds, lambda r=raw: r(url, messages), lambda m=managed: m(url, messages)
        )
        results[name] = {
            "raw_msgs_per_s": median(raws),
            "managed_msgs_per_s": median(manageds),
            "ratio": median(manageds) / median(raws),
            "ratio_of_rounds_median": median([m / r for m, r in zip(manageds, raws, strict=True)]),
        }
    raw_times: list[float] = []
    managed_times: list[float] = []
    for index in range(rounds):
        order = [(raw_round_trips, raw_times), (managed_round_trips, managed_times)]
        for measure, into in order if index % 2 == 0 else reversed(order):
            into.extend(await measure(url, round_trips))
    results["round_trip"] = {
        "raw_p50_us": percentile(raw_times, 0.50) * 1e6,
        "raw_p99_us": percentile(raw_times, 0.99) * 1e6,
        "managed_p50_us": percentile(managed_times, 0.50) * 1e6,
        "managed_p99_us": percentile(managed_times, 0.99) * 1e6,
        "p50_ratio": percentile(managed_times, 0.50) / percentile(raw_times, 0.50),
        "p99_ratio": percentile(managed_times, 0.99) / percentile(raw_times, 0.99),
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--round-trips", type=int, default=2000)
    args = parser.parse_args()
    quiet_logging()
    with server_process() as port:
        results = trio.run(
            run, f"ws://127.0.0.1:{port}/", args.rounds, args.messages, args.round_trips
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
