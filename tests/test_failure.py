"""classify() and describe_failure() on real exceptions: type, close code, HTTP status."""

from __future__ import annotations

import email.utils
import errno
import io
import json
import os
import socket
import ssl
import time

import pytest
import trio
from wsproto.utilities import RemoteProtocolError

from trio_conn import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionState,
    ErrorKind,
    HeartbeatTimeout,
    SendInterrupted,
    classify,
    configure_logging,
    open_connection,
)
from trio_conn._failure import describe_failure

K = ErrorKind


def rejected(status: int, headers: tuple[tuple[bytes, bytes], ...] = ()) -> ConnectionRejected:
    return ConnectionRejected(status, list(headers), b"")


async def a_cancellation() -> trio.Cancelled:
    """A real trio.Cancelled, as a cancelled session's nursery would hold it."""
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.lowlevel.checkpoint()
        except trio.Cancelled as exc:
            return exc
    raise AssertionError("not cancelled")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (rejected(401), K.REJECTED),
        (rejected(403), K.REJECTED),
        (rejected(429), K.THROTTLED),
        (rejected(503), K.THROTTLED),
        (rejected(500), K.OTHER),
        (rejected(404), K.OTHER),
        (ConnectionClosed(1000, "bye"), K.UNEXPECTED_CLOSE),
        (ConnectionClosed(1006), K.UNEXPECTED_CLOSE),
        (ConnectionClosed(4000, "maintenance"), K.UNEXPECTED_CLOSE),
        (ConnectionClosed(1013), K.THROTTLED),  # Try Again Later, by the default table
        (ConnectionClosed(1009), K.OTHER),
        (ConnectionRefusedError(111, "refused"), K.NETWORK),
        (socket.gaierror(-2, "Name or service not known"), K.NETWORK),
        (OSError(113, "No route to host"), K.NETWORK),
        (trio.TooSlowError(), K.NETWORK),
        (TimeoutError(), K.NETWORK),
        (trio.BrokenResourceError(), K.NETWORK),  # a peer that ended the handshake
        (ssl.SSLCertVerificationError("certificate verify failed"), K.OTHER),
        (HeartbeatTimeout(3, 30.0), K.HEARTBEAT),
        (ValueError("anything else"), K.OTHER),
        (RemoteProtocolError("Bad HTTP message"), K.OTHER),
        (SendInterrupted("cut"), K.OTHER),
    ],
)
def test_classify_real_exceptions(error: BaseException, kind: ErrorKind) -> None:
    assert classify(error) is kind


def test_classify_ignores_message_text() -> None:
    # Words that a string-matching classifier would take for a network error.
    assert classify(ValueError("connection refused: network unreachable timeout")) is K.OTHER
    assert classify(RuntimeError("403 Forbidden")) is K.OTHER


def test_tls_failure_inside_broken_resource_is_not_a_network_error() -> None:
    error = trio.BrokenResourceError()
    error.__cause__ = ssl.SSLCertVerificationError("bad cert")
    assert classify(error) is K.OTHER


async def test_groups_are_classified_by_their_primary_error() -> None:
    group = BaseExceptionGroup("session", [await a_cancellation(), rejected(403)])
    details = describe_failure(group)
    assert details.kind is K.REJECTED
    assert details.status_code == 403
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [HeartbeatTimeout(3, 1.0)])])
    assert classify(nested) is K.HEARTBEAT


def test_close_code_and_status_are_extracted() -> None:
    details = describe_failure(ConnectionClosed(1006))
    assert details.close_code == 1006
    assert type(details.close_code) is int
    assert details.reason("while connected") == (
        "unexpected_close: ConnectionClosed (close code 1006) while connected"
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [(b"7", 7.0), (b" 120 ", 120.0), (b"soon", None), (b"-5", None), (b"\xb2", None)],
)
def test_retry_after_seconds(header: bytes, expected: float | None) -> None:
    details = describe_failure(rejected(429, ((b"retry-after", header),)))
    assert details.kind is K.THROTTLED
    assert details.retry_after == expected


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    details = describe_failure(rejected(503, ((b"retry-after", when.encode()),)))
    assert details.retry_after is not None
    assert 25.0 <= details.retry_after <= 31.0


def test_retry_after_only_for_throttling() -> None:
    assert describe_failure(rejected(403, ((b"retry-after", b"7"),))).retry_after is None


def test_reason_names_the_cause_of_a_bare_connect_error() -> None:
    error = OSError("all attempts to connect to 127.0.0.1:1 failed")
    error.__cause__ = ExceptionGroup("attempts", [ConnectionRefusedError(111, "refused")])
    details = describe_failure(error)
    assert details.kind is K.NETWORK
    assert details.reason("during the handshake") == (
        "network: ConnectionRefusedError during the handshake"
    )
    mixed = OSError("all attempts failed")
    mixed.__cause__ = ExceptionGroup("attempts", [ConnectionRefusedError(), TimeoutError()])
    assert describe_failure(mixed).reason("x") == "network: OSError x"


async def test_real_refused_connection_is_named() -> None:
    """Real clock: a real refused TCP connection to a port nobody listens on."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # the port is now closed: connecting is refused at once
    with pytest.raises(OSError) as info:
        await trio.open_tcp_stream("127.0.0.1", port)
    assert describe_failure(info.value).reason("during the handshake") == (
        "network: ConnectionRefusedError during the handshake"
    )


@pytest.mark.parametrize("fmt", ["json", "ecs"])
async def test_a_refused_attempt_is_named_alike_in_the_reason_and_the_error_type(
    fmt: str,
) -> None:
    """Real clock and a real refused TCP connection: trio raises a bare OSError
    ("all attempts to connect ... failed") caused by the refusal."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nobody listens: refused at once
    stream = io.StringIO()
    configure_logging(fmt, stream=stream)  # type: ignore[arg-type]
    async with open_connection(f"ws://127.0.0.1:{port}/", proxy=None, heartbeat=None) as conn:
        await conn.wait_for_state(ConnectionState.RECONNECTING)
    event = next(
        json.loads(line) for line in stream.getvalue().splitlines() if "reconnecting" in line
    )
    if fmt == "ecs":
        reason, error = event["event"]["reason"], event["error"]
    else:
        reason = event["reason"]
        error = {"type": event["error_type"], "message": event["error_message"]}
    assert reason == "network: ConnectionRefusedError during the handshake"
    assert error["type"] == "ConnectionRefusedError"
    refused = f"[Errno {errno.ECONNREFUSED}] {os.strerror(errno.ECONNREFUSED)}"
    assert error["message"] == f"all attempts to connect to 127.0.0.1:{port} failed: {refused}"
