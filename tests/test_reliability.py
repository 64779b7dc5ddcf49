"""Bad input, hostile peers, TLS and a frozen process: a clear error or a classified
failure after which the manager keeps working."""

from __future__ import annotations

import signal
import ssl
from typing import Any

import pytest
import trio
import trio.testing
import trustme

from tests.helpers import start_server_process
from tests.test_connection import durations, edges
from trio_conn import (
    Backoff,
    ConnectionConfig,
    ConnectionState,
    ErrorKind,
    RetryPolicy,
    Session,
    TransitionRecord,
    open_connection,
)
from trio_conn.testing import open_fault_server

S = ConnectionState
NO_JITTER = RetryPolicy(jitter=0.0)
REAL_TIME_BOUND = 20  # seconds; the real-clock tests below finish in about one


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("", "url must not be empty"),
        ("   ", "must not contain whitespace"),
        ("ws://host name/", "must not contain whitespace"),
        ("ws://host/a b", "must not contain whitespace"),
        ("https://host/", "must start with ws:// or wss://"),
        ("ws://", "must name a host"),
        ("ws://:80/", "must name a host"),
        ("ws://host:70000/", "invalid port"),
    ],
)
async def test_bad_urls_name_the_rule(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        async with open_connection(url):
            raise AssertionError("the block must not run")


async def test_garbage_handshake_is_a_classified_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    records: list[TransitionRecord] = []
    async with open_fault_server() as server:
        server.garbage_next()
        async with open_connection(
            server.url,
            open_stream=server.open_stream,
            on_transition=records.append,
            config=ConnectionConfig(retry=NO_JITTER),
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            await conn.send("works")
            assert await conn.receive() == "works"
    assert server.garbled == 1
    assert records[1].reason == "other: RemoteProtocolError during the handshake"
    assert records[1].duration < conn.config.connect_timeout  # refused at once, not timed out


async def test_oversized_message_closes_1009_and_reconnects(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    records: list[TransitionRecord] = []
    config = ConnectionConfig(retry=NO_JITTER, max_message_size=1000)
    async with open_fault_server() as server:
        async with open_connection(
            server.url, open_stream=server.open_stream, on_transition=records.append, config=config
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
            await server.push("x" * 1001)
            await conn.wait_for_state(S.RECONNECTING)
            await conn.wait_for_state(S.CONNECTED)
            await server.push("x" * 1000)  # exactly the limit is fine
            assert await conn.receive() == "x" * 1000
        assert records[2].reason.startswith("other: ConnectionClosed (close code 1009)")
        assert server.connections[0].close_code == 1009


async def test_on_connect_that_hangs_is_bounded_by_connect_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = 0

    async def on_connect(session: Session) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await trio.sleep_forever()

    records: list[TransitionRecord] = []
    async with (
        open_fault_server() as server,
        open_connection(
            server.url,
            open_stream=server.open_stream,
            on_connect=on_connect,
            on_transition=records.append,
            config=ConnectionConfig(retry=NO_JITTER),
        ) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
    assert records[1].reason == "network: TooSlowError in on_connect"
    assert records[1].duration == 10.0
    assert server.connections[0].open is False  # that socket was closed, not leaked


async def test_heartbeat_predicate_that_raises_is_logged_and_ignored(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    from trio_conn import MessageHeartbeat

    def is_response(message: str | bytes) -> bool:
        raise KeyError("bad predicate")

    heartbeat = MessageHeartbeat(lambda: "beat", is_response)
    async with (
        open_fault_server() as server,
        open_connection(server.url, open_stream=server.open_stream, heartbeat=heartbeat) as conn,
    ):
        await conn.wait_for_state(S.CONNECTED)
        assert await conn.receive() == "beat"  # the echo, delivered since not a reply
    failures = [e for e in events if e["event"] == "connection.hook_failed"]
    assert failures
    assert failures[0]["hook"] == "heartbeat.is_response"


def test_heartbeat_arguments_are_checked() -> None:
    from trio_conn import MessageHeartbeat

    with pytest.raises(TypeError, match="make_message must be callable"):
        MessageHeartbeat("ping", lambda m: True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is_response must be callable"):
        MessageHeartbeat(lambda: "ping", None)  # type: ignore[arg-type]

    async def async_is_response(message: object) -> bool:
        return True

    with pytest.raises(TypeError, match="is_response must be a plain function"):
        MessageHeartbeat(lambda: "ping", async_is_response)  # type: ignore[arg-type]


# -- TLS (real clock: a real TLS handshake over TCP) --------------------------------


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_self_signed_certificate_is_refused_by_default(
    certificate_authority: trustme.CA, events: list[dict[str, Any]]
) -> None:
    with trio.fail_after(REAL_TIME_BOUND):
        async with (
            open_fault_server(ssl_context=server_context(certificate_authority)) as server,
            open_connection(server.url) as conn,
        ):
            assert server.url.startswith("wss://")
            await conn.wait_for_state(S.RECONNECTING)
            stats = conn.statistics()
    assert stats.last_error_kind is ErrorKind.OTHER  # a bad certificate will not heal
    (failure,) = [e for e in events if e.get("to_state") == S.RECONNECTING]
    assert "certificate verify failed" in failure["error_message"]
    assert server.handshakes == 0


async def test_trusted_context_is_accepted(certificate_authority: trustme.CA) -> None:
    client_context = ssl.create_default_context()
    certificate_authority.configure_trust(client_context)
    with trio.fail_after(REAL_TIME_BOUND):
        async with (
            open_fault_server(ssl_context=server_context(certificate_authority)) as server,
            open_connection(server.url, ssl_context=client_context) as conn,
        ):
            await conn.wait_for_state(S.CONNECTED)
            await conn.send("over tls")
            assert await conn.receive() == "over tls"


# -- a frozen process (real clock: SIGSTOP stops a real server process) -------------


async def test_stopped_process_is_detected_within_the_bound_and_recovers() -> None:
    """Real clock: the peer is a process stopped with SIGSTOP, TCP stays open."""
    fast = Backoff(0.2, 0.5)
    config = ConnectionConfig(
        heartbeat_interval=0.3,
        heartbeat_timeout=0.3,
        max_heartbeat_failures=2,
        connect_timeout=1.0,
        retry=RetryPolicy(jitter=0.0, backoff={ErrorKind.HEARTBEAT: fast, ErrorKind.NETWORK: fast}),
    )
    bound = 0.3 + 2 * max(0.3, 0.3)
    records: list[TransitionRecord] = []
    with trio.fail_after(REAL_TIME_BOUND):
        process, port = await start_server_process("tests.echo_server", 0)
        try:
            async with open_connection(
                f"ws://127.0.0.1:{port}/", config=config, on_transition=records.append
            ) as conn:
                await conn.wait_for_state(S.CONNECTED)
                await conn.send("ping")
                assert await conn.receive() == "ping"  # the peer answered just now
                stopped_at = trio.current_time()
                process.send_signal(signal.SIGSTOP)
                await conn.wait_for_state(S.RECONNECTING)
                detected = trio.current_time() - stopped_at
                process.send_signal(signal.SIGCONT)
                await conn.wait_for_state(S.CONNECTED)
                await conn.send("back")
                assert await conn.receive() == "back"
        finally:
            process.send_signal(signal.SIGCONT)
            process.kill()
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()
    # Scheduling on a loaded 2-core machine may add a little to the bound.
    assert detected <= bound + 0.5, detected
    assert records[2].reason == "heartbeat: HeartbeatTimeout (2 missed) while connected"
    assert edges(records)[-2:] == [(S.CONNECTING, S.CONNECTED), (S.CONNECTED, S.CLOSED)]
    assert durations(records, (S.CONNECTED, S.RECONNECTING))
