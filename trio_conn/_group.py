"""open_connection_group(): many managed connections, one per key, under one nursery.

The shape of an application with one connection per account: members are
added, removed and restarted by key at runtime, each with its own URL,
headers and hooks, and all share one admission control
(``trio_conn/_admission.py``) so that after a server restart they arrive
spread out. Each member is a :class:`~trio_conn.ManagedConnection` whose
supervisor runs directly in the group's nursery (no task of the group's
own per member); its events carry the key as ``conn_id``.

Rules of the house:

- Operations on one key run one at a time (a lock per key, held only while
  one runs); operations on different keys never wait for each other.
- ``restart`` checks the new options before it touches the old member, then
  closes the old member and starts the new one with no checkpoint between
  the old one's end and the new one's start: ``group[key]`` is never
  missing, and two WebSocket connections for one key never exist.
- Removing a member (``remove``, ``restart``, leaving the block) ends it as
  ``trio_conn/_member.py`` says: shielded and bounded. A member whose
  handler returned or raised is closed and stays in the group, CLOSED
  (``statistics().closed``), until removed or restarted.
- ``remove`` or ``restart`` called from the member's own ``on_connect`` or
  ``on_failed`` cannot wait for its close (the close waits for the hook):
  the request is made and the rest is finished by a task of the group's.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    ItemsView,
    Iterator,
    Mapping,
    Sequence,
    ValuesView,
)
from contextlib import asynccontextmanager
from typing import Any, Final

import trio

from ._admission import Admission
from ._checks import check_async_callable
from ._config import ConnectionConfig
from ._connection import (
    MADE_BY_THE_LIBRARY,
    ManagedConnection,
    supervisor_of,
)
from ._exception_groups import holds_only, reraise
from ._exceptions import leaves
from ._heartbeat import Heartbeat, PingHeartbeat
from ._member import Member
from ._membership import (
    UNSET,
    GroupStatistics,
    Handler,
    MemberOptions,
    Unset,
    check_key,
)
from ._meters import Metrics, check_metrics
from ._records import FailureInfo, FrozenMap, TransitionRecord
from ._request import StreamOpener, check_compression, check_subprotocols
from ._session_spec import HeadersSource
from ._state import ConnectionState
from ._transport import Session

__all__ = [
    "DEFAULT_ATTEMPTS_PER_SECOND",
    "DEFAULT_ATTEMPT_BURST",
    "ConnectionGroup",
    "GroupStatistics",
    "open_connection_group",
]

S = ConnectionState

#: Default group-wide limit on connection attempts per second (see README
#: "Connection groups" for the measurements behind it).
DEFAULT_ATTEMPTS_PER_SECOND: Final = 100.0
#: Default number of attempts that may start at once when none ran lately.
DEFAULT_ATTEMPT_BURST: Final = 10


class ConnectionGroup(Mapping[str, ManagedConnection]):
    """Members by key. Made by :func:`open_connection_group`.

    A read-only mapping from key to :class:`~trio_conn.ManagedConnection`
    (``group[key]``, ``key in group``, ``len(group)``; iteration gives the
    keys present when it starts); changed only by :meth:`add`,
    :meth:`remove` and :meth:`restart`.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        defaults: dict[str, Any],
        admission: Admission | None,
    ) -> None:
        self._nursery = nursery
        self._defaults = defaults
        self._admission = admission
        self._members: dict[str, Member] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._closing = False
        # Attempts and failures of members gone (removed, replaced): totals never go back.
        self._past_attempts = 0
        self._past_failures = 0

    # -- the mapping -----------------------------------------------------------------

    def __getitem__(self, key: str) -> ManagedConnection:
        return self._members[key].conn

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._members))  # a snapshot: members may change meanwhile

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, key: object) -> bool:
        return key in self._members

    def values(self) -> ValuesView[ManagedConnection]:
        """The members' connections present now (a snapshot: members may change)."""
        return {key: member.conn for key, member in self._members.items()}.values()

    def items(self) -> ItemsView[str, ManagedConnection]:
        """``(key, connection)`` pairs present now (a snapshot)."""
        return {key: member.conn for key, member in self._members.items()}.items()

    def __repr__(self) -> str:
        return f"<ConnectionGroup of {len(self._members)} members>"

    # -- changes ---------------------------------------------------------------------

    async def add(
        self,
        key: str,
        url: str,
        *,
        handler: Handler | None = None,
        config: ConnectionConfig | Unset = UNSET,
        heartbeat: Heartbeat | Unset | None = UNSET,
        headers: HeadersSource = None,
        on_connect: Callable[[Session], Awaitable[None]] | None = None,
        on_failed: Callable[[FailureInfo], Awaitable[bool]] | None = None,
        on_transition: Callable[[TransitionRecord], None] | None = None,
        ssl_context: ssl.SSLContext | Unset | None = UNSET,
        subprotocols: Sequence[str] | Unset = UNSET,
        compression: str | Unset | None = UNSET,
        proxy: bool | str | Unset | None = UNSET,
        open_stream: StreamOpener | Unset | None = UNSET,
    ) -> ManagedConnection:
        """Start a member for ``key`` and return its connection (connecting already).

        The options are :func:`~trio_conn.open_connection`'s, one member's
        own; those left out take the group's defaults. ``key`` is the
        connection's name (``conn_id`` in every event).

        :param handler: ``async fn(conn: ManagedConnection) -> None``, run in a
            task of its own for the member's life: the natural place for
            ``async for message in conn``. It is cancelled ``close_timeout``
            seconds after the member closes if it has not returned; an
            exception it raises is logged and closes this member only.
            Default None: read ``group[key]`` yourself.
        :raises KeyError: ``key`` is already a member (use :meth:`restart`).
        :raises ValueError: a bad key (empty, longer than 200 characters, or
            with a control character) or a bad option (as open_connection).
        :raises TypeError: an option of the wrong type.
        :raises trio.ClosedResourceError: the group is closing.
        """
        self._check_open()
        check_key(key)
        options = MemberOptions(
            url=url,
            config=self._default("config", config),
            heartbeat=self._default("heartbeat", heartbeat),
            headers=headers,
            on_connect=on_connect,
            on_failed=on_failed,
            on_transition=on_transition,
            handler=handler,
            ssl_context=self._default("ssl_context", ssl_context),
            subprotocols=self._default("subprotocols", subprotocols),
            compression=self._default("compression", compression),
            proxy=self._default("proxy", proxy),
            open_stream=self._default("open_stream", open_stream),
        )
        async with self._lock(key):
            self._check_open()
            if key in self._members:
                raise KeyError(f"{key!r} is already a member of the group; restart() replaces it")
            member = self._make(key, options)
            self._start(key, member)
            return member.conn

    async def remove(self, key: str, reason: str = "removed from the group") -> None:
        """Close the member for ``key`` (close frame, CLOSED, its tasks ended) and forget it.

        Returns once it is closed and gone: within ``close_timeout`` plus a
        second, and its handler's ``close_timeout``. Shielded from
        cancellation (a half-removed member would be worse). Called from a
        member's ``on_connect`` or ``on_failed`` (this member's or another's:
        a close waits for its member's hook, so a hook waits for none), it
        forgets the member and returns at once; the member closes meanwhile.

        :raises KeyError: ``key`` is not a member.
        """
        async with self._lock(key):
            member = self._members.get(key)
            if member is None:
                raise KeyError(f"{key!r} is not a member of the group")
            if self._called_from_a_hook():
                del self._members[key]
                self._forget(member)
                supervisor_of(member.conn).request_stop(S.CLOSED, reason)
                self._nursery.start_soon(member.finish)
                return
            await member.stop(reason)
            del self._members[key]
            self._forget(member)

    async def restart(
        self,
        key: str,
        url: str | None = None,
        *,
        reason: str = "restarted",
        handler: Handler | Unset | None = UNSET,
        config: ConnectionConfig | Unset = UNSET,
        heartbeat: Heartbeat | Unset | None = UNSET,
        headers: HeadersSource | Unset = UNSET,
        on_connect: Callable[[Session], Awaitable[None]] | Unset | None = UNSET,
        on_failed: Callable[[FailureInfo], Awaitable[bool]] | Unset | None = UNSET,
        on_transition: Callable[[TransitionRecord], None] | Unset | None = UNSET,
        ssl_context: ssl.SSLContext | Unset | None = UNSET,
        subprotocols: Sequence[str] | Unset = UNSET,
        compression: str | Unset | None = UNSET,
        proxy: bool | str | Unset | None = UNSET,
        open_stream: StreamOpener | Unset | None = UNSET,
    ) -> ManagedConnection:
        """Replace the member for ``key`` with a new one; return the new connection.

        Options left out keep the old member's (``url`` None: its URL). The
        new options are checked first: a bad one raises and the old member
        goes on untouched. Then the old member is closed as :meth:`remove`
        does (``reason`` in its CLOSED event), and the new one starts at once:
        ``group[key]`` is the old connection until then, never missing, and
        the two never run together. The new member's first attempt waits for
        admission like any other. For rotated credentials, pass the new
        ``headers`` (or keep a ``headers()`` callable that reads them).

        Called from a member's ``on_connect`` or ``on_failed`` it returns the
        new connection at once; the new member starts once the old one ends.

        :raises trio.BusyResourceError: a restart of this key asked from a
            hook is still under way.
        :raises KeyError: ``key`` is not a member.
        :raises ValueError, TypeError: a bad option (as :meth:`add`).
        :raises trio.ClosedResourceError: the group is closing.
        """
        self._check_open()
        changes: dict[str, Any] = {
            name: value
            for name, value in (
                ("url", url),
                ("handler", handler),
                ("config", config),
                ("heartbeat", heartbeat),
                ("headers", headers),
                ("on_connect", on_connect),
                ("on_failed", on_failed),
                ("on_transition", on_transition),
                ("ssl_context", ssl_context),
                ("subprotocols", subprotocols),
                ("compression", compression),
                ("proxy", proxy),
                ("open_stream", open_stream),
            )
            if value is not UNSET and not (name == "url" and value is None)
        }
        async with self._lock(key):
            self._check_open()
            old = self._members.get(key)
            if old is None:
                raise KeyError(f"{key!r} is not a member of the group; add() starts one")
            if old.replacing:
                raise trio.BusyResourceError(
                    f"a restart of {key!r} is already under way (asked from a hook)"
                )
            options = dataclasses.replace(old.options, **changes)
            new = self._make(key, options)  # raises before the old member is touched
            if self._called_from_a_hook():  # a close would wait for the caller: finish later
                old.replacing = True
                supervisor_of(old.conn).request_stop(S.CLOSED, reason)
                self._nursery.start_soon(self._replace_later, key, old, new, reason)
                return new.conn
            await old.stop(reason)
            self._forget(old)
            if self._closing:  # the group began closing meanwhile: new must not run
                supervisor_of(new.conn).events.forget_secrets()
                raise trio.ClosedResourceError("the connection group is closing")
            self._start(key, new)  # no checkpoint since the old one ended
            return new.conn

    def statistics(self) -> GroupStatistics:
        """An immutable snapshot: members per state, totals, the FAILED members."""
        by_state = dict.fromkeys(S, 0)
        attempts = failures = 0
        failed: list[str] = []
        closed: list[str] = []
        for key, member in self._members.items():
            supervisor = supervisor_of(member.conn)
            state = supervisor.state
            by_state[state] += 1
            member_attempts, member_failures = supervisor.totals()  # no whole snapshot each
            attempts += member_attempts
            failures += member_failures
            if state is S.FAILED:
                failed.append(key)
            elif state is S.CLOSED:
                closed.append(key)
        admission = self._admission
        return GroupStatistics(
            members=len(self._members),
            by_state=FrozenMap(by_state),
            attempts=self._past_attempts + attempts,
            total_failures=self._past_failures + failures,
            failed=tuple(sorted(failed)),
            closed=tuple(sorted(closed)),
            admission_backlog=0.0 if admission is None else admission.backlog(trio.current_time()),
        )

    # -- inside ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise trio.ClosedResourceError("the connection group is closing")

    def _default(self, name: str, value: Any) -> Any:
        return self._defaults[name] if value is UNSET else value

    @asynccontextmanager
    async def _lock(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = trio.Lock()
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(key, None)  # nobody holds or waits for it

    def _make(self, key: str, options: MemberOptions) -> Member:
        if options.handler is not None:
            check_async_callable("handler", options.handler)
        conn = ManagedConnection(
            options.url,
            config=options.config,
            heartbeat=options.heartbeat,
            headers=options.headers,
            on_connect=options.on_connect,
            on_failed=options.on_failed,
            on_transition=options.on_transition,
            name=key,
            ssl_context=options.ssl_context,
            open_stream=options.open_stream,
            subprotocols=options.subprotocols,
            compression=options.compression,
            proxy=options.proxy,
            admission=self._admission,
            metrics=self._defaults["metrics"],
            made_by=MADE_BY_THE_LIBRARY,
        )
        return Member(conn, options)

    def _start(self, key: str, member: Member) -> None:
        assert not self._closing, "a member started while the group closes would never end"
        self._members[key] = member
        member.start(self._nursery, key)

    def _called_from_a_hook(self) -> bool:
        """Whether the caller runs in a member's supervisor (its on_connect,
        on_failed, or a task of theirs): a member's close waits for its hook,
        so such a caller must not wait for any close (two hooks removing each
        other's members would wait for each other)."""
        return any(member.calls_from_its_hooks() for member in self._members.values())

    def _forget(self, member: Member) -> None:
        """A member leaves the group: its figures join the totals of the past."""
        attempts, failures = member.totals()
        self._past_attempts += attempts
        self._past_failures += failures

    async def _replace_later(self, key: str, old: Member, new: Member, reason: str) -> None:
        """Restart requested from the old member's own hook: start ``new`` once
        ``old`` has ended, unless the key changed meanwhile (then ``new`` never runs)."""
        async with self._lock(key):
            await old.stop(reason)
            if self._members.get(key) is old and not self._closing:
                self._forget(old)
                self._start(key, new)
            else:
                supervisor_of(new.conn).events.forget_secrets()  # never started

    async def aclose(self, reason: str = "the group closed") -> None:
        """Close every member at once, each as :meth:`remove` does, shielded.

        Leaving :func:`open_connection_group`'s block calls it; afterwards
        :meth:`add` and :meth:`restart` raise ``trio.ClosedResourceError`` and
        the members stay readable, CLOSED.
        """
        self._closing = True  # no member starts after this (see _start)
        members = list(self._members.values())
        for member in members:
            supervisor_of(member.conn).request_stop(S.CLOSED, reason)
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for member in members:
                    nursery.start_soon(member.stop, reason)


@asynccontextmanager
async def open_connection_group(
    *,
    attempts_per_second: float | None = DEFAULT_ATTEMPTS_PER_SECOND,
    attempt_burst: int = DEFAULT_ATTEMPT_BURST,
    config: ConnectionConfig | None = None,
    heartbeat: Heartbeat | None = PingHeartbeat(),  # noqa: B008  # stateless, safe to share
    ssl_context: ssl.SSLContext | None = None,
    subprotocols: Sequence[str] = (),
    compression: str | None = "deflate",
    proxy: bool | str | None = True,
    open_stream: StreamOpener | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[ConnectionGroup]:
    """Open a group of managed connections, one per key, for the block.

    Add members with :meth:`ConnectionGroup.add`. Leaving the block closes
    every member at once (close frames, CLOSED, their tasks and handlers
    ended), shielded, each bounded by its ``close_timeout`` plus a second
    and its handler's grace of ``close_timeout``. An exception raised in the
    block comes out as itself.

    :param attempts_per_second: ``float``, the group-wide limit on connection
        attempts per second (first connects, retries, probes alike): a token
        bucket, so that after a server restart members arrive spread out.
        Default 100.0 (:data:`DEFAULT_ATTEMPTS_PER_SECOND`); None: no limit.
    :param attempt_burst: ``int``, attempts that may start at once when
        none ran lately. Default 10.
    :param config: the members' default :class:`~trio_conn.ConnectionConfig`
        (one shared object); None (default): ``ConnectionConfig()``.
    :param heartbeat: the members' default heartbeat (shared; the built-in
        ones hold no state). Default ``PingHeartbeat()``.
    :param ssl_context, subprotocols, compression, proxy, open_stream: the
        members' defaults, as :func:`~trio_conn.open_connection` takes them.
    :param metrics: the metrics backend every member reports to (e.g.
        ``trio_conn.metrics.PrometheusMetrics()``), each labelled with its
        key. Default None.
    :raises ValueError: ``attempts_per_second`` not a finite number > 0,
        ``attempt_burst`` < 1, or a default that open_connection refuses.
    :raises TypeError: an argument of the wrong type.
    """
    admission = (
        None if attempts_per_second is None else Admission(attempts_per_second, attempt_burst)
    )
    if config is not None and not isinstance(config, ConnectionConfig):
        raise TypeError(f"config must be a ConnectionConfig, got {type(config).__name__}")
    if heartbeat is not None and not isinstance(heartbeat, Heartbeat):
        raise TypeError(f"heartbeat must be a Heartbeat or None, got {heartbeat!r:.60}")
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext, got {ssl_context!r:.60}")
    check_compression(compression)
    check_async_callable("open_stream", open_stream)
    check_metrics(metrics)
    defaults: dict[str, Any] = {
        "config": config if config is not None else ConnectionConfig(),
        "heartbeat": heartbeat,
        "ssl_context": ssl_context,
        "subprotocols": check_subprotocols(subprotocols),
        "compression": compression,
        "proxy": proxy,
        "open_stream": open_stream,
        "metrics": metrics,
    }
    user_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            group = ConnectionGroup(nursery, defaults, admission)
            try:
                yield group
            except BaseException as exc:
                user_error = exc
                raise
            finally:
                await group.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as exc_group:
        if user_error is not None and holds_only(user_error, exc_group):
            reraise(user_error)
        found = [leaf for leaf in leaves(exc_group) if not isinstance(leaf, trio.Cancelled)]
        if len(found) == 1 and not isinstance(found[0], Exception):
            reraise(found[0])  # a handler's KeyboardInterrupt or SystemExit, as itself
        raise
