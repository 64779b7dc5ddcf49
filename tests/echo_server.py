"""A WebSocket echo server in its own process, for real-clock tests.

``python -m tests.echo_server [PORT]`` listens on 127.0.0.1:PORT (0: any free
port), prints ``ready PORT`` on stdout once listening, and echoes every
message until killed.
"""

from __future__ import annotations

import sys

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    while True:
        try:
            message = await ws.get_message()
            await ws.send_message(message)
        except ConnectionClosed:
            return


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, echo, "127.0.0.1", port, None)
        print(f"ready {server.port}", flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 0)
