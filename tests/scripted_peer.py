"""A scripted WebSocket peer for the transport's tests: exact bytes, virtual time.

The peer does its half of the handshake with wsproto's server side, then
writes frames byte for byte as a test says (:func:`frame`); :func:`connected`
gives a handshaken client :class:`~trio_conn._transport.WebSocket` over a
memory stream pair (a :class:`~tests.helpers.FaultyStream` on the client side).
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio
import trio.testing
import wsproto
from wsproto.events import AcceptConnection, Request
from wsproto.extensions import Extension, PerMessageDeflate

from tests.helpers import FaultyStream
from trio_conn._handshake import Opened, handshake
from trio_conn._request import Target
from trio_conn._transport import WebSocket

TARGET = Target("127.0.0.1", 80, "/feed", secure=False)
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False) -> bytes:
    """An unmasked server frame (RFC 6455 section 5.2)."""
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    length = len(payload)
    if length < 126:
        return head + bytes([length]) + payload
    if length < 65536:
        return head + bytes([126]) + struct.pack("!H", length) + payload
    return head + bytes([127]) + struct.pack("!Q", length) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(CLOSE, struct.pack("!H", code) + reason.encode())


@dataclass
class Peer:
    """The server side: its stream, and what it read from the client, parsed."""

    stream: trio.abc.Stream
    ws: wsproto.WSConnection
    received: list[object] = field(default_factory=list)

    async def read_events(self) -> list[object]:
        """Read what the client sent until the stream ends (bounded by the caller)."""
        while True:
            data = await self.stream.receive_some(65536)
            if not data:
                return self.received
            self.ws.receive_data(bytes(data))
            self.received.extend(self.ws.events())

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)


@dataclass
class Link:
    """A handshaken client WebSocket, its peer, its stream, and its on_change calls."""

    websocket: WebSocket
    peer: Peer
    stream: FaultyStream
    changes: list[int]


@asynccontextmanager
async def connected(
    *,
    max_message_size: int = 1 << 20,
    max_fragments: int = 64,
    compression: bool = False,
    subprotocol: str | None = None,
    after_101: bytes = b"",
) -> AsyncIterator[Link]:
    """A client WebSocket over a memory stream pair, after the handshake with the peer.

    ``after_101``: bytes the peer writes in the same write as its ``101``.
    The WebSocket's owed-pong writer runs in a nursery that ends with the block.
    """
    client_stream, server_stream = trio.testing.memory_stream_pair()
    stream = FaultyStream(client_stream)
    changes: list[int] = []
    server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    peer = Peer(server_stream, server)

    async def accept() -> None:
        await read_request(server_stream, server)
        extensions: list[Extension] = [PerMessageDeflate()] if compression else []
        answer = AcceptConnection(subprotocol=subprotocol, extensions=extensions)
        await server_stream.send_all(server.send(answer) + after_101)

    async with trio.open_nursery() as tasks:
        tasks.start_soon(accept)
        opened = await handshake(
            stream,
            TARGET,
            headers=[("Authorization", "Bearer t0k3n")],
            subprotocols=["chat", "json"] if subprotocol else [],
            compression=compression,
        )
        websocket = WebSocket(
            stream,
            opened,
            max_message_size=max_message_size,
            max_fragments=max_fragments,
            buffer=16,
            on_change=lambda: changes.append(1),
            spawn=tasks.start_soon,
        )
        yield Link(websocket, peer, stream, changes)
        tasks.cancel_scope.cancel()


def unconnected() -> tuple[trio.abc.Stream, trio.abc.Stream, wsproto.WSConnection]:
    """A client stream before its handshake, the server's stream, and a server wsproto."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    return client_stream, server_stream, wsproto.WSConnection(wsproto.ConnectionType.SERVER)


async def read_request(stream: trio.abc.Stream, server: wsproto.WSConnection) -> None:
    """Read the client's upgrade request into ``server``."""
    while not any(isinstance(event, Request) for event in server.events()):
        server.receive_data(bytes(await stream.receive_some(65536)))


async def client_handshake(stream: trio.abc.Stream) -> Opened:
    return await handshake(stream, TARGET, headers=[], subprotocols=[], compression=False)
