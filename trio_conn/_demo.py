"""``trio-conn demo``: a managed connection against the fault server, one story in ~20 s.

The narration and the closing summary go to ``out`` (stdout); the library's
events go wherever logging was configured (stderr, from the CLI).
"""

from __future__ import annotations

from collections import Counter
from typing import TextIO

import trio

from ._config import ConnectionConfig
from ._connection import ManagedConnection
from ._open import open_connection
from ._policy import Backoff, ErrorKind, RetryPolicy
from ._records import ConnectionStatistics, FailureInfo, TransitionRecord
from ._state import ConnectionState
from .testing import FaultServer, open_fault_server

S = ConnectionState
STEPS = 6

#: Short timings so the story fits in about 20 s; the backoff rows keep the shape
#: ``min(step * n, cap)`` of the defaults (docs/design.md, "The delay").
DEMO_CONFIG = ConnectionConfig(
    heartbeat_interval=1.0,
    heartbeat_timeout=1.0,
    max_heartbeat_failures=3,
    connect_timeout=2.0,
    stable_after=2.0,
    recovery_cooldown=1.0,
    max_connection_failures=4,
    failed_retry_interval=2.0,
    stuck_after={S.CONNECTING: 5.0, S.RECONNECTING: 10.0},
    retry=RetryPolicy(
        jitter=0.0,
        backoff={
            ErrorKind.UNEXPECTED_CLOSE: Backoff(0.5, 2.0),
            ErrorKind.NETWORK: Backoff(0.5, 2.0),
            ErrorKind.HEARTBEAT: Backoff(1.0, 4.0),
            ErrorKind.OTHER: Backoff(0.5, 2.0),
        },
    ),
)


class Story:
    """Narrates the demo in lines a newcomer understands."""

    def __init__(self, out: TextIO, *, narrate_transitions: bool = True) -> None:
        self.out = out
        self.narrate_transitions = narrate_transitions
        isatty = getattr(out, "isatty", None)
        self.coloured = bool(callable(isatty) and isatty())
        self.step = 0
        self.conn: ManagedConnection | None = None
        self.entered: Counter[ConnectionState] = Counter()
        self._changed = trio.Event()

    def say(self, text: str) -> None:
        print(f"   {text}", file=self.out, flush=True)

    def chapter(self, text: str) -> None:
        self.step += 1
        line = f"[{self.step}/{STEPS}] {text}"
        if self.coloured:  # bold cyan: the story stands out among the event lines
            line = f"\x1b[1;36m{line}\x1b[0m"
        print(f"\n{line}", file=self.out, flush=True)

    def on_transition(self, record: TransitionRecord) -> None:
        if self.narrate_transitions:
            line = f"-> {record.to_state} (after {record.duration:.1f} s {record.from_state})"
            if record.retry_in is not None:
                line += f", next attempt in {record.retry_in:.1f} s"
            self.say(f"{line}: {record.reason}")
        self.entered[record.to_state] += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_entered(self, state: ConnectionState, count: int) -> None:
        """Wait until ``state`` has been entered ``count`` times in all."""
        while self.entered[state] < count:
            await self._changed.wait()


async def run_demo(out: TextIO, narrate_transitions: bool = True) -> ConnectionStatistics:
    """Play the story; return the connection's final statistics.

    :param narrate_transitions: tell each transition in the story too (off
        when the events are sentences on the same terminal).
    """
    story = Story(out, narrate_transitions=narrate_transitions)
    cookie = {"value": "session=expired"}

    async def headers() -> list[tuple[str, str]]:
        return [("Cookie", cookie["value"])]

    async def on_failed(info: FailureInfo) -> bool:
        if info.kind is ErrorKind.REJECTED:
            story.say("recovery hook: the cookie was refused; logging in again for a new one")
            cookie["value"] = "session=fresh"
            return True
        story.say(f"recovery hook: nothing to refresh for a {info.kind} error")
        return False

    async with open_fault_server() as server:
        story.chapter(f"A fault-injecting echo server listens on {server.url}")
        async with open_connection(
            server.url,
            config=DEMO_CONFIG,
            headers=headers,
            on_failed=on_failed,
            on_transition=story.on_transition,
            name="demo",
        ) as conn:
            story.conn = conn
            await _connect_and_talk(story, conn)
            await _drop(story, server, conn)
            await _freeze(story, server, conn)
            await _reject(story, server, conn, cookie)
            await _down(story, server)
            story.chapter(
                "Shutting down: leaving the block closes the WebSocket connection and every task"
            )
    stats = conn.statistics()
    print(summary(stats), file=out, flush=True)
    return stats


async def _connect_and_talk(story: Story, conn: ManagedConnection) -> None:
    await conn.wait_for_state(S.CONNECTED)
    for text in ("hello", "how are you?"):
        await conn.send(text)
        story.say(f"sent {text!r}, the server echoed {await conn.receive()!r}")
    await trio.sleep(1.5)
    rtt = conn.statistics().heartbeat_rtt
    story.say(f"heartbeat pings are answered (round trip {_ms(rtt)})")


async def _drop(story: Story, server: FaultServer, conn: ManagedConnection) -> None:
    story.chapter("The server drops the connection abruptly (no close frame)")
    await server.drop()
    await _reconnected(conn)
    await trio.sleep(1.0)


async def _freeze(story: Story, server: FaultServer, conn: ManagedConnection) -> None:
    story.chapter("The server freezes: TCP stays open, but nothing is answered")
    story.say("heartbeats every 1 s, 1 s to answer, 3 misses and the peer is declared dead")
    server.freeze()
    await conn.wait_for_state(S.RECONNECTING)
    server.thaw()
    story.say("the server thaws")
    await _reconnected(conn)
    await trio.sleep(1.0)


async def _reject(
    story: Story, server: FaultServer, conn: ManagedConnection, cookie: dict[str, str]
) -> None:
    story.chapter("Credentials expire: the server answers the next handshake with 403")
    server.reject_next(1, 403)
    await server.drop()
    await conn.wait_for_state(S.FAILED)
    await _reconnected(conn)
    story.say(f"the server saw the cookie {server.connections[-1].header('cookie')!r}")
    await trio.sleep(2.5)  # stable_after: the failure count resets


async def _down(story: Story, server: FaultServer) -> None:
    story.chapter("The server goes down: attempts are refused, the backoff grows, then FAILED")
    failed = story.entered[S.FAILED]
    connected = story.entered[S.CONNECTED]
    await server.stop()
    await story.wait_entered(S.FAILED, failed + 1)  # the drop, then three refusals
    interval = DEMO_CONFIG.failed_retry_interval
    story.say(f"failed is not for good: the connection probes again after {interval:g} s")
    await trio.sleep(0.5)
    story.say("the server comes back")
    await server.start()
    await story.wait_entered(S.CONNECTED, connected + 1)
    await trio.sleep(1.0)


async def _reconnected(conn: ManagedConnection) -> None:
    await conn.wait_for_state(S.CONNECTING)
    await conn.wait_for_state(S.CONNECTED)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def summary(stats: ConnectionStatistics) -> str:
    """The closing table: time and share per state, transitions, failures, round trip."""
    total = sum(stats.time_by_state.values()) or 1.0
    lines = ["", "Summary", f"{'state':<14}{'time':>9}{'share':>8}"]
    for state, seconds in stats.time_by_state.items():
        lines.append(f"{state:<14}{seconds:>8.1f}s{seconds / total * 100:>7.1f}%")
    lines.append("transitions:")
    for (a, b), count in sorted(stats.transitions.items()):
        lines.append(f"  {a} -> {b}: {count}")
    lines.append(
        f"attempts {stats.attempts}, failures {stats.total_failures}, "
        f"heartbeat round trip {_ms(stats.heartbeat_rtt)}, final state {stats.state}"
    )
    return "\n".join(lines)
