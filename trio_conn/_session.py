"""One attempt and the life of one WebSocket connection, under its own nursery.

A session opens the byte stream (TCP, TLS, or ``open_stream``), does the
WebSocket handshake and ``on_connect`` (all within ``connect_timeout``), then
holds the connection: messages go into the mailbox, the heartbeat judges the
peer. It never changes state and never talks to the lifecycle: it *returns*
how it ended (:class:`SessionEnd`), and the supervisor decides. Its nursery::

    session nursery              (one per attempt; ends with the session)
    ├── reader task              WebSocket.run_reader: frames, pongs, limits,
    │                            every end; delivers into the mailbox
    └── heartbeat task           HeartbeatMonitor.run: beats, misses

When :func:`run_session` returns, every task of it has ended and its stream
is closed: at most one stream is open per connection.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass

import trio

from ._control import Control
from ._events import ConnectionEvents
from ._exception_groups import split_cancelled
from ._failure import describe_failure
from ._frames import Data
from ._handle import SessionOf
from ._handshake import handshake
from ._live import LiveSession
from ._mailbox import Mailbox
from ._policy import FailureDetails
from ._proxy import open_tunnel
from ._request import check_headers
from ._session_spec import Headers, HeadersSource, SessionSpec
from ._transport import WebSocket

HANDSHAKE = "during the handshake"
ON_CONNECT = "in on_connect"
CONNECTED = "while connected"


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """How a session ended: ``failure`` None means a stop ended it."""

    failure: FailureDetails | None
    phase: str


async def run_session(
    spec: SessionSpec,
    control: Control,
    mailbox: Mailbox[Data],
    events: ConnectionEvents,
    opened: Callable[[], None],
) -> SessionEnd:
    """One attempt and, if it succeeds, the life of that connection.

    ``opened()`` is called once the handshake and ``on_connect`` succeeded,
    with ``control.websocket`` set: the supervisor publishes CONNECTED there.
    Returns when the connection failed or a stop ended it; a cancellation
    from outside (the close outlived its bound) propagates.
    """
    config = spec.config
    streams: list[trio.abc.Stream] = []  # every stream opened, closed at the end
    phase = HANDSHAKE
    try:
        async with trio.open_nursery() as nursery:
            with (
                control.interruptible() as attempt,
                trio.move_on_after(config.connect_timeout) as deadline,
            ):
                headers = await _attempt_headers(spec.headers, events)
                stream = await _open(spec, streams)
                answer = await handshake(
                    stream,
                    spec.target,
                    headers=headers,
                    subprotocols=spec.subprotocols,
                    compression=spec.compression,
                )
                del headers  # not kept alive for the connection's life
                websocket = WebSocket(
                    stream,
                    answer,
                    max_message_size=config.max_message_size,
                    max_fragments=config.max_message_fragments,
                    buffer=config.receive_buffer,
                    on_change=control.notify,
                    spawn=nursery.start_soon,
                )
                del answer  # its leftover bytes are the reader's now
                if control.traffic is not None:
                    control.traffic.follow(websocket)
                control.subprotocol = websocket.subprotocol
                nursery.start_soon(websocket.run_reader)
                if spec.on_connect is not None:
                    phase = ON_CONNECT
                    await spec.on_connect(SessionOf(websocket))
                    if websocket.send_error is not None:  # cut mid-frame: never CONNECTED
                        raise websocket.send_error
            if deadline.cancelled_caught:
                # trio.TooSlowError, as fail_after raises: classified as network.
                raise trio.TooSlowError(
                    f"connect_timeout ({config.connect_timeout:g} s) passed {phase}"
                )
            stopped = attempt.cancelled_caught
            del attempt, deadline  # not kept alive for the connection's life
            if not stopped:
                phase = CONNECTED
                await LiveSession(spec, control, mailbox, events, websocket).hold(nursery, opened)
            nursery.cancel_scope.cancel()
        return SessionEnd(None, phase)
    except BaseException as exc:
        cancelled, errors = split_cancelled(exc)
        if errors is not None and not isinstance(errors, Exception):
            raise  # KeyboardInterrupt and the like are not connection failures
        if control.stopping:
            # Closing: what a stream being torn down raises is expected. A
            # cancellation (the close outlived its bound) goes on up.
            if cancelled is not None:
                raise cancelled from None
            return SessionEnd(None, phase)
        if cancelled is not None or errors is None:
            raise
        return SessionEnd(describe_failure(errors), phase)
    finally:
        control.websocket = None
        if control.traffic is not None:
            control.traffic.follow(None)
        monitor = control.monitor
        if monitor is not None:
            if monitor.rtt is not None:
                control.rtt = monitor.rtt
            control.monitor = None
        with trio.CancelScope(shield=True):
            for stream in reversed(streams):
                await trio.aclose_forcefully(stream)


async def _open(spec: SessionSpec, streams: list[trio.abc.Stream]) -> trio.abc.Stream:
    """Open the byte stream, TLS over it for wss://; every stream goes into ``streams``."""
    target = spec.target
    if spec.proxy is not None:
        stream = await open_tunnel(spec.proxy, target.host, target.port, spec.ssl_context)
    else:
        stream = await spec.open_stream(target.host, target.port)
    streams.append(stream)
    if target.secure:
        context = spec.ssl_context or ssl.create_default_context()
        tls = trio.SSLStream(stream, context, server_hostname=target.host, https_compatible=True)
        streams.append(tls)
        await tls.do_handshake()
        stream = tls
    return stream


async def _attempt_headers(source: HeadersSource, events: ConnectionEvents) -> Headers:
    if source is None:
        return []
    headers = check_headers(await source(), "headers()") if callable(source) else source
    if callable(source):  # a fresh value per attempt: only the last few stay registered
        events.add_secrets((value for _, value in headers), attempt=True)
    return headers
