"""Retry policy, sans-IO: what kind of error happened and how long to wait.

Nothing here imports Trio or trio-websocket; mapping real exceptions to an
:class:`ErrorKind` is the transport's job (``trio_conn.classify``).
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class ErrorKind(enum.StrEnum):
    """Why a connection attempt or session ended."""

    UNEXPECTED_CLOSE = "unexpected_close"  # an established connection dropped or was closed
    NETWORK = "network"  # refused, unreachable, DNS, handshake timeout
    REJECTED = "rejected"  # HTTP 401/403 at the handshake
    THROTTLED = "throttled"  # HTTP 429/503 at the handshake
    HEARTBEAT = "heartbeat"  # the peer missed too many heartbeats
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Backoff:
    """A linear backoff row: ``min(step * n, cap)`` seconds after ``n`` failures."""

    step: float
    cap: float

    def __post_init__(self) -> None:
        for name in ("step", "cap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"Backoff.{name} must be a number of seconds, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Backoff.{name} must be finite and >= 0, got {value!r}")

    def delay(self, failures: int) -> float:
        return float(min(self.step * failures, self.cap))


#: The seed's rows. Heartbeat and throttled-without-Retry-After use the network
#: row; a rejection that is not fatal uses the "other" row.
DEFAULT_BACKOFF: Mapping[ErrorKind, Backoff] = MappingProxyType(
    {
        ErrorKind.UNEXPECTED_CLOSE: Backoff(3.0, 15.0),
        ErrorKind.NETWORK: Backoff(10.0, 60.0),
        ErrorKind.HEARTBEAT: Backoff(10.0, 60.0),
        ErrorKind.THROTTLED: Backoff(10.0, 60.0),
        ErrorKind.REJECTED: Backoff(5.0, 30.0),
        ErrorKind.OTHER: Backoff(5.0, 30.0),
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait before the next attempt, by kind of error.

    :param jitter: ratio in ``[0, 1]``; the delay becomes
        ``delay * (1 - jitter * U(0, 1))``, so jitter never exceeds the cap.
    :param fatal: kinds that go to FAILED at once instead of retrying.
    :param backoff: one :class:`Backoff` row per :class:`ErrorKind`; rows not
        given fall back to :data:`DEFAULT_BACKOFF`.
    :param max_retry_after: cap, in seconds, on a server's ``Retry-After``.
    :param random: source of ``U(0, 1)``, injectable for tests.
    """

    jitter: float = 0.2
    fatal: frozenset[ErrorKind] = frozenset({ErrorKind.REJECTED})
    backoff: Mapping[ErrorKind, Backoff] = field(default_factory=lambda: DEFAULT_BACKOFF)
    max_retry_after: float = 300.0
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.jitter, bool) or not isinstance(self.jitter, int | float):
            raise TypeError(f"RetryPolicy.jitter must be a number, got {self.jitter!r}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"RetryPolicy.jitter must be between 0 and 1, got {self.jitter!r}")
        fatal = frozenset(ErrorKind(kind) for kind in self.fatal)
        unknown = [kind for kind in self.backoff if not isinstance(kind, ErrorKind)]
        if unknown:
            raise ValueError(f"RetryPolicy.backoff keys must be ErrorKind members, got {unknown!r}")
        for kind, row in self.backoff.items():
            if not isinstance(row, Backoff):
                raise TypeError(f"RetryPolicy.backoff[{kind}] must be a Backoff, got {row!r}")
        backoff = MappingProxyType({**DEFAULT_BACKOFF, **self.backoff})
        if isinstance(self.max_retry_after, bool) or not isinstance(
            self.max_retry_after, int | float
        ):
            raise TypeError(
                f"RetryPolicy.max_retry_after must be seconds, got {self.max_retry_after!r}"
            )
        if not (math.isfinite(self.max_retry_after) and self.max_retry_after >= 0):
            raise ValueError(
                f"RetryPolicy.max_retry_after must be finite and >= 0, got {self.max_retry_after!r}"
            )
        if not callable(self.random):
            raise TypeError(f"RetryPolicy.random must be callable, got {self.random!r}")
        object.__setattr__(self, "fatal", fatal)
        object.__setattr__(self, "backoff", backoff)

    def is_fatal(self, kind: ErrorKind) -> bool:
        """Whether ``kind`` goes straight to FAILED."""
        return kind in self.fatal

    def delay(self, kind: ErrorKind, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait before the next attempt after ``failures`` consecutive failures.

        ``retry_after`` (the server's ``Retry-After``, in seconds) counts for
        :attr:`ErrorKind.THROTTLED` only: it is used as given, capped at
        ``max_retry_after`` and never jittered. Every other delay comes from
        the kind's backoff row, then jitter.

        :raises ValueError: ``failures`` is below 1.
        """
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
            raise ValueError(f"failures must be an int >= 1, got {failures!r}")
        if kind is ErrorKind.THROTTLED and retry_after is not None and retry_after >= 0:
            return float(min(retry_after, self.max_retry_after))
        base = self.backoff[ErrorKind(kind)].delay(failures)
        if self.jitter:
            sample = self.random()
            if not 0.0 <= sample <= 1.0:
                raise ValueError(
                    f"RetryPolicy.random must return a value in [0, 1], got {sample!r}"
                )
            base *= 1.0 - self.jitter * sample
        return base
