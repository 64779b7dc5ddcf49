"""What to connect to and what to ask for: the URL, request headers, subprotocols.

Checked when a connection is made, so that bad input is refused at
construction with a message that names the rule and never shows a secret.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

#: ``async (host, port) -> trio.abc.Stream``: how an attempt gets its byte stream.
StreamOpener = Callable[[str, int], Awaitable[trio.abc.Stream]]

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# RFC 9110 section 5.5 on Latin-1 text: visible characters (VCHAR) and
# obs-text, spaces or tabs between them. Stricter than h11, which lets through
# every control but NUL, CR and LF: a control character in a header is an
# injection or a mistake, never a credential's intended form (decision).
_VCHAR = r"[\x21-\x7e\xa0-\xff]"
_HEADER_VALUE = re.compile(rf"(?:{_VCHAR}+(?:[ \t]+{_VCHAR}+)*)?")


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect, parsed from a ws:// or wss:// URL."""

    host: str
    port: int
    resource: str  # path and query, as sent in the request line
    secure: bool

    @property
    def host_header(self) -> str:
        default = 443 if self.secure else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: object, shown_as: str) -> Target:
    """Parse a WebSocket URL.

    :param shown_as: how the URL appears in error messages (redacted).
    :raises TypeError: ``url`` is not a str.
    :raises ValueError: the URL is empty, not ws:// or wss://, has no host,
        contains whitespace or a control character, has an ``@`` in its path,
        query or fragment (ambiguous, see the code) or an invalid port; the
        message says which and shows the URL redacted.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    if not url:
        raise ValueError("url must not be empty")
    if any(ch.isspace() or ch < " " or ch == "\x7f" for ch in url):
        raise ValueError(f"url must not contain whitespace or control characters: {shown_as!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ValueError(f"url must start with ws:// or wss://, got {shown_as!r}")
    if "@" in parts.path:
        # Ambiguous: "ws://user:pa/ss@host/" is a password with an unencoded
        # "/" to a person, a host "user" to RFC 3986. Refused, so that the
        # host connected to is the host the logs show (trio_conn/_redact.py).
        raise ValueError(
            "url has '@' after its first '/' (a password or token with an unencoded '/'?): "
            f"percent-encode '/' in the userinfo as %2F, or '@' in the path as %40: {shown_as!r}"
        )
    if "@" in parts.query or "@" in parts.fragment:
        # Ambiguous too: "ws://user:pa?ss@host/" is a password with an
        # unencoded "?" to a person, a host "user" and a query to RFC 3986.
        raise ValueError(
            "url has '@' after a '?' or '#' (a password or token with an unencoded '?' or "
            "'#'?): percent-encode them in the userinfo as %3F and %23, or '@' in the query "
            f"as %40: {shown_as!r}"
        )
    host = parts.hostname
    if not host:
        raise ValueError(f"url must name a host: {shown_as!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"url has an invalid port (must be 0-65535): {shown_as!r}") from None
    secure = scheme == "wss"
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return Target(host, port or (443 if secure else 80), resource, secure)


def check_headers(headers: object, source: str) -> list[tuple[str, str]]:
    """Validate request headers: a sequence of ``(name, value)`` str pairs.

    A name must be an HTTP token (RFC 9110 section 5.1); a value must be
    Latin-1 text with no control character (C0, DEL, C1; a tab only between
    words) and no whitespace at either end (RFC 9110 section 5.5). Messages never show a value,
    nor a name that is not a token (either may be a secret).

    :param source: where the headers came from, for the message.
    :raises TypeError: not a sequence of pairs of str.
    :raises ValueError: a name or a value that breaks its rule.
    """
    if isinstance(headers, str | bytes) or not isinstance(headers, Sequence):
        raise TypeError(
            f"{source} must be a list of (name, value) str pairs, got a {type(headers).__name__}"
        )
    checked = []
    for index, pair in enumerate(headers):
        if not (
            isinstance(pair, tuple)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], str)
        ):
            raise TypeError(
                f"{source}[{index}] must be a (name, value) pair of str, "
                f"got a {type(pair).__name__}"  # not the value itself: it may be a secret
            )
        name, value = pair
        if not _TOKEN.fullmatch(name):
            raise ValueError(
                f"{source}[{index}] has an invalid header name ({len(name)} characters): "
                "a name must be an HTTP token (RFC 9110 section 5.1)"
            )
        if not _HEADER_VALUE.fullmatch(value):
            raise ValueError(
                f"{source}[{index}] ({name}) value must be Latin-1 text with no control "
                "character (a tab only between words) and no whitespace at either end "
                "(RFC 9110 section 5.5)"
            )
        checked.append((name, value))
    return checked


def check_subprotocols(subprotocols: object) -> tuple[str, ...]:
    """Validate the subprotocols to offer: HTTP tokens (RFC 6455 section 4.1, item 10).

    :raises TypeError: not a sequence of str.
    :raises ValueError: a name that is not a token, or one offered twice.
    """
    if isinstance(subprotocols, str | bytes) or not isinstance(subprotocols, Sequence):
        raise TypeError(
            f"subprotocols must be a sequence of str, got a {type(subprotocols).__name__}"
        )
    checked: list[str] = []
    for index, name in enumerate(subprotocols):
        if not isinstance(name, str):
            raise TypeError(f"subprotocols[{index}] must be a str, got a {type(name).__name__}")
        # Never shown: a subprotocol may carry a credential (a bearer token
        # in Sec-WebSocket-Protocol, as some APIs ask).
        if not _TOKEN.fullmatch(name):
            raise ValueError(
                f"subprotocols[{index}] ({len(name)} characters, not shown) is not an HTTP "
                "token (RFC 6455 section 4.1)"
            )
        if name in checked:
            raise ValueError(
                f"subprotocols[{index}] is offered twice (as subprotocols[{checked.index(name)}])"
            )
        checked.append(name)
    return tuple(checked)


async def open_tcp(host: str, port: int) -> trio.abc.Stream:
    """The default :data:`StreamOpener`: a TCP connection."""
    return await trio.open_tcp_stream(host, port)


def check_compression(compression: object) -> bool:
    """Validate ``compression``: whether permessage-deflate (RFC 7692) is offered.

    :raises TypeError: neither a str nor None.
    :raises ValueError: a str other than ``"deflate"``.
    """
    if compression is not None and not isinstance(compression, str):
        raise TypeError(
            f"compression must be 'deflate' or None, got a {type(compression).__name__}"
        )
    if compression not in ("deflate", None):
        raise ValueError(
            f"compression must be 'deflate' (permessage-deflate, RFC 7692) or None, "
            f"got {compression!r:.40}"
        )
    return compression is not None
