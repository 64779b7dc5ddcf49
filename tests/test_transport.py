"""The transport boundary: URL parsing, header checks and classify() on real exceptions."""

from __future__ import annotations

import email.utils
import socket
import ssl
import time

import pytest
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
)

from trio_conn import ErrorKind, HeartbeatTimeout, classify
from trio_conn._failure import describe_failure
from trio_conn._transport import check_headers, parse_url

K = ErrorKind


def rejected(status: int, headers: tuple[tuple[bytes, bytes], ...] = ()) -> ConnectionRejected:
    return ConnectionRejected(status, headers, None)


def handshake_error_from(cause: BaseException) -> HandshakeError:
    try:
        raise HandshakeError from cause
    except HandshakeError as error:
        return error


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (rejected(401), K.REJECTED),
        (rejected(403), K.REJECTED),
        (rejected(429), K.THROTTLED),
        (rejected(503), K.THROTTLED),
        (rejected(500), K.OTHER),
        (rejected(404), K.OTHER),
        (ConnectionClosed(CloseReason(1000, "bye")), K.UNEXPECTED_CLOSE),
        (ConnectionClosed(CloseReason(1006, None)), K.UNEXPECTED_CLOSE),
        (ConnectionClosed(None), K.UNEXPECTED_CLOSE),
        (handshake_error_from(ConnectionRefusedError(111, "refused")), K.NETWORK),
        (ConnectionRefusedError(111, "refused"), K.NETWORK),
        (socket.gaierror(-2, "Name or service not known"), K.NETWORK),
        (OSError(113, "No route to host"), K.NETWORK),
        (trio.TooSlowError(), K.NETWORK),
        (ConnectionTimeout(), K.NETWORK),
        (trio.BrokenResourceError(), K.NETWORK),
        (ssl.SSLCertVerificationError("certificate verify failed"), K.OTHER),
        (HeartbeatTimeout(3, 30.0), K.HEARTBEAT),
        (ValueError("anything else"), K.OTHER),
        (HandshakeError(), K.OTHER),
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


def test_groups_are_classified_by_their_primary_error() -> None:
    group = BaseExceptionGroup("session", [trio.Cancelled._create(), rejected(403)])
    details = describe_failure(group)
    assert details.kind is K.REJECTED
    assert details.status_code == 403
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [HeartbeatTimeout(3, 1.0)])])
    assert classify(nested) is K.HEARTBEAT


def test_close_code_and_status_are_extracted() -> None:
    details = describe_failure(ConnectionClosed(CloseReason(1006, None)))
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


@pytest.mark.parametrize(
    ("url", "host", "port", "resource", "secure"),
    [
        ("ws://example.com", "example.com", 80, "/", False),
        ("wss://example.com/feed?x=1", "example.com", 443, "/feed?x=1", True),
        ("ws://127.0.0.1:9000/a/b", "127.0.0.1", 9000, "/a/b", False),
        ("WSS://[::1]:8443/", "::1", 8443, "/", True),
        ("ws://user:pw@host:81/", "host", 81, "/", False),
    ],
)
def test_parse_url(url: str, host: str, port: int, resource: str, secure: bool) -> None:
    target = parse_url(url, url)
    assert (target.host, target.port, target.resource, target.secure) == (
        host,
        port,
        resource,
        secure,
    )


def test_host_header() -> None:
    assert parse_url("ws://h:80/", "").host_header == "h"
    assert parse_url("wss://h:444/", "").host_header == "h:444"
    assert parse_url("ws://[::1]:81/", "").host_header == "[::1]:81"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("", "must not be empty"),
        ("http://example.com/", "must start with ws:// or wss://"),
        ("example.com", "must start with ws:// or wss://"),
        ("ws:///path", "must name a host"),
        ("ws://exa mple.com/", "must not contain whitespace"),
        ("ws://host:99999/", "invalid port"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_url(url, url)


def test_url_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="url must be a str"):
        parse_url(b"ws://x/", "")


def test_headers_are_checked() -> None:
    assert check_headers([("Cookie", "a=b")], "headers") == [("Cookie", "a=b")]
    assert check_headers((), "headers") == []
    with pytest.raises(TypeError, match=r"headers\[0\] must be a \(name, value\) pair of str"):
        check_headers([("Cookie", b"secret")], "headers")
    with pytest.raises(TypeError, match="must be a list"):
        check_headers({"Cookie": "x"}, "headers")
    with pytest.raises(TypeError, match="must be a list"):
        check_headers("Cookie: x", "headers")
    with pytest.raises(ValueError, match="invalid header name"):
        check_headers([("Bad Name", "x")], "headers")
    with pytest.raises(ValueError, match=r"headers\[0\] \(X\) value must be Latin-1 text"):
        check_headers([("X", "a\r\nInjected: 1")], "headers")


@pytest.mark.parametrize(
    "value",
    ["Zürich→Genève", "Bearer abc ", " leading", "abc\x00", "a\nb", "a\x0bb"],
)
def test_header_values_h11_would_refuse_are_refused_here(value: str) -> None:
    with pytest.raises(ValueError, match=r"no NUL, no line break and no whitespace at either end"):
        check_headers([("X-Test", value)], "headers")


@pytest.mark.parametrize("value", ["Zürich", "a\tb", "", "token=a b  c", "é\x85"])
def test_header_values_h11_accepts_are_accepted(value: str) -> None:
    assert check_headers([("X-Test", value)], "headers") == [("X-Test", value)]


SECRET = "tok_live_9f8e7d6c5b4a"


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ([("Cookie", SECRET.encode())], TypeError),
        ({"Authorization": f"Bearer {SECRET}"}, TypeError),  # a dict, not pairs
        ([(f"Bearer {SECRET}", "Authorization")], ValueError),  # a swapped pair
        ([("Authorization", f"Bearer {SECRET} ")], ValueError),
        ([("Authorization", f"Bearer {SECRET}\x00")], ValueError),
    ],
)
def test_header_errors_do_not_show_a_value_or_a_bad_name(
    headers: object, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        check_headers(headers, "headers")
    assert SECRET not in str(info.value)


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
