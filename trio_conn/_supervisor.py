"""The supervisor: carries out what the lifecycle decides, and publishes its records.

The only task that talks to the :class:`~trio_conn._lifecycle.Lifecycle`. Its
loop, in one screen::

    while True:
        step = lifecycle.next_action(now)   # carries out requests, due timers
        publish(step.records)               # log events, on_transition, waiters
        Connect  -> run_session(...)        # CONNECTED is published from inside,
                    lifecycle.session_ended  #   by opened(); the end is returned
        Wait     -> sleep until the deadline or the next request
        CallHook -> on_failed(info), bounded by connect_timeout;
                    lifecycle.hook_answered
        Finish   -> return                  # CLOSED

It runs in ``open_connection``'s nursery, beside the stuck-state watchdogs it
starts (one per stay in a watched state)::

    open_connection's nursery
    ├── supervisor          shielded; ends at CLOSED
    │   └── session nursery (trio_conn/_session.py), one at a time
    └── stuck watchdog      one per CONNECTING/RECONNECTING stay, ends with it

Observers never harm the connection: the logging path reports its own errors
once per connection (trio_conn/_events.py), an ``on_transition`` that
raises is logged as ``connection.hook_failed``, and so is (once per
connection) a metrics backend that raises (trio_conn/_meters.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from ._admission import Admission
from ._control import Control
from ._events import ConnectionEvents
from ._exception_groups import split_cancelled
from ._lifecycle import Lifecycle
from ._mailbox import Mailbox
from ._meters import GuardedMeter, Metrics, Traffic
from ._records import (
    CallHook,
    Connect,
    ConnectionStatistics,
    FailureInfo,
    Finish,
    Record,
    TransitionRecord,
    Wait,
)
from ._session import run_session
from ._session_spec import SessionSpec
from ._state import ConnectionState
from ._transport import Data

S = ConnectionState
OnFailed = Callable[[FailureInfo], Awaitable[bool]]
OnTransition = Callable[[TransitionRecord], None]


class Supervisor:
    """Runs one connection's life; other tasks reach it through its ``request_*`` methods."""

    __slots__ = (
        "_entered",
        "_events",
        "_hook_running",
        "_life",
        "_meter",
        "_metrics",
        "_nursery",
        "_on_failed",
        "_on_transition",
        "_seq",
        "_spec",
        "_stuck",
        "control",
        "mailbox",
        "scope",
    )

    def __init__(
        self,
        spec: SessionSpec,
        events: ConnectionEvents,
        *,
        on_failed: OnFailed | None,
        on_transition: OnTransition | None,
        admission: Admission | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._spec = spec
        self._metrics = metrics
        self._meter: GuardedMeter | None = None  # attached while run() runs
        self._events = events
        self._on_failed = on_failed
        self._on_transition = on_transition
        self._life = Lifecycle(
            spec.config,
            now=trio.current_time(),
            has_hook=on_failed is not None,
            admission=admission,
        )
        self._nursery: trio.Nursery | None = None
        # Set when a state is next entered; made only for states waited for.
        self._entered: dict[ConnectionState, trio.Event] = {}
        self._seq = 0  # transitions published: tells one stay from the next
        # The watched stay the supervisor waits out: (state, limit, deadline).
        self._stuck: tuple[ConnectionState, float, float] | None = None
        self._hook_running = False
        #: Shared with the sessions: stop flag, wake-ups, the live connection.
        self.control = Control()
        #: The receive buffer, across sessions; closed at CLOSED.
        self.mailbox: Mailbox[Data] = Mailbox(spec.config.receive_buffer)
        #: Shielded: an outside cancellation must not cut the graceful close
        #: short; open_connection cancels it once the close had its bound.
        self.scope = trio.CancelScope(shield=True)

    # -- for the public face -----------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._life.state

    @property
    def spec(self) -> SessionSpec:
        """What every attempt needs (fixed for the connection's life)."""
        return self._spec

    @property
    def url(self) -> str:
        """The URL as the events show it (redacted)."""
        return self._events.url

    @property
    def events(self) -> ConnectionEvents:
        return self._events

    @property
    def closing(self) -> bool:
        """CLOSED, or a close is pending."""
        return self._life.closing

    @property
    def stop_pending(self) -> bool:
        """A disconnect or close was requested and not yet carried out."""
        return self._life.stop_pending

    @property
    def hook_running(self) -> bool:
        """``on_failed`` is being awaited."""
        return self._hook_running

    @property
    def at_rest_disconnected(self) -> bool:
        """DISCONNECTED with no stop pending, or CLOSED."""
        life = self._life
        return life.state is S.CLOSED or (life.state is S.DISCONNECTED and not life.stop_pending)

    def entry(self, state: ConnectionState) -> trio.Event:
        """The event set when ``state`` is next entered."""
        event = self._entered.get(state)
        if event is None:
            event = self._entered[state] = trio.Event()
        return event

    def request_connect(self) -> None:
        if self._life.request_connect():
            self.control.notify()

    def request_stop(self, target: ConnectionState, reason: str) -> None:
        if self._life.request_stop(target, reason):
            self.control.stop()

    def request_reset(self, reason: str) -> bool:
        accepted = self._life.request_reset(reason)
        if accepted:
            self.control.notify()
        return accepted

    def totals(self) -> tuple[int, int]:
        """``(attempts, total_failures)``: what a group sums, cheaply."""
        return self._life.totals()

    def statistics(self) -> ConnectionStatistics:
        return self._life.statistics(
            trio.current_time(), heartbeat_rtt=self.control.heartbeat_rtt()
        )

    # -- the loop ----------------------------------------------------------------

    async def run(self, nursery: trio.Nursery) -> None:
        """Carry out the lifecycle's actions until CLOSED; watchdogs go in ``nursery``."""
        self._nursery = nursery
        life, control = self._life, self.control
        if self._metrics is not None:
            control.traffic = traffic = Traffic()
            meter = self._meter = GuardedMeter(
                self._metrics, self._events.conn_id, traffic, self._events
            )
            control.on_rtt = meter.heartbeat_rtt
            control.on_miss = meter.heartbeat_missed
        try:
            with self.scope:
                while True:
                    step = life.next_action(trio.current_time())
                    if control.stopping and not life.stop_pending:
                        control.stopping = False
                        control.notify()  # disconnect() waits for its stop to be carried out
                    self._publish(step.records)
                    action = step.action
                    if isinstance(action, Connect):
                        end = await run_session(
                            self._spec, control, self.mailbox, self._events, self._opened
                        )
                        now = trio.current_time()
                        self._publish(life.session_ended(now, end.failure, end.phase))
                    elif isinstance(action, Wait):
                        if step.records:
                            # on_transition may have called connect(): ask again
                            # rather than sleep through it.
                            continue
                        await self._wait(action.until)
                    elif isinstance(action, CallHook):
                        await self._call_hook(action.info)
                    elif isinstance(action, Finish):
                        return
        finally:
            # Cancelled (the close outlived its bound) or crashed: the
            # connection still ends CLOSED, and receive() still ends.
            if life.state is not S.CLOSED:
                self._publish(life.close_now(trio.current_time(), "supervisor ended"))
            if self._meter is not None:
                control.on_rtt = control.on_miss = None
                self._meter.closed()
                self._meter = None

    def _opened(self) -> None:
        self._publish(self._life.connected(trio.current_time()))

    async def _call_hook(self, info: FailureInfo) -> None:
        """Call ``on_failed``, bounded by ``connect_timeout``; a stop interrupts it."""
        assert self._on_failed is not None
        timeout = self._spec.config.connect_timeout
        started = trio.current_time()
        error: BaseException | None = None
        detail: str | None = None
        result: object = False
        self._hook_running = True
        with self.control.interruptible() as scope:
            try:
                with trio.fail_after(timeout):
                    result = await self._on_failed(info)
            except trio.TooSlowError as exc:
                error, detail = exc, f"on_failed took over {timeout:g} s"
            except BaseException as exc:
                # A hook with a nursery of its own raises groups; a stop's
                # cancellation inside one must still reach its scope.
                cancelled, errors = split_cancelled(exc)
                if errors is not None and not isinstance(errors, Exception):
                    raise  # KeyboardInterrupt and the like are not the hook's answer
                if cancelled is not None:
                    if errors is not None:
                        self._events.hook_failed(hook="on_failed", error=errors)
                    raise cancelled from None
                error = errors
            finally:
                self._hook_running = False
        if scope.cancelled_caught:
            return  # a stop: the next action carries it out
        if error is None and not isinstance(result, bool):
            detail = f"on_failed returned {type(result).__name__}, not bool"
        refreshed = error is None and result is True
        self._publish(
            self._life.hook_answered(
                trio.current_time(),
                started_at=started,
                refreshed=refreshed,
                error=error,
                detail=detail,
            )
        )

    # -- publishing ----------------------------------------------------------------

    def _publish(self, records: tuple[Record, ...]) -> None:
        """Hand each record to every observer, in order. Nothing here can raise."""
        meter = self._meter
        for record in records:
            if meter is not None:
                meter.record(record)
            if not isinstance(record, TransitionRecord):
                self._events.recovery(record)
                continue
            self._seq += 1
            to_state = record.to_state
            self._events.state_changed(record)
            entered = self._entered.pop(to_state, None)
            if entered is not None:
                entered.set()
            if to_state is S.CLOSED:
                self.mailbox.close()
            self._watch(record)
            self.control.notify()
            if self._on_transition is not None:
                try:
                    self._on_transition(record)
                except Exception as exc:
                    self._events.hook_failed(hook="on_transition", error=exc)

    def _watch(self, record: TransitionRecord) -> None:
        """Arm the stuck-state watch for the stay ``record`` begins, if watched.

        A stay the supervisor waits out (DISCONNECTED, RECONNECTING, FAILED) is
        watched by its own wait; an attempt ends by ``connect_timeout``, so a
        watch task is only needed for a shorter limit, or for CONNECTED.
        """
        self._stuck = None
        limit = self._spec.config.stuck_after.get(record.to_state)
        if limit is None:
            return
        if record.retry_in is not None:
            limit += record.retry_in  # a planned wait is not a stay held too long
        state = record.to_state
        if state is S.CONNECTED or (
            state is S.CONNECTING and limit < self._spec.config.connect_timeout
        ):
            if self._nursery is not None:
                self._nursery.start_soon(self._watch_stay, self._seq, state, limit)
        elif state is not S.CONNECTING:
            self._stuck = (state, limit, record.at + limit)

    async def _wait(self, until: float) -> None:
        """Sleep until ``until`` or a request; report the stay as stuck if it outlives its limit."""
        stuck = self._stuck
        if stuck is not None:
            until = min(until, stuck[2])
        with trio.move_on_at(until):
            await self.control.wait_changed()
        # The same stay (a transition replaces self._stuck) past its deadline:
        if stuck is not None and self._stuck is stuck and trio.current_time() >= stuck[2]:
            self._stuck = None  # once per stay
            state, limit, _ = stuck
            seconds = self._life.machine.time_in_state(trio.current_time())
            self._events.state_stuck(state=state, seconds=seconds, limit=limit)

    async def _watch_stay(self, seq: int, state: ConnectionState, limit: float) -> None:
        """Emit connection.state_stuck if the stay that transition ``seq`` began
        lasts longer than ``limit`` seconds."""
        machine = self._life.machine
        with trio.move_on_at(machine.entered_at + limit):
            while self._seq == seq:
                await self.control.wait_changed()
            return
        seconds = machine.time_in_state(trio.current_time())
        self._events.state_stuck(state=state, seconds=seconds, limit=limit)
