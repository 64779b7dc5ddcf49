"""Proxies: which one an attempt goes through, and the tunnel through it.

Rules of the house:

- ``proxy=True`` (the default) reads the environment once, when the
  connection is made, as websockets and httpx do: ``https_proxy`` for wss://,
  ``http_proxy`` for ws://, ``all_proxy`` for either, upper-case names too;
  ``no_proxy`` (hosts, domains, addresses, CIDR blocks, ``*``) is
  honoured as curl and httpx do (:func:`bypassed`). With an
  ``open_stream`` of the application's, the environment is not read (the
  application opens its own streams). ``proxy=None``: never a proxy.
- An ``http://`` or ``https://`` proxy gets an HTTP ``CONNECT`` (RFC 9110
  section 9.3.6), spoken with h11 (the HTTP/1.1 library wsproto itself
  uses); TLS to an ``https://`` proxy uses the connection's ``ssl_context``.
  A ``socks5://`` (or ``socks5h://``) proxy is python-socks' Trio backend,
  names resolved by the proxy. TLS to a wss:// server runs inside the tunnel.
- The tunnel is one step of the attempt, inside ``connect_timeout``.
- Failures classify like any other (``trio_conn/_failure.py``): an
  unreachable proxy is ``network`` (an OSError); a proxy that refuses the
  tunnel raises :class:`~trio_conn.ProxyRefused`, ``network`` too, unless it
  refused our credentials (HTTP 407, a SOCKS authentication failure):
  ``rejected``.
- The proxy's userinfo is a secret, like a URL's: registered for the
  connection's life, the proxy shown redacted.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import ssl
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import h11
import trio
from python_socks import ProxyError as SocksError
from python_socks import ProxyType
from python_socks.async_.trio import Proxy as SocksProxy

from ._exceptions import ProxyRefused
from ._redact import redact_url

#: Proxy URL schemes, and the port each defaults to.
SCHEMES = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}
#: Most bytes of a proxy's answer to CONNECT read before giving up.
MAX_ANSWER = 65536


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """One proxy to go through."""

    scheme: str
    host: str
    port: int
    #: The proxy URL as logs may show it.
    shown: str
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    @property
    def secrets(self) -> list[str]:
        """What of this proxy must never reach a log: its credentials, as sent too."""
        if not (self.username or self.password):
            return []
        return [self.username, self.password, self.authorization]

    @property
    def authorization(self) -> str:
        """The ``Proxy-Authorization`` value (RFC 7617 Basic)."""
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


def parse_proxy(url: object, source: str = "proxy") -> ProxySpec:
    """Parse a proxy URL: ``http://``, ``https://``, ``socks5://`` or ``socks5h://``.

    :param source: where it came from, for the message (``proxy``, or the
        environment variable's name).
    :raises TypeError: not a str.
    :raises ValueError: another scheme, no host, a bad port, or a path; the
        message shows the URL redacted.
    """
    if not isinstance(url, str):
        raise TypeError(f"{source} must be True, None or a proxy URL str, got {type(url).__name__}")
    if url and "://" not in url:
        url = "http://" + url  # "proxy.corp:3128", as curl and requests read it
    shown = redact_url(url)
    if any(ch.isspace() or ch < " " or ch == "\x7f" for ch in url):
        raise ValueError(f"{source} must not contain whitespace or control characters: {shown!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"{source} must be an http://, https://, socks5:// or socks5h:// URL, got {shown!r}"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"{source} must be a proxy's scheme, host and port only (a path, query or "
            f"fragment here is a password's unencoded '/', '?' or '#'?): {shown!r}"
        )
    if not parts.hostname:
        raise ValueError(f"{source} must name a host: {shown!r}")
    try:
        port = parts.port or SCHEMES[scheme]
    except ValueError:
        raise ValueError(f"{source} has an invalid port (must be 0-65535): {shown!r}") from None
    username, password = unquote(parts.username or ""), unquote(parts.password or "")
    if scheme.startswith("socks5") and (username or password):
        for name, value in (("user name", username), ("password", password)):
            # RFC 1929: each 1 to 255 bytes; python-socks sends them as ASCII.
            if not (value.isascii() and 1 <= len(value) <= 255):
                raise ValueError(
                    f"{source}'s SOCKS5 {name} must be 1 to 255 ASCII characters "
                    f"(RFC 1929); not shown: {shown!r}"
                )
    return ProxySpec(
        scheme=scheme,
        host=parts.hostname,
        port=port,
        shown=shown,
        username=username,
        password=password,
    )


def choose_proxy(proxy: object, host: str, secure: bool) -> ProxySpec | None:
    """The proxy for a connection to ``host`` (rules above), or None.

    :raises TypeError, ValueError: ``proxy`` or the environment's proxy URL
        is not a proxy URL (the message names the variable).
    """
    if proxy is None or proxy is False:
        return None
    if proxy is True:
        found = urllib.request.getproxies_environment()
        if bypassed(host, found.get("no", "")):
            return None
        for key in ("https", "all") if secure else ("http", "all"):
            url = found.get(key)
            if url:
                return parse_proxy(url, f"the {key}_proxy environment variable")
        return None
    return parse_proxy(proxy)


def bypassed(host: str, no_proxy: str) -> bool:
    """Whether ``no_proxy`` (comma-separated) exempts ``host`` from the proxy.

    The common convention (curl, requests, httpx): ``*`` exempts every host;
    an entry exempts the host itself and every name below it (a leading ``.``
    is allowed, a ``:port`` ignored); an IP entry or CIDR block exempts the
    addresses in it.
    """
    host = host.lower().strip("[]")
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if address is not None:
            if entry.count(":") == 1:  # an IPv4 entry with a port ("127.0.0.1:8080")
                entry = entry.partition(":")[0]
            try:
                if address in ipaddress.ip_network(entry.strip("[]"), strict=False):
                    return True
            except ValueError:
                pass
            continue
        if entry.startswith("[") or entry.count(":") > 1:  # an IPv6 entry: not a name
            continue
        name = entry.rpartition(":")[0] if ":" in entry else entry
        name = name.lstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


async def open_tunnel(
    proxy: ProxySpec, host: str, port: int, ssl_context: ssl.SSLContext | None
) -> trio.abc.Stream:
    """A byte stream to ``host:port`` through ``proxy``; the caller bounds the time.

    :raises OSError: the proxy is unreachable.
    :raises ProxyRefused: the proxy refused the tunnel (``authentication``
        when it refused our credentials).
    :raises trio.BrokenResourceError: the proxy ended the stream or TLS to it failed.
    """
    if proxy.scheme.startswith("socks5"):
        return await _socks_tunnel(proxy, host, port)
    stream: trio.abc.Stream = await trio.open_tcp_stream(proxy.host, proxy.port)
    try:
        if proxy.scheme == "https":
            context = ssl_context or ssl.create_default_context()
            stream = trio.SSLStream(stream, context, server_hostname=proxy.host)
            await stream.do_handshake()
        await _http_connect(stream, proxy, host, port)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def _socks_tunnel(proxy: ProxySpec, host: str, port: int) -> trio.abc.Stream:
    socks = SocksProxy(
        ProxyType.SOCKS5,
        proxy.host,
        proxy.port,
        username=proxy.username or None,
        password=proxy.password or None,
        rdns=True,  # the proxy resolves the name (socks5h:// says so; socks5:// too, here)
    )
    try:
        sock = await socks.connect(host, port, timeout=math.inf)  # bounded by connect_timeout
    except SocksError as exc:
        # A reply code is the proxy's answer to CONNECT; none means the
        # negotiation before it failed: our credentials, or none offered.
        # Decision: without a code, a negotiation that failed while credentials
        # were offered is taken as their refusal (rejected); without credentials
        # it is a broken answer (network), never fatal. python-socks tells no more.
        code = exc.error_code
        refused_credentials = code is None and bool(proxy.username or proxy.password)
        raise ProxyRefused(
            proxy.shown, reply_code=code, authentication=refused_credentials
        ) from None
    return trio.SocketStream(sock)


async def _http_connect(stream: trio.abc.Stream, proxy: ProxySpec, host: str, port: int) -> None:
    if not host.isascii():
        host = host.encode("idna").decode("ascii")  # an internationalised name, as DNS has it
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    headers = [("Host", authority)]
    if proxy.username or proxy.password:
        headers.append(("Proxy-Authorization", proxy.authorization))
    client = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_ANSWER)
    await stream.send_all(
        client.send(h11.Request(method="CONNECT", target=authority, headers=headers))
    )
    while True:
        try:
            event = client.next_event()
        except h11.RemoteProtocolError:
            raise ProxyRefused(proxy.shown) from None  # not HTTP: no answer to CONNECT
        if event is h11.NEED_DATA:
            data = await stream.receive_some(MAX_ANSWER)
            if not data:
                raise trio.BrokenResourceError(
                    "the proxy ended the stream before answering CONNECT"
                )
            client.receive_data(bytes(data))
            continue
        if isinstance(event, h11.InformationalResponse):
            continue
        if isinstance(event, h11.Response):
            if 200 <= event.status_code < 300:
                leftover, _ = client.trailing_data
                if leftover:  # the server speaks only after our request: never expected
                    raise ProxyRefused(proxy.shown, status_code=event.status_code)
                return
            raise ProxyRefused(
                proxy.shown,
                status_code=event.status_code,
                authentication=event.status_code == 407,
            )
        raise ProxyRefused(proxy.shown)  # anything else is not an answer to CONNECT
