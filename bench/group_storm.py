"""Reconnect storm: a connection group's members after their server restarts.

    python bench/group_storm.py [--members 1000 5000] [--admission default none]
                                [--witnesses 50] [--down 5 [1]] [--quiet 3]
                                [--timeout 240] [--json PATH] [--plot PATH.png]

Each setting (members x admission) runs in a fresh client process holding one
``open_connection_group``: ``default`` is the group's admission control at its
defaults (100 attempts/s, a burst of 10), ``none`` is ``attempts_per_second=None``.
Two servers (bench/server.py), each a process of its own:

- the storm server, with ``--members`` members (15 s heartbeat, 30 s timeout,
  the default retry policy, a handler draining messages);
- the witness server, never restarted, with ``--witnesses`` members of the
  same group heartbeating every 1 s (2 s timeout): whether they miss a beat
  tells whether the client stays responsive during the storm.

Procedure: add the witnesses, then the members, wait until all are CONNECTED,
watch ``--quiet`` seconds (the witnesses' baseline), SIGKILL the storm server,
start it again ``--down`` seconds after the kill on the same port, and wait
until every member is CONNECTED again (``--timeout`` at most); then 2 s more
for the witnesses' last beats. Figures:

- **reconnect all**: seconds from the restarted server listening to the last
  member CONNECTED;
- **arrivals/s**: TCP connections accepted per second by the restarted
  server, from its own clock (server.py ``--arrivals``): the busiest second
  and the mean from the first arrival to the last; the plot shows them
  second by second;
- **attempts**: the client's connection attempts (CONNECTING transitions)
  from the kill on, and how many of them failed (refused while the server
  was down, or timed out);
- **client CPU**: ``time.process_time`` from the restart to the last member
  CONNECTED, as a share of one core; and the busiest 1 s of it;
- **witnesses**: their ``connection.heartbeat_missed`` events (counted by a
  structlog processor that drops every event but warnings, as idle_scale.py
  does) and the worst heartbeat round trip (``statistics().heartbeat_rtt``,
  sampled every 0.2 s) during the quiet baseline (after 2 s for the connect
  phase's round trips to age out) and from the kill to the end; also the
  worst lateness of a 0.2 s ``trio.sleep`` in the client (event loop lag),
  beside the longest garbage collection (``gc.callbacks``) in the same time.

With the default retry policy a dropped member waits 2.4 to 3 s (unexpected
close: 3 s, jitter 0.2) before its first attempt, and an attempt refused
while the server is down waits 16 to 20 s (network: 10 s x 2 failures) before
the next, so ``--down`` decides how many members fail once: with 5 s (the
default), those whose first attempt came before the restart (all of them
without admission); with 1 s, none (the restart is over before the first
retry), which shows the storm itself. Several values: a setting per value.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import logging
import math
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import structlog
import trio
from _common import (
    HERE,
    Server,
    describe_build,
    machine,
    raise_fd_limit,
    start_server,
    trio_conn_build,
)

from trio_conn import (
    ConnectionConfig,
    ConnectionGroup,
    ConnectionState,
    ManagedConnection,
    TransitionRecord,
    open_connection_group,
)

S = ConnectionState
ADMISSIONS = ("default", "none")
WITNESS = "witness-"
MEMBER_CONFIG = ConnectionConfig(heartbeat_interval=15.0, heartbeat_timeout=30.0)
WITNESS_CONFIG = ConnectionConfig(heartbeat_interval=1.0, heartbeat_timeout=2.0)
SAMPLE = 0.2  # seconds between the monitor's samples
TAIL = 2.0  # seconds watched after the last member is back: the witnesses' late beats
ADMITTED = re.compile(r"; admitted after ([0-9.e+-]+) s$")


class Tracker:
    """What the members' transitions say: how many are CONNECTED, attempts, failures."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.connected = 0
        self.all_connected_at: float | None = None  # time.monotonic()
        self.since = math.inf  # count only from this time.monotonic() reading on
        self.attempts = 0
        self.failed_attempts: Counter[str] = Counter()
        self.entered_failed = 0
        self.most_admission_wait = 0.0
        self._changed = trio.Event()

    def __call__(self, record: TransitionRecord) -> None:
        if record.to_state is S.CONNECTED:
            self.connected += 1
            if self.connected == self.total:
                self.all_connected_at = time.monotonic()
            self._changed.set()
            self._changed = trio.Event()
        elif record.from_state is S.CONNECTED:
            self.connected -= 1
        if time.monotonic() < self.since:
            return
        if record.to_state is S.CONNECTING:
            self.attempts += 1
            found = ADMITTED.search(record.reason)
            if found:
                self.most_admission_wait = max(self.most_admission_wait, float(found[1]))
        elif record.to_state is S.RECONNECTING and record.from_state is S.CONNECTING:
            self.failed_attempts[str(record.kind)] += 1
        elif record.to_state is S.FAILED:
            self.entered_failed += 1

    async def wait_all(self) -> None:
        while self.connected < self.total:
            await self._changed.wait()


class Witnesses:
    """Missed beats (from the events), disconnections and the worst round trips."""

    def __init__(self) -> None:
        self.missed = 0
        self.member_missed = 0  # the storm members' own, for the record
        self.disconnected = 0
        self.worst_rtt = 0.0
        self.worst_lag = 0.0
        self.worst_lag_at = 0.0  # time.monotonic() at its end
        self.cpu: list[tuple[float, float]] = []  # (time.monotonic(), time.process_time())
        self.gc_pauses: list[tuple[float, float, int]] = []  # (end, seconds, generation)
        self._gc_started = 0.0

    def watch_gc(self, phase: str, info: dict[str, int]) -> None:
        """A ``gc.callbacks`` entry: how long each collection held the process."""
        if phase == "start":
            self._gc_started = time.monotonic()
        else:
            now = time.monotonic()
            self.gc_pauses.append((now, now - self._gc_started, info["generation"]))

    def on_transition(self, record: TransitionRecord) -> None:
        if record.from_state is S.CONNECTED:
            self.disconnected += 1

    def count_missed_beats(self) -> None:
        """Route trio_conn's events to the counters of missed beats; drop everything."""

        def processor(logger: Any, method: str, event_dict: Any) -> Any:
            if event_dict.get("event") == "connection.heartbeat_missed":
                if str(event_dict.get("conn_id", "")).startswith(WITNESS):
                    self.missed += 1
                else:
                    self.member_missed += 1
            raise structlog.DropEvent

        structlog.configure(
            processors=[processor],
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            cache_logger_on_first_use=True,
        )

    def phase(self) -> dict[str, float]:
        """The figures so far, and start afresh."""
        figures = {
            "missed_beats": self.missed,
            "disconnected": self.disconnected,
            "worst_rtt_s": self.worst_rtt,
            "worst_loop_lag_s": self.worst_lag,
            "worst_loop_lag_at": self.worst_lag_at,
            "gc_collections_gen2": sum(1 for _, _, generation in self.gc_pauses if generation == 2),
            "gc_seconds": sum(seconds for _, seconds, _ in self.gc_pauses),
            "gc_worst_pause_s": max((seconds for _, seconds, _ in self.gc_pauses), default=0.0),
        }
        self.missed = self.disconnected = 0
        self.worst_rtt = self.worst_lag = 0.0
        self.gc_pauses.clear()
        return figures

    async def monitor(self, group: ConnectionGroup, keys: list[str]) -> None:
        while True:
            before = time.perf_counter()
            await trio.sleep(SAMPLE)
            lag = time.perf_counter() - before - SAMPLE
            if lag > self.worst_lag:
                self.worst_lag, self.worst_lag_at = lag, time.monotonic()
            self.cpu.append((time.monotonic(), time.process_time()))
            for key in keys:
                rtt = group[key].statistics().heartbeat_rtt
                if rtt is not None and rtt > self.worst_rtt:
                    self.worst_rtt = rtt


def cpu_per_second(samples: list[tuple[float, float]], start: float, end: float) -> list[float]:
    """Client CPU share in each second [i, i+1) after ``start``, up to ``end``.

    Each pair of samples is spread over the seconds it spans: a pause of the
    monitor (a long garbage collection) leaves no second without a figure.
    """
    cpu = [0.0] * (int(end - start) + 1)
    wall = [0.0] * len(cpu)
    for (before, cpu_before), (after, cpu_after) in itertools.pairwise(samples):
        if after <= start or before >= end or after <= before:
            continue
        share = (cpu_after - cpu_before) / (after - before)
        low, high = max(before, start), min(after, end)
        for second in range(int(low - start), int(high - start) + 1):
            overlap = min(high, start + second + 1) - max(low, start + second)
            if overlap > 0 and second < len(cpu):
                cpu[second] += share * overlap
                wall[second] += overlap
    return [c / w if w else 0.0 for c, w in zip(cpu, wall, strict=True)]


def busiest_second(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """The largest CPU share over any window of >= 1 s between two samples in [start, end]."""
    inside = [s for s in samples if start <= s[0] <= end]
    best, first = 0.0, 0
    for last in range(len(inside)):
        while first + 1 < last and inside[last][0] - inside[first + 1][0] >= 1.0:
            first += 1
        wall = inside[last][0] - inside[first][0]
        if wall >= 1.0:
            best = max(best, (inside[last][1] - inside[first][1]) / wall)
    return best


async def drain(conn: ManagedConnection) -> None:
    async for _ in conn:
        pass


async def restart_on(port: int, arrivals: Path) -> Server:
    """Start the storm server again on ``port``; retry while the port is not free yet."""
    deadline = time.monotonic() + 10.0
    while True:
        try:
            return await trio.to_thread.run_sync(start_server, port, arrivals)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await trio.sleep(0.1)


def arrival_figures(path: Path, restarted_at: float) -> dict[str, Any]:
    accepts: list[float] = []
    opens = 0
    for line in path.read_text(encoding="ascii").splitlines():
        what, at = line.split()
        if what == "accept":
            accepts.append(float(at) - restarted_at)
        else:
            opens += 1
    accepts.sort()
    if not accepts:
        return {"accepted": 0, "handshakes": opens, "per_second": [], "peak": 0, "mean": 0.0}
    per_second = [0] * (int(accepts[-1]) + 1)
    for second in accepts:
        per_second[max(0, int(second))] += 1
    spread = accepts[-1] - accepts[0]
    return {
        "accepted": len(accepts),
        "handshakes": opens,
        "first_s": accepts[0],
        "last_s": accepts[-1],
        "per_second": per_second,  # accepts in [i, i+1) s after the restart
        "peak": max(per_second),
        "mean": len(accepts) / spread if spread > 0 else float(len(accepts)),
    }


async def child(
    members: int, admission: str, witnesses: int, down: float, quiet: float, wait: float
) -> dict[str, Any]:
    watch = Witnesses()
    watch.count_missed_beats()
    gc.callbacks.append(watch.watch_gc)
    tracker = Tracker(members)
    witness_server = start_server()
    storm = start_server()
    workdir = Path(tempfile.mkdtemp(prefix="group_storm-"))
    arrivals = workdir / "arrivals.txt"
    result: dict[str, Any] = {"members": members, "admission": admission, "down": down}
    limit: dict[str, Any] = {} if admission == "default" else {"attempts_per_second": None}
    try:
        async with open_connection_group(**limit) as group:
            keys = [f"{WITNESS}{index}" for index in range(witnesses)]
            for key in keys:
                await group.add(
                    key,
                    witness_server.url,
                    handler=drain,
                    config=WITNESS_CONFIG,
                    on_transition=watch.on_transition,
                )
            started = time.monotonic()
            for index in range(members):
                await group.add(
                    f"member-{index}",
                    storm.url,
                    handler=drain,
                    config=MEMBER_CONFIG,
                    on_transition=tracker,
                )
            await tracker.wait_all()
            result["connect_s"] = time.monotonic() - started
            for key in keys:
                await group[key].wait_for_state(S.CONNECTED)
            gc.collect()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch.monitor, group, keys)
                await trio.sleep(TAIL)  # the witnesses' round trips of the connect phase age out
                watch.phase()
                await trio.sleep(quiet)
                result["witnesses_quiet"] = watch.phase()

                tracker.all_connected_at = None
                killed_at = tracker.since = time.monotonic()
                cpu_killed = time.process_time()
                await trio.to_thread.run_sync(storm.kill)
                await trio.sleep_until(trio.current_time() + killed_at + down - time.monotonic())
                storm = await restart_on(storm.port, arrivals)
                restarted_at = time.monotonic()
                cpu_restarted = time.process_time()
                with trio.move_on_after(wait):
                    await tracker.wait_all()
                done_at = tracker.all_connected_at
                cpu_done = time.process_time()
                result["server_cpu_s"] = storm.cpu_seconds()
                end = time.monotonic() if done_at is None else done_at
                result["reconnected"] = done_at is not None
                result["restart_s"] = restarted_at - killed_at
                result["reconnect_all_s"] = end - restarted_at
                result["cpu_share"] = (cpu_done - cpu_restarted) / (end - restarted_at)
                result["cpu_s_from_kill"] = cpu_done - cpu_killed
                await trio.sleep(TAIL)
                result["cpu_busiest_second"] = busiest_second(watch.cpu, restarted_at, end)
                result["cpu_per_second"] = cpu_per_second(watch.cpu, restarted_at, end)
                result["witnesses_storm"] = storm_figures = watch.phase()
                storm_figures["worst_loop_lag_at"] -= killed_at  # seconds after the kill
                nursery.cancel_scope.cancel()
            result["attempts"] = tracker.attempts
            result["failed_attempts"] = dict(tracker.failed_attempts)
            result["entered_failed"] = tracker.entered_failed
            result["most_admission_wait_s"] = tracker.most_admission_wait
            result["storm_members_missed_beats"] = watch.member_missed
            before = time.perf_counter()
            stats = group.statistics()
            result["statistics_call_ms"] = (time.perf_counter() - before) * 1e3
            result["by_state"] = {str(s): n for s, n in stats.by_state.items() if n}
            closing = time.perf_counter()
        result["close_s"] = time.perf_counter() - closing
        storm.terminate()
        result["arrivals"] = arrival_figures(arrivals, restarted_at)
    finally:
        storm.kill()
        witness_server.kill()
    return result


def run_child(
    args: argparse.Namespace, members: int, admission: str, down: float
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(HERE / "group_storm.py"),
        "--child",
        str(members),
        admission,
        str(args.witnesses),
        str(down),
        str(args.quiet),
        str(args.timeout),
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=False)
    if output.returncode != 0:
        sys.stderr.write(output.stderr)
        raise SystemExit(f"the child for {members} members, admission {admission} failed")
    result: dict[str, Any] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def label(row: dict[str, Any]) -> str:
    admission = "100/s, burst 10" if row["admission"] == "default" else "none"
    return f"{row['members']:,} members, admission {admission}, down {row['down']:g} s"


def table(results: dict[str, Any]) -> str:
    rows = [
        [
            "members",
            "admission",
            "down",
            "reconnect all",
            "arrivals/s (busiest s; mean)",
            "attempts (failed)",
            "client CPU (storm; busiest s)",
            "witness missed beats",
            "witness worst rtt (quiet; storm)",
            "worst loop lag (GC's worst pause)",
        ]
    ]
    for row in results["figures"]:
        quiet, storm, arrivals = row["witnesses_quiet"], row["witnesses_storm"], row["arrivals"]
        failed = sum(row["failed_attempts"].values())
        done = "" if row["reconnected"] else " (NOT ALL: timed out)"
        rows.append(
            [
                f"{row['members']:,}",
                "100/s, burst 10" if row["admission"] == "default" else "none",
                f"{row['down']:g} s",
                f"{row['reconnect_all_s']:.1f} s{done}",
                f"{arrivals['peak']:,}; {arrivals['mean']:,.0f}",
                f"{row['attempts']:,} ({failed:,})",
                f"{row['cpu_share']:.0%}; {row['cpu_busiest_second']:.0%}",
                f"{storm['missed_beats']}",
                f"{quiet['worst_rtt_s'] * 1e3:.1f}; {storm['worst_rtt_s'] * 1e3:.1f} ms",
                f"{storm['worst_loop_lag_s'] * 1e3:.0f} ms"
                f" ({storm['gc_worst_pause_s'] * 1e3:.0f} ms)",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        describe_build(results["trio_conn"]),
        f"{results['machine']}; {results['witnesses']} witnesses (1 s heartbeat, 2 s timeout);"
        " down: seconds from the storm server's SIGKILL to its restart on the same port",
        "reconnect all: from the restarted server listening to the last member CONNECTED;"
        " arrivals: TCP accepts at the server; attempts: the client's, from the kill on;"
        " client CPU: share of one core from the restart to the last member CONNECTED",
        "",
    ]
    for index, cells in enumerate(rows):
        aligned = [cells[0].rjust(widths[0]), cells[1].ljust(widths[1])]
        aligned += [c.rjust(w) for c, w in zip(cells[2:], widths[2:], strict=True)]
        lines.append("| " + " | ".join(aligned) + " |")
        if index == 0:
            lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (axes, cpu_axes) = plt.subplots(
        2, 1, figsize=(10, 8), sharex=True, height_ratios=[2, 1]
    )
    for row in results["figures"]:
        per_second = row["arrivals"]["per_second"]
        seconds = range(len(per_second) + 1)
        (line,) = axes.step(seconds, [*per_second, 0], where="post", label=label(row))
        shares = [100 * share for share in row["cpu_per_second"]]
        cpu_axes.step(range(len(shares) + 1), [*shares, 0], where="post", color=line.get_color())
    axes.set_ylabel("TCP connections accepted per second")
    axes.set_yscale("symlog", linthresh=10)
    axes.set_title("Reconnect storm: a group's members after their server restarts")
    axes.grid(True, alpha=0.3)
    axes.legend()
    cpu_axes.set_xlabel("seconds since the storm server restarted")
    cpu_axes.set_ylabel("client CPU, % of a core")
    cpu_axes.set_ylim(0, 105)
    cpu_axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--admission", nargs="+", choices=ADMISSIONS, default=list(ADMISSIONS))
    parser.add_argument("--witnesses", type=int, default=50)
    parser.add_argument(
        "--down", type=float, nargs="+", default=[5.0], help="seconds from kill to restart"
    )
    parser.add_argument("--quiet", type=float, default=3.0, help="seconds of baseline")
    parser.add_argument(
        "--timeout", type=float, default=240.0, help="most seconds to wait for all to reconnect"
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--plot", help="draw arrivals per second to this PNG file")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_fd_limit()
    if args.child:
        members, admission, witnesses, down, quiet, timeout = args.child
        found = trio.run(
            child,
            int(members),
            admission,
            int(witnesses),
            float(down),
            float(quiet),
            float(timeout),
        )
        print(json.dumps(found), flush=True)
        return
    results: dict[str, Any] = {
        "machine": machine(),
        "trio_conn": trio_conn_build(),
        "witnesses": args.witnesses,
        "downs": args.down,
        "figures": [],
    }
    for down in args.down:
        for members in args.members:
            for admission in [a for a in ADMISSIONS if a in args.admission]:
                row = run_child(args, members, admission, down)
                results["figures"].append(row)
                brief = {k: v for k, v in row.items() if k != "arrivals"}
                print(json.dumps(brief), file=sys.stderr, flush=True)
    print(table(results))
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
