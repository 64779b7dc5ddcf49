"""A `websockets` server in its own process: an independent peer with permessage-deflate.

``python -m tests.ws_peer [PORT]`` listens on 127.0.0.1:PORT (0: a free port), prints
``ready PORT`` once listening, and serves until killed. By path:

- ``/echo``: echoes every message (compressed when the client offered it);
- ``/bomb``: sends one message of 50 MiB of zeros, which permessage-deflate
  shrinks to about 50 KiB on the wire, then echoes.

Run by tests/test_wire.py with the real clock (it is another process).
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

BOMB = b"\x00" * (50 << 20)


async def handler(connection: ServerConnection) -> None:
    try:
        if connection.request is not None and connection.request.path == "/bomb":
            await connection.send(BOMB)
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
