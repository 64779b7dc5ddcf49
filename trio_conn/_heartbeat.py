"""Heartbeats: what a beat is (ping frame or application message) and the loop that judges.

The loop (:meth:`HeartbeatMonitor.run`), exactly as DESIGN.md says: send a
beat; wait for its reply inside ``trio.move_on_after(heartbeat_timeout)``; the
reply, or any other message arriving meanwhile, resets the miss count; a
timeout adds a miss, unless the receive buffer was full during the wait (a slow
reader is not a dead peer); at ``max_heartbeat_failures`` consecutive misses
raise :class:`HeartbeatTimeout`; then sleep until ``sent_at + interval``. So a
silent peer is declared dead no later than ``interval + max_failures *
max(timeout, interval)`` after its last reply.
"""

from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import Callable

import trio

from ._exceptions import HeartbeatTimeout
from ._transport import Message, Socket


def _is_coroutine_function(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(inspect.unwrap(fn))  # type: ignore[arg-type]


def check_sync_callable(name: str, fn: object, *, required: bool = False) -> None:
    """Refuse what cannot be called synchronously: a non-callable, or an ``async def``.

    :raises TypeError: naming the argument and the rule (never echoing a value
        other than a function's name).
    """
    if fn is None and not required:
        return
    if not callable(fn):
        raise TypeError(f"{name} must be callable{'' if required else ' or None'}, got {fn!r}")
    if _is_coroutine_function(fn):
        raise TypeError(
            f"{name} must be a plain function (it is called synchronously), got the async "
            f"function {getattr(fn, '__qualname__', fn)!r}"
        )


def check_async_callable(name: str, fn: object) -> None:
    """Refuse what cannot be awaited: a non-callable, or a plain ``def`` function.

    A callable object (``async def __call__``), a partial of an async
    function, or a ``functools.wraps`` wrapper whose original is async is
    accepted: only a plain function is known to be wrong here.

    :raises TypeError: naming the argument and the rule.
    """
    if fn is None:
        return
    if not callable(fn):
        raise TypeError(f"{name} must be callable (an async function) or None, got {fn!r}")
    target: object = fn
    while True:  # to the original: through partials and functools.wraps
        if isinstance(target, functools.partial):
            target = target.func
        elif callable(target) and hasattr(target, "__wrapped__"):
            target = inspect.unwrap(target)
        else:
            break
    if (inspect.isfunction(target) or inspect.ismethod(target)) and not (
        inspect.iscoroutinefunction(target)
    ):
        raise TypeError(
            f"{name} must be an async function (async def), got the plain function "
            f"{getattr(fn, '__qualname__', fn)!r}"
        )


class Heartbeat(abc.ABC):
    """How to send a beat and recognise its reply."""

    #: Whether replies arrive as messages (checked with :meth:`is_response`).
    replies_are_messages = False

    @abc.abstractmethod
    async def beat(self, socket: Socket, deadline: float) -> bool:
        """Send one beat; return True if its reply arrived (by ``deadline`` at the latest).

        Returning False means the reply, if any, comes as a message that
        :meth:`is_response` recognises.
        """

    def is_response(self, message: Message) -> bool:
        """Whether ``message`` is a beat's reply (consumed, never delivered)."""
        return False


class PingHeartbeat(Heartbeat):
    """WebSocket ping frames; the pong is the reply. Payloads are unique per socket."""

    async def beat(self, socket: Socket, deadline: float) -> bool:
        return await socket.ping(deadline)

    def __repr__(self) -> str:
        return "PingHeartbeat()"


class MessageHeartbeat(Heartbeat):
    """An application message as the beat, recognised replies consumed.

    :param make_message: returns the beat to send (str or bytes), called per beat.
    :param is_response: ``is_response(message) -> bool``: True for a beat's reply.
        A predicate that raises counts as False (and is logged).
    """

    def __init__(
        self,
        make_message: Callable[[], Message],
        is_response: Callable[[Message], bool],
    ) -> None:
        check_sync_callable("make_message", make_message, required=True)
        check_sync_callable("is_response", is_response, required=True)
        self._make_message = make_message
        self._is_response = is_response

    replies_are_messages = True

    async def beat(self, socket: Socket, deadline: float) -> bool:
        message = self._make_message()
        if not isinstance(message, str | bytes):
            raise TypeError(f"make_message must return str or bytes, got {type(message).__name__}")
        await socket.send(message)
        return False

    def is_response(self, message: Message) -> bool:
        return bool(self._is_response(message))

    def __repr__(self) -> str:
        return f"MessageHeartbeat({self._make_message!r}, {self._is_response!r})"


class _Beat:
    __slots__ = ("alive", "replied", "sent_at")

    def __init__(self, sent_at: float) -> None:
        self.sent_at = sent_at
        self.alive = trio.Event()  # the reply or any message arrived
        self.replied = False


class HeartbeatMonitor:
    """Runs one session's heartbeat and hears what the receive task sees.

    :param on_miss: called with the consecutive miss count after each miss.
    """

    def __init__(
        self,
        heartbeat: Heartbeat,
        *,
        interval: float,
        timeout: float,
        max_misses: int,
        on_miss: Callable[[int], None],
    ) -> None:
        self._heartbeat = heartbeat
        self._interval = interval
        self._timeout = timeout
        self._max_misses = max_misses
        self._on_miss = on_miss
        self._beat: _Beat | None = None
        self._reader_blocked = False
        self._blocked_episodes = 0
        #: Round trip of the last replied beat, in seconds.
        self.rtt: float | None = None

    # -- called by the receive task -------------------------------------------

    def message_arrived(self) -> None:
        """Any message shows the peer is alive."""
        beat = self._beat
        if beat is not None:
            beat.alive.set()

    def reply_arrived(self) -> None:
        """A beat's reply arrived (message heartbeats)."""
        beat = self._beat
        if beat is not None:
            self._replied(beat)

    def reader_blocked(self, blocked: bool) -> None:
        """The receive task waits (True) or stopped waiting (False) on a full buffer."""
        self._reader_blocked = blocked
        if blocked:
            self._blocked_episodes += 1

    # -- the loop ---------------------------------------------------------------

    def _replied(self, beat: _Beat) -> None:
        if not beat.replied:
            beat.replied = True
            self.rtt = trio.current_time() - beat.sent_at
        beat.alive.set()

    async def _send(self, socket: Socket, beat: _Beat) -> None:
        if await self._heartbeat.beat(socket, beat.sent_at + self._timeout):
            self._replied(beat)

    async def run(self, socket: Socket, nursery: trio.Nursery) -> None:
        """Beat until the peer is judged dead.

        Beats are sent from tasks in ``nursery`` (the session's), never
        cancelled mid-frame by a timeout; each ends by its reply deadline.

        :raises HeartbeatTimeout: ``max_misses`` consecutive beats went unanswered.
        """
        misses = 0
        while True:
            beat = _Beat(trio.current_time())
            self._beat = beat
            episodes = self._blocked_episodes
            nursery.start_soon(self._send, socket, beat)
            with trio.move_on_after(self._timeout):
                await beat.alive.wait()
            if beat.alive.is_set():
                misses = 0
            elif not (self._reader_blocked or self._blocked_episodes != episodes):
                misses += 1
                self._on_miss(misses)
                if misses >= self._max_misses:
                    raise HeartbeatTimeout(misses, self._timeout)
            await trio.sleep_until(beat.sent_at + self._interval)
