"""The library's exceptions. Imports no Trio, so the sans-IO core can use them.

What a peer sent (a close reason, a response body) never appears in a
``repr()``: records and statistics are printed by applications, long after
the connection's secrets were forgotten. ``str()`` of a :class:`ConnectionClosed`
carries the reason scrubbed of the secrets registered when it was built (the
connection is alive then).
"""

from __future__ import annotations

from ._secrets import SECRETS


class TrioConnError(Exception):
    """Base class of every exception trio_conn raises on its own account."""


class NotConnected(TrioConnError):
    """An operation needs the CONNECTED state and the connection is elsewhere.

    :ivar state: the connection's state when the operation was refused
        (``ConnectionState``, as str).
    :ivar lost: True when the state was CONNECTED but the WebSocket
        connection was lost during the operation: the connection is about to
        reconnect, and the message was not sent.
    :ivar closing: True when the state was CONNECTED but a disconnect or
        close had been requested.
    """

    def __init__(self, state: str, *, lost: bool = False, closing: bool = False) -> None:
        if lost:
            message = "not connected: the WebSocket connection was lost during the send"
        elif closing:
            message = "not connected: the connection is closing (disconnect or close requested)"
        else:
            message = f"not connected: the connection is {state}"
        super().__init__(message)
        self.state = state
        self.lost = lost
        self.closing = closing


class SendInterrupted(TrioConnError):
    """A send was cancelled part way: the socket may hold half a frame, so it was dropped."""


class ConnectionClosed(TrioConnError):
    """A WebSocket connection ended: a close frame, or the stream just ended (1006).

    :ivar code: the close code (RFC 6455 section 7.4): the peer's, or the one
        the client closed with (1009 for an oversized message, 1002 for a
        protocol error), 1006 when no close frame was exchanged.
    :ivar reason: the close frame's reason text, or None: the peer's words,
        raw (a server may echo a token in it). The message, ``str()``, carries
        it scrubbed; ``repr()`` leaves it out.
    """

    def __init__(self, code: int, reason: str | None = None) -> None:
        text = f"WebSocket connection closed with code {code}"
        if reason:
            # Scrubbed now: the connection's secrets are registered while it
            # builds this, and forgotten once it is closed.
            text += f": {SECRETS.scrub(reason)}"
        super().__init__(text)
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"ConnectionClosed(code={self.code!r})"


class ConnectionRejected(TrioConnError):
    """The server answered the WebSocket handshake with an HTTP status other than 101.

    :ivar status_code: the HTTP status (RFC 9110 section 15).
    :ivar headers: the response's headers, as ``(name, value)`` bytes pairs
        (they may set cookies: never logged).
    :ivar body: the start of the response body (at most 64 KiB).
    """

    def __init__(self, status_code: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"WebSocket handshake rejected with HTTP status {status_code}")
        self.status_code = status_code
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"ConnectionRejected(status_code={self.status_code!r})"


class ProxyRefused(TrioConnError):
    """The proxy would not open a tunnel to the server.

    :ivar proxy: the proxy's URL, redacted (no credentials).
    :ivar status_code: an HTTP proxy's answer to ``CONNECT`` (RFC 9110
        section 9.3.6), or None.
    :ivar reply_code: a SOCKS5 proxy's reply code (RFC 1928 section 6), or None.
    :ivar authentication: True when it refused our credentials or wants some
        (HTTP 407, a failed SOCKS5 authentication): the failure is
        ``rejected``; otherwise ``network``.
    """

    def __init__(
        self,
        proxy: str,
        *,
        status_code: int | None = None,
        reply_code: int | None = None,
        authentication: bool = False,
    ) -> None:
        if status_code is not None:
            answer = f"HTTP status {status_code}"
        elif reply_code is not None:
            answer = f"SOCKS5 reply {reply_code:#04x}"
        elif authentication:
            answer = "authentication failed"
        else:
            answer = "no valid answer"
        super().__init__(f"proxy {proxy} refused the tunnel: {answer}")
        self.proxy = proxy
        self.status_code = status_code
        self.reply_code = reply_code
        self.authentication = authentication


class HeartbeatTimeout(TrioConnError):
    """The peer missed ``misses`` consecutive heartbeats: it is judged dead."""

    def __init__(self, misses: int, timeout: float) -> None:
        super().__init__(f"{misses} consecutive heartbeats missed (timeout {timeout:g} s each)")
        self.misses = misses
        self.timeout = timeout


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside ``error``: itself, or the leaves of nested groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for sub in error.exceptions for leaf in leaves(sub)]
    return [error]


def shown_type(error: BaseException) -> type[BaseException]:
    """The type that names ``error`` in a reason and in ``error_type``: its own,
    but for the bare OSError that stands for several connection attempts
    (trio's "all attempts to connect failed"), the type of the attempts'
    errors when they agree (e.g. ConnectionRefusedError)."""
    if type(error) is OSError and error.__cause__ is not None:
        causes = {type(leaf) for leaf in leaves(error.__cause__)}
        if len(causes) == 1:
            (cause,) = causes
            if issubclass(cause, OSError):
                return cause
    return type(error)
