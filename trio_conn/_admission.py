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
- A slot is reserved when asked for and never given back: a member stopped
  while it waits leaves a gap, which only makes later members' start earlier
  than ``rate`` allows by nothing (the gap is in the past by then).
- No Trio here: the caller passes the clock reading.
"""

from __future__ import annotations

import math

__all__ = ["Admission"]


class Admission:
    """Start times for connection attempts: at most ``rate`` per second after ``burst``.

    :param rate: attempts per second, > 0 (finite).
    :param burst: attempts that may start at once when the bucket is full, >= 1.
    :raises ValueError: either breaks its rule.
    """

    __slots__ = ("_interval", "_next", "_tolerance", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise TypeError(f"attempts_per_second must be a number, got {rate!r:.40}")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"attempts_per_second must be a finite number > 0, got {rate!r}")
        if isinstance(burst, bool) or not isinstance(burst, int):
            raise TypeError(f"attempt_burst must be an int, got {burst!r:.40}")
        if burst < 1:
            raise ValueError(f"attempt_burst must be >= 1, got {burst!r}")
        #: Attempts per second.
        self.rate = float(rate)
        #: Attempts that may start at once.
        self.burst = burst
        self._interval = 1.0 / self.rate
        self._tolerance = (burst - 1) * self._interval
        # The theoretical arrival time: when the bucket would next be empty.
        self._next = -math.inf

    def reserve(self, now: float) -> float:
        """Reserve the next slot; the clock reading (seconds) at which it may start.

        ``now`` or later; later by at most ``backlog(now) + 1 / rate``.
        """
        start = max(now, self._next - self._tolerance)
        self._next = max(self._next, now) + self._interval
        return start

    def backlog(self, now: float) -> float:
        """Seconds until an attempt asked for now would start (0.0: at once)."""
        return max(0.0, self._next - self._tolerance - now)
