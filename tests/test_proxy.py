"""Proxies: the choice (URL, environment, no_proxy) and tunnels through real proxies.

The tunnels run through pproxy, an independent HTTP and SOCKS5 proxy, in a
process of its own on 127.0.0.1, to the fault server over TCP: real sockets,
so these tests use the real clock (each takes well under a second).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trustme

from tests.helpers import interrupt_after_lines
from trio_conn import (
    ConnectionConfig,
    ConnectionState,
    ErrorKind,
    ProxyRefused,
    RetryPolicy,
    TransitionRecord,
    open_connection,
)
from trio_conn._proxy import bypassed, choose_proxy, parse_proxy
from trio_conn.cli import main
from trio_conn.testing import open_fault_server

S = ConnectionState
PASSWORD = "s3cr3t-Pr0xy"
ONE_TRY = ConnectionConfig(max_connection_failures=1, retry=RetryPolicy(jitter=0.0))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def pproxy(
    listen: str, port: int | None = None, *extra: str
) -> AsyncIterator[tuple[int, trio.Process]]:
    """Run ``pproxy -l LISTEN`` on 127.0.0.1 (``listen`` has ``{port}`` in it)."""
    port = port or free_port()
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "pproxy", "-l", listen.format(port=port), "--auth", "0", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with trio.fail_after(10):  # its start, in real time
            while True:
                try:
                    probe = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    await trio.sleep(0.05)  # not listening yet: poll, bounded above
                    continue
                await probe.aclose()
                break
        yield port, process
    finally:
        process.kill()
        await process.wait()


# -- which proxy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("ftp://proxy:21", "must be an http://, https://, socks5:// or socks5h:// URL"),
        ("http://proxy:99999", "invalid port"),
        ("http://user:hunter2/x@proxy:8080", "a path, query or fragment"),
        ("http://", "must name a host"),
        ("http://proxy:80/\n", "whitespace or control"),
    ],
)
def test_a_bad_proxy_url_is_refused_naming_the_rule_and_never_the_password(
    url: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match) as raised:
        parse_proxy(url)
    assert "hunter2" not in str(raised.value)


def test_a_proxy_is_not_a_number() -> None:
    with pytest.raises(TypeError, match="proxy must be True, None or a proxy URL str"):
        parse_proxy(8080)


@pytest.mark.parametrize(
    ("host", "no_proxy", "bypass"),
    [
        ("example.com", "", False),
        ("example.com", "*", True),
        ("example.com", "example.com", True),
        ("api.example.com", "example.com", True),
        ("api.example.com", ".example.com", True),
        ("badexample.com", "example.com", False),
        ("example.com", "other.org, example.com:443", True),
        ("10.1.2.3", "10.0.0.0/8", True),
        ("11.1.2.3", "10.0.0.0/8", False),
        ("127.0.0.1", "localhost,127.0.0.1", True),
        ("::1", "::1", True),
        ("[::1]", "[::1]", True),
        ("example.com", " , ,", False),
    ],
)
def test_no_proxy_follows_curl_and_httpx(host: str, no_proxy: str, bypass: bool) -> None:
    assert bypassed(host, no_proxy) is bypass


def test_the_environment_names_the_proxy_for_each_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://tls-proxy:3128")
    monkeypatch.setenv("http_proxy", "socks5://plain-proxy:1080")
    monkeypatch.setenv("no_proxy", "internal.example")
    secure = choose_proxy(True, "feed.example.com", secure=True)
    plain = choose_proxy(True, "feed.example.com", secure=False)
    assert secure is not None
    assert (secure.scheme, secure.host, secure.port) == ("http", "tls-proxy", 3128)
    assert plain is not None
    assert (plain.scheme, plain.host, plain.port) == ("socks5", "plain-proxy", 1080)
    assert choose_proxy(True, "ws.internal.example", secure=True) is None
    assert choose_proxy(None, "feed.example.com", secure=True) is None
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("all_proxy", "socks5://all:1080")
    fallback = choose_proxy(True, "feed.example.com", secure=True)
    assert fallback is not None
    assert fallback.host == "all"
    monkeypatch.setenv("all_proxy", "gopher://x")
    with pytest.raises(ValueError, match="the all_proxy environment variable must be"):
        choose_proxy(True, "feed.example.com", secure=True)


async def test_a_proxy_and_an_open_stream_together_are_refused() -> None:
    async def open_stream(host: str, port: int) -> trio.abc.Stream:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="proxy and open_stream were both given"):
        async with open_connection(
            "ws://127.0.0.1:9/", proxy="http://127.0.0.1:3128", open_stream=open_stream
        ):
            pytest.fail("the block ran")


async def test_the_environments_proxy_is_not_used_with_an_open_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
    async with (
        open_fault_server() as server,
        open_connection(server.url, open_stream=server.open_stream) as conn,
    ):
        assert conn.proxy is None
        with trio.fail_after(5):
            await conn.wait_for_state(S.CONNECTED)


# -- through real proxies ------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "socks5"])
@pytest.mark.parametrize("with_password", [False, True])
async def test_messages_go_through_the_proxy_and_its_password_is_never_shown(
    scheme: str, with_password: bool, events: list[dict[str, Any]]
) -> None:
    auth = f"#alice:{PASSWORD}" if with_password else ""
    userinfo = f"alice:{PASSWORD}@" if with_password else ""
    async with (
        pproxy(f"{scheme}://127.0.0.1:{{port}}{auth}") as (port, _),
        open_fault_server() as server,
    ):
        proxy = f"{scheme}://{userinfo}127.0.0.1:{port}"
        async with open_connection(server.url, proxy=proxy) as conn:
            with trio.fail_after(5):
                await conn.wait_for_state(S.CONNECTED)
                await conn.send("through the tunnel")
                assert await conn.receive() == "through the tunnel"
            shown = conn.proxy
            assert shown is not None
            assert PASSWORD not in shown
            assert PASSWORD not in repr(conn)
        assert server.connections[0].received == ["through the tunnel"]
    assert events
    assert not [e for e in events if PASSWORD in repr(e)]


@pytest.mark.parametrize(
    ("scheme", "status"),
    [("http", 407), ("socks5", None)],
)
async def test_wrong_proxy_credentials_are_rejected_and_call_on_failed(
    scheme: str, status: int | None, events: list[dict[str, Any]]
) -> None:
    failures: list[Any] = []
    hook_called = trio.Event()

    async def on_failed(info: Any) -> bool:
        failures.append(info)
        hook_called.set()
        return False

    records: list[TransitionRecord] = []
    async with (
        pproxy(f"{scheme}://127.0.0.1:{{port}}#alice:{PASSWORD}") as (port, _),
        open_fault_server() as server,
        open_connection(
            server.url,
            proxy=f"{scheme}://alice:wrong-{PASSWORD}@127.0.0.1:{port}",
            on_failed=on_failed,
            on_transition=records.append,
        ) as conn,
    ):
        with trio.fail_after(5):
            await conn.wait_for_state(S.FAILED)
            await hook_called.wait()  # the hook runs right after FAILED is entered
    failed = records[1]
    assert failed.kind is ErrorKind.REJECTED
    assert failed.status_code == status
    assert isinstance(failed.error, ProxyRefused)
    assert failed.error.authentication
    assert failures[0].kind is ErrorKind.REJECTED
    assert server.tcp_connections == 0
    assert not [e for e in events if PASSWORD in repr(e)]


async def test_a_dead_proxy_is_a_network_failure_and_retried() -> None:
    records: list[TransitionRecord] = []
    async with (
        open_fault_server() as server,
        open_connection(
            server.url, proxy=f"http://127.0.0.1:{free_port()}", on_transition=records.append
        ) as conn,
    ):
        with trio.fail_after(5):
            await conn.wait_for_state(S.RECONNECTING)
    assert records[1].kind is ErrorKind.NETWORK
    assert records[1].retry_in is not None


async def test_a_proxy_that_refuses_the_destination_is_a_network_failure() -> None:
    """pproxy's block rule refuses the tunnel (the SOCKS5 reply carries a code)."""
    records: list[TransitionRecord] = []
    port = free_port()
    async with (
        pproxy("socks5://127.0.0.1:{port}") as (proxy_port, _),
        open_connection(
            f"ws://127.0.0.1:{port}/",  # nothing listens there: the proxy cannot connect
            proxy=f"socks5://127.0.0.1:{proxy_port}",
            on_transition=records.append,
            config=ONE_TRY,
        ) as conn,
    ):
        with trio.fail_after(5):
            await conn.wait_for_state(S.FAILED)
    assert records[1].kind is ErrorKind.NETWORK


async def test_the_environments_proxy_is_used_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with pproxy("http://127.0.0.1:{port}") as (port, _), open_fault_server() as server:
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        async with open_connection(server.url) as conn:
            assert conn.proxy == f"http://127.0.0.1:{port}"
            with trio.fail_after(5):
                await conn.wait_for_state(S.CONNECTED)
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")  # dead
        monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
        async with open_connection(server.url) as conn:
            assert conn.proxy is None
            with trio.fail_after(5):
                await conn.wait_for_state(S.CONNECTED)
        assert server.accepted == 2


async def test_a_proxy_that_dies_mid_session_is_reconnected_through_when_back() -> None:
    config = ConnectionConfig(retry=RetryPolicy(jitter=0.0), max_connection_failures=100)
    async with open_fault_server() as server:
        async with (
            pproxy("http://127.0.0.1:{port}") as (port, process),
            open_connection(server.url, proxy=f"http://127.0.0.1:{port}", config=config) as conn,
        ):
            with trio.fail_after(5):
                await conn.wait_for_state(S.CONNECTED)
            process.kill()  # the tunnel goes with it
            with trio.fail_after(5):
                await conn.wait_for_state(S.RECONNECTING)
            async with pproxy("http://127.0.0.1:{port}", port=port):
                with trio.fail_after(30):  # the network row's first steps
                    await conn.wait_for_state(S.CONNECTED)
                await conn.send("back")
                with trio.fail_after(5):
                    assert await conn.receive() == "back"
        assert server.accepted == 2


async def test_an_https_proxy_is_reached_over_tls_with_the_ssl_context() -> None:
    """TLS to the proxy (pproxy --ssl, a certificate of a test CA), then CONNECT,
    then TLS to the wss:// server inside the tunnel: one ssl_context trusts both."""
    ca = trustme.CA()
    proxy_cert = ca.issue_cert("127.0.0.1")
    server_cert = ca.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with proxy_cert.private_key_and_cert_chain_pem.tempfile() as pem:
        async with (
            pproxy("http+ssl://127.0.0.1:{port}", None, "--ssl", f"{pem},{pem}") as (port, _),
            open_fault_server(ssl_context=server_context) as server,
            open_connection(
                server.url, proxy=f"https://127.0.0.1:{port}", ssl_context=client_context
            ) as conn,
        ):
            with trio.fail_after(5):
                await conn.wait_for_state(S.CONNECTED)
                await conn.send("tls in tls")
                assert await conn.receive() == "tls in tls"


# -- the CLI -------------------------------------------------------------------------


def test_connect_refuses_a_bad_proxy_without_showing_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["connect", "ws://example.com/", "--proxy", f"ftp://u:{PASSWORD}@h:21"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trio-conn: error: --proxy must be an http://, https://, socks5://")
    assert PASSWORD not in err


async def test_connect_goes_through_the_proxy_it_is_given() -> None:
    """Real clock: a real trio-conn process, through pproxy, stopped with SIGINT."""
    with trio.fail_after(30):
        async with (
            pproxy(f"socks5://127.0.0.1:{{port}}#alice:{PASSWORD}") as (port, _),
            open_fault_server() as server,
        ):
            process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "trio_conn",
                    "connect",
                    server.url,
                    "--proxy",
                    f"socks5://alice:{PASSWORD}@127.0.0.1:{port}",
                    "--send",
                    "through",
                    "--log-format",
                    "json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            stdout, stderr = await interrupt_after_lines(process, 1)
    assert stdout.decode().splitlines() == ["through"]
    assert server.connections[0].received == ["through"]
    assert PASSWORD not in stderr.decode()
    assert '"to_state":"connected"' in stderr.decode().replace(" ", "")


# -- from a new user's trial and an adversarial review ---------------------------------


def test_a_proxy_without_a_scheme_is_http_as_curl_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("https_proxy", "proxy.corp:3128")
    chosen = choose_proxy(True, "feed.example.com", secure=True)
    assert chosen is not None
    assert (chosen.scheme, chosen.host, chosen.port) == ("http", "proxy.corp", 3128)


def test_no_proxy_takes_an_address_with_a_port() -> None:
    assert bypassed("127.0.0.1", "127.0.0.1:8080")


@pytest.mark.parametrize("password", ["pässwörd", "x" * 256])
def test_socks_credentials_beyond_rfc_1929_are_refused_unseen(password: str) -> None:
    with pytest.raises(ValueError, match="SOCKS5 password must be 1 to 255 ASCII") as raised:
        parse_proxy(f"socks5://user:{password}@127.0.0.1:1080")
    assert password not in str(raised.value)


async def test_an_ssl_context_goes_with_a_ws_url_through_an_https_proxy() -> None:
    async with open_connection(
        "ws://127.0.0.1:9/",
        proxy=f"https://127.0.0.1:{free_port()}",
        ssl_context=ssl.create_default_context(),
    ) as conn:
        assert conn.proxy is not None


async def test_a_broken_socks_answer_without_credentials_is_a_network_failure() -> None:
    """A SOCKS5 'proxy' that takes the greeting and hangs up: not the credentials'
    fault (none were offered), so retried, never fatal."""
    records: list[TransitionRecord] = []

    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some(16)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        async with open_connection(
            "ws://127.0.0.1:9/", proxy=f"socks5://127.0.0.1:{port}", on_transition=records.append
        ) as conn:
            with trio.fail_after(5):
                await conn.wait_for_state(S.RECONNECTING)
        nursery.cancel_scope.cancel()
    assert records[1].kind is ErrorKind.NETWORK
    assert records[1].retry_in is not None


async def test_an_internationalised_host_is_asked_of_an_http_proxy_in_its_dns_form() -> None:
    lines: list[bytes] = []

    async def record_connect(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(4096)
        lines.append(head.split(b"\r\n")[0])
        await stream.send_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            partial(trio.serve_tcp, record_connect, 0, host="127.0.0.1")
        )
        port = listener.socket.getsockname()[1]
        async with open_connection(
            "ws://bücher.example/", proxy=f"http://127.0.0.1:{port}"
        ) as conn:
            with trio.fail_after(5):
                await conn.wait_for_state(S.RECONNECTING)
        nursery.cancel_scope.cancel()
    assert lines[0] == b"CONNECT xn--bcher-kva.example:80 HTTP/1.1"


def test_connect_refuses_a_bad_environment_proxy_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", f"ftp://u:{PASSWORD}@h:21")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert main(["connect", "ws://example.com/"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trio-conn: error: the http_proxy environment variable must be")
    assert PASSWORD not in err
