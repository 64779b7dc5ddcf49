"""A `websockets` server in its own process: an independent peer with permessage-deflate.

``python -m tests.ws_peer [PORT]`` listens on 127.0.0.1:PORT (0: a free port), prints
``ready PORT`` once listening, and serves until killed. By path:

- ``/echo``: echoes every message (compressed when the client offered it);
- ``/bomb``: sends one message of 50 MiB of zeros, which permessage-deflate
  shrinks to about 50 KiB on the wire, then echoes;
- ``/fragments?kind=binary|text&control=ping|pong``: sends ``FRAGMENT * 2`` as
  two fragments with a ping (or an unsolicited pong) between them (RFC 6455
  section 5.4 allows a control frame there), then ``FRAGMENT`` whole, then echoes.

Run by tests/test_wire.py with the real clock (it is another process).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

BOMB = b"\x00" * (50 << 20)
FRAGMENT = b"abc" * 1000


async def fragments(connection: ServerConnection, query: dict[str, list[str]]) -> None:
    part: str | bytes = FRAGMENT.decode() if query["kind"] == ["text"] else FRAGMENT

    async def pieces() -> AsyncIterator[str | bytes]:
        yield part
        if query["control"] == ["ping"]:
            await connection.ping(b"between")
        else:
            await connection.pong(b"between")
        yield part

    await connection.send(pieces())
    await connection.send(part)


async def handler(connection: ServerConnection) -> None:
    request = connection.request
    url = urlsplit(request.path if request is not None else "/")
    try:
        if url.path == "/bomb":
            await connection.send(BOMB)
        elif url.path == "/fragments":
            await fragments(connection, parse_qs(url.query))
        async for message in connection:
            await connection.send(message)
    except ConnectionClosed:
        return


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression="deflate", max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"ready {port}", flush=True)
        await asyncio.Future()  # until killed


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
