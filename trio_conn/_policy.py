"""Retry policy, sans-IO: what kind of failure happened and how long to wait.

Rules of the house:

- A failure is classified by exception type, close code and HTTP status,
  never by message text. Mapping real exceptions to :class:`FailureDetails`
  is the driver's job (``trio_conn/_failure.py``); mapping a close code to
  the kind it counts as is this module's (:attr:`RetryPolicy.close_codes`).
- Jitter only ever shortens a backoff delay (``delay * (1 - jitter * U)``),
  so it never exceeds the row's cap; a server's ``Retry-After`` and the wait
  between probes while FAILED are only ever lengthened
  (``R * (1 + jitter * U)``), so no client comes back before it was told to.

Nothing here imports Trio.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ._exceptions import HeartbeatTimeout, shown_type


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` for an error message: cut to ``limit`` characters, never raising
    (an int too long to print, or a ``__repr__`` that fails, is described instead)."""
    try:
        if isinstance(value, int) and value.bit_length() > 128:
            return f"an int of {value.bit_length()} bits"
        text = repr(value)
    except Exception:
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def finite(value: float) -> bool:
    """``math.isfinite``, also for an int too large for a float (not finite here)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class ErrorKind(enum.StrEnum):
    """Why a connection attempt or session ended."""

    UNEXPECTED_CLOSE = "unexpected_close"  # an established connection dropped or was closed
    NETWORK = "network"  # refused, unreachable, DNS, handshake timeout
    REJECTED = "rejected"  # HTTP 401/403 at the handshake
    THROTTLED = "throttled"  # HTTP 429/503 at the handshake, close code 1013
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
                raise TypeError(f"Backoff.{name} must be a number of seconds, got {shown(value)}")
            if not (finite(value) and value >= 0):
                raise ValueError(f"Backoff.{name} must be finite and >= 0, got {shown(value)}")

    def delay(self, failures: int) -> float:
        """``min(step * failures, cap)`` seconds."""
        return float(min(self.step * failures, self.cap))


#: The rows: unexpected close 3n/15; network and heartbeat 10n/60 (two rows
#: with equal defaults); throttled without Retry-After 10n/60; rejected (when
#: not fatal) and other 5n/30.
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

#: Close codes received after the handshake that count as something other
#: than ``unexpected_close`` (RFC 6455 section 7.4.1 and the IANA "WebSocket
#: Close Code Number Registry"). 1000 Normal Closure, 1001 Going Away, 1011
#: Internal Error and 1012 Service Restart are absent: a server that goes away
#: or restarts is the ordinary drop this library reconnects after.
DEFAULT_CLOSE_CODES: Mapping[int, ErrorKind] = MappingProxyType(
    {
        1002: ErrorKind.OTHER,  # Protocol Error: one side is broken, retry slowly
        1003: ErrorKind.OTHER,  # Unsupported Data
        1007: ErrorKind.OTHER,  # Invalid frame payload data
        1008: ErrorKind.OTHER,  # Policy Violation: too generic to be called a rejection
        1009: ErrorKind.OTHER,  # Message Too Big
        1010: ErrorKind.OTHER,  # Mandatory Extension
        1013: ErrorKind.THROTTLED,  # Try Again Later
    }
)

#: The close codes a received close frame can carry: RFC 6455 section 7.4.1's
#: and the IANA registry's up to 1013, except the reserved 1004 and the
#: local-only 1005 and 1006; and 3000-4999 (libraries and applications). The
#: protocol engine (wsproto) treats any other code below 3000, 1014 Bad
#: Gateway included, as a protocol error (1002): mapping one could never match.
RECEIVABLE_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, *range(3000, 5000)}
)


@dataclass(frozen=True, slots=True)
class FailureDetails:
    """What went wrong in one attempt or session, as the driver found it.

    :param kind: the :class:`ErrorKind`; for a close frame the driver gives
        ``unexpected_close`` and :meth:`RetryPolicy.resolve` applies
        :attr:`RetryPolicy.close_codes`.
    :param error: the exception that explains the end.
    :param close_code: the close code that ended the session, whichever side
        sent it (1006 when the stream just ended); None before the handshake.
    :param status_code: the HTTP status of a rejected handshake, else None.
    :param retry_after: seconds from the rejection's ``Retry-After`` header
        (429 and 503 only), else None.
    """

    kind: ErrorKind
    error: BaseException
    close_code: int | None = None
    status_code: int | None = None
    retry_after: float | None = None

    @property
    def summary(self) -> str:
        """``kind: ExceptionType``, for statistics."""
        return f"{self.kind}: {type(self.error).__name__}"

    def reason(self, phase: str) -> str:
        """A reason for the log: kind, exception type, code or status, then ``phase``.

        Never the exception's message text (it may carry a secret).
        """
        text = f"{self.kind}: {_type_name(self.error)}"
        if self.close_code is not None:
            text += f" (close code {self.close_code})"
        if self.status_code is not None:
            text += f" (HTTP {self.status_code})"
        if isinstance(self.error, HeartbeatTimeout):
            text += f" ({self.error.misses} missed)"
        return f"{text} {phase}"


def _type_name(error: BaseException) -> str:
    """The exception's type name, by the rule ``error_type`` follows too (``shown_type``)."""
    return shown_type(error).__name__


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"RetryPolicy.{name} must be a number, got {shown(value)}")
    if not finite(value):
        return math.nan  # refused by every caller's range check, which names the value
    return float(value)


def _check_close_codes(value: object) -> Mapping[int, ErrorKind]:
    if not isinstance(value, Mapping):
        raise TypeError(
            "RetryPolicy.close_codes must be a mapping of close code to ErrorKind, "
            f"got {shown(value)}"
        )
    checked: dict[int, ErrorKind] = {}
    for code, kind in value.items():
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError(
                f"RetryPolicy.close_codes keys must be int close codes, got {shown(code)}"
            )
        if code not in RECEIVABLE_CLOSE_CODES:
            raise ValueError(
                f"RetryPolicy.close_codes key {shown(code)} can never be received: a close frame "
                "carries 1000-1003, 1007-1013 (RFC 6455 section 7.4.1 and the IANA registry) "
                "or 3000-4999"
            )
        checked[code] = _check_kind(f"close_codes[{code}]", kind)
    return MappingProxyType({**DEFAULT_CLOSE_CODES, **checked})


def _check_kind(name: str, value: object) -> ErrorKind:
    try:
        return ErrorKind(value)  # type: ignore[arg-type]  # checked here
    except ValueError:
        raise ValueError(
            f"RetryPolicy.{name} must be an ErrorKind ({', '.join(ErrorKind)}), got {shown(value)}"
        ) from None


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait before the next attempt, by kind of failure.

    :param jitter: ratio in ``[0, 1]`` (default 0.2). A backoff delay becomes
        ``delay * (1 - jitter * U(0, 1))`` (never above its cap); a
        ``Retry-After`` and the wait between probes while FAILED become
        ``R * (1 + jitter * U(0, 1))`` (never below what was asked).
    :param fatal: kinds that go to FAILED at once instead of retrying
        (default: ``rejected``).
    :param backoff: one :class:`Backoff` row per :class:`ErrorKind`; rows not
        given keep the defaults: ``unexpected_close`` ``min(3n, 15)``,
        ``network``, ``heartbeat`` and ``throttled`` ``min(10n, 60)``,
        ``rejected`` and ``other`` ``min(5n, 30)`` seconds.
    :param close_codes: close code (received after the handshake) -> the kind
        it counts as, merged over the defaults (1013 Try Again Later:
        ``throttled``; 1002, 1003, 1007, 1008, 1009, 1010: ``other``); a code
        absent from both is ``unexpected_close``. Map an application's "token
        expired" code to ``rejected`` to reach FAILED and ``on_failed`` at its
        first occurrence: ``close_codes={4401: ErrorKind.REJECTED}``. Keys
        must be codes a close frame can carry: 1000-1003, 1007-1013,
        3000-4999.
    :param max_retry_after: cap, in seconds, on a server's spread
        ``Retry-After`` (default 300).
    :param random: source of ``U(0, 1)``, injectable for tests.
    :raises TypeError, ValueError: a field breaks its rule; the message names
        the field, the value and the rule.
    """

    jitter: float = 0.2
    fatal: frozenset[ErrorKind] = frozenset({ErrorKind.REJECTED})
    backoff: Mapping[ErrorKind, Backoff] = field(default_factory=lambda: DEFAULT_BACKOFF)
    close_codes: Mapping[int, ErrorKind] = field(default_factory=lambda: DEFAULT_CLOSE_CODES)
    max_retry_after: float = 300.0
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        jitter = _check_number("jitter", self.jitter)
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(
                f"RetryPolicy.jitter must be between 0 and 1, got {shown(self.jitter)}"
            )
        if isinstance(self.fatal, str | bytes | Mapping) or not isinstance(self.fatal, Iterable):
            raise TypeError(
                f"RetryPolicy.fatal must be a set of ErrorKind, got {shown(self.fatal)}"
            )
        fatal = frozenset(_check_kind("fatal", kind) for kind in self.fatal)
        if not isinstance(self.backoff, Mapping):
            raise TypeError(f"RetryPolicy.backoff must be a mapping, got {shown(self.backoff)}")
        backoff = dict(DEFAULT_BACKOFF)
        for key, row in self.backoff.items():
            kind = _check_kind("backoff keys", key)
            if not isinstance(row, Backoff):
                raise TypeError(f"RetryPolicy.backoff[{kind}] must be a Backoff, got {shown(row)}")
            backoff[kind] = row
        max_retry_after = _check_number("max_retry_after", self.max_retry_after)
        if not (finite(max_retry_after) and max_retry_after >= 0):
            raise ValueError(
                "RetryPolicy.max_retry_after must be finite and >= 0, "
                f"got {shown(self.max_retry_after)}"
            )
        if not callable(self.random):
            raise TypeError(f"RetryPolicy.random must be callable, got {shown(self.random)}")
        object.__setattr__(self, "fatal", fatal)
        object.__setattr__(self, "backoff", MappingProxyType(backoff))
        object.__setattr__(self, "close_codes", _check_close_codes(self.close_codes))

    def is_fatal(self, kind: ErrorKind) -> bool:
        """Whether ``kind`` goes straight to FAILED."""
        return kind in self.fatal

    def resolve(self, failure: FailureDetails) -> FailureDetails:
        """``failure`` with the kind its close code counts as (:attr:`close_codes`).

        A failure without a close code is returned as it is.
        """
        code = failure.close_code
        if code is None:
            return failure
        kind = self.close_codes.get(code, ErrorKind.UNEXPECTED_CLOSE)
        if kind is failure.kind:
            return failure
        return FailureDetails(kind, failure.error, code, failure.status_code, failure.retry_after)

    def delay(self, kind: ErrorKind, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait before the next attempt after ``failures`` consecutive failures.

        ``failures`` counts failures of any kind; ``kind`` picks the row.
        ``retry_after`` (the server's ``Retry-After``, in seconds) counts for
        :attr:`ErrorKind.THROTTLED` only: it is spread upwards by jitter, then
        capped at ``max_retry_after``. Every other delay comes from the kind's
        backoff row, shortened by jitter.

        :raises ValueError: ``failures`` is not an int >= 1, or ``random``
            returned a value outside ``[0, 1]``.
        """
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
            raise ValueError(f"failures must be an int >= 1, got {shown(failures)}")
        if kind is ErrorKind.THROTTLED and retry_after is not None and retry_after >= 0:
            return min(self.spread(retry_after), self.max_retry_after)
        base = self.backoff[ErrorKind(kind)].delay(failures)
        if self.jitter:
            base *= 1.0 - self.jitter * self._sample()
        return base

    def probe_delay(self, interval: float, retry_after: float | None = None) -> float:
        """Seconds to wait in FAILED before probing again.

        ``max(interval, retry_after)`` (the server's ``Retry-After`` capped at
        ``max_retry_after``), spread upwards by jitter: never shorter than
        ``interval``.
        """
        wait = interval
        if retry_after is not None and retry_after >= 0:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return self.spread(wait)

    def spread(self, seconds: float) -> float:
        """``seconds * (1 + jitter * U(0, 1))``: a wait lengthened, never shortened."""
        if not self.jitter:
            return float(seconds)
        return seconds * (1.0 + self.jitter * self._sample())

    def _sample(self) -> float:
        sample = self.random()
        if not 0.0 <= sample <= 1.0:
            raise ValueError(
                f"RetryPolicy.random must return a value in [0, 1], got {shown(sample)}"
            )
        return sample
