"""The :class:`Session` handle: what ``on_connect`` and a Heartbeat's ``beat`` are given."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._frames import Data

if TYPE_CHECKING:
    from ._transport import WebSocket

RECEIVE_AFTER_ON_CONNECT = (
    "session.receive() is for on_connect only: once it has returned, messages go to "
    "ManagedConnection.receive(), and a Heartbeat recognises its replies with is_response()"
)


class Session:
    """One WebSocket connection of a managed connection: what ``on_connect`` and a
    :class:`~trio_conn.Heartbeat`'s ``beat`` are given.

    Made by trio_conn, one per attempt, never by an application (calling the
    class raises TypeError); valid for that attempt and the life of its
    connection only. To test a Heartbeat of your own, run it against the fault
    server: ``open_connection(server.url, open_stream=server.open_stream,
    heartbeat=YourHeartbeat())`` (see ``trio_conn.testing``).
    """

    __slots__ = ("_receives", "_websocket")
    _websocket: WebSocket
    _receives: bool

    def __init__(self) -> None:
        raise TypeError("a Session is made by trio_conn, for on_connect and Heartbeat.beat")

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose from those offered, or None."""
        return self._websocket.subprotocol

    async def send(self, message: Data) -> None:
        """Send a message: str as a text frame, bytes as a binary frame.

        :raises ConnectionClosed: the connection has ended, or broke during the send.
        :raises SendInterrupted: cancelled in the middle of a frame (or
            between the fragments of a long message); the connection can no
            longer be used (the attempt or session fails).
        :raises UnicodeEncodeError: text with no UTF-8 form (nothing was sent).
        """
        await self._websocket.send(message)

    async def receive(self) -> Data:
        """The next message of this connection; for ``on_connect`` only (after it,
        the application receives with ``ManagedConnection.receive()``, and a
        Heartbeat's replies are recognised by its ``is_response``).

        :raises ConnectionClosed: the connection has ended.
        :raises RuntimeError: called after ``on_connect`` returned, or in a
            Heartbeat's ``beat`` (nothing is received there).
        """
        if not self._receives:
            raise RuntimeError(RECEIVE_AFTER_ON_CONNECT)
        return await self._websocket.receive()

    async def ping(self) -> None:
        """Send a WebSocket ping frame (RFC 6455 section 5.5.2); return once written.

        Its pong is the reply a :class:`~trio_conn.PingHeartbeat` waits for.
        """
        await self._websocket.ping()


class SessionOf(Session):
    """Internal: the :class:`Session` of ``websocket``; ``receives=False`` for a beat's."""

    __slots__ = ()

    def __init__(self, websocket: WebSocket, *, receives: bool = True) -> None:
        self._websocket = websocket
        self._receives = receives
