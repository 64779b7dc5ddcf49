"""Throughput and round trip of trio_conn beside four other Trio clients, in one run.

    python bench/throughput.py [--rounds 11] [--messages 20000] [--large-messages 5000]
                               [--round-trips 2000] [--sizes 32 16384] [--json PATH]

The clients (each opens a fresh connection per measurement):

- ``trio-websocket``: ``open_websocket_url(url)`` with its defaults;
- ``trio-websocket tuned``: ``open_websocket_url(url, **TUNED)``, its public
  knobs set for speed (see ``TUNED``: 64 KiB reads, a deeper message queue);
- ``websockets.trio``: ``websockets.trio.client.connect(url)``, its defaults
  (``proxy=None`` only so that the environment cannot add one; it offers
  permessage-deflate, which the server declines, like trio_conn's peers);
- ``wsproto loop``: one task, ``trio.open_tcp_stream``, 64 KiB reads fed to
  ``wsproto.WSConnection(CLIENT)``, events iterated: the practical ceiling of
  a pure-Python parser under Trio;
- ``trio_conn``: ``open_connection(url)``, default config and heartbeat;
- ``trio_conn metrics``: the same with ``metrics=PrometheusMetrics(...)`` (one
  collector on a registry of its own, as an application has one per process):
  the cost of the Prometheus collector, which should be within noise.

The server (bench/server.py) runs in a second process on loopback; its CPU
time, as a share of the client's, is printed under the table. Messages
are numbered and checked whole, for order and content, at both ends
(``_messages.py``); a wrong one stops the run with the error, nothing is
counted. Before measuring, every client is made to meet a swapped and a
corrupted message in each direction, and must stop on each.

Figures, per message size (32 B and 16 KiB text messages):

- receive: the server floods N messages; messages per second from the
  request to the N-th message, each checked;
- send: N messages to a server that checks them and answers once it has
  read all; messages per second to its answer;
- round trip: sequential echoes, each checked; p50 and p99 of the round.

Each round measures every client once per figure and size, the order of the
clients rotating from round to round (CPU timing on this 2-core machine
varies by +-30% between runs). Absolute figures are medians over the
rounds; each ratio is trio_conn / that client within a round, the median of
those per-round ratios (above 1 is faster for msg/s, slower for latency).
``--messages`` is N at sizes up to 1 KiB, ``--large-messages`` N above (default
a quarter of ``--messages``); a run at the defaults takes about 2 minutes.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import trio
import wsproto
import wsproto.events as ev
from _common import (
    Server,
    describe_build,
    machine,
    median,
    percentile,
    quiet_logging,
    server,
    trio_conn_build,
)
from _messages import MessageError, corrupt, describe, message
from prometheus_client import CollectorRegistry
from trio_websocket import open_websocket_url
from websockets.trio.client import connect as websockets_connect

from trio_conn import ConnectionState, open_connection
from trio_conn.metrics import PrometheusMetrics

#: trio-websocket's public knobs, set for speed: reads of 64 KiB (default 4 KiB;
#: 2.5x the receive rate at 16 KiB here, no change at 32 B) and a message queue
#: that lets its reader task run ahead of ``get_message()`` (default 1; 16, 256
#: and 4096 measured the same as 1, within noise). ``max_message_size`` (1 MiB)
#: already fits.
TUNED: dict[str, Any] = {"receive_buffer_size": 65536, "message_queue_size": 256}


@dataclass
class Client:
    """What a measurement needs of a client: send a text, receive a message."""

    send: Callable[[str], Awaitable[None]]
    receive: Callable[[], Awaitable[str | bytes]]
    #: a receive figure of its own (the wsproto loop's inline event loop)
    flood: Callable[[int, int, str], Awaitable[float]] | None = None


# --- the clients ----------------------------------------------------------------


@asynccontextmanager
async def trio_websocket_default(url: str) -> AsyncIterator[Client]:
    async with open_websocket_url(url) as ws:
        yield Client(ws.send_message, ws.get_message)


@asynccontextmanager
async def trio_websocket_tuned(url: str) -> AsyncIterator[Client]:
    async with open_websocket_url(url, **TUNED) as ws:
        yield Client(ws.send_message, ws.get_message)


@asynccontextmanager
async def websockets_trio(url: str) -> AsyncIterator[Client]:
    async with websockets_connect(url, proxy=None) as ws:
        yield Client(ws.send, ws.recv)


@asynccontextmanager
async def managed(url: str) -> AsyncIterator[Client]:
    async with open_connection(url) as conn:
        await conn.wait_for_state(ConnectionState.CONNECTED)
        yield Client(conn.send, conn.receive)


#: One collector for every measured connection, as an application has one per process.
METRICS = PrometheusMetrics(registry=CollectorRegistry())


@asynccontextmanager
async def managed_with_metrics(url: str) -> AsyncIterator[Client]:
    async with open_connection(url, name="bench", metrics=METRICS) as conn:
        await conn.wait_for_state(ConnectionState.CONNECTED)
        yield Client(conn.send, conn.receive)


class WsprotoLoop:
    """A bare client: one task, a Trio socket, wsproto, nothing else."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.ready: deque[str] = deque()
        self.parts: list[str] = []

    async def send(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(ev.TextMessage(data=text)))

    async def receive(self) -> str:
        """One message (round trips, answers); the flood has its own loop."""
        while not self.ready:
            data = await self.stream.receive_some(65536)
            if not data:
                raise ConnectionError("wsproto loop: the server closed the connection")
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, ev.TextMessage):
                    self.parts.append(event.data)
                    if event.message_finished:
                        self.ready.append("".join(self.parts))
                        self.parts.clear()
                else:
                    await self._other(event)
        return self.ready.popleft()

    async def flood(self, size: int, count: int, fault: str) -> float:
        """Receive figure: read, feed, iterate events, check each message inline."""
        await self.send(f"flood {size} {count}{fault}")
        stream, ws, parts, index = self.stream, self.ws, self.parts, 0
        started = time.perf_counter()
        while index < count:
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionError("wsproto loop: the server closed the connection")
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, ev.TextMessage):
                    if not event.message_finished:
                        parts.append(event.data)
                        continue
                    if parts:
                        parts.append(event.data)
                        text = "".join(parts)
                        parts.clear()
                    else:
                        text = event.data
                    if text != message(index, size):
                        raise MessageError(describe(index, text, size))
                    index += 1
                else:
                    await self._other(event)
        return count / (time.perf_counter() - started)

    async def _other(self, event: ev.Event) -> None:
        if isinstance(event, ev.Ping):
            await self.stream.send_all(self.ws.send(event.response()))
        elif isinstance(event, ev.CloseConnection):
            raise ConnectionError(f"wsproto loop: closed by the server ({event.code})")


@asynccontextmanager
async def wsproto_loop(url: str) -> AsyncIterator[Client]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    loop = WsprotoLoop(stream)
    try:
        request = ev.Request(host=f"{parts.hostname}:{parts.port}", target=parts.path or "/")
        await stream.send_all(loop.ws.send(request))
        accepted = False
        while not accepted:
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionError("wsproto loop: no answer to the upgrade request")
            loop.ws.receive_data(data)
            for event in loop.ws.events():
                if isinstance(event, ev.AcceptConnection):
                    accepted = True
                elif isinstance(event, ev.RejectConnection):
                    raise ConnectionError(f"wsproto loop: rejected ({event.status_code})")
        yield Client(loop.send, loop.receive, loop.flood)
        await stream.send_all(loop.ws.send(ev.CloseConnection(code=1000)))
    finally:
        await trio.aclose_forcefully(stream)


Opener = Callable[[str], AbstractAsyncContextManager[Client]]
CLIENTS: dict[str, Opener] = {
    "trio-websocket": trio_websocket_default,
    "trio-websocket tuned": trio_websocket_tuned,
    "websockets.trio": websockets_trio,
    "wsproto loop": wsproto_loop,
    "trio_conn": managed,
    "trio_conn metrics": managed_with_metrics,
}
SUBJECT, STRONGEST, CEILING, RAW = "trio_conn", "websockets.trio", "wsproto loop", "trio-websocket"
METERED = "trio_conn metrics"

# --- the figures ----------------------------------------------------------------


def mismatch(index: int, got: str | bytes, size: int) -> MessageError:
    if isinstance(got, str) and got.startswith("error: "):
        return MessageError(f"the server found {got[7:]}")
    return MessageError(describe(index, got, size))


async def receive_figure(client: Client, size: int, count: int, fault: str = "") -> float:
    """Messages per second: the server floods ``count`` messages, each checked."""
    if client.flood is not None:
        return await client.flood(size, count, fault)
    send, receive = client.send, client.receive
    await send(f"flood {size} {count}{fault}")
    started = time.perf_counter()
    for index in range(count):
        got = await receive()
        if got != message(index, size):
            raise mismatch(index, got, size)
    return count / (time.perf_counter() - started)


async def send_figure(
    client: Client, size: int, count: int, faults: dict[int, str] | None = None
) -> float:
    """Messages per second: ``count`` messages, until the server has checked them all.

    ``faults`` replaces some messages (for checking the checks).
    """
    faults = faults or {}
    send = client.send
    await send(f"sink {size} {count}")
    started = time.perf_counter()
    for index in range(count):
        await send(faults[index] if index in faults else message(index, size))
    answer = await client.receive()
    elapsed = time.perf_counter() - started
    if answer != "done":
        raise mismatch(-1, answer, size)
    return count / elapsed


async def round_trip_figure(client: Client, size: int, count: int) -> list[float]:
    """Seconds per echo, ``count`` sequential echoes, each checked."""
    send, receive = client.send, client.receive
    await send(f"echo {size}")
    times = []
    for index in range(count):
        text = message(index, size)
        started = time.perf_counter()
        await send(text)
        got = await receive()
        times.append(time.perf_counter() - started)
        if got != text:
            raise mismatch(index, got, size)
    return times


# --- checking the checks ----------------------------------------------------------


async def caught(url: str, name: str, size: int, fault: str) -> str:
    """Run a short figure with one injected fault; return the error it must raise."""
    count, at = 12, 5  # under websockets.trio's max_queue (16): no 10 s close wait
    error: str | None = None
    try:
        async with CLIENTS[name](url) as client:
            if fault.startswith("receive"):
                kind = fault.split()[1]
                await receive_figure(client, size, count, f" {kind} {at}")
            elif fault == "send swap":
                swapped = {at: message(at + 1, size), at + 1: message(at, size)}
                await send_figure(client, size, count, swapped)
            else:
                await send_figure(client, size, count, {at: corrupt(message(at, size))})
    except* MessageError as group:
        error = str(first_leaf(group))
    if error is None:
        raise SystemExit(f"{name}: a {fault} at {size} B went unnoticed; the checks are broken")
    return error


def first_leaf(group: BaseExceptionGroup[MessageError]) -> MessageError:
    leaf = group.exceptions[0]
    return first_leaf(leaf) if isinstance(leaf, BaseExceptionGroup) else leaf


async def check_the_checks(url: str, sizes: list[int]) -> list[str]:
    samples = []
    for size in sizes:
        for fault in ("receive swap", "receive corrupt", "send swap", "send corrupt"):
            for name in CLIENTS:
                error = await caught(url, name, size, fault)
                if name == SUBJECT:
                    samples.append(f"{fault} at {size} B -> {error}")
    return samples


# --- the run --------------------------------------------------------------------

FIGURES = ("receive_msgs_per_s", "send_msgs_per_s", "round_trip_p50_us", "round_trip_p99_us")


async def measure(
    url: str, name: str, figure: str, size: int, count: int, round_trips: int
) -> dict[str, float]:
    gc.collect()
    try:
        async with CLIENTS[name](url) as client:
            if figure == "receive":
                return {"receive_msgs_per_s": await receive_figure(client, size, count)}
            if figure == "send":
                return {"send_msgs_per_s": await send_figure(client, size, count)}
            times = await round_trip_figure(client, size, round_trips)
            return {
                "round_trip_p50_us": percentile(times, 0.50) * 1e6,
                "round_trip_p99_us": percentile(times, 0.99) * 1e6,
            }
    except* MessageError as group:
        raise MessageError(f"{name}, {figure} at {size} B: {first_leaf(group)}") from None
    raise AssertionError("unreachable")


async def run(running: Server, args: argparse.Namespace) -> dict[str, Any]:
    url = running.url
    counts = {size: args.messages if size <= 1024 else args.large_messages for size in args.sizes}
    results: dict[str, Any] = {
        "machine": machine(),
        "trio_conn": trio_conn_build(),
        "rounds": args.rounds,
        "messages": counts,
        "round_trips": args.round_trips,
        "trio_websocket_tuned": TUNED,
    }
    results["checks_checked"] = await check_the_checks(url, args.sizes)
    names = list(CLIENTS)
    values: dict[int, dict[str, dict[str, list[float]]]] = {
        size: {figure: {name: [] for name in names} for figure in FIGURES} for size in args.sizes
    }
    cpu: dict[str, list[float]] = {}  # "figure size" -> [client seconds, server seconds]
    for index in range(args.rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for size in args.sizes:
            for figure in ("receive", "send", "round_trip"):
                for name in order:
                    client_before, server_before = time.process_time(), running.cpu_seconds()
                    figures = await measure(url, name, figure, size, counts[size], args.round_trips)
                    spent = cpu.setdefault(f"{figure} {size}", [0.0, 0.0])
                    spent[0] += time.process_time() - client_before
                    spent[1] += running.cpu_seconds() - server_before
                    for key, value in figures.items():
                        values[size][key][name].append(value)
        print(f"round {index + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    results["figures"] = {
        str(size): {
            figure: {
                "median": {name: median(per_round[name]) for name in names},
                "trio_conn_ratio": {
                    name: median(
                        [s / o for s, o in zip(per_round[SUBJECT], per_round[name], strict=True)]
                    )
                    for name in names
                    if name != SUBJECT
                },
                "per_round": per_round,
            }
            for figure, per_round in by_figure.items()
        }
        for size, by_figure in values.items()
    }
    results["server_cpu_per_client_cpu"] = {
        key: server_seconds / client_seconds
        for key, (client_seconds, server_seconds) in cpu.items()
    }
    return results


# --- the report -----------------------------------------------------------------


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def table(results: dict[str, Any]) -> str:
    """A markdown table: the medians of every client, then trio_conn's ratios."""
    short = {RAW: "tws", "trio-websocket tuned": "tws tuned", METERED: "tc metrics"}
    names = list(CLIENTS)
    against = [
        (STRONGEST, "websockets.trio"),
        (CEILING, "wsproto loop"),
        (RAW, "tws"),
        (METERED, "tc metrics"),
    ]
    labels = {
        "receive_msgs_per_s": "receive, msg/s",
        "send_msgs_per_s": "send, msg/s",
        "round_trip_p50_us": "round trip p50, us",
        "round_trip_p99_us": "round trip p99, us",
    }
    rows = [
        ["figure", *(short.get(n, n) for n in names), *(f"tc / {a}" for _, a in against)],
        ["---"] * (1 + len(names) + len(against)),
    ]
    for size, by_figure in results["figures"].items():
        for figure, label in labels.items():
            figures = by_figure[figure]
            per_s = figure.endswith("per_s")
            rows.append(
                [
                    f"{label} {size_label(int(size))}",
                    *(
                        f"{v / 1000:.1f}k" if per_s else f"{v:.0f}"
                        for v in (figures["median"][n] for n in names)
                    ),
                    *(f"{figures['trio_conn_ratio'][n]:.2f}x" for n, _ in against),
                ]
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    shares = ", ".join(
        f"{key.split()[0].replace('_', ' ')} {size_label(int(key.split()[1]))} {share:.0%}"
        for key, share in results["server_cpu_per_client_cpu"].items()
    )
    checks = results["checks_checked"]
    counts = ", ".join(
        f"{count} messages at {size_label(int(size))}"
        for size, count in results["messages"].items()
    )

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "| " + " | ".join(cells) + " |"

    return "\n".join(
        [
            describe_build(results["trio_conn"]),
            f"{machine()}; {results['rounds']} rounds; per round and client {counts} each way,"
            f" {results['round_trips']} round trips per size",
            f"tws = trio-websocket defaults; tws tuned = trio-websocket with {TUNED};"
            " tc = trio_conn",
            "medians over the rounds; ratios: trio_conn / client, median of the per-round ratios"
            " (msg/s: above 1 is faster; us: below 1 is faster)",
            "",
            *(line(row) for row in rows),
            "",
            f"server CPU / client CPU (all clients): {shares}",
            f"checks checked: every client stopped on each of {len(checks)} injected faults"
            f" (a swapped and a corrupted message, each way, each size); trio_conn's errors, e.g."
            f" {checks[0]!r}; {checks[2]!r}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--messages", type=int, default=20000, help="per figure, at 32 B")
    parser.add_argument(
        "--large-messages", type=int, help="per figure, at 16 KiB (default: messages / 4)"
    )
    parser.add_argument("--round-trips", type=int, default=2000, help="per round and size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 16384], help="bytes")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.large_messages is None:
        args.large_messages = max(1, args.messages // 4)
    quiet_logging()
    try:
        with server() as running:
            results = trio.run(run, running, args)
    except* MessageError as group:
        sys.exit(f"aborted, nothing counted: {first_leaf(group)}")
    print(table(results))
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
