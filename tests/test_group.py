"""Connection groups: add, remove, restart by key; isolation; closing; admission.

Every test runs on the autojump clock over the fault server's memory
streams, so a storm of a thousand members runs in virtual time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from trio_conn import (
    ConnectionConfig,
    ConnectionState,
    FailureInfo,
    ManagedConnection,
    RetryPolicy,
    Session,
    TransitionRecord,
    open_connection_group,
)
from trio_conn.testing import FaultServer, open_fault_server

S = ConnectionState
NO_JITTER = RetryPolicy(jitter=0.0)
QUICK = ConnectionConfig(heartbeat_interval=1.0, heartbeat_timeout=1.0, retry=NO_JITTER)


def tasks_below(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield child
            yield from tasks_below(child)


def library_tasks() -> list[str]:
    """Names of the tasks of trio_conn still running (the fault server's excepted)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    return [
        task.name
        for task in tasks_below(root)
        if task.name.startswith("trio_conn") and not task.name.startswith("trio_conn.testing")
    ]


def server_connection_for(server: FaultServer, key: str) -> list[Any]:
    return [c for c in server.connections if c.header("x-account") == key]


async def test_members_are_added_read_by_their_handlers_and_removed_alone(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    received: dict[str, list[str]] = {"a": [], "b": [], "c": []}

    def handler_for(key: str) -> Any:
        async def handler(conn: ManagedConnection) -> None:
            async for message in conn:
                received[key].append(str(message))

        return handler

    async with (
        open_fault_server() as server,
        open_connection_group(open_stream=server.open_stream, config=QUICK) as group,
    ):
        for key in received:
            conn = await group.add(
                key, server.url, headers=[("X-Account", key)], handler=handler_for(key)
            )
            assert group[key] is conn
            assert conn.name == key
        assert sorted(group) == ["a", "b", "c"]
        assert len(group) == 3
        assert "b" in group
        for key in received:
            await group[key].wait_for_state(S.CONNECTED)
        await server.push("hello")
        await trio.testing.wait_all_tasks_blocked()
        assert received == {"a": ["hello"], "b": ["hello"], "c": ["hello"]}

        removed = group["b"]
        await group.remove("b")
        assert removed.state is S.CLOSED
        assert "b" not in group
        assert len(group) == 2
        (b_side,) = server_connection_for(server, "b")
        await trio.testing.wait_all_tasks_blocked()
        assert (b_side.open, b_side.close_code) == (False, 1000)  # a close frame, answered
        assert not [name for name in library_tasks() if name.endswith(" b")]

        await server.push("after")
        await trio.testing.wait_all_tasks_blocked()
        assert received["a"] == received["c"] == ["hello", "after"]
        assert received["b"] == ["hello"]
        assert {group[key].state for key in group} == {S.CONNECTED}
    assert {e["conn_id"] for e in events if e["event"] == "connection.state_changed"} == {
        "a",
        "b",
        "c",
    }


async def test_a_key_twice_or_a_missing_key_is_a_clear_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_fault_server() as server,
        open_connection_group(open_stream=server.open_stream) as group,
    ):
        await group.add("a", server.url)
        with pytest.raises(KeyError, match=r"'a' is already a member.*restart"):
            await group.add("a", server.url)
        with pytest.raises(KeyError, match="'z' is not a member"):
            await group.remove("z")
        with pytest.raises(KeyError, match=r"'z' is not a member.*add"):
            await group.restart("z")
        with pytest.raises(KeyError):
            group["z"]
        with pytest.raises(ValueError, match="1 to 200 printable characters"):
            await group.add("", server.url)
        with pytest.raises(ValueError, match="printable"):
            await group.add("a\nb", server.url)
        with pytest.raises(TypeError, match="key must be a str"):
            await group.add(7, server.url)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="handler"):
            await group.add("b", server.url, handler=print)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="url must start with ws:"):
            await group.add("b", "http://example.test/")
        assert list(group) == ["a"]  # nothing half-added
        assert group["a"].state in (S.CONNECTING, S.CONNECTED)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"attempts_per_second": 0},
            ValueError,
            "attempts_per_second must be a finite number from 1e-06 to 1e",
        ),
        ({"attempts_per_second": math.nan}, ValueError, "finite number from 1e-06 to 1e"),
        ({"attempts_per_second": True}, TypeError, "attempts_per_second must be a number"),
        ({"attempt_burst": 0}, ValueError, "attempt_burst must be from 1 to 1,000,000"),
        ({"attempt_burst": 1.5}, TypeError, "attempt_burst must be an int"),
        ({"compression": "zstd"}, ValueError, "compression must be 'deflate'"),
        ({"compression": True}, TypeError, "compression must be 'deflate' or None, got a bool"),
        ({"config": {}}, TypeError, "config must be a ConnectionConfig"),
        ({"subprotocols": "chat"}, TypeError, "subprotocols must be a sequence"),
    ],
)
async def test_bad_group_options_are_refused_at_opening(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        async with open_connection_group(**kwargs):
            pytest.fail("the group opened")


async def test_restart_replaces_a_member_with_no_window_and_never_two_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """New headers (rotated credentials) reach the server; while restart runs,
    the key is always present, and the old WebSocket connection is closed
    before the new one is opened."""
    async with (
        open_fault_server() as server,
        open_connection_group(open_stream=server.open_stream, config=QUICK) as group,
    ):
        old = await group.add("acct", server.url, headers=[("X-Account", "acct"), ("Cookie", "v1")])
        await old.wait_for_state(S.CONNECTED)
        seen_missing = 0
        restarting = True
        open_at_new_connect: list[int] = []

        async def count_open(session: Session) -> None:
            sides = server_connection_for(server, "acct")
            open_at_new_connect.append(sum(side.open for side in sides))

        async def watch() -> None:
            nonlocal seen_missing
            for _ in range(100_000):  # bounded; ends when the restart does
                if not restarting:
                    return
                seen_missing += "acct" not in group
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            new = await group.restart(
                "acct", headers=[("X-Account", "acct"), ("Cookie", "v2")], on_connect=count_open
            )
            restarting = False
        assert seen_missing == 0
        assert group["acct"] is new
        assert new is not old
        assert old.state is S.CLOSED
        await new.wait_for_state(S.CONNECTED)
        assert open_at_new_connect == [1]  # the new one's own: the old was closed first
        first, second = server_connection_for(server, "acct")
        assert (first.header("cookie"), second.header("cookie")) == ("v1", "v2")
        assert first.close_code == 1000
        assert not first.open
        assert second.open
        # The old one was closed before the new one's request arrived.
        assert server.accepted == 2
        assert server.open_connections == 1


async def test_a_restart_with_a_bad_option_leaves_the_member_untouched(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_fault_server() as server,
        open_connection_group(open_stream=server.open_stream) as group,
    ):
        conn = await group.add("a", server.url)
        await conn.wait_for_state(S.CONNECTED)
        with pytest.raises(ValueError, match="header"):
            await group.restart("a", headers=[("X-Bad", "line\r\nbreak")])
        assert group["a"] is conn
        assert conn.state is S.CONNECTED
        assert server.accepted == 1


async def test_restart_during_a_reconnect_storm_and_during_on_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Members backing off from a dead server, one of them inside a slow
    on_failed: restarting either ends the old member at once (the wait and
    the hook are interrupted) and the new one connects when the server is back."""
    hook_started = trio.Event()
    hook_cancelled = False

    async def slow_on_failed(info: FailureInfo) -> bool:
        nonlocal hook_cancelled
        hook_started.set()
        try:
            await trio.sleep(5.0)  # within connect_timeout
        except trio.Cancelled:
            hook_cancelled = True
            raise
        return False

    config = ConnectionConfig(max_connection_failures=2, connect_timeout=10.0, retry=NO_JITTER)
    async with (
        open_fault_server() as server,
        open_connection_group(open_stream=server.open_stream, config=config) as group,
    ):
        patient = ConnectionConfig(max_connection_failures=100, retry=NO_JITTER)
        for key in ("a", "b"):
            await group.add(key, server.url, config=patient)
        await group.add("c", server.url, on_failed=slow_on_failed)
        for key in ("a", "b", "c"):
            await group[key].wait_for_state(S.CONNECTED)
        await server.stop()
        await server.drop()
        await group["a"].wait_for_state(S.RECONNECTING)
        await hook_started.wait()
        assert group["c"].state is S.FAILED

        started = trio.current_time()
        old_a = group["a"]
        new_a = await group.restart("a")
        old_c = group["c"]
        new_c = await group.restart("c", on_failed=None)
        assert trio.current_time() - started < 0.1  # nothing to wait for: no session
        assert old_a.state is old_c.state is S.CLOSED
        assert hook_cancelled
        assert group["b"].state in (S.RECONNECTING, S.CONNECTING)

        await server.start()
        for conn in (new_a, group["b"], new_c):
            with trio.fail_after(120):
                await conn.wait_for_state(S.CONNECTED)


async def test_a_members_failures_never_reach_the_others(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    """A raising on_transition, a raising on_connect and a raising handler each
    harm only their own member: the handler's member is closed and stays in
    the group, CLOSED; the others keep receiving."""
    got: list[str] = []

    def bad_transition(record: TransitionRecord) -> None:
        raise RuntimeError("observer bug")

    async def bad_on_connect(session: Session) -> None:
        raise RuntimeError("init bug")

    async def bad_handler(conn: ManagedConnection) -> None:
        await conn.receive()
        raise RuntimeError("handler bug")

    async def good_handler(conn: ManagedConnection) -> None:
        async for message in conn:
            got.append(str(message))

    async with (
        open_fault_server() as server,
        open_connection_group(open_stream=server.open_stream, config=QUICK) as group,
    ):
        await group.add("observer", server.url, on_transition=bad_transition)
        await group.add("init", server.url, on_connect=bad_on_connect)
        await group.add("handler", server.url, handler=bad_handler)
        await group.add("good", server.url, handler=good_handler)
        for key in ("observer", "handler", "good"):
            await group[key].wait_for_state(S.CONNECTED)
        await server.push("one")
        await group["handler"].wait_for_state(S.CLOSED)
        await server.push("two")
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["one", "two"]
        assert group["good"].state is group["observer"].state is S.CONNECTED
        assert group["init"].state in (S.RECONNECTING, S.CONNECTING)
        assert "handler" in group
        stats = group.statistics()
        assert stats.by_state[S.CLOSED] == 1
        assert stats.members == 4
    failed = [e for e in events if e["event"] == "connection.hook_failed"]
    assert {e["hook"] for e in failed} == {"on_transition", "handler"}
    handler_failure = next(e for e in failed if e["hook"] == "handler")
    assert handler_failure["conn_id"] == "handler"
    closed = [
        e
        for e in events
        if e["event"] == "connection.state_changed"
        and e["conn_id"] == "handler"
        and e["to_state"] == "closed"
    ]
    assert [e["reason"] for e in closed] == ["handler raised RuntimeError"]


async def test_a_handler_that_removes_its_own_member_ends_cleanly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_fault_server() as server,
        open_connection_group(open_stream=server.open_stream) as group,
    ):

        async def quit_on_bye(conn: ManagedConnection) -> None:
            async for message in conn:
                if message == "bye":
                    await group.remove(conn.name)

        conn = await group.add("a", server.url, handler=quit_on_bye)
        await conn.wait_for_state(S.CONNECTED)
        await server.push("bye")
        await conn.wait_for_state(S.CLOSED)
        await trio.testing.wait_all_tasks_blocked()
        assert "a" not in group
        assert library_tasks() == []


async def test_leaving_the_block_closes_members_in_every_state_within_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ConnectionConfig(
        max_connection_failures=1, connect_timeout=30.0, close_timeout=2.0, retry=NO_JITTER
    )
    async with open_fault_server() as server, open_fault_server() as dead:
        await dead.stop()
        async with open_connection_group(config=config) as group:
            connected = await group.add("connected", server.url, open_stream=server.open_stream)
            disconnected = await group.add("disc", server.url, open_stream=server.open_stream)
            await connected.wait_for_state(S.CONNECTED)
            await disconnected.wait_for_state(S.CONNECTED)
            await disconnected.disconnect()
            server.hang_next()
            await group.add("connecting", server.url, open_stream=server.open_stream)
            await group.add(
                "reconnecting",
                dead.url,
                open_stream=dead.open_stream,
                config=ConnectionConfig(retry=NO_JITTER),
            )
            await group.add("failed", dead.url, open_stream=dead.open_stream)
            await group["failed"].wait_for_state(S.FAILED)
            await group["reconnecting"].wait_for_state(S.RECONNECTING)
            server.freeze()  # the connected member's close frame is never answered
            states = {key: group[key].state for key in group}
            members = dict(group)
            left_at = trio.current_time()
        assert trio.current_time() - left_at <= config.close_timeout + 1.0
        assert states == {
            "connected": S.CONNECTED,
            "disc": S.DISCONNECTED,
            "connecting": S.CONNECTING,
            "reconnecting": S.RECONNECTING,
            "failed": S.FAILED,
        }
        assert {conn.state for conn in members.values()} == {S.CLOSED}
        assert library_tasks() == []
        server.thaw()
        await server.wait_closed()
        assert server.open_connections == 0


async def test_add_after_the_group_began_closing_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_fault_server() as server:
        async with open_connection_group(open_stream=server.open_stream) as group:
            await group.add("a", server.url)
        with pytest.raises(trio.ClosedResourceError, match="closing"):
            await group.add("b", server.url)
        assert group["a"].state is S.CLOSED


async def test_an_error_in_the_block_comes_out_as_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    members: list[ManagedConnection] = []

    async def fail_inside(server: FaultServer) -> None:
        async with open_connection_group(open_stream=server.open_stream) as group:
            members.append(await group.add("a", server.url))
            await members[0].wait_for_state(S.CONNECTED)
            raise LookupError("mine")

    async with open_fault_server() as server:
        with pytest.raises(LookupError, match="mine"):
            await fail_inside(server)
        assert members[0].state is S.CLOSED


async def test_statistics_count_members_by_state_and_list_the_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = ConnectionConfig(max_connection_failures=1, retry=NO_JITTER)
    async with open_fault_server() as server, open_fault_server() as dead:
        await dead.stop()
        async with open_connection_group(config=config) as group:
            for key in ("up-1", "up-2"):
                await group.add(key, server.url, open_stream=server.open_stream)
            for key in ("down-2", "down-1"):
                await group.add(key, dead.url, open_stream=dead.open_stream)
            for key in group:
                await group[key].wait_for_state(S.FAILED if "down" in key else S.CONNECTED)
            stats = group.statistics()
            assert stats.members == 4
            assert dict(stats.by_state) == {
                S.DISCONNECTED: 0,
                S.CONNECTING: 0,
                S.CONNECTED: 2,
                S.RECONNECTING: 0,
                S.FAILED: 2,
                S.CLOSED: 0,
            }
            assert stats.failed == ("down-1", "down-2")
            assert stats.attempts == 4
            assert stats.total_failures == 2
            with pytest.raises(TypeError):
                stats.by_state[S.CLOSED] = 1  # type: ignore[index]
            await group.remove("up-1")
            assert group.statistics().members == 3
            assert stats.members == 4


async def test_admission_spreads_a_thousand_members_after_a_server_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every attempt, counted where it reaches the server, per virtual second:
    never more than the rate plus the burst, at the first connect and after a
    restart of the server; every member CONNECTED again in the end, and the
    reason of each delayed attempt says how long admission held it."""
    members, rate, burst = 1000, 100.0, 10
    arrivals: list[float] = []
    delayed = 0

    def count(record: TransitionRecord) -> None:
        nonlocal delayed
        delayed += record.to_state is S.CONNECTING and "admitted after" in record.reason

    async with open_fault_server() as server:

        async def open_stream(host: str, port: int) -> trio.abc.Stream:
            arrivals.append(trio.current_time())
            return await server.open_stream(host, port)

        config = ConnectionConfig(heartbeat_interval=30.0, stable_after=0.0)
        async with open_connection_group(
            attempts_per_second=rate, attempt_burst=burst, open_stream=open_stream, config=config
        ) as group:
            for index in range(members):
                await group.add(f"m{index}", server.url, on_transition=count)
            with trio.fail_after(members / rate + 5):
                for key in group:
                    await group[key].wait_for_state(S.CONNECTED)
            first_wave = len(arrivals)
            assert first_wave == members

            await server.stop()
            await server.drop()
            await trio.sleep(20.0)  # an outage: members back off, admitted as they fall due
            restart = trio.current_time()
            await server.start()
            with trio.fail_after(300):
                for key in group:
                    await group[key].wait_for_state(S.CONNECTED)
            assert group.statistics().by_state[S.CONNECTED] == members

    per_second = Counter(math.floor(at) for at in arrivals)
    assert max(per_second.values()) <= rate + burst
    after = [at for at in arrivals if at >= restart]
    assert len(after) >= members
    windows = Counter(math.floor(at - restart) for at in after)
    assert max(windows.values()) <= rate + burst
    assert delayed > members  # the first wave alone was held for all but the burst


async def test_restart_from_the_members_own_on_failed_rotates_the_cookie(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The cookie bot's move: on a 403, fetch a new cookie and restart the member,
    from on_failed itself. Its close waits for the hook: restart returns at once,
    and the new member starts once the old one has closed."""
    cookies = {"acct": "v1"}
    async with open_fault_server() as server:
        server.reject_next(1, 403)
        async with open_connection_group(open_stream=server.open_stream) as group:

            async def headers() -> list[tuple[str, str]]:
                return [("Cookie", cookies["acct"])]

            async def on_failed(info: FailureInfo) -> bool:
                cookies["acct"] = "v2"
                with trio.fail_after(1):  # it must not wait for its own close
                    await group.restart("acct")
                return False

            old = await group.add("acct", server.url, headers=headers, on_failed=on_failed)
            with trio.fail_after(60):
                await old.wait_for_state(S.CLOSED)
                await trio.testing.wait_all_tasks_blocked()  # the group starts the new one
                assert group["acct"] is not old
                await group["acct"].wait_for_state(S.CONNECTED)
            assert [c.header("cookie") for c in server.connections] == ["v1", "v2"]
            assert group.statistics().attempts == 2  # the old member's attempt counts


@pytest.mark.parametrize("hook", ["on_connect", "on_failed"])
async def test_remove_from_the_members_own_hook_returns_and_the_member_ends(
    autojump_clock: trio.testing.MockClock, hook: str
) -> None:
    removed = trio.Event()
    async with open_fault_server() as server:
        if hook == "on_failed":
            server.reject_next(1, 401)
        async with open_connection_group(open_stream=server.open_stream) as group:

            async def remove_self() -> None:
                with trio.fail_after(1):
                    await group.remove("acct")
                removed.set()

            async def on_connect(session: Session) -> None:
                await remove_self()

            async def on_failed(info: FailureInfo) -> bool:
                await remove_self()
                return False

            if hook == "on_connect":
                conn = await group.add("acct", server.url, on_connect=on_connect)
            else:
                conn = await group.add("acct", server.url, on_failed=on_failed)
            with trio.fail_after(30):
                await removed.wait()
                await conn.wait_for_state(S.CLOSED)
            assert "acct" not in group
            await trio.testing.wait_all_tasks_blocked()
            assert not [name for name in library_tasks() if name.endswith(" acct")]
            assert group.statistics().attempts == 1


async def test_a_handler_that_returns_closes_its_member_and_counts_stay(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    async def read_one(conn: ManagedConnection) -> None:
        await conn.receive()  # then returns: nobody would read any more

    async with (
        open_fault_server() as server,
        open_connection_group(open_stream=server.open_stream) as group,
    ):
        conn = await group.add("once", server.url, handler=read_one)
        await group.add("other", server.url)
        await conn.wait_for_state(S.CONNECTED)
        await group["other"].wait_for_state(S.CONNECTED)
        await server.push("one")
        await conn.wait_for_state(S.CLOSED)
        stats = group.statistics()
        assert stats.closed == ("once",)
        assert stats.attempts == 2
        await group.remove("once")
        await group.restart("other")
        assert group.statistics().attempts == 2  # removed and replaced members still count
        assert group["other"].state is not S.CLOSED
    (closing,) = [
        e
        for e in events
        if e["event"] == "connection.state_changed"
        and e["conn_id"] == "once"
        and e["to_state"] == "closed"
    ]
    assert closing["reason"] == "handler returned"
    assert not [e for e in events if e["event"] == "connection.hook_failed"]


# -- from an adversarial review -------------------------------------------------------


async def test_a_restart_racing_the_blocks_end_starts_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A restart waiting on the old member's close when the block is left: it
    raises ClosedResourceError, and the block ends (no member left running)."""
    outcome: list[BaseException] = []
    async with open_fault_server() as server, trio.open_nursery() as outer:
        async with open_connection_group(open_stream=server.open_stream) as group:
            old = await group.add("a", server.url)
            await old.wait_for_state(S.CONNECTED)
            server.freeze()  # the old member's close takes its close_timeout

            async def restart() -> None:
                try:
                    await group.restart("a")
                except trio.ClosedResourceError as exc:
                    outcome.append(exc)

            outer.start_soon(restart)
            await trio.sleep(0.5)  # restart is inside the old member's close
        assert [str(exc) for exc in outcome] == ["the connection group is closing"]
        assert [conn.state for conn in group.values()] == [S.CLOSED]
        server.thaw()


async def test_members_removed_from_handlers_tasks_end_within_their_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A handler's child task removing its own member, and two handlers each
    removing the other's member: nothing waits for itself, every member ends."""
    async with (
        open_fault_server() as server,
        open_connection_group(open_stream=server.open_stream) as group,
    ):

        async def remove_own_from_a_child(conn: ManagedConnection) -> None:
            async with trio.open_nursery() as nursery:

                async def child() -> None:
                    await conn.receive()
                    await group.remove(conn.name)

                nursery.start_soon(child)

        def remove_other(other: str) -> Any:
            async def handler(conn: ManagedConnection) -> None:
                await conn.receive()
                await group.remove(other)
                await trio.sleep_forever()

            return handler

        await group.add("own", server.url, handler=remove_own_from_a_child)
        await group.add("a", server.url, handler=remove_other("b"))
        await group.add("b", server.url, handler=remove_other("a"))
        for key in ("own", "a", "b"):
            await group[key].wait_for_state(S.CONNECTED)
        started = trio.current_time()
        with trio.fail_after(60):
            await server.push("go")
            while len(group):  # bounded by fail_after; each remove ends its member
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(1)
        assert trio.current_time() - started <= 3 * ConnectionConfig().close_timeout
        await trio.testing.wait_all_tasks_blocked()
        assert library_tasks() == []


async def test_a_handlers_error_after_close_is_still_scrubbed(
    autojump_clock: trio.testing.MockClock, events: list[dict[str, Any]]
) -> None:
    token = "tok3nS3cretValue42"

    async def raise_after_close(conn: ManagedConnection) -> None:
        async for _ in conn:
            pass
        raise RuntimeError(f"session with token {token} ended")

    async with (
        open_fault_server() as server,
        open_connection_group(open_stream=server.open_stream) as group,
    ):
        conn = await group.add(
            "a", server.url, handler=raise_after_close, headers=[("Authorization", token)]
        )
        await conn.wait_for_state(S.CONNECTED)
        await group.remove("a")
    (failed,) = [e for e in events if e["event"] == "connection.hook_failed"]
    assert failed["error_message"] == "session with token REDACTED ended"


async def test_values_and_items_are_snapshots(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_fault_server() as server,
        open_connection_group(open_stream=server.open_stream) as group,
    ):
        for key in "abc":
            await group.add(key, server.url)
        seen = []
        for key, conn in group.items():
            seen.append((key, conn.name))
            if key == "a":
                await group.remove("b")
        assert seen == [("a", "a"), ("b", "b"), ("c", "c")]
        assert [conn.name for conn in group.values()] == ["a", "c"]


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
async def test_a_handlers_keyboard_interrupt_comes_out_as_itself(
    autojump_clock: trio.testing.MockClock, error: type[BaseException]
) -> None:
    async def interrupted(conn: ManagedConnection) -> None:
        await conn.receive()
        raise error

    members: list[ManagedConnection] = []

    async def run_group(server: FaultServer) -> None:
        async with open_connection_group(open_stream=server.open_stream) as group:
            members.append(await group.add("a", server.url, handler=interrupted))
            members.append(await group.add("b", server.url))
            await members[0].wait_for_state(S.CONNECTED)
            await server.push("stop")
            await trio.sleep_forever()

    async with open_fault_server() as server:
        with pytest.raises(error):
            await run_group(server)
    assert [conn.state for conn in members] == [S.CLOSED, S.CLOSED]


async def test_two_members_removing_each_other_from_their_on_connect_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A's on_connect removes B while B's on_connect removes A: neither waits for
    the other's close (each close would wait for the other's hook)."""
    both_in_hooks = trio.Event()
    entered: list[str] = []
    async with open_fault_server() as server:
        started = trio.current_time()
        async with open_connection_group(open_stream=server.open_stream) as group:

            def remover(other: str) -> Any:
                async def on_connect(session: Session) -> None:
                    entered.append(other)
                    if len(entered) == 2:
                        both_in_hooks.set()
                    await both_in_hooks.wait()
                    await group.remove(other)

                return on_connect

            a = await group.add("a", server.url, on_connect=remover("b"))
            b = await group.add("b", server.url, on_connect=remover("a"))
            with trio.fail_after(10):
                await a.wait_for_state(S.CLOSED)
                await b.wait_for_state(S.CLOSED)
            assert len(group) == 0
        assert trio.current_time() - started < 10


async def test_a_second_restart_from_a_hook_while_the_first_is_pending_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """B's on_connect restarts A twice: the first returns A's successor at once
    (a hook waits for no close), the second finds it under way."""
    outcomes: list[object] = []
    done = trio.Event()
    async with (
        open_fault_server() as server,
        open_connection_group(open_stream=server.open_stream) as group,
    ):

        async def restart_a_twice(session: Session) -> None:
            outcomes.append(await group.restart("a"))
            try:
                await group.restart("a")
            except trio.BusyResourceError as exc:
                outcomes.append(exc)
            done.set()

        old = await group.add("a", server.url)
        await old.wait_for_state(S.CONNECTED)
        await group.add("b", server.url, on_connect=restart_a_twice)
        with trio.fail_after(30):
            await done.wait()
            new = outcomes[0]
            assert isinstance(new, ManagedConnection)
            await old.wait_for_state(S.CLOSED)
            await new.wait_for_state(S.CONNECTED)
        assert group["a"] is new
        assert isinstance(outcomes[1], trio.BusyResourceError)
