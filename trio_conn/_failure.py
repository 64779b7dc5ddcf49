"""What went wrong, from real exceptions: classify(), describe_failure(), Retry-After.

Classification is by exception type, close code and HTTP status, never by
message text. The close-code table itself is policy (``RetryPolicy.close_codes``
in ``trio_conn/_policy.py``); the lifecycle applies the connection's own.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import ssl
import time
from collections.abc import Sequence

import trio

from ._exceptions import (
    ConnectionClosed,
    ConnectionRejected,
    HeartbeatTimeout,
    ProxyRefused,
    leaves,
)
from ._policy import ErrorKind, FailureDetails, RetryPolicy

_REJECTED_STATUSES = frozenset({401, 403})
_THROTTLED_STATUSES = frozenset({429, 503})
_DEFAULT_POLICY = RetryPolicy()


def primary_error(error: BaseException) -> BaseException:
    """The one exception that explains a session's end, out of nested groups.

    A rejection wins (it explains the Cancelled around it); otherwise the
    first leaf that is not ``trio.Cancelled``.
    """
    found = leaves(error)
    for leaf in found:
        if isinstance(leaf, ConnectionRejected):
            return leaf
    for leaf in found:
        if not isinstance(leaf, trio.Cancelled):
            return leaf
    return found[0]


def classify(exc: BaseException, policy: RetryPolicy | None = None) -> ErrorKind:
    """The :class:`ErrorKind` of an exception, from its type, close code or HTTP status.

    Never from message text. Exception groups are classified by their
    :func:`primary_error`. A close code counts as ``policy.close_codes`` says
    (default: ``RetryPolicy()``'s table, e.g. 1013 -> ``throttled``).

    :param policy: whose ``close_codes`` to apply; None: the defaults.
    """
    return (policy or _DEFAULT_POLICY).resolve(describe_failure(exc)).kind


def describe_failure(exc: BaseException) -> FailureDetails:
    """Classify ``exc`` by type and pull out its close code, HTTP status and Retry-After.

    A close (frame or dropped stream) is ``unexpected_close`` here, whatever
    its code: ``RetryPolicy.resolve`` maps the code. Never raises: what a peer
    sent (a Retry-After header, a close code) cannot end the connection.
    """
    try:
        return _describe(exc)
    except Exception:  # a peer's bytes that no rule foresaw: classify by type alone
        error = primary_error(exc)
        return FailureDetails(ErrorKind.OTHER, error)


def _describe(exc: BaseException) -> FailureDetails:
    error = primary_error(exc)
    if isinstance(error, ConnectionRejected):
        status = error.status_code
        retry_after = _retry_after(error.headers) if status in _THROTTLED_STATUSES else None
        if status in _REJECTED_STATUSES:
            kind = ErrorKind.REJECTED
        elif status in _THROTTLED_STATUSES:
            kind = ErrorKind.THROTTLED
        else:
            kind = ErrorKind.OTHER
        return FailureDetails(kind, error, status_code=status, retry_after=retry_after)
    if isinstance(error, ConnectionClosed):
        return FailureDetails(ErrorKind.UNEXPECTED_CLOSE, error, close_code=error.code)
    if isinstance(error, ProxyRefused):  # 407 or bad SOCKS credentials will not heal alone
        kind = ErrorKind.REJECTED if error.authentication else ErrorKind.NETWORK
        return FailureDetails(kind, error, status_code=error.status_code)
    if isinstance(error, HeartbeatTimeout):
        return FailureDetails(ErrorKind.HEARTBEAT, error)
    if isinstance(error, trio.TooSlowError | TimeoutError):
        return FailureDetails(ErrorKind.NETWORK, error)
    if isinstance(error, trio.BrokenResourceError):
        # A TLS failure (bad certificate) will not heal by itself; a broken
        # TCP stream is a network error.
        cause = error.__cause__
        kind = ErrorKind.OTHER if isinstance(cause, ssl.SSLError) else ErrorKind.NETWORK
        return FailureDetails(kind, error)
    if isinstance(error, ssl.SSLError):
        return FailureDetails(ErrorKind.OTHER, error)
    if isinstance(error, OSError):  # refused, unreachable, reset, DNS (socket.gaierror)
        return FailureDetails(ErrorKind.NETWORK, error)
    return FailureDetails(ErrorKind.OTHER, error)


def _retry_after(headers: Sequence[tuple[bytes, bytes]]) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date. None if absent or bad."""
    for name, raw in headers:
        if name.lower() != b"retry-after":
            continue
        value = raw.decode("latin-1").strip()
        if value.isascii() and value.isdigit():  # not "²": str.isdigit() alone admits it
            return float(value)  # inf for an absurd number: the cap applies
        try:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:  # "-0000": a date in UTC with no zone information
                when = when.replace(tzinfo=datetime.UTC)
            seconds = when.timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):  # no date, or one beyond any clock
            return None
        return max(0.0, seconds) if math.isfinite(seconds) else None
    return None
