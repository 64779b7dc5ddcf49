"""What to connect to and what to ask for: URL parsing, headers and subprotocols checked."""

from __future__ import annotations

import pytest

from trio_conn import open_connection
from trio_conn._request import check_headers, check_subprotocols, parse_url


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
        ("ws://host/\x00", "control characters"),
        ("ws://bob:pa/ss-w0rd@127.0.0.1:9/feed", "percent-encode '/' in the userinfo"),
        ("wss://example.com/users/@me", "'@' in the path as %40"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_url(url, url)


async def test_a_password_with_an_unencoded_slash_never_reaches_the_message() -> None:
    url = "ws://bob:pa/ss-w0rd-1@127.0.0.1:9/feed"
    with pytest.raises(ValueError) as info:
        async with open_connection(url):
            pass  # pragma: no cover - refused at construction
    message = str(info.value)
    assert "ss-w0rd-1" not in message
    assert "pa/ss" not in message
    assert "ws://REDACTED:REDACTED@127.0.0.1:9/feed" in message


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
    [
        "Zürich→Genève",
        "Bearer abc ",
        " leading",
        "abc\x00",
        "a\nb",
        "a\x0bb",
        "a\x01b",  # h11 would send these four: controls, never a credential's form
        "a\x1bb",
        "a\x7fb",
        "é\x85",
        "\tx",
    ],
)
def test_header_values_with_controls_or_beyond_latin_1_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"no control character .* no whitespace at either end"):
        check_headers([("X-Test", value)], "headers")


@pytest.mark.parametrize("value", ["Zürich", "a\tb", "", "token=a b  c", "é\xa0\xff", "~!"])
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


def test_subprotocols_are_tokens_offered_once() -> None:
    assert check_subprotocols(["chat.v2", "json"]) == ("chat.v2", "json")
    assert check_subprotocols(()) == ()
    with pytest.raises(TypeError, match="subprotocols must be a sequence of str"):
        check_subprotocols("chat")
    with pytest.raises(TypeError, match=r"subprotocols\[0\] must be a str"):
        check_subprotocols([b"chat"])
    with pytest.raises(ValueError, match=r"subprotocols\[1\] \(3 characters, not shown\) is not"):
        check_subprotocols(["ok", "a b"])
    with pytest.raises(ValueError, match=r"subprotocols\[1\] is offered twice \(as"):
        check_subprotocols(["chat", "chat"])
