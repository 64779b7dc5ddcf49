"""Heartbeats: what a beat is (ping frame or application message) and the loop that judges.

The loop (:meth:`HeartbeatMonitor.run`): send a beat
(behind any frame being written: the clock has not started); from the moment
its frame is written, wait ``heartbeat_timeout`` for its reply; judged after
the wait, any proof of life resets the miss count: the reply, any bytes
received from the peer (even part of a frame), or progress of the
application's own writes, and bytes that arrived while the event loop itself
was stalled count too. While the receive buffer is full no miss is counted (a
slow reader is not a dead peer). At ``max_heartbeat_failures`` consecutive
misses raise :class:`HeartbeatTimeout`; then sleep until ``sent_at +
heartbeat_interval``. So a silent peer is declared dead no later than
``interval + max_failures * max(timeout, interval)`` after the last byte it
sent.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import trio

from ._checks import check_sync_callable
from ._exceptions import HeartbeatTimeout
from ._transport import Data, Session, WebSocket

#: How many times the judge yields before counting a miss: enough for the
#: reader to run once more, so that bytes that arrived while the event loop
#: was stalled are read and counted (Trio runs woken tasks in a random order).
JUDGE_YIELDS = 2


class Heartbeat(abc.ABC):
    """How to send a beat and recognise its reply."""

    #: Whether replies arrive as messages (recognised by :meth:`is_response`),
    #: rather than as pong frames.
    replies_are_messages = False

    @abc.abstractmethod
    async def beat(self, session: Session) -> None:
        """Send one beat on ``session``: a ping frame or a message. Return once written."""

    def is_response(self, message: Data) -> bool:
        """Whether ``message`` is a beat's reply (consumed, never delivered)."""
        return False


class PingHeartbeat(Heartbeat):
    """WebSocket ping frames (RFC 6455 section 5.5.2); the pong is the reply."""

    async def beat(self, session: Session) -> None:
        await session.ping()

    def __repr__(self) -> str:
        return "PingHeartbeat()"


class MessageHeartbeat(Heartbeat):
    """An application message as the beat, its recognised replies consumed.

    :param make_message: ``() -> str | bytes``: the beat to send, called per beat.
    :param is_response: ``(message) -> bool``: True for a beat's reply. One
        that raises counts as False (and is logged as ``connection.hook_failed``).
    :raises TypeError: either is not a plain (non-async) callable.
    """

    replies_are_messages = True

    def __init__(
        self,
        make_message: Callable[[], Data],
        is_response: Callable[[Data], bool],
    ) -> None:
        check_sync_callable("make_message", make_message, required=True)
        check_sync_callable("is_response", is_response, required=True)
        self._make_message = make_message
        self._is_response = is_response

    async def beat(self, session: Session) -> None:
        message = self._make_message()
        if not isinstance(message, str | bytes):
            raise TypeError(f"make_message must return str or bytes, got {type(message).__name__}")
        await session.send(message)

    def is_response(self, message: Data) -> bool:
        return bool(self._is_response(message))

    def __repr__(self) -> str:
        return f"MessageHeartbeat({self._make_message!r}, {self._is_response!r})"


class _Beat:
    __slots__ = ("replied", "replied_at", "sent_at")

    def __init__(self, started: float) -> None:
        self.sent_at = started  # until the frame is written
        self.replied = trio.Event()
        self.replied_at: float | None = None


class HeartbeatMonitor:
    """Runs one session's heartbeat on its WebSocket connection.

    :param on_miss: called with the consecutive miss count after each miss.
    """

    __slots__ = (
        "_beat",
        "_blocked_episodes",
        "_heartbeat",
        "_interval",
        "_max_misses",
        "_on_miss",
        "_reader_blocked",
        "_timeout",
        "_websocket",
        "rtt",
    )

    def __init__(
        self,
        heartbeat: Heartbeat,
        websocket: WebSocket,
        *,
        interval: float,
        timeout: float,
        max_misses: int,
        on_miss: Callable[[int], None],
    ) -> None:
        self._heartbeat = heartbeat
        self._websocket = websocket
        self._interval = interval
        self._timeout = timeout
        self._max_misses = max_misses
        self._on_miss = on_miss
        self._beat: _Beat | None = None
        self._reader_blocked = False
        self._blocked_episodes = 0
        #: Round trip of the last answered beat, in seconds.
        self.rtt: float | None = None

    def reply_arrived(self) -> None:
        """A beat's reply arrived (a pong, or a message ``is_response`` recognised)."""
        beat = self._beat
        if beat is not None and beat.replied_at is None:
            now = trio.current_time()
            beat.replied_at = now
            self.rtt = max(0.0, now - beat.sent_at)
            beat.replied.set()

    def reader_blocked(self, blocked: bool) -> None:
        """The reader waits (True) or stopped waiting (False) on a full receive buffer."""
        self._reader_blocked = blocked
        if blocked:
            self._blocked_episodes += 1

    async def run(self) -> None:
        """Beat until the peer is judged dead.

        :raises HeartbeatTimeout: ``max_misses`` consecutive beats without
            any proof of life.
        """
        websocket, session = self._websocket, Session(self._websocket)
        misses = 0
        while True:
            beat = self._beat = _Beat(trio.current_time())
            episodes = self._blocked_episodes
            await self._heartbeat.beat(session)  # may wait behind a long frame: no clock yet
            beat.sent_at = sent_at = trio.current_time()
            received, written = websocket.bytes_received, websocket.bytes_written
            blocked = self._reader_blocked  # a full buffer at any moment of the wait excuses it
            with trio.move_on_at(sent_at + self._timeout):
                await beat.replied.wait()
            if beat.replied_at is None:
                for _ in range(JUDGE_YIELDS):  # bytes read in a stall of the loop count
                    await trio.lowlevel.cancel_shielded_checkpoint()
            alive = (
                beat.replied_at is not None
                or websocket.bytes_received != received
                or websocket.bytes_written != written
                or blocked
                or self._reader_blocked
                or self._blocked_episodes != episodes
            )
            if alive:
                misses = 0
            else:
                misses += 1
                self._on_miss(misses)
                if misses >= self._max_misses:
                    raise HeartbeatTimeout(misses, self._timeout)
            await trio.sleep_until(sent_at + self._interval)
