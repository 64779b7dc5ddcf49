"""The opening handshake of a client WebSocket connection (RFC 6455 section 4), on wsproto.

Only the response's head goes to wsproto's handshake parser: bytes the server
sent after the ``101`` head (frames, even a compression bomb, in the same
read) come back as :attr:`Opened.leftover`, for the reader to feed through
the same limits as every later byte. A rejection's body may end with the
stream (RFC 9112 section 6.3): at that end, at a reset, once
:data:`MAX_REJECTION_BODY` bytes of it are kept, or
:data:`REJECTION_BODY_GRACE` seconds after its head, the rejection already
parsed is what the handshake raises, with the body read so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import trio
import wsproto
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.utilities import RemoteProtocolError

from ._deflate import Deflate
from ._exceptions import ConnectionRejected
from ._request import Target

#: Bytes asked of the stream per read: 16 KiB messages arrive several per
#: read (4 KiB reads made them about six times slower).
READ_SIZE = 65536
#: Most of a rejection's body kept, in bytes.
MAX_REJECTION_BODY = 65536
#: Longest a rejection's body is read once its head has come, in seconds: a
#: body that never ends (a short write, a huge Content-Length) must not turn
#: the rejection into a timeout.
REJECTION_BODY_GRACE = 1.0
#: Longest response head read before the handshake fails, in bytes.
MAX_HEAD = 65536
_END_OF_HEAD = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Opened:
    """A handshake that succeeded: the frame protocol and what came with the ``101``."""

    #: wsproto's frame protocol (the HTTP parser of the handshake is not kept).
    connection: Connection
    #: The subprotocol the server chose, or None.
    subprotocol: str | None
    #: Whether permessage-deflate was negotiated.
    compressed: bool
    #: Bytes the server sent after the ``101`` head, in the same reads: frames.
    leftover: bytes
    #: Bytes read from the stream, the head and ``leftover`` included.
    received: int


async def handshake(
    stream: trio.abc.Stream,
    target: Target,
    *,
    headers: Sequence[tuple[str, str]],
    subprotocols: Sequence[str],
    compression: bool,
) -> Opened:
    """Send the upgrade request on ``stream`` and read the answer.

    :param headers: extra request headers, values Latin-1 text.
    :param subprotocols: offered in ``Sec-WebSocket-Protocol``.
    :param compression: offer permessage-deflate (RFC 7692).
    :raises ConnectionRejected: the server answered with another status.
    :raises trio.BrokenResourceError: the stream ended or was reset before
        the answer's head was complete.
    :raises wsproto.utilities.RemoteProtocolError: the answer is not a valid
        WebSocket handshake (a bad accept key or extension parameter, a head
        over ``MAX_HEAD`` bytes...).
    """
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    request = Request(
        host=target.host_header,
        target=target.resource,
        extra_headers=[(k.encode("ascii"), v.encode("latin-1")) for k, v in headers],
        subprotocols=list(subprotocols),
        extensions=[Deflate()] if compression else [],
    )
    await stream.send_all(client.send(request))
    parser = _Answer(client)
    pending = bytearray()  # read, not yet given to wsproto
    searched = 0  # how much of ``pending`` holds no end of head
    received = 0
    body_deadline = float("inf")  # set once a rejection's head has come
    while True:
        try:
            data: bytes | bytearray = b""
            with trio.move_on_at(body_deadline) as waiting:
                data = await stream.receive_some(READ_SIZE)
        except trio.BrokenResourceError:
            parser.raise_rejection()
            raise
        if waiting.cancelled_caught:
            parser.raise_rejection()  # the body did not end in time: what came of it
        if not data:
            parser.raise_rejection()  # a body delimited by the end of the stream
            raise trio.BrokenResourceError("the peer ended the stream during the handshake")
        received += len(data)
        pending += data
        if parser.rejection is not None:  # the body: all of it to wsproto
            parser.feed(bytes(pending))
            pending.clear()
            if len(parser.rejection.body) >= MAX_REJECTION_BODY:
                raise parser.rejection  # all of it that is kept: no need for the rest
            continue
        while (end := pending.find(_END_OF_HEAD, max(0, searched - 3))) >= 0:
            end += len(_END_OF_HEAD)
            head = bytes(pending[:end])
            del pending[:end]
            searched = 0
            accepted = parser.feed(head)
            if accepted is not None:
                assert client.connection is not None  # the frame protocol, after a 101
                return Opened(
                    connection=client.connection,
                    subprotocol=accepted.subprotocol,
                    compressed=bool(accepted.extensions),
                    leftover=bytes(pending),
                    received=received,
                )
            if parser.rejection is not None:  # what follows its head is its body
                body_deadline = trio.current_time() + REJECTION_BODY_GRACE
                parser.feed(bytes(pending))
                pending.clear()
                break
        searched = len(pending)
        if searched > MAX_HEAD:
            raise RemoteProtocolError(f"the answer's head is over {MAX_HEAD} bytes")


class _Answer:
    """wsproto's handshake parser, and the rejection it found, if any."""

    __slots__ = ("client", "rejection")

    def __init__(self, client: wsproto.WSConnection) -> None:
        self.client = client
        self.rejection: ConnectionRejected | None = None

    def feed(self, data: bytes) -> AcceptConnection | None:
        """Parse ``data``; return the acceptance once it is whole.

        :raises ConnectionRejected: a rejection, once its body is complete.
        :raises RemoteProtocolError: anything wsproto's parser raised on the
            server's bytes (a hostile value can make it raise ``ValueError``
            or ``IndexError``: RFC 6455 section 4.1 has the client fail then).
        """
        if not data:
            return None  # wsproto takes b"" for the end of the stream
        try:
            self.client.receive_data(data)
            for event in self.client.events():
                if isinstance(event, AcceptConnection):
                    return event
                if isinstance(event, RejectConnection):
                    self.rejection = ConnectionRejected(event.status_code, list(event.headers), b"")
                    if not event.has_body:
                        raise self.rejection
                elif isinstance(event, RejectData) and self.rejection is not None:
                    body = self.rejection.body + event.data
                    self.rejection.body = body[:MAX_REJECTION_BODY]
                    if event.body_finished:
                        raise self.rejection
        except (ValueError, LookupError, TypeError) as exc:
            raise RemoteProtocolError(f"the server's answer could not be parsed: {exc}") from exc
        return None

    def raise_rejection(self) -> None:
        """Raise the rejection parsed so far, if there is one (the stream ended)."""
        if self.rejection is not None:
            raise self.rejection
