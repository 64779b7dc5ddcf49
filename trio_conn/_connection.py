"""ManagedConnection: the public face of a managed connection.

It checks the arguments (``open_connection``, in ``trio_conn/_open.py``, makes
and runs one), then passes every request to the supervisor
(``trio_conn/_supervisor.py``), which carries out what the lifecycle
(``trio_conn/_lifecycle.py``) decides. Imports run one way: face ->
supervisor -> session -> transport.
"""

from __future__ import annotations

import itertools
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import trio

from ._admission import Admission
from ._checks import check_async_callable, check_sync_callable
from ._config import ConnectionConfig
from ._events import ConnectionEvents
from ._exceptions import ConnectionClosed, NotConnected
from ._heartbeat import Heartbeat
from ._meters import Metrics, check_metrics
from ._proxy import choose_proxy
from ._records import ConnectionStatistics, FailureInfo, TransitionRecord
from ._redact import redact_url
from ._request import (
    StreamOpener,
    check_compression,
    check_headers,
    check_subprotocols,
    open_tcp,
    parse_url,
)
from ._session_spec import HeadersSource, SessionSpec
from ._state import ConnectionState
from ._supervisor import Supervisor
from ._transport import Data, Session

__all__ = ["MADE_BY_THE_LIBRARY", "ManagedConnection", "close_within_bound", "supervisor_of"]

S = ConnectionState
_names = itertools.count(1)


#: Passed by :func:`open_connection` and connection groups: a ManagedConnection
#: made by hand would have no supervisor running, and never connect.
MADE_BY_THE_LIBRARY = object()


class ManagedConnection:
    """A WebSocket connection kept alive by a supervisor.

    Made by :func:`open_connection` (or a connection group's ``add()``), which
    run it; constructing one directly raises ``TypeError``.
    """

    # Slots: thousands of idle connections per process (bench/idle_scale.py).
    __slots__ = ("_supervisor", "config", "name")

    def __init__(
        self,
        url: str,
        *,
        config: ConnectionConfig,
        heartbeat: Heartbeat | None,
        headers: HeadersSource,
        on_connect: Callable[[Session], Awaitable[None]] | None,
        on_failed: Callable[[FailureInfo], Awaitable[bool]] | None,
        on_transition: Callable[[TransitionRecord], None] | None,
        name: str | None,
        ssl_context: ssl.SSLContext | None,
        open_stream: StreamOpener | None,
        subprotocols: Sequence[str] = (),
        compression: str | None = "deflate",
        admission: Admission | None = None,
        proxy: bool | str | None = True,
        metrics: Metrics | None = None,
        made_by: object = None,
    ) -> None:
        if made_by is not MADE_BY_THE_LIBRARY:
            raise TypeError(
                "ManagedConnection is made by open_connection() (or a group's add()), which "
                "runs it: made by hand it would never connect"
            )
        shown = redact_url(url) if isinstance(url, str) else repr(url)
        target = parse_url(url, shown)
        if not isinstance(config, ConnectionConfig):
            raise TypeError(f"config must be a ConnectionConfig, got {type(config).__name__}")
        if heartbeat is not None and not isinstance(heartbeat, Heartbeat):
            raise TypeError(f"heartbeat must be a Heartbeat or None, got {heartbeat!r}")
        if heartbeat is not None:
            check_async_callable("heartbeat.beat", heartbeat.beat)
            check_sync_callable("heartbeat.is_response", heartbeat.is_response)
        if ssl_context is not None:
            if not isinstance(ssl_context, ssl.SSLContext):
                raise TypeError(f"ssl_context must be an ssl.SSLContext, got {ssl_context!r}")
            if not target.secure and not (isinstance(proxy, str) and proxy.startswith("https:")):
                raise ValueError(
                    f"ssl_context was given for a ws:// URL with no https:// proxy: {shown!r}"
                )
        for hook_name, hook in (
            ("on_connect", on_connect),
            ("on_failed", on_failed),
            ("open_stream", open_stream),
            ("headers", headers if callable(headers) else None),
        ):
            check_async_callable(hook_name, hook)
        check_sync_callable("on_transition", on_transition)
        check_metrics(metrics)
        if headers is not None and not callable(headers):
            headers = check_headers(headers, "headers")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        check_compression(compression)
        if open_stream is not None and proxy is not True and proxy is not None:
            raise ValueError(
                "proxy and open_stream were both given: open_stream opens the streams "
                "itself (a tunnel of your own goes there), so the proxy would never be used"
            )
        # An application's own open_stream: the environment's proxy is not for it.
        chosen = (
            None if open_stream is not None else choose_proxy(proxy, target.host, target.secure)
        )

        #: The connection id (``conn_id`` in every event).
        self.name: str = name or f"conn-{next(_names)}-{secrets.token_hex(3)}"
        #: The connection's :class:`ConnectionConfig`.
        self.config: ConnectionConfig = config
        spec = SessionSpec(
            target=target,
            config=config,
            heartbeat=heartbeat,
            headers=headers,
            on_connect=on_connect,
            ssl_context=ssl_context,
            open_stream=open_stream or open_tcp,
            subprotocols=check_subprotocols(subprotocols),
            compression=compression is not None,
            proxy=chosen,
        )
        events = ConnectionEvents(self.name, url)
        if headers is not None and not callable(headers):
            events.add_secrets(value for _, value in headers)  # known now: hidden from the start
        if chosen is not None:
            events.add_secrets(chosen.secrets)
        self._supervisor = Supervisor(
            spec,
            events,
            on_failed=on_failed,
            on_transition=on_transition,
            admission=admission,
            metrics=metrics,
        )

    @property
    def state(self) -> ConnectionState:
        """The current state."""
        return self._supervisor.state

    @property
    def url(self) -> str:
        """The URL, redacted as in the logs."""
        return self._supervisor.url

    @property
    def proxy(self) -> str | None:
        """The proxy every attempt goes through, redacted as in the logs; None: direct."""
        proxy = self._supervisor.spec.proxy
        return None if proxy is None else proxy.shown

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose in the current (or last) handshake, or None."""
        return self._supervisor.control.subprotocol

    async def wait_for_state(self, state: ConnectionState) -> None:
        """Return once the connection is in ``state``: at once if it is already.

        A state entered after the call counts even if it was left again before
        this task ran.

        :raises trio.ClosedResourceError: CLOSED came first (and ``state`` is
            not CLOSED).
        """
        state = ConnectionState(state)
        supervisor = self._supervisor
        if supervisor.state is state:
            await trio.lowlevel.checkpoint()
            return
        target = supervisor.entry(state)
        while not target.is_set():
            if supervisor.state is S.CLOSED:  # terminal: state can no longer be entered
                raise trio.ClosedResourceError(f"connection {self.name} closed before {state}")
            await supervisor.control.wait_changed()

    async def send(self, message: Data) -> None:
        """Send a message: str as a text frame, bytes as a binary frame.

        A message over 64 KiB goes as fragments of 64 KiB (RFC 6455 section
        5.4), so that heartbeats and the pongs the server asks for go between
        them. A send cancelled before its first byte was written fails alone;
        one cut in the middle of a frame, or between two fragments, ends the
        session (the peer would read what follows as garbage), and the
        connection reconnects.

        :raises NotConnected: the connection is not CONNECTED, a disconnect or
            close was requested (``closing``), or the WebSocket connection was
            lost during the send (``lost``: the message was not sent whole;
            ``conn.state`` has already left CONNECTED, so
            ``wait_for_state(CONNECTED)`` waits for the reconnect).
        :raises TypeError: ``message`` is not str or bytes.
        :raises UnicodeEncodeError: ``message`` is text that has no UTF-8
            form (a lone surrogate); nothing was sent and the connection
            goes on.
        """
        if not isinstance(message, str | bytes):
            raise TypeError(f"message must be str or bytes, got {type(message).__name__}")
        control = self._supervisor.control
        websocket = control.websocket
        if self.state is not S.CONNECTED or websocket is None or control.stopping:
            # A checkpoint even when refused, as every Trio async call: a retry
            # loop on NotConnected must let the supervisor reconnect.
            await trio.lowlevel.checkpoint()
            websocket = control.websocket  # as it is now: it may have reconnected
            if self.state is not S.CONNECTED or websocket is None:
                raise NotConnected(self.state)
            if control.stopping:
                raise NotConnected(self.state, closing=True)
        try:
            await websocket.send(message)
        except ConnectionClosed as exc:
            closing = control.stopping  # it waited while a disconnect began
            if not closing:
                # Lost: wait (bounded) for the supervisor to record the session's
                # end, so that conn.state has left CONNECTED when this raises and
                # a retry loop on wait_for_state(CONNECTED) waits for the next one.
                with trio.move_on_after(self.config.close_timeout):
                    while self.state is S.CONNECTED and control.websocket in (websocket, None):
                        await control.wait_changed()
            raise NotConnected(self.state, lost=not closing, closing=closing) from exc

    async def receive(self) -> Data:
        """The next message, waiting through reconnects.

        :raises trio.EndOfChannel: the connection is CLOSED and every buffered
            message has been delivered.
        """
        return await self._supervisor.mailbox.get()

    def __aiter__(self) -> AsyncIterator[Data]:
        return self

    async def __anext__(self) -> Data:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def connect(self) -> None:
        """Start connecting again after :meth:`disconnect`. No-op unless DISCONNECTED.

        :raises trio.ClosedResourceError: the connection is CLOSED or closing.
        """
        if self._supervisor.closing:
            raise trio.ClosedResourceError(f"connection {self.name} is closed")
        self._supervisor.request_connect()

    async def disconnect(self, reason: str = "disconnect requested") -> None:
        """Close the WebSocket connection (gracefully when connected) and go to DISCONNECTED.

        Returns once the disconnect has been carried out (DISCONNECTED, or
        CLOSED if a close came first) or overtaken by :meth:`connect`. No-op
        when already DISCONNECTED or CLOSED.
        """
        supervisor = self._supervisor
        if supervisor.at_rest_disconnected:
            await trio.lowlevel.checkpoint()
            return
        supervisor.request_stop(S.DISCONNECTED, reason)
        # Not "until DISCONNECTED": on_transition may call connect() at once.
        while supervisor.stop_pending and supervisor.state is not S.CLOSED:
            await supervisor.control.wait_changed()

    async def reset(self, reason: str = "reset requested") -> bool:
        """FAILED -> RECONNECTING with the failure count at 0, then an attempt at once.

        Manual intervention while FAILED. Returns True once the connection
        has left FAILED, False (at once) if it was not FAILED. While
        ``on_failed`` runs (so also when called from it), it returns True at
        once: FAILED is left when the hook returns.
        """
        supervisor = self._supervisor
        if not supervisor.request_reset(reason):
            await trio.lowlevel.checkpoint()
            return False
        if supervisor.hook_running:
            # Called from on_failed (or a task it awaits): FAILED is left when
            # the hook returns, which waiting here would prevent.
            await trio.lowlevel.checkpoint()
            return True
        while supervisor.state is S.FAILED:
            await supervisor.control.wait_changed()
        return True

    def bind(self, **fields: object) -> None:
        """Add ``fields`` to every later event of this connection.

        For context known only once the connection is open (an account id
        after login, a session number): fields bound with structlog's
        ``bind_contextvars`` reach the events only when bound before
        :func:`open_connection`, whose tasks copy the context as they start.
        String values are scrubbed of secrets like the event's own text.
        Calling it again adds to (or replaces) what was bound.

        :raises TypeError: a field name that is not an identifier.
        :raises ValueError: a name of the library's own event fields
            (``conn_id``, ``reason``...) or ``event``: they keep their meaning.
        """
        for key in fields:
            if not key.isidentifier():  # keyword arguments through **{...} can be anything
                raise TypeError(f"field names must be identifiers, got {key[:40]!r}")
        self._supervisor.events.bind(fields)

    def statistics(self) -> ConnectionStatistics:
        """An immutable snapshot of the connection's figures (see :class:`ConnectionStatistics`)."""
        return self._supervisor.statistics()

    def __repr__(self) -> str:
        return f"<ManagedConnection {self.name} {self.state} {self.url}>"

    async def _close(self, reason: str) -> None:
        """Stop everything and wait for CLOSED (the caller bounds and shields this)."""
        supervisor = self._supervisor
        supervisor.request_stop(S.CLOSED, reason)
        while supervisor.state is not S.CLOSED:
            await supervisor.control.wait_changed()


def supervisor_of(conn: ManagedConnection) -> Supervisor:
    """The supervisor that runs ``conn`` (for open_connection and the group)."""
    return conn._supervisor


async def close_within_bound(conn: ManagedConnection, reason: str) -> None:
    """Close ``conn`` gracefully, shielded, within ``close_timeout`` (plus a margin
    for the tasks' own cleanup); past it, end its supervisor anyway (CLOSED)."""
    with trio.move_on_after(conn.config.close_timeout + 1.0, shield=True):
        await conn._close(reason)
    conn._supervisor.scope.cancel()
