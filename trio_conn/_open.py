"""open_connection(): make a managed connection, run it for the block, close it.

Leaving the block closes it (shielded, bounded by ``close_timeout``) from any
state, ends every task, and gives back an exception raised in the block as
itself. The connection itself is ``trio_conn/_connection.py``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import trio

from ._config import ConnectionConfig
from ._connection import (
    MADE_BY_THE_LIBRARY,
    ManagedConnection,
    close_within_bound,
    supervisor_of,
)
from ._exception_groups import holds_only, reraise
from ._heartbeat import Heartbeat, PingHeartbeat
from ._meters import Metrics
from ._records import FailureInfo, TransitionRecord
from ._request import StreamOpener
from ._session_spec import HeadersSource
from ._transport import Session

__all__ = ["open_connection"]

_DEFAULT_CONFIG = ConnectionConfig()  # frozen: one shared by every connection


@asynccontextmanager
async def open_connection(
    url: str,
    *,
    config: ConnectionConfig | None = None,
    heartbeat: Heartbeat | None = PingHeartbeat(),  # noqa: B008  # stateless, safe to share
    headers: HeadersSource = None,
    on_connect: Callable[[Session], Awaitable[None]] | None = None,
    on_failed: Callable[[FailureInfo], Awaitable[bool]] | None = None,
    on_transition: Callable[[TransitionRecord], None] | None = None,
    name: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    subprotocols: Sequence[str] = (),
    compression: str | None = "deflate",
    proxy: bool | str | None = True,
    open_stream: StreamOpener | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[ManagedConnection]:
    """Open a managed connection to ``url`` and keep it alive for the block.

    Connecting starts at once; use :meth:`ManagedConnection.wait_for_state`
    to wait for CONNECTED. Leaving the block moves to CLOSED from any state,
    sends a close frame if connected (shielded, bounded by ``close_timeout``)
    and ends every task. An exception raised in the block comes out as itself.

    :param url: ``str``, ``ws://`` or ``wss://`` (RFC 6455 section 3); the
        path and query are sent as the request target. Secrets in it (user
        info, query values) never reach a log.
    :param config: a :class:`ConnectionConfig` (timings in seconds, limits
        in bytes); None (default): ``ConnectionConfig()``.
    :param heartbeat: a :class:`Heartbeat`: ``PingHeartbeat()`` (default,
        ping/pong frames), ``MessageHeartbeat(make_message, is_response)``
        (application messages; recognised replies are consumed), a subclass
        of your own, or None for no heartbeat. A beat goes every
        ``heartbeat_interval`` seconds (every ``max(heartbeat_interval,
        heartbeat_timeout)`` while unanswered); a silent peer is declared dead
        within ``heartbeat_interval + max_heartbeat_failures *
        max(heartbeat_timeout, heartbeat_interval)`` seconds of its last byte.
    :param headers: extra request headers: ``list[tuple[str, str]]``, or an
        async callable returning one, called at each attempt (within
        ``connect_timeout``). Names are HTTP tokens, values Latin-1 text with
        no control character or surrounding whitespace (RFC 9110 section
        5.5); values never reach a log. Default None: none.
    :param on_connect: ``async fn(session: Session) -> None``, run after the
        handshake and before CONNECTED, within ``connect_timeout``: an
        application's init (``session.send()``, ``session.receive()``).
        Raising fails the attempt. Default None.
    :param on_failed: ``async fn(info: FailureInfo) -> bool``, called on
        entering FAILED (at most once per stay and every
        ``recovery_cooldown`` seconds, bounded by ``connect_timeout``); True:
        credentials refreshed, retry at once; False, raising or hanging: stay
        FAILED until the next probe (``failed_retry_interval``). Default None.
    :param on_transition: ``fn(record: TransitionRecord) -> None`` (plain,
        not async), called for every transition, in order, with the record
        the log event is built from; an exception it raises is logged and
        never breaks the connection. Default None.
    :param name: ``str``, the connection id (``conn_id`` in every event);
        None (default): generated.
    :param ssl_context: an ``ssl.SSLContext`` for ``wss://``; None
        (default): ``ssl.create_default_context()``, certificates verified.
        It also serves TLS to an ``https://`` proxy. Given with a ``ws://``
        URL and no ``https://`` proxy: ValueError.
    :param subprotocols: ``Sequence[str]`` of HTTP tokens offered in
        ``Sec-WebSocket-Protocol`` (RFC 6455 section 1.9);
        ``conn.subprotocol`` is the one the server chose. Default ``()``.
    :param compression: ``"deflate"`` (default) offers permessage-deflate
        (RFC 7692), inflated data checked against ``max_message_size`` as it
        inflates; None offers nothing.
    :param proxy: True (default): the proxy the environment names
        (``https_proxy`` for wss://, ``http_proxy`` for ws://, ``all_proxy``,
        upper case too; ``no_proxy`` honoured), read once, now; None: never
        a proxy; or a proxy URL: ``http://``, ``https://`` (TLS to the
        proxy, with ``ssl_context``) or ``socks5://``, with optional
        ``user:password@`` (secrets, never logged). The tunnel is part of
        each attempt (within ``connect_timeout``); ``conn.proxy`` shows the
        one chosen, redacted. A refusal raises :class:`ProxyRefused` in the
        failure: ``rejected`` for HTTP 407 or bad SOCKS credentials, else
        ``network``.
    :param open_stream: ``async (host: str, port: int) -> trio.abc.Stream``
        used instead of TCP (a tunnel of your own, or
        ``FaultServer.open_stream`` for exact virtual-time tests); None
        (default): TCP, or the proxy. TLS goes over it for ``wss://``. Given,
        the environment's proxy is not used; a ``proxy`` URL with it:
        ValueError.
    :param metrics: a metrics backend, one per process:
        ``trio_conn.metrics.PrometheusMetrics()`` (``pip install
        'trio-conn[prometheus]'``); the connection's series are labelled
        with ``name``. It observes the records the log is built from; an
        exception it raises is logged once (``connection.hook_failed``, hook
        ``metrics``) and never reaches the connection. Default None.
    :raises ValueError: a bad URL or argument value (the message says which).
    :raises TypeError: an argument of the wrong type, or a hook of the wrong
        colour (async where plain is needed, or the reverse).
    """
    conn = ManagedConnection(
        url,
        config=config if config is not None else _DEFAULT_CONFIG,
        heartbeat=heartbeat,
        headers=headers,
        on_connect=on_connect,
        on_failed=on_failed,
        on_transition=on_transition,
        name=name,
        ssl_context=ssl_context,
        open_stream=open_stream,
        subprotocols=subprotocols,
        compression=compression,
        proxy=proxy,
        metrics=metrics,
        made_by=MADE_BY_THE_LIBRARY,
    )
    supervisor = supervisor_of(conn)
    user_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.run, nursery)
            try:
                yield conn
            except BaseException as exc:
                user_error = exc
                raise
            finally:
                await close_within_bound(conn, "closed by the application")
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if user_error is not None and holds_only(user_error, group):
            reraise(user_error)
        raise
    finally:
        supervisor.events.forget_secrets()  # CLOSED: no event of this connection follows
