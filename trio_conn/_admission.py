"""Admission control: a group-wide limit on connection attempts per second, sans-IO.

After a server restart every member of a group falls due for an attempt
within the same second or so (the retry jitter spreads them over a fraction
of the first backoff step only). :class:`Admission` hands out start times so
that attempts begin at no more than ``rate`` per second after an initial
``burst``: a token bucket, kept as the generic cell rate algorithm (one float
of state, no timer, first come first served).

Rules of the house:

- Every connection attempt of a member asks for a slot, in the lifecycle
  (``trio_conn/_lifecycle.py``), just before it moves to CONNECTING: first
  connects, retries, probes, resets alike. The wait happens in the state the
  member is in (DISCONNECTED with a connect requested, or RECONNECTING).
- A slot is reserved when asked for. A member stopped while it waits gives
  its slot back (:meth:`Admission.release`): the next attempt asked for takes
  the earliest slot given back that is still ahead, so a removed or restarted
  member never holds up the others, and the rate still holds (that slot was
  part of the schedule).
- No Trio here: the caller passes the clock reading.
"""

from __future__ import annotations

import heapq
import math

__all__ = ["MAX_BURST", "MAX_RATE", "MIN_RATE", "Admission"]

#: Limits on the rate, attempts per second: below, an interval of days;
#: above, attempts closer than a float clock of a process up for months can
#: tell apart.
MIN_RATE = 1e-6
MAX_RATE = 1e6
#: Most attempts at once.
MAX_BURST = 1_000_000


class Admission:
    """Start times for connection attempts: at most ``rate`` per second after ``burst``.

    :param rate: attempts per second, > 0 (finite).
    :param burst: attempts that may start at once when the bucket is full, >= 1.
    :raises ValueError: either breaks its rule.
    """

    __slots__ = ("_given_back", "_interval", "_next", "_tolerance", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise TypeError(f"attempts_per_second must be a number, got {rate!r:.40}")
        if not (math.isfinite(rate) and MIN_RATE <= rate <= MAX_RATE):
            raise ValueError(
                f"attempts_per_second must be a finite number from {MIN_RATE:g} to "
                f"{MAX_RATE:g} (a float clock cannot space attempts closer), got {rate!r:.40}"
            )
        if isinstance(burst, bool) or not isinstance(burst, int):
            raise TypeError(f"attempt_burst must be an int, got {burst!r:.40}")
        if not 1 <= burst <= MAX_BURST:
            raise ValueError(f"attempt_burst must be from 1 to {MAX_BURST:,}, got {burst!r:.40}")
        #: Attempts per second.
        self.rate: float = float(rate)
        #: Attempts that may start at once.
        self.burst: int = burst
        self._interval = 1.0 / self.rate
        self._tolerance = (burst - 1) * self._interval
        # The theoretical arrival time: when the bucket would next be empty.
        self._next = -math.inf
        # Slots given back by members stopped while they waited (a heap).
        self._given_back: list[float] = []

    def reserve(self, now: float) -> float:
        """Reserve the next slot; the clock reading (seconds) at which it may start.

        ``now`` or later; later by at most ``backlog(now) + 1 / rate``.
        """
        given_back = self._given_back
        while given_back and given_back[0] <= now:
            heapq.heappop(given_back)  # passed unused: the rate allowed it, nothing to keep
        if given_back:
            return heapq.heappop(given_back)
        start = max(now, self._next - self._tolerance)
        self._next = max(self._next, now) + self._interval
        return start

    def release(self, slot: float, now: float) -> None:
        """Give back ``slot``, reserved and now unused (its member was stopped)."""
        if slot > now:
            heapq.heappush(self._given_back, slot)

    def backlog(self, now: float) -> float:
        """Seconds until an attempt asked for now would start (0.0: at once)."""
        given_back = [slot for slot in self._given_back if slot > now]
        if given_back:
            return min(given_back) - now
        return max(0.0, self._next - self._tolerance - now)
