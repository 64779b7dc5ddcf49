"""Heartbeats: what a beat is (ping frame or application message) and the loop that judges.

The loop (:meth:`HeartbeatMonitor.run`), for each beat: its clock starts at
its scheduled time; ``beat()`` sends it and the reply is awaited, both within
the beat's deadline (scheduled time + ``heartbeat_timeout``), so a beat that
waits behind a long message (it goes between fragments), or a slow ``beat()``
of the application's, is judged like any other. Judged at the reply, at the
deadline, or (when the timeout is longer than the interval) at the first
whole interval after the scheduled time by which some proof of life came,
after letting the reader catch up (bytes that arrived while the event loop
itself was stalled count). Proof of life is only what came from the peer
since the beat was scheduled (its reply, or any byte, even part of a frame),
or our own reader waiting on a full receive buffer (we are not reading, so we
cannot see the peer's bytes: a slow reader is not a dead peer). Bytes we
wrote prove nothing: a kernel takes them without the peer reading. Without
proof, a miss; at ``max_heartbeat_failures`` consecutive misses,
:class:`HeartbeatTimeout`. The next beat is scheduled ``heartbeat_interval``
after this one's scheduled time, or at once if this one was judged later than
that: beats go every ``max(heartbeat_interval, heartbeat_timeout)`` while
unanswered.

So a peer that goes silent is declared dead no later than::

    heartbeat_interval + max_heartbeat_failures * max(heartbeat_timeout, heartbeat_interval)

after the last byte it sent (105 s with the defaults): the first beat
scheduled after that byte starts within one interval of it (a beat that saw
the byte is judged at its next checkpoint), and it and the next ones miss.
A beat judged alive early may have its reply arrive during the next beat,
which takes it as its own: it is a byte from the peer either way. An
application-message beat cannot go between the fragments of a long message
being sent: while one is, a ping frame goes first (it can), and its pong is
the proof of life.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable

import trio

from ._checks import check_sync_callable
from ._exceptions import HeartbeatTimeout
from ._frames import Data
from ._handle import Session, SessionOf
from ._transport import WebSocket

#: How many times the judge yields before counting a miss: enough for the
#: reader to run once more, so that bytes that arrived while the event loop
#: was stalled are read and counted (Trio runs woken tasks in a random order).
JUDGE_YIELDS = 2


class Heartbeat(abc.ABC):
    """How to send a beat and recognise its reply.

    Subclass it and define :meth:`beat`. A beat whose reply is a pong frame
    (``session.ping()``) needs nothing more; one whose reply is an
    application message defines :meth:`is_response` as well, and every
    message it recognises is consumed as the reply, never delivered.

    :cvar replies_are_messages: whether replies arrive as messages, looked
        for with :meth:`is_response` in every message received, rather than
        as pong frames. Default: True exactly when the class (or a base
        below ``Heartbeat``) defines ``is_response``; set it in the class
        body to say otherwise.
    """

    replies_are_messages: bool = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        # The wrong colour shows at the class statement, not as lost messages.
        if "is_response" in own and inspect.iscoroutinefunction(own["is_response"]):
            raise TypeError(
                f"{cls.__qualname__}.is_response must be a plain method returning a bool, "
                "not async def (it is called for every message received)"
            )
        if "beat" in own and not inspect.iscoroutinefunction(own["beat"]):
            raise TypeError(f"{cls.__qualname__}.beat must be an async method (async def)")
        if "replies_are_messages" not in vars(cls) and "is_response" in vars(cls):
            cls.replies_are_messages = True  # overriding is_response is enough

    @abc.abstractmethod
    async def beat(self, session: Session) -> None:
        """Send one beat on ``session``: a ping frame or a message. Return once written.

        Runs within the beat's deadline (its scheduled time +
        ``heartbeat_timeout``): cancelled there, the beat is judged as one
        whose reply did not come. ``session.receive()`` is not for a beat
        (it raises RuntimeError): replies are recognised by :meth:`is_response`.
        An exception it raises ends the session.
        """

    def is_response(self, message: Data) -> bool:
        """Whether ``message`` is a beat's reply (consumed, never delivered).

        Called for every message received when :attr:`replies_are_messages`
        is True. One that raises counts as False (and is logged as
        ``connection.hook_failed``).
        """
        return False


class PingHeartbeat(Heartbeat):
    """WebSocket ping frames (RFC 6455 section 5.5.2); the pong is the reply."""

    async def beat(self, session: Session) -> None:
        """Send one ping frame with a payload unique on the connection."""
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
        """Send ``make_message()`` as a message.

        :raises TypeError: it returned neither str nor bytes (the session ends).
        """
        message = self._make_message()
        if not isinstance(message, str | bytes):
            raise TypeError(f"make_message must return str or bytes, got {type(message).__name__}")
        await session.send(message)

    def is_response(self, message: Data) -> bool:
        """``is_response(message)``, as a bool."""
        return bool(self._is_response(message))

    def __repr__(self) -> str:
        return f"MessageHeartbeat({self._make_message!r}, {self._is_response!r})"


class _Beat:
    __slots__ = ("replied", "replied_at", "sent_at")

    def __init__(self, scheduled: float) -> None:
        self.sent_at = scheduled  # then when beat() returned: the round trip's start
        self.replied = trio.Event()
        self.replied_at: float | None = None


class HeartbeatMonitor:
    """Runs one session's heartbeat on its WebSocket connection.

    :param on_miss: called with the consecutive miss count after each miss.
    :param on_rtt: called with each answered beat's round trip, in seconds
        (a metrics meter); None: not called.
    """

    __slots__ = (
        "_beat",
        "_blocked_episodes",
        "_heartbeat",
        "_interval",
        "_max_misses",
        "_on_miss",
        "_on_rtt",
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
        on_rtt: Callable[[float], None] | None = None,
    ) -> None:
        self._heartbeat = heartbeat
        self._websocket = websocket
        self._interval = interval
        self._timeout = timeout
        self._max_misses = max_misses
        self._on_miss = on_miss
        self._on_rtt = on_rtt
        self._beat: _Beat | None = None
        self._reader_blocked = False
        self._blocked_episodes = 0
        #: Round trip of the last answered beat, in seconds: from the moment
        #: ``beat()`` returned (the beat written) to its reply.
        self.rtt: float | None = None

    def reply_arrived(self) -> None:
        """A beat's reply arrived (a pong, or a message ``is_response`` recognised)."""
        beat = self._beat
        if beat is not None and beat.replied_at is None:
            now = trio.current_time()
            beat.replied_at = now
            self.rtt = rtt = max(0.0, now - beat.sent_at)
            beat.replied.set()
            if self._on_rtt is not None:
                self._on_rtt(rtt)

    def reader_blocked(self, blocked: bool) -> None:
        """The reader waits (True) or stopped waiting (False) on a full receive buffer."""
        self._reader_blocked = blocked
        if blocked:
            self._blocked_episodes += 1

    def _proof(self, beat: _Beat, received: int, episodes: int, blocked: bool) -> bool:
        """Whether some proof of life came since ``beat`` was scheduled (figures then given)."""
        return (
            beat.replied_at is not None
            or self._websocket.bytes_received != received
            or blocked
            or self._reader_blocked
            or self._blocked_episodes != episodes
        )

    async def run(self) -> None:
        """Beat until the peer is judged dead.

        :raises HeartbeatTimeout: ``max_misses`` consecutive beats without
            any proof of life.
        """
        websocket, session = self._websocket, SessionOf(self._websocket, receives=False)
        misses = 0
        scheduled = trio.current_time()
        while True:
            beat = self._beat = _Beat(scheduled)
            received, episodes = websocket.bytes_received, self._blocked_episodes
            blocked = self._reader_blocked  # a full buffer at any moment of the wait excuses it

            deadline = scheduled + self._timeout
            with trio.move_on_at(deadline):
                if self._heartbeat.replies_are_messages and websocket.sending_message:
                    # A message beat waits behind the whole message being sent: a
                    # ping goes between its fragments, and the pong is proof of life.
                    await websocket.ping()
                await self._heartbeat.beat(session)  # may wait behind a fragment: the clock runs
                if beat.replied_at is None:
                    beat.sent_at = trio.current_time()
                # Checkpoints every interval until the reply or the deadline: a
                # beat whose window already holds a byte from the peer is judged
                # alive there, so the next beat starts within an interval of it.
                checkpoint = scheduled + self._interval
                while not self._proof(beat, received, episodes, blocked):
                    with trio.move_on_at(checkpoint):
                        await beat.replied.wait()
                    checkpoint += self._interval
            if beat.replied_at is None:
                for _ in range(JUDGE_YIELDS):  # bytes read in a stall of the loop count
                    await trio.lowlevel.cancel_shielded_checkpoint()
            alive = self._proof(beat, received, episodes, blocked)
            if alive:
                misses = 0
            else:
                misses += 1
                self._on_miss(misses)
                if misses >= self._max_misses:
                    raise HeartbeatTimeout(misses, self._timeout)
            scheduled = max(scheduled + self._interval, trio.current_time())
            await trio.sleep_until(scheduled)
