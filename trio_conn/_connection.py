"""open_connection() and ManagedConnection: the supervisor and its sessions.

One nursery (``open_connection``'s) owns the supervisor and the stuck-state
watchdog. The supervisor runs connect -> session -> retry. Each live
connection is a session: its own nursery holds trio-websocket's reader, the
receive task, the heartbeat and the stability timer, so when a session ends
every task of it has ended and at most one socket is open per manager.

Only the supervisor task changes state, always through
:meth:`StateMachine.transition`; public methods (``disconnect``, ``reset``,
closing) post a request and wake it.
"""

from __future__ import annotations

import itertools
import math
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import NoReturn, TypeAlias

import trio

from ._config import ConnectionConfig
from ._events import ConnectionEvents, redact_url
from ._exceptions import NotConnected, SendInterrupted, leaves
from ._heartbeat import Heartbeat, HeartbeatMonitor, PingHeartbeat
from ._mailbox import Mailbox
from ._policy import ErrorKind
from ._state import ConnectionState, StateMachine, Transition
from ._transport import (
    FailureDetails,
    Message,
    Socket,
    StreamOpener,
    check_headers,
    describe_failure,
    open_tcp,
    parse_url,
)

__all__ = ["ConnectionStatistics", "FailureInfo", "ManagedConnection", "Session", "open_connection"]

S = ConnectionState
Headers: TypeAlias = list[tuple[str, str]]
HeadersSource: TypeAlias = Headers | Callable[[], Awaitable[Headers]] | None
_names = itertools.count(1)
_DEFAULT_CONFIG = ConnectionConfig()  # frozen: one shared by every connection


@dataclass(frozen=True, slots=True)
class FailureInfo:
    """Given to ``on_failed``: why the connection is FAILED."""

    consecutive_failures: int
    kind: ErrorKind
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """An immutable snapshot of a connection's figures (clock: ``trio.current_time``)."""

    state: ConnectionState
    state_since: float
    time_in_state: float
    attempts: int
    consecutive_failures: int
    total_failures: int
    transitions: Mapping[tuple[ConnectionState, ConnectionState], int]
    time_by_state: Mapping[ConnectionState, float]
    last_error: str | None
    last_error_kind: ErrorKind | None
    last_close_code: int | None
    heartbeat_rtt: float | None
    next_retry_at: float | None
    connected_since: float | None


class Session:
    """One connection's socket, given to ``on_connect`` for its init handshake."""

    def __init__(self, socket: Socket) -> None:
        self._socket = socket

    async def send(self, message: Message) -> None:
        """Send a message on this connection."""
        await self._socket.send(message)

    async def receive(self) -> Message:
        """Receive the next message of this connection."""
        return await self._socket.receive()


@dataclass(frozen=True, slots=True)
class _Stop:
    target: ConnectionState  # DISCONNECTED or CLOSED
    reason: str


class _Stopped(Exception):
    """Internal: a stop request ended the current phase."""


class ManagedConnection:
    """A WebSocket connection kept alive by a supervisor. Made by :func:`open_connection`."""

    # Slots: thousands of idle connections per process; a dict per instance
    # was the largest single allocation of each (bench/idle_scale.py).
    __slots__ = (
        "_attempts",
        "_changed",
        "_delivery_wait",
        "_entered",
        "_events",
        "_failures",
        "_headers",
        "_heartbeat",
        "_interruptible",
        "_last_close_code",
        "_last_failure",
        "_last_recovery_at",
        "_machine",
        "_mailbox",
        "_monitor",
        "_next_retry_at",
        "_nursery",
        "_on_connect",
        "_on_failed",
        "_on_transition",
        "_open_stream",
        "_reset_reason",
        "_rtt",
        "_run_requested",
        "_seq",
        "_socket",
        "_ssl_context",
        "_stop",
        "_supervisor_scope",
        "_target",
        "_total_failures",
        "config",
        "name",
    )

    def __init__(
        self,
        url: str,
        *,
        config: ConnectionConfig,
        heartbeat: Heartbeat | None,
        headers: HeadersSource,
        on_connect: Callable[[Session], Awaitable[None]] | None,
        on_failed: Callable[[FailureInfo], Awaitable[bool]] | None,
        on_transition: Callable[[Transition], None] | None,
        name: str | None,
        ssl_context: ssl.SSLContext | None,
        open_stream: StreamOpener | None,
    ) -> None:
        shown = redact_url(url) if isinstance(url, str) else repr(url)
        self._target = parse_url(url, shown)
        if not isinstance(config, ConnectionConfig):
            raise TypeError(f"config must be a ConnectionConfig, got {type(config).__name__}")
        if heartbeat is not None and not isinstance(heartbeat, Heartbeat):
            raise TypeError(f"heartbeat must be a Heartbeat or None, got {heartbeat!r}")
        if ssl_context is not None:
            if not isinstance(ssl_context, ssl.SSLContext):
                raise TypeError(f"ssl_context must be an ssl.SSLContext, got {ssl_context!r}")
            if not self._target.secure:
                raise ValueError(f"ssl_context was given for a ws:// URL: {shown!r}")
        for hook_name, hook in (
            ("on_connect", on_connect),
            ("on_failed", on_failed),
            ("on_transition", on_transition),
            ("open_stream", open_stream),
        ):
            if hook is not None and not callable(hook):
                raise TypeError(f"{hook_name} must be callable or None, got {hook!r}")
        if headers is not None and not callable(headers):
            headers = check_headers(headers, "headers")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")

        self.name = name or f"conn-{next(_names)}-{secrets.token_hex(3)}"
        self.config = config
        self._heartbeat = heartbeat
        self._headers = headers
        self._on_connect = on_connect
        self._on_failed = on_failed
        self._on_transition = on_transition
        self._ssl_context = ssl_context
        self._open_stream = open_stream or open_tcp

        self._events = ConnectionEvents(self.name, url)
        self._machine = StateMachine(trio.current_time)
        self._changed = trio.Event()  # set and replaced at every transition and request
        # Set when the state is next entered; made only for states waited for.
        self._entered: dict[ConnectionState, trio.Event] = {}
        self._seq = 0

        self._stop: _Stop | None = None
        self._run_requested = True  # open_connection starts connecting at once
        self._reset_reason: str | None = None
        self._interruptible: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None  # open_connection's, for watchers
        self._delivery_wait: trio.CancelScope | None = None
        self._supervisor_scope = trio.CancelScope(shield=True)
        self._socket: Socket | None = None

        self._attempts = 0
        self._failures = 0
        self._total_failures = 0
        self._last_failure: FailureDetails | None = None
        self._last_close_code: int | None = None
        self._next_retry_at: float | None = None
        self._last_recovery_at: float | None = None
        self._monitor: HeartbeatMonitor | None = None
        self._rtt: float | None = None

        self._mailbox: Mailbox[Message] = Mailbox(config.receive_buffer)

    # -- public API ------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The current state."""
        return self._machine.state

    @property
    def url(self) -> str:
        """The URL, redacted as in the logs."""
        return self._events.url

    async def wait_for_state(self, state: ConnectionState) -> None:
        """Return once the connection is in ``state``: at once if it is already.

        A state entered after the call counts even if it was left again before
        this task ran.

        :raises trio.ClosedResourceError: CLOSED came first (and ``state`` is
            not CLOSED).
        """
        state = ConnectionState(state)
        if self.state is state:
            await trio.lowlevel.checkpoint()
            return
        target = self._entry(state)
        while not target.is_set():
            if self.state is S.CLOSED:  # terminal: state can no longer be entered
                raise trio.ClosedResourceError(f"connection {self.name} closed before {state}")
            await self._changed.wait()

    def _entry(self, state: ConnectionState) -> trio.Event:
        """The event set when ``state`` is next entered."""
        event = self._entered.get(state)
        if event is None:
            event = self._entered[state] = trio.Event()
        return event

    async def send(self, message: Message) -> None:
        """Send a message.

        :raises NotConnected: the connection is not CONNECTED, or it was lost
            during the send (the supervisor is reconnecting).
        :raises TypeError: ``message`` is not str or bytes.
        """
        if not isinstance(message, str | bytes):
            raise TypeError(f"message must be str or bytes, got {type(message).__name__}")
        socket = self._socket
        if self.state is not S.CONNECTED or socket is None:
            raise NotConnected(self.state)
        try:
            await socket.send(message)
        except trio.Cancelled:
            # Cut short, the write may have left part of a frame on the wire:
            # the peer would read what follows as garbage. End this session.
            socket.broken = True
            self._poke()
            raise
        except Exception as exc:
            # The session sees the same failure and handles it; the caller
            # only needs to know this message was not sent.
            if describe_failure(exc).kind is ErrorKind.UNEXPECTED_CLOSE:
                raise NotConnected(self.state) from exc
            raise

    async def receive(self) -> Message:
        """The next message, waiting through reconnects.

        :raises trio.EndOfChannel: the connection is CLOSED and every buffered
            message has been delivered.
        """
        return await self._mailbox.get()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def connect(self) -> None:
        """Start connecting again after :meth:`disconnect`. No-op unless DISCONNECTED.

        :raises trio.ClosedResourceError: the connection is CLOSED.
        """
        closing = self._stop is not None and self._stop.target is S.CLOSED
        if self.state is S.CLOSED or closing:
            raise trio.ClosedResourceError(f"connection {self.name} is closed")
        if self.state is S.DISCONNECTED:
            self._stop = None
            self._run_requested = True
            self._poke()

    async def disconnect(self, reason: str = "disconnect requested") -> None:
        """Close the socket (gracefully when connected) and go to DISCONNECTED.

        Returns once DISCONNECTED (or CLOSED) is reached. No-op when already
        DISCONNECTED or CLOSED.
        """
        if self.state is S.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        entered = self._entry(S.DISCONNECTED)
        self._request_stop(S.DISCONNECTED, reason)
        # Entered, not "is": on_transition may call connect() at once.
        while not (entered.is_set() or self._at_rest_disconnected()):
            await self._changed.wait()

    async def reset(self, reason: str = "reset requested") -> bool:
        """FAILED -> RECONNECTING with the failure count at 0, then retry at once.

        Manual intervention after the recovery hook gave up. Returns True once
        the connection has left FAILED, False (at once) if it was not FAILED.
        """
        if self.state is not S.FAILED:
            await trio.lowlevel.checkpoint()
            return False
        self._reset_reason = reason
        self._poke()
        while self.state is S.FAILED:
            await self._changed.wait()
        return True

    def statistics(self) -> ConnectionStatistics:
        """An immutable snapshot of the connection's figures."""
        machine = self._machine
        monitor = self._monitor
        failure = self._last_failure
        connected = machine.state is S.CONNECTED
        return ConnectionStatistics(
            state=machine.state,
            state_since=machine.entered_at,
            time_in_state=machine.time_in_state(),
            attempts=self._attempts,
            consecutive_failures=self._consecutive_failures(),
            total_failures=self._total_failures,
            transitions=MappingProxyType(machine.transition_counts()),
            time_by_state=MappingProxyType(machine.time_by_state()),
            last_error=None if failure is None else failure.summary,
            last_error_kind=None if failure is None else failure.kind,
            last_close_code=self._last_close_code,
            heartbeat_rtt=self._rtt if monitor is None or monitor.rtt is None else monitor.rtt,
            next_retry_at=self._next_retry_at,
            connected_since=machine.entered_at if connected else None,
        )

    def __repr__(self) -> str:
        return f"<ManagedConnection {self.name} {self.state} {self.url}>"

    # -- requests from other tasks ---------------------------------------------

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _consecutive_failures(self) -> int:
        """The failure count, read as of now: a connection CONNECTED for
        stable_after seconds has reset it (computed, so no timer task is needed)."""
        stable_after = self.config.stable_after
        if self.state is S.CONNECTED and self._machine.time_in_state() >= stable_after:
            return 0
        return self._failures

    def _at_rest_disconnected(self) -> bool:
        """CLOSED, or DISCONNECTED with no stop pending (disconnect() while there)."""
        return self.state is S.CLOSED or (self._stop is None and self.state is S.DISCONNECTED)

    def _request_stop(self, target: ConnectionState, reason: str) -> None:
        if self._stop is None or target is S.CLOSED:
            self._stop = _Stop(target, reason)
        self._run_requested = False
        if self._interruptible is not None:
            self._interruptible.cancel()
        if self._delivery_wait is not None:
            self._delivery_wait.cancel()
        self._poke()

    async def _close(self, reason: str) -> None:
        """Stop everything and wait for CLOSED (the caller bounds and shields this)."""
        self._request_stop(S.CLOSED, reason)
        while self.state is not S.CLOSED:
            await self._changed.wait()

    # -- transitions -----------------------------------------------------------

    def _transition(
        self,
        to_state: ConnectionState,
        reason: str,
        *,
        failure: FailureDetails | None = None,
        retry_in_s: float | None = None,
    ) -> Transition | None:
        if self.state is S.CONNECTED and to_state is not S.RECONNECTING:
            self._failures = self._consecutive_failures()  # a stable stay reset it
        record = self._machine.transition(to_state, reason)
        if record is None:
            return None
        self._seq += 1
        limit = self.config.stuck_after.get(to_state)
        if limit is not None and self._nursery is not None:
            self._nursery.start_soon(self._watch_stay, self._seq, to_state, limit)
        if to_state is S.CONNECTING:
            self._attempts += 1
        if to_state is not S.RECONNECTING:
            self._next_retry_at = None
        self._events.state_changed(
            record,
            consecutive_failures=self._failures,
            attempt=self._attempts,
            kind=failure.kind if failure is not None else None,
            error=failure.error if failure is not None else None,
            close_code=failure.close_code if failure is not None else None,
            status_code=failure.status_code if failure is not None else None,
            retry_in_s=retry_in_s,
        )
        entered = self._entered.pop(to_state, None)
        if entered is not None:
            entered.set()
        if to_state is S.CLOSED:
            self._mailbox.close()
        self._poke()
        if self._on_transition is not None:
            try:
                self._on_transition(record)
            except Exception as exc:
                self._events.hook_failed(hook="on_transition", error=exc)
        return record

    # -- the supervisor ----------------------------------------------------------

    async def _supervise(self) -> None:
        """The only task that changes state. Runs until CLOSED.

        Shielded: a cancellation from outside open_connection's block must not
        cut the graceful close short; open_connection cancels this scope itself
        once the close has had its bounded time.
        """
        try:
            with self._supervisor_scope:
                while True:
                    while not self._run_requested and self._stop is None:
                        await self._changed.wait()
                    if self._run_requested:
                        self._run_requested = False
                        self._failures = 0  # a fresh start, after disconnect() or at open
                        await self._run()
                    stop = self._stop
                    if stop is not None:
                        self._stop = None
                        self._transition(stop.target, stop.reason)
                        self._poke()  # also when already there: disconnect() waits for it
                        if stop.target is S.CLOSED:
                            return
        finally:
            # Cancelled (the close took longer than its bound) or crashed: the
            # connection still ends CLOSED, and receive() still ends.
            if self.state is not S.CLOSED:
                why = self._stop.reason if self._stop is not None else "supervisor ended"
                self._transition(S.CLOSED, why)

    async def _run(self) -> None:
        """Connect, hold sessions and retry until a stop is requested."""
        reason = "connect requested"
        while self._stop is None:
            self._transition(S.CONNECTING, reason)
            ended = await self._session()
            if self._stop is not None or ended is None:
                return
            try:
                reason = await self._after_failure(*ended)
            except _Stopped:
                return

    async def _after_failure(self, failure: FailureDetails, reason: str) -> str:
        """Count the failure, back off or go FAILED; return the reason to reconnect.

        :raises _Stopped: a stop request arrived meanwhile.
        """
        self._failures = self._consecutive_failures() + 1
        self._total_failures += 1
        self._last_failure = failure
        if failure.close_code is not None:
            self._last_close_code = failure.close_code
        config = self.config
        if config.retry.is_fatal(failure.kind) or self._failures >= config.max_connection_failures:
            self._transition(S.RECONNECTING, reason, failure=failure)
            why = (
                f"{failure.kind} is fatal"
                if config.retry.is_fatal(failure.kind)
                else f"{self._failures} consecutive failures"
            )
            self._transition(S.FAILED, why, failure=failure)
            return await self._failed()
        delay = config.retry.delay(failure.kind, self._failures, failure.retry_after)
        self._next_retry_at = trio.current_time() + delay
        self._transition(S.RECONNECTING, reason, failure=failure, retry_in_s=delay)
        await self._sleep_interruptibly(delay)
        return f"retry after {delay:g} s"

    async def _sleep_interruptibly(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            while self._stop is None:
                await self._changed.wait()
        if self._stop is not None:
            raise _Stopped

    async def _failed(self) -> str:
        """Stay FAILED until the hook refreshes credentials or reset(); return the reason.

        A reset() also cuts the hook's cooldown short, and one made while the
        hook runs is used up when FAILED is left, never kept for the next time.

        :raises _Stopped: a stop request arrived meanwhile.
        """
        if self._on_failed is not None:
            if self._last_recovery_at is not None:
                await self._wait_in_failed(self._last_recovery_at + self.config.recovery_cooldown)
            if self._reset_reason is None and await self._call_on_failed():
                return self._leave_failed("credentials refreshed by on_failed")
        await self._wait_in_failed(math.inf)
        return self._leave_failed(f"reset: {self._reset_reason}")

    async def _wait_in_failed(self, deadline: float) -> None:
        """Wait until ``deadline`` or a reset(). :raises _Stopped: on a stop request."""
        with trio.move_on_at(deadline):
            while self._reset_reason is None and self._stop is None:
                await self._changed.wait()
        if self._stop is not None:
            raise _Stopped

    def _leave_failed(self, reason: str) -> str:
        self._reset_reason = None
        self._failures = 0
        self._transition(S.RECONNECTING, reason)
        return reason

    async def _call_on_failed(self) -> bool:
        assert self._on_failed is not None
        failure = self._last_failure
        info = FailureInfo(
            consecutive_failures=self._failures,
            kind=failure.kind if failure is not None else ErrorKind.OTHER,
            error=failure.error if failure is not None else None,
        )
        started = trio.current_time()
        self._last_recovery_at = started
        error: BaseException | None = None
        detail: str | None = None
        result: object = False
        with trio.CancelScope() as scope:
            self._interruptible = scope
            if self._stop is not None:
                scope.cancel()
            try:
                with trio.fail_after(self.config.connect_timeout):
                    result = await self._on_failed(info)
            except trio.TooSlowError as exc:
                error, detail = exc, f"on_failed took over {self.config.connect_timeout:g} s"
            except Exception as exc:
                error = exc
            finally:
                self._interruptible = None
        if scope.cancelled_caught:
            raise _Stopped
        if error is None and not isinstance(result, bool):
            detail = f"on_failed returned {type(result).__name__}, not bool"
            result = False
        outcome = "success" if result is True and error is None else "failure"
        self._events.recovery(
            outcome=outcome,
            duration_s=trio.current_time() - started,
            consecutive_failures=self._failures,
            error=error,
            detail=detail,
        )
        return outcome == "success"

    # -- one session -------------------------------------------------------------

    async def _session(self) -> tuple[FailureDetails, str] | None:
        """One attempt and, if it succeeds, the life of that connection.

        Returns the failure that ended it with the reason to log, or None when
        a stop request ended it.
        """
        socket = Socket(
            self._target,
            max_message_size=self.config.max_message_size,
            queue_size=self.config.receive_buffer,
            on_closed=self._poke,
        )
        phase = "during the handshake"
        try:
            async with trio.open_nursery() as nursery:
                with trio.CancelScope() as attempt_scope:
                    self._interruptible = attempt_scope
                    if self._stop is not None:
                        attempt_scope.cancel()
                    with trio.fail_after(self.config.connect_timeout):
                        headers = await self._attempt_headers()
                        await socket.open(
                            nursery,
                            headers=headers,
                            ssl_context=self._ssl_context,
                            open_stream=self._open_stream,
                        )
                        if self._on_connect is not None:
                            phase = "in on_connect"
                            await self._on_connect(Session(socket))
                self._interruptible = None
                stopped = attempt_scope.cancelled_caught
                del attempt_scope, headers  # not kept alive for the connection's life
                if stopped:
                    nursery.cancel_scope.cancel()
                    return None
                phase = "while connected"
                await self._connected(socket, nursery)
                nursery.cancel_scope.cancel()
            return None
        except BaseException as exc:
            cancelled, errors = _split_cancelled(exc)
            if errors is not None and not isinstance(errors, Exception):
                raise  # KeyboardInterrupt and the like are not connection failures
            if self._stop is not None:
                # Closing: what a socket being torn down raises is expected. A
                # cancellation (the close outlived its bound) goes on up.
                if cancelled is not None:
                    raise cancelled from None
                return None
            if cancelled is not None or errors is None:
                raise
            failure = describe_failure(errors)
            return failure, failure.reason(phase)
        finally:
            self._interruptible = None
            self._socket = None
            if self._monitor is not None:
                if self._monitor.rtt is not None:
                    self._rtt = self._monitor.rtt
                self._monitor = None
            await socket.abort()

    async def _attempt_headers(self) -> Headers:
        source = self._headers
        if source is None:
            return []
        headers = check_headers(await source(), "headers()") if callable(source) else source
        self._events.add_secrets(value for _, value in headers)
        return headers

    async def _connected(self, socket: Socket, nursery: trio.Nursery) -> None:
        """Hold a CONNECTED session until it fails or a stop is requested.

        Messages are delivered by trio-websocket's reader task itself
        (:meth:`_deliver`), which lives in the session's ``nursery`` with the
        heartbeat. On a stop the heartbeat is cancelled first, so that the close
        handshake has a live reader to read the peer's answer.
        """
        config = self.config
        if config.stable_after == 0:
            self._failures = 0
        self._socket = socket
        self._transition(S.CONNECTED, "handshake complete")
        heartbeat_scope = None
        if self._heartbeat is not None:
            self._monitor = HeartbeatMonitor(
                self._heartbeat,
                interval=config.heartbeat_interval,
                timeout=config.heartbeat_timeout,
                max_misses=config.max_heartbeat_failures,
                on_miss=self._heartbeat_missed,
            )
            heartbeat_scope = await nursery.start(
                self._run_heartbeat, self._monitor, socket, nursery
            )
        await socket.deliver_to(self._deliver)
        while self._stop is None and not socket.broken and not socket.closed:
            await self._changed.wait()
        if heartbeat_scope is not None:
            heartbeat_scope.cancel()
        if socket.broken:
            raise SendInterrupted("a send was cancelled mid-message; the socket was dropped")
        if self._stop is None:
            socket.raise_closed()
        with trio.move_on_after(config.close_timeout, shield=True):
            await socket.close_gracefully()

    @staticmethod
    async def _run_heartbeat(
        monitor: HeartbeatMonitor,
        socket: Socket,
        nursery: trio.Nursery,
        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The session's heartbeat, under a scope the session can cancel on a stop.

        Beats are sent from tasks in the session's ``nursery``: one still
        writing when the close starts finishes its frame first (trio-websocket
        serialises writes), and the session's end cancels them.
        """
        with trio.CancelScope() as scope:
            task_status.started(scope)
            del task_status  # it holds start()'s scaffolding: not for the session's life
            await monitor.run(socket, nursery)

    def _heartbeat_missed(self, misses: int) -> None:
        config = self.config
        self._events.heartbeat_missed(
            misses=misses,
            max_misses=config.max_heartbeat_failures,
            timeout=config.heartbeat_timeout,
        )

    async def _deliver(self, message: Message) -> None:
        """Put one message in the receive buffer; runs in trio-websocket's reader task.

        Heartbeat replies are consumed here. When the buffer is full the
        reader waits (backpressure, no loss) and the heartbeat counts no
        misses meanwhile; a stop request ends the wait, so that the reader can
        read the close handshake (the message is then dropped, as the session
        ends).
        """
        monitor = self._monitor
        if monitor is not None:
            monitor.message_arrived()
            heartbeat = self._heartbeat
            if (
                heartbeat is not None
                and heartbeat.replies_are_messages
                and self._is_heartbeat_reply(heartbeat, message)
            ):
                monitor.reply_arrived()
                return
        try:
            self._mailbox.put_nowait(message)
            return
        except trio.WouldBlock:
            pass
        if monitor is not None:
            monitor.reader_blocked(True)
        try:
            with trio.CancelScope() as scope:
                self._delivery_wait = scope
                if self._stop is not None:
                    scope.cancel()
                await self._mailbox.put(message)
        finally:
            self._delivery_wait = None
            if monitor is not None:
                monitor.reader_blocked(False)

    def _is_heartbeat_reply(self, heartbeat: Heartbeat, message: Message) -> bool:
        try:
            return heartbeat.is_response(message)
        except Exception as exc:
            self._events.hook_failed(hook="heartbeat.is_response", error=exc)
            return False

    async def _watch_stay(self, seq: int, state: ConnectionState, limit: float) -> None:
        """Emit connection.state_stuck if the stay that transition ``seq`` began
        lasts longer than ``limit``; started for each entry into a watched state."""
        with trio.move_on_at(self._machine.entered_at + limit):
            while self._seq == seq:
                await self._changed.wait()
            return
        self._events.state_stuck(state=state, seconds=self._machine.time_in_state(), limit=limit)


def _split_cancelled(exc: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """``(the trio.Cancelled part, the rest)`` of an exception or exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)
    if isinstance(exc, trio.Cancelled):
        return exc, None
    return None, exc


@asynccontextmanager
async def open_connection(
    url: str,
    *,
    config: ConnectionConfig | None = None,
    heartbeat: Heartbeat | None = PingHeartbeat(),  # noqa: B008  # stateless, safe to share
    headers: HeadersSource = None,
    on_connect: Callable[[Session], Awaitable[None]] | None = None,
    on_failed: Callable[[FailureInfo], Awaitable[bool]] | None = None,
    on_transition: Callable[[Transition], None] | None = None,
    name: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    open_stream: StreamOpener | None = None,
) -> AsyncIterator[ManagedConnection]:
    """Open a managed connection to ``url`` and keep it alive for the block.

    Connecting starts at once; use :meth:`ManagedConnection.wait_for_state`
    to wait for CONNECTED. Leaving the block moves to CLOSED from any state,
    sends a close frame if connected (shielded, bounded by ``close_timeout``)
    and ends every task. An exception raised in the block comes out as itself.

    :param open_stream: ``async (host, port) -> trio.abc.Stream`` used instead
        of TCP, e.g. ``FaultServer.open_stream`` for exact virtual-time tests.
    :raises ValueError: a bad URL or argument value (the message says which).
    :raises TypeError: an argument of the wrong type.
    """
    conn = ManagedConnection(
        url,
        config=config if config is not None else _DEFAULT_CONFIG,
        heartbeat=heartbeat,
        headers=headers,
        on_connect=on_connect,
        on_failed=on_failed,
        on_transition=on_transition,
        name=name,
        ssl_context=ssl_context,
        open_stream=open_stream,
    )
    user_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            conn._nursery = nursery
            nursery.start_soon(conn._supervise)
            try:
                yield conn
            except BaseException as exc:
                user_error = exc
                raise
            finally:
                # Bounded: the graceful close is bounded by close_timeout; the
                # margin covers the tasks' own cleanup.
                with trio.move_on_after(conn.config.close_timeout + 1.0, shield=True):
                    await conn._close("closed by the application")
                conn._supervisor_scope.cancel()  # past its bound: end it anyway (CLOSED)
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if user_error is not None and all(
            leaf is user_error or isinstance(leaf, trio.Cancelled) for leaf in leaves(group)
        ):
            _reraise(user_error)
        raise


def _reraise(error: BaseException) -> NoReturn:
    """Raise ``error`` keeping its own context, not the group it was found in."""
    context = error.__context__
    try:
        raise error
    finally:
        error.__context__ = context
        del error, context
