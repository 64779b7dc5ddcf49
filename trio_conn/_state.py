"""The connection state machine, sans-IO: states, the transition table, timing.

Nothing here imports Trio. The driver passes a clock (``trio.current_time``);
tests pass a fake. Every state change of a managed connection goes through
:meth:`StateMachine.transition`, and every transition event is built from the
:class:`Transition` record it returns.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ._exceptions import TrioConnError


class ConnectionState(enum.StrEnum):
    """Where a managed connection is. A new connection starts DISCONNECTED."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    CLOSED = "closed"


_S = ConnectionState

#: The allowed transitions: each state maps to the states it may move to.
#: Anything absent raises :class:`InvalidTransition`. CLOSED is terminal.
#: (docs/design.md, "States and transitions": the original system's diagram
#: plus shutdown and explicit disconnect from every live state.)
TRANSITIONS: Mapping[ConnectionState, frozenset[ConnectionState]] = MappingProxyType(
    {
        _S.DISCONNECTED: frozenset({_S.CONNECTING, _S.CLOSED}),
        _S.CONNECTING: frozenset({_S.CONNECTED, _S.RECONNECTING, _S.DISCONNECTED, _S.CLOSED}),
        _S.CONNECTED: frozenset({_S.RECONNECTING, _S.DISCONNECTED, _S.CLOSED}),
        _S.RECONNECTING: frozenset({_S.CONNECTING, _S.FAILED, _S.DISCONNECTED, _S.CLOSED}),
        _S.FAILED: frozenset({_S.RECONNECTING, _S.DISCONNECTED, _S.CLOSED}),
        _S.CLOSED: frozenset(),
    }
)


class InvalidTransition(TrioConnError):
    """The transition table does not allow moving from one state to another."""

    def __init__(self, from_state: ConnectionState, to_state: ConnectionState) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[from_state])) or "nothing (terminal)"
        super().__init__(
            f"invalid transition {from_state} -> {to_state}; from {from_state} the allowed "
            f"targets are: {allowed}"
        )
        self.from_state = from_state
        self.to_state = to_state


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change, as the state machine recorded it.

    ``at`` is the clock reading when it happened; ``duration`` is the number of
    seconds spent in ``from_state`` (the state this transition left).
    """

    from_state: ConnectionState
    to_state: ConnectionState
    reason: str
    at: float
    duration: float


class StateMachine:
    """Enforces :data:`TRANSITIONS` and keeps the timing figures statistics need.

    :param clock: a callable returning monotonic seconds (``trio.current_time``
        in the driver).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._state = ConnectionState.DISCONNECTED
        self.created_at: float = clock()
        self._entered_at = self.created_at
        self._time_by_state: dict[ConnectionState, float] = dict.fromkeys(ConnectionState, 0.0)
        self._transition_counts: dict[tuple[ConnectionState, ConnectionState], int] = {}

    @property
    def state(self) -> ConnectionState:
        """The current state."""
        return self._state

    @property
    def entered_at(self) -> float:
        """Clock reading when the current state was entered."""
        return self._entered_at

    def time_in_state(self, now: float | None = None) -> float:
        """Seconds spent in the current state so far.

        :param now: the clock reading to measure to; None reads the clock.
        :raises ValueError: ``now`` is earlier than the current state's entry.
        """
        return self._elapsed_since(self._entered_at, now)

    def time_by_state(self, now: float | None = None) -> dict[ConnectionState, float]:
        """Seconds spent in each state, the current stay included (a new dict).

        The values add up to the time elapsed since the machine was created.

        :param now: the clock reading to measure to; None reads the clock.
        """
        totals = dict(self._time_by_state)
        totals[self._state] += self.time_in_state(now)
        return totals

    def transition_counts(self) -> dict[tuple[ConnectionState, ConnectionState], int]:
        """How many times each ``(from, to)`` edge was taken (a new dict)."""
        return dict(self._transition_counts)

    def transition(self, to_state: ConnectionState, reason: str) -> Transition | None:
        """Move to ``to_state`` and return the record of the move.

        A move to the current state is a no-op and returns ``None``.

        :raises InvalidTransition: the table does not allow the move; the
            machine is left unchanged.
        """
        from_state = self._state
        if to_state == from_state:
            return None
        if to_state not in TRANSITIONS[from_state]:
            raise InvalidTransition(from_state, to_state)
        now = self._clock()
        duration = self._elapsed_since(self._entered_at, now)
        self._time_by_state[from_state] += duration
        edge = (from_state, to_state)
        self._transition_counts[edge] = self._transition_counts.get(edge, 0) + 1
        self._state = to_state
        self._entered_at = now
        return Transition(from_state, to_state, reason, now, duration)

    def _elapsed_since(self, start: float, now: float | None = None) -> float:
        if now is None:
            now = self._clock()
        elapsed = now - start
        if not elapsed >= 0.0 or math.isinf(elapsed):
            raise ValueError(f"clock must be monotonic and finite: read {now!r} after {start!r}")
        return elapsed
