"""open_connection's arguments, statistics() and the stuck-state watchdog."""

from __future__ import annotations

import copy
import dataclasses
import functools
import pickle
import ssl
from typing import Any

import pytest
import trio
import trio.testing

from trio_conn import (
    ConnectionConfig,
    ConnectionState,
    ManagedConnection,
    RetryPolicy,
    TransitionRecord,
    open_connection,
)
from trio_conn.testing import open_fault_server

S = ConnectionState
NO_JITTER = RetryPolicy(jitter=0.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"url": "http://x/"}, ValueError, "ws:// or wss://"),
        ({"url": "ws://u:hunter22@/"}, ValueError, "must name a host"),
        ({"config": {"heartbeat_interval": 1}}, TypeError, "config must be a ConnectionConfig"),
        ({"heartbeat": "ping"}, TypeError, "heartbeat must be a Heartbeat"),
        ({"headers": [("Cookie", 1)]}, TypeError, r"headers\[0\]"),
        ({"on_failed": True}, TypeError, "on_failed must be callable"),
        ({"name": 7}, TypeError, "name must be a str"),
        ({"ssl_context": ssl.create_default_context()}, ValueError, "ssl_context was given"),
        ({"ssl_context": "yes"}, TypeError, "ssl_context must be an ssl.SSLContext"),
    ],
)
async def test_bad_arguments_are_refused_before_anything_runs(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    kwargs.setdefault("url", "ws://127.0.0.1:9/")
    with pytest.raises(error, match=match):
        async with open_connection(**kwargs):
            raise AssertionError("the block must not run")


def plain_on_failed(info: object) -> bool:
    return True


async def async_on_transition(record: object) -> None:
    pass


def plain_headers() -> list[tuple[str, str]]:
    return []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"on_failed": plain_on_failed}, r"on_failed must be an async function \(async def\)"),
        ({"on_connect": lambda session: None}, r"on_connect must be an async function"),
        ({"headers": plain_headers}, r"headers must be an async function"),
        (
            {"on_failed": functools.partial(plain_on_failed)},
            r"on_failed must be an async function",
        ),
        ({"on_transition": async_on_transition}, r"on_transition must be a plain function"),
        ({"open_stream": lambda host, port: None}, r"open_stream must be an async function"),
    ],
)
async def test_hooks_of_the_wrong_colour_are_refused_at_construction(
    kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(TypeError, match=match):
        async with open_connection("ws://127.0.0.1:9/", **kwargs):
            raise AssertionError("the block must not run")


class AsyncCallable:
    async def __call__(self, info: object) -> bool:
        return True


async def async_on_failed(info: object, *, extra: int) -> bool:
    return extra > 0


def wrapped(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)  # returns fn's coroutine

    return wrapper


@pytest.mark.parametrize(
    "on_failed",
    [AsyncCallable(), functools.partial(async_on_failed, extra=1), wrapped(AsyncCallable())],
)
async def test_async_callables_of_every_shape_are_accepted(
    autojump_clock: trio.testing.MockClock, on_failed: Any
) -> None:
    async with open_fault_server() as server:
        server.reject_next(1, 403)
        async with open_connection(
            server.url, open_stream=server.open_stream, on_failed=on_failed
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)  # the hook ran and said True
            assert conn.statistics().transitions[(S.FAILED, S.RECONNECTING)] == 1


async def test_url_secrets_do_not_appear_in_errors() -> None:
    with pytest.raises(ValueError) as info:
        async with open_connection("ws://user:hunter22@/?token=abc123"):
            pass
    assert "hunter22" not in str(info.value)
    assert "abc123" not in str(info.value)


async def test_bad_headers_from_the_callable_fail_the_attempt(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    calls = 0

    async def headers() -> list[tuple[str, str]]:
        nonlocal calls
        calls += 1
        return [("X-Bad", 5)] if calls == 1 else [("X-Good", "1")]  # type: ignore[list-item]

    records: list[TransitionRecord] = []
    async with open_fault_server() as server:
        async with open_connection(
            server.url,
            open_stream=server.open_stream,
            headers=headers,
            on_transition=records.append,
            config=ConnectionConfig(retry=NO_JITTER),
        ) as conn:
            await conn.wait_for_state(S.CONNECTED)
        assert records[1].reason == "other: TypeError during the handshake"
        (failure,) = [e for e in events if e.get("to_state") == S.RECONNECTING]
        assert "headers()[0]" in failure["error_message"]
        assert server.connections[0].header("x-good") == "1"


async def test_statistics_snapshot(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_fault_server() as server,
        open_connection(
            server.url,
            open_stream=server.open_stream,
            config=ConnectionConfig(retry=NO_JITTER),
            name="feed-1",
        ) as conn,
    ):
        assert conn.name == "feed-1"
        await conn.wait_for_state(S.CONNECTED)
        await trio.sleep(20)
        await server.drop()
        await conn.wait_for_state(S.RECONNECTING)
        during = conn.statistics()
        assert during.state is S.RECONNECTING
        assert during.next_retry_at == trio.current_time() + 3.0
        assert during.connected_since is None
        await conn.wait_for_state(S.CONNECTED)
        await trio.sleep(5)
        stats = conn.statistics()
    assert stats.state is S.CONNECTED
    assert stats.state_since == 23.0
    assert stats.time_in_state == 5.0
    assert stats.connected_since == 23.0
    assert stats.attempts == 2
    assert (stats.consecutive_failures, stats.total_failures) == (1, 1)
    assert stats.transitions[(S.CONNECTED, S.RECONNECTING)] == 1
    assert stats.transitions[(S.CONNECTING, S.CONNECTED)] == 2
    assert stats.time_by_state[S.CONNECTED] == 25.0
    assert stats.time_by_state[S.RECONNECTING] == 3.0
    assert sum(stats.time_by_state.values()) == 28.0
    assert stats.last_error == "unexpected_close: ConnectionClosed"
    assert stats.last_close_code == 1006
    assert stats.heartbeat_rtt == 0.0
    assert stats.next_retry_at is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.attempts = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.time_by_state[S.FAILED] = 1.0  # type: ignore[index]
    # A later snapshot does not change an earlier one.
    assert conn.statistics().state is S.CLOSED
    assert stats.state is S.CONNECTED
    # A snapshot can be compared, hashed, stored and sent to another process.
    assert pickle.loads(pickle.dumps(stats)) == stats
    assert copy.deepcopy(stats) == stats
    assert {stats: "seen"}[copy.copy(stats)] == "seen"
    assert dict(stats.transitions)[(S.CONNECTING, S.CONNECTED)] == 2


async def test_default_limits_stay_quiet_during_normal_backoff(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    config = ConnectionConfig(retry=NO_JITTER, max_connection_failures=100)
    async with open_fault_server() as server:
        await server.stop()  # every attempt is refused: 10, 20, ... 60 s in RECONNECTING
        async with open_connection(
            server.url, open_stream=server.open_stream, config=config
        ) as conn:
            await trio.sleep(1000)
            assert conn.state in (S.RECONNECTING, S.CONNECTING)
            assert not [e for e in events if e["event"] == "connection.state_stuck"]
            server.hang_next(1)
            await server.start()
            # the next attempt hangs until connect_timeout (10 s) < stuck_after 30 s
            await trio.sleep(200)
    assert not [e for e in events if e["event"] == "connection.state_stuck"]


async def test_stuck_state_reported_with_short_limits(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    config = ConnectionConfig(
        retry=NO_JITTER,
        connect_timeout=60,
        stuck_after={S.CONNECTING: 5.0, S.FAILED: 100.0},
    )
    async with open_fault_server() as server:
        server.hang_next(2)
        server.reject_next(1, 403)
        async with open_connection(
            server.url, open_stream=server.open_stream, config=config
        ) as conn:
            await conn.wait_for_state(S.FAILED)
            await trio.sleep(250)
            assert conn.state is S.FAILED
    stuck = [e for e in events if e["event"] == "connection.state_stuck"]
    # Two hung attempts (one report each, however long), then FAILED once.
    assert [(e["state"], e["limit"]) for e in stuck] == [
        (S.CONNECTING, 5.0),
        (S.CONNECTING, 5.0),
        (S.FAILED, 100.0),
    ]
    assert stuck[0]["seconds"] == 5.0


def test_a_managed_connection_is_not_made_by_hand() -> None:
    """Made directly it would have no supervisor and never connect: refused."""
    with pytest.raises(TypeError, match=r"made by open_connection\(\) \(or a group's add\(\)\)"):
        ManagedConnection(
            "ws://127.0.0.1:9/",
            config=ConnectionConfig(),
            heartbeat=None,
            headers=None,
            on_connect=None,
            on_failed=None,
            on_transition=None,
            name=None,
            ssl_context=None,
            open_stream=None,
        )
