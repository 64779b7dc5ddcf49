"""The life of one managed connection, sans-IO: every decision, no I/O.

The driver (``trio_conn/_supervisor.py``) reports what happened, with the
clock reading; :class:`Lifecycle` answers with the records to publish and,
from :meth:`Lifecycle.next_action`, what to do next. Nothing here imports
Trio or awaits; the tests drive it with a plain float clock.

Rules of the house:

- Every state change goes through :meth:`StateMachine.transition`, here and
  nowhere else; every record an observer sees is built here from its result.
- ``n``, the failure count, counts consecutive failures of any kind. It
  resets to 0 when CONNECTED has lasted ``stable_after`` seconds (so a
  connection that opens and drops again reaches FAILED), on ``connect()``,
  on ``reset()``, when ``on_failed`` refreshes the credentials, and when a
  probe connects (the outage is over: a drop soon after backs off as usual
  instead of costing another ``failed_retry_interval``). It never exceeds
  ``max_connection_failures``: failures while FAILED still count in
  ``total_failures``.
- A session ends by a failure or by a stop. A failure while a stop is pending
  is part of the stop and is not counted.
- After a failure: a fatal kind, the failure that reaches
  ``max_connection_failures``, or any failed probe goes CONNECTING/CONNECTED
  -> RECONNECTING -> FAILED at once; any other sleeps
  ``RetryPolicy.delay(kind, n, retry_after)`` in RECONNECTING, then
  CONNECTING.
- In FAILED: ``on_failed`` is called at most once per entry, and never less
  than ``recovery_cooldown`` seconds after its previous call. True resets the
  count and starts an attempt at once. Otherwise, ``failed_retry_interval``
  (spread upwards by jitter, at least the last ``Retry-After``) after the
  entry, one probe: FAILED -> RECONNECTING -> CONNECTING. With
  ``failed_retry_interval=None`` only ``reset()`` or the hook leave FAILED.
- Requests from other tasks wait until the driver asks for the next action.
  Which wins: close > disconnect > (reset, hook refresh) > connect. A stop
  clears every other request; a reset pending while the hook runs is used
  up when FAILED is left, never kept for a later stay.
- With an :class:`~trio_conn._admission.Admission` (a group's), every
  attempt first takes a slot from it, waiting in the state it starts from
  (DISCONNECTED with a connect requested, or RECONNECTING); the CONNECTING
  record's reason then says how long admission held it. A stop gives up the
  wait.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ._admission import Admission
from ._config import ConnectionConfig
from ._policy import ErrorKind, FailureDetails
from ._records import (
    CallHook,
    Connect,
    ConnectionStatistics,
    FailureInfo,
    Finish,
    FrozenMap,
    Record,
    RecoveryRecord,
    Step,
    TransitionRecord,
    Wait,
)
from ._state import ConnectionState, StateMachine

S = ConnectionState


@dataclass(frozen=True, slots=True)
class _Stop:
    target: ConnectionState  # DISCONNECTED or CLOSED
    reason: str


_CONNECT = Connect()
_FINISH = Finish()
_FOREVER = Wait(math.inf)


class Lifecycle:
    """Owns a connection's state machine, counters, FAILED rules and pending requests.

    :param config: the connection's :class:`ConnectionConfig`.
    :param now: the clock reading at creation (the driver's clock, seconds).
    :param has_hook: whether an ``on_failed`` hook exists.
    :param admission: the group's admission control, shared by its members;
        None (default): attempts start when due.

    Every method that takes ``now`` refuses a reading earlier than the last
    one (``ValueError``): the clock must be monotonic.
    """

    __slots__ = (
        "_admission",
        "_admitted_at",
        "_admitting_since",
        "_attempts",
        "_config",
        "_connect_requested",
        "_failures",
        "_has_hook",
        "_hook_due",
        "_last_failure",
        "_last_hook_at",
        "_leave_failed",
        "_machine",
        "_now",
        "_probe_at",
        "_probing",
        "_retry_at",
        "_retry_reason",
        "_stop",
        "_total_failures",
    )

    def __init__(
        self,
        config: ConnectionConfig,
        *,
        now: float,
        has_hook: bool,
        admission: Admission | None = None,
    ) -> None:
        self._config = config
        self._admission = admission
        # The slot reserved for the attempt now due, and since when it waits.
        self._admitted_at: float | None = None
        self._admitting_since = 0.0
        self._has_hook = has_hook
        self._now = now
        self._machine = StateMachine(self._clock)
        self._attempts = 0
        self._failures = 0
        self._total_failures = 0
        self._last_failure: FailureDetails | None = None
        # Requests, waiting for the next action.
        self._stop: _Stop | None = None
        self._connect_requested = True  # open_connection connects at once
        self._leave_failed: str | None = None  # reason given by reset() or the hook
        # RECONNECTING: when and why the next attempt starts.
        self._retry_at = math.inf
        self._retry_reason = ""
        # FAILED: the hook call owed to this stay, the probe, the hook's last call.
        self._hook_due: float | None = None
        self._probe_at: float | None = None
        self._probing = False
        self._last_hook_at: float | None = None

    def _clock(self) -> float:
        return self._now

    def _advance(self, now: float) -> None:
        if not (math.isfinite(now) and now >= self._now):
            raise ValueError(
                f"clock must be monotonic and finite: read {now!r} after {self._now!r}"
            )
        self._now = now

    # -- queries ---------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The current state."""
        return self._machine.state

    @property
    def machine(self) -> StateMachine:
        """The state machine (read it; only the lifecycle moves it)."""
        return self._machine

    @property
    def closing(self) -> bool:
        """CLOSED, or a close is pending: nothing can start again."""
        return self.state is S.CLOSED or (self._stop is not None and self._stop.target is S.CLOSED)

    @property
    def stop_pending(self) -> bool:
        """A disconnect or close was requested and not yet carried out."""
        return self._stop is not None

    @property
    def last_failure(self) -> FailureDetails | None:
        """The last failure counted (its kind after ``close_codes``)."""
        return self._last_failure

    def consecutive_failures(self, now: float) -> int:
        """The failure count as of ``now``: 0 once CONNECTED has lasted ``stable_after``."""
        return 0 if self._stable(now) else self._failures

    def _stable(self, now: float) -> bool:
        machine = self._machine
        return (
            machine.state is S.CONNECTED and now - machine.entered_at >= self._config.stable_after
        )

    def next_retry_at(self) -> float | None:
        """Clock reading of the next attempt: the backoff's end in RECONNECTING (None
        during an attempt's immediate start), the next probe in FAILED."""
        state = self.state
        if state is S.RECONNECTING and math.isfinite(self._retry_at):
            admitted = self._admitted_at
            return self._retry_at if admitted is None else max(admitted, self._retry_at)
        if state is S.FAILED:
            return self._probe_at
        return None

    def totals(self) -> tuple[int, int]:
        """``(attempts, total_failures)``, without a whole snapshot (a group sums them)."""
        return self._attempts, self._total_failures

    def statistics(self, now: float, *, heartbeat_rtt: float | None) -> ConnectionStatistics:
        """A snapshot as of ``now`` (which must not precede the last reading)."""
        machine = self._machine
        failure = self._last_failure
        return ConnectionStatistics(
            state=machine.state,
            state_since=machine.entered_at,
            time_in_state=machine.time_in_state(now),
            attempts=self._attempts,
            consecutive_failures=self.consecutive_failures(now),
            total_failures=self._total_failures,
            transitions=FrozenMap(machine.transition_counts()),
            time_by_state=FrozenMap(machine.time_by_state(now)),
            last_error=None if failure is None else failure.summary,
            last_error_kind=None if failure is None else failure.kind,
            last_close_code=None if failure is None else failure.close_code,
            heartbeat_rtt=heartbeat_rtt,
            next_retry_at=self.next_retry_at(),
            connected_since=machine.entered_at if machine.state is S.CONNECTED else None,
        )

    # -- requests (from any task; carried out at the next action) -------------

    def request_connect(self) -> bool:
        """``connect()``: start again from DISCONNECTED; overtakes a pending disconnect.

        Returns whether it was accepted (only in DISCONNECTED, never once closing).
        """
        if self.closing or self.state is not S.DISCONNECTED:
            return False
        self._stop = None
        self._connect_requested = True
        return True

    def request_stop(self, target: ConnectionState, reason: str) -> bool:
        """``disconnect()`` (target DISCONNECTED) or close (CLOSED).

        A close overrides a pending disconnect; otherwise the first request's
        reason is kept. Returns False once CLOSED, else True: the driver must
        interrupt what runs (an attempt, a wait, the hook).
        """
        if target not in (S.DISCONNECTED, S.CLOSED):
            raise ValueError(f"a stop goes to disconnected or closed, not {target}")
        if self.state is S.CLOSED:
            return False
        if self._stop is None or (target is S.CLOSED and self._stop.target is not S.CLOSED):
            self._stop = _Stop(target, reason)
        self._connect_requested = False
        return True

    def request_reset(self, reason: str) -> bool:
        """``reset()``: leave FAILED with the count at 0 and attempt at once.

        Returns False (nothing changes) unless FAILED with no stop pending.
        """
        if self.state is not S.FAILED or self._stop is not None:
            return False
        if self._leave_failed is None:
            self._leave_failed = f"reset: {reason}"
        return True

    # -- what the driver reports ----------------------------------------------

    def next_action(self, now: float) -> Step:
        """Carry out pending requests and due timers; say what to do next.

        Called when the driver is idle: at the start, after a session ended,
        after a hook answered, and when a :class:`Wait` is over or interrupted.

        :raises RuntimeError: called while an attempt runs (CONNECTING or
            CONNECTED with no stop pending).
        """
        self._advance(now)
        records: list[Record] = []
        stop = self._stop
        if stop is not None:
            self._stop = None
            self._leave_failed = None
            self._probing = False
            self._retry_at = math.inf
            self._hook_due = self._probe_at = None
            if self._admitted_at is not None and self._admission is not None:
                self._admission.release(self._admitted_at, now)  # for the next member
            self._admitted_at = None
            if self._stable(now):
                self._failures = 0
            self._move(records, stop.target, stop.reason)
        state = self.state
        if state is S.CLOSED:
            return Step(tuple(records), _FINISH)
        if state is S.DISCONNECTED:
            if not self._connect_requested:
                return Step(tuple(records), _FOREVER)
            held = self._admit(now)
            if held is not None:
                return Step(tuple(records), held)
            self._connect_requested = False
            self._failures = 0  # a fresh start
            return self._connect(records, "connect requested")
        if state is S.RECONNECTING:
            return self._retry_when_due(records, now)
        if state is S.FAILED:
            return self._in_failed(records, now)
        raise RuntimeError(f"next_action while {state}: report session_ended first")

    def _in_failed(self, records: list[Record], now: float) -> Step:
        reason = self._leave_failed
        if reason is not None:
            self._leave_failed = None
            self._failures = 0
            self._hook_due = self._probe_at = None
            return self._retry_now(records, now, reason)
        hook_due, probe_at = self._hook_due, self._probe_at
        if hook_due is not None and (probe_at is None or hook_due <= probe_at):
            if now < hook_due:
                return Step(tuple(records), Wait(hook_due))
            self._hook_due = None
            self._last_hook_at = now
            return Step(tuple(records), CallHook(self._failure_info()))
        if probe_at is None:
            return Step(tuple(records), _FOREVER)
        if now < probe_at:
            return Step(tuple(records), Wait(probe_at))
        self._hook_due = self._probe_at = None  # a hook not yet due is not owed any more
        self._probing = True
        reason = f"probe after {round(self._machine.time_in_state(now), 1):g} s in failed"
        return self._retry_now(records, now, reason)

    def _retry_now(self, records: list[Record], now: float, reason: str) -> Step:
        """FAILED -> RECONNECTING, and an attempt as soon as admission allows."""
        self._move(records, S.RECONNECTING, reason)
        self._retry_at, self._retry_reason = now, reason
        return self._retry_when_due(records, now)

    def _retry_when_due(self, records: list[Record], now: float) -> Step:
        if now < self._retry_at:
            return Step(tuple(records), Wait(self._retry_at))
        held = self._admit(now)
        if held is not None:
            return Step(tuple(records), held)
        return self._connect(records, self._retry_reason)

    def _admit(self, now: float) -> Wait | None:
        """Take an admission slot for the attempt now due: None once it may start."""
        admission = self._admission
        if admission is None:
            return None
        slot = self._admitted_at
        if slot is None:
            slot = self._admitted_at = admission.reserve(now)
            self._admitting_since = now
        if now < slot:
            return Wait(slot)
        return None

    def connected(self, now: float) -> tuple[Record, ...]:
        """The handshake and ``on_connect`` succeeded: CONNECTING -> CONNECTED."""
        self._advance(now)
        if self._config.stable_after == 0 or self._probing:
            self._failures = 0
        self._probing = False
        records: list[Record] = []
        self._move(records, S.CONNECTED, "handshake complete")
        return tuple(records)

    def session_ended(
        self, now: float, failure: FailureDetails | None, phase: str
    ) -> tuple[Record, ...]:
        """The attempt or session ended, by ``failure`` or (None) by a stop.

        :param phase: where it ended, for the reason ("during the handshake",
            "in on_connect", "while connected").
        :raises ValueError: ``failure`` is None and no stop is pending.
        """
        self._advance(now)
        if self._stop is not None:
            return ()
        if failure is None:
            raise ValueError("a session ends by a failure or by a stop; neither was reported")
        config = self._config
        failure = config.retry.resolve(failure)
        if self._stable(now):
            self._failures = 0
        self._failures = min(self._failures + 1, config.max_connection_failures)
        self._total_failures += 1
        self._last_failure = failure
        reason = failure.reason(phase)
        records: list[Record] = []
        fatal = config.retry.is_fatal(failure.kind)
        if fatal or self._probing or self._failures >= config.max_connection_failures:
            self._move(records, S.RECONNECTING, reason, failure)
            if fatal:
                why = f"{failure.kind} is fatal"
            elif self._probing:
                why = "probe failed"
            else:
                why = f"{self._failures} consecutive failures"
            self._move(records, S.FAILED, why, failure)
            self._enter_failed(now, failure)
        else:
            delay = config.retry.delay(failure.kind, self._failures, failure.retry_after)
            self._retry_at = now + delay
            self._retry_reason = f"retry after {round(delay, 3):g} s"
            self._move(records, S.RECONNECTING, reason, failure, retry_in=delay)
        return tuple(records)

    def hook_answered(
        self,
        now: float,
        *,
        started_at: float,
        refreshed: bool,
        error: BaseException | None = None,
        detail: str | None = None,
    ) -> tuple[Record, ...]:
        """``on_failed`` returned (``refreshed``: it returned True in time) or failed.

        Returns the :class:`RecoveryRecord`; a refresh leaves FAILED at the
        next action (unless a stop is pending).
        """
        self._advance(now)
        record = RecoveryRecord(
            at=now,
            duration=now - started_at,
            refreshed=refreshed,
            consecutive_failures=self._failures,
            error=error,
            detail=detail,
        )
        if refreshed and self._stop is None and self.state is S.FAILED:
            self._leave_failed = "credentials refreshed by on_failed"
        return (record,)

    def close_now(self, now: float, reason: str) -> tuple[Record, ...]:
        """Move to CLOSED at once, from any state (the driver's last resort).

        The reason of a pending close, if any, is used rather than ``reason``.
        """
        self._advance(now)
        if self._stop is not None and self._stop.target is S.CLOSED:
            reason = self._stop.reason
        self._stop = None
        records: list[Record] = []
        self._move(records, S.CLOSED, reason)
        return tuple(records)

    # -- internals -------------------------------------------------------------

    def _enter_failed(self, now: float, failure: FailureDetails) -> None:
        config = self._config
        self._probing = False
        self._retry_at = math.inf
        self._hook_due = None
        if self._has_hook:
            last = self._last_hook_at
            self._hook_due = now if last is None else max(now, last + config.recovery_cooldown)
        interval = config.failed_retry_interval
        self._probe_at = (
            None
            if interval is None
            else now + config.retry.probe_delay(interval, failure.retry_after)
        )

    def _connect(self, records: list[Record], reason: str) -> Step:
        self._retry_at = math.inf
        if self._admitted_at is not None:
            held = self._now - self._admitting_since
            self._admitted_at = None
            if held > 0:
                reason = f"{reason}; admitted after {round(held, 3):g} s"
        self._move(records, S.CONNECTING, reason)
        return Step(tuple(records), _CONNECT)

    def _failure_info(self) -> FailureInfo:
        failure = self._last_failure
        if failure is None:  # FAILED is only entered after a failure
            return FailureInfo(self._failures, ErrorKind.OTHER, None)
        return FailureInfo(
            consecutive_failures=self._failures,
            kind=failure.kind,
            error=failure.error,
            close_code=failure.close_code,
            status_code=failure.status_code,
        )

    def _move(
        self,
        records: list[Record],
        to_state: ConnectionState,
        reason: str,
        failure: FailureDetails | None = None,
        *,
        retry_in: float | None = None,
    ) -> None:
        change = self._machine.transition(to_state, reason)
        if change is None:
            return
        if to_state is S.CONNECTING:
            self._attempts += 1
        record = TransitionRecord(
            *(change.from_state, to_state, reason, change.at, change.duration),
            attempt=self._attempts,
            consecutive_failures=self._failures,
        )
        if failure is not None:
            record = dataclasses.replace(
                record,
                kind=failure.kind,
                error=failure.error,
                close_code=failure.close_code,
                status_code=failure.status_code,
                retry_in=retry_in,
            )
        records.append(record)
