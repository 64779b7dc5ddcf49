"""Reconnect cost: client CPU and wall time per reconnect, trio_conn beside raw clients.

    python bench/reconnect.py [--reconnects 200] [--runs 5] [--json PATH]

The server (bench/server.py, a second process) closes the TCP connection at
once, without a close frame, when it reads the message ``drop``. Each client
does the same thing ``--reconnects`` times:

- ``trio_conn``: ``open_connection`` with a zero backoff and no jitter, so
  that all of it is overhead: ``send("drop")``, then wait for CONNECTED again
  (noticing the end of the stream, closing the old socket, the transitions
  and their events, a new TCP connection and handshake);
- raw clients, by hand: open a connection, ``drop``, read until it ends, open
  the next: ``trio-websocket`` (``open_websocket_url``), ``websockets.trio``
  (``websockets.trio.client.connect``) and ``wsproto`` (``trio.open_tcp_stream``
  and a wsproto handshake, nothing else).

Figures per reconnect: the client's CPU time (``time.process_time``, this
process only: the server's work is not in it) over the whole loop divided by
the reconnects; for the raw clients also the CPU of the connect + handshake
alone (the call that opens the connection), the baseline of the target
(trio_conn's CPU per reconnect <= 1.2x a raw connect + handshake); and the
wall time from sending ``drop`` to the next open connection (median of the
run). Each run measures every client once, the order rotating between runs;
figures are medians over the runs, ratios medians of the per-run ratios.
trio_conn's events are dropped at the logger (``quiet_logging``), not rendered.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import wsproto
import wsproto.events as ev
from _common import describe_build, machine, median, quiet_logging, server_process, trio_conn_build
from trio_websocket import ConnectionClosed as TrioWebsocketClosed
from trio_websocket import open_websocket_url
from websockets.exceptions import ConnectionClosed as WebsocketsClosed
from websockets.trio.client import connect as websockets_connect

from trio_conn import (
    Backoff,
    ConnectionConfig,
    ConnectionState,
    ErrorKind,
    RetryPolicy,
    TransitionRecord,
    open_connection,
)

S = ConnectionState
ZERO = Backoff(0.0, 0.0)
CONFIG = ConnectionConfig(
    retry=RetryPolicy(jitter=0.0, backoff=dict.fromkeys(ErrorKind, ZERO)),
    max_connection_failures=1_000_000,
)


class Loop:
    """What one client's loop of reconnects measured."""

    def __init__(self) -> None:
        self.connect_cpu = 0.0  # raw clients: CPU inside the opening calls
        self.walls: list[float] = []  # from sending "drop" to the next open connection
        self.dropped_at = 0.0
        self.cpu = 0.0  # from the first connection open to the last reconnect

    def start(self) -> None:
        self.cpu = -time.process_time()

    def stop(self) -> None:
        self.cpu += time.process_time()

    def dropping(self) -> None:
        self.dropped_at = time.perf_counter()

    def connected(self) -> None:
        self.walls.append(time.perf_counter() - self.dropped_at)


async def managed(url: str, count: int, loop: Loop) -> None:
    connected = trio.Event()

    def on_transition(record: TransitionRecord) -> None:
        if record.to_state is S.CONNECTED:
            connected.set()

    async with open_connection(url, config=CONFIG, on_transition=on_transition) as conn:
        await conn.wait_for_state(S.CONNECTED)
        loop.start()
        for _ in range(count):
            connected = trio.Event()
            loop.dropping()
            await conn.send("drop")  # the server closes the TCP connection at once
            await connected.wait()
            loop.connected()
        loop.stop()


async def raw_trio_websocket(url: str, count: int, loop: Loop) -> None:
    for index in range(count + 1):  # the first open is not a reconnect
        cpu = time.process_time()
        async with open_websocket_url(url) as ws:
            if index:
                loop.connect_cpu += time.process_time() - cpu
                loop.connected()
            else:
                loop.start()
            if index == count:
                loop.stop()
                break
            loop.dropping()
            await ws.send_message("drop")
            with contextlib.suppress(TrioWebsocketClosed):
                await ws.get_message()


async def raw_websockets(url: str, count: int, loop: Loop) -> None:
    for index in range(count + 1):
        cpu = time.process_time()
        async with websockets_connect(url, proxy=None) as ws:
            if index:
                loop.connect_cpu += time.process_time() - cpu
                loop.connected()
            else:
                loop.start()
            if index == count:
                loop.stop()
                break
            loop.dropping()
            await ws.send("drop")
            with contextlib.suppress(WebsocketsClosed):
                await ws.recv()


async def wsproto_open(host: str, port: int) -> tuple[trio.SocketStream, wsproto.WSConnection]:
    """A TCP connection and a wsproto handshake, nothing else."""
    stream = await trio.open_tcp_stream(host, port)
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(ws.send(ev.Request(host=f"{host}:{port}", target="/")))
    while True:
        data = await stream.receive_some(65536)
        if not data:
            raise ConnectionError("no answer to the upgrade request")
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, ev.AcceptConnection):
                return stream, ws
            if isinstance(event, ev.RejectConnection):
                raise ConnectionError(f"rejected ({event.status_code})")


async def raw_wsproto(url: str, count: int, loop: Loop) -> None:
    port = int(url.rsplit(":", 1)[1].strip("/"))
    for index in range(count + 1):
        cpu = time.process_time()
        stream, ws = await wsproto_open("127.0.0.1", port)
        try:
            if index:
                loop.connect_cpu += time.process_time() - cpu
                loop.connected()
            else:
                loop.start()
            if index == count:
                loop.stop()
                break
            loop.dropping()
            await stream.send_all(ws.send(ev.TextMessage(data="drop")))
            while await stream.receive_some(65536):
                pass
        finally:
            await trio.aclose_forcefully(stream)


CLIENTS: dict[str, Callable[[str, int, Loop], Awaitable[None]]] = {
    "trio_conn": managed,
    "trio-websocket": raw_trio_websocket,
    "websockets.trio": raw_websockets,
    "wsproto": raw_wsproto,
}
RAW = [name for name in CLIENTS if name != "trio_conn"]


async def measure(url: str, name: str, count: int) -> dict[str, float]:
    gc.collect()
    loop = Loop()
    await CLIENTS[name](url, count, loop)
    assert len(loop.walls) == count
    return {
        "cpu_ms": loop.cpu / count * 1e3,
        "connect_cpu_ms": loop.connect_cpu / count * 1e3,
        "wall_ms": median(loop.walls) * 1e3,
    }


async def run(url: str, reconnects: int, runs: int) -> dict[str, Any]:
    names = list(CLIENTS)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for index in range(runs):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            samples[name].append(await measure(url, name, reconnects))
    managed_runs = samples["trio_conn"]
    results: dict[str, Any] = {
        "machine": machine(),
        "trio_conn": trio_conn_build(),
        "runs": runs,
        "reconnects_per_run": reconnects,
        "computed_delay_ms": 0.0,
        "clients": {
            name: {key: median([s[key] for s in samples[name]]) for key in samples[name][0]}
            for name in names
        },
        "trio_conn_ratios": {},
    }
    for name in RAW:
        pairs = list(zip(managed_runs, samples[name], strict=True))
        results["trio_conn_ratios"][name] = {
            "cpu_vs_connect_cpu": median([m["cpu_ms"] / r["connect_cpu_ms"] for m, r in pairs]),
            "cpu_vs_loop_cpu": median([m["cpu_ms"] / r["cpu_ms"] for m, r in pairs]),
            "wall": median([m["wall_ms"] / r["wall_ms"] for m, r in pairs]),
        }
    del results["clients"]["trio_conn"]["connect_cpu_ms"]  # not separable: it is all overhead
    return results


def table(results: dict[str, Any]) -> str:
    rows = [
        [
            "client",
            "CPU per reconnect",
            "of which connect + handshake",
            "wall, drop to open",
            "trio_conn CPU / connect + handshake CPU",
            "trio_conn CPU / loop CPU",
            "trio_conn wall / wall",
        ]
    ]
    for name, figures in results["clients"].items():
        ratios = results["trio_conn_ratios"].get(name)
        rows.append(
            [
                name,
                f"{figures['cpu_ms']:.2f} ms",
                f"{figures['connect_cpu_ms']:.2f} ms" if "connect_cpu_ms" in figures else "-",
                f"{figures['wall_ms']:.2f} ms",
                *(
                    [
                        f"{ratios['cpu_vs_connect_cpu']:.2f}x",
                        f"{ratios['cpu_vs_loop_cpu']:.2f}x",
                        f"{ratios['wall']:.2f}x",
                    ]
                    if ratios
                    else ["-", "-", "-"]
                ),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        describe_build(results["trio_conn"]),
        f"{results['machine']}; {results['runs']} runs of {results['reconnects_per_run']}"
        " reconnects per client, the order rotating; medians over the runs, ratios medians"
        " of per-run ratios; target: trio_conn CPU <= 1.2x a raw connect + handshake",
        "",
    ]
    for index, cells in enumerate(rows):
        aligned = [cells[0].ljust(widths[0])]
        aligned += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        lines.append("| " + " | ".join(aligned) + " |")
        if index == 0:
            lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reconnects", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    quiet_logging()
    with server_process() as port:
        results = trio.run(run, f"ws://127.0.0.1:{port}/", args.reconnects, args.runs)
    print(table(results))
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
