"""The benchmarks' peer: a minimal WebSocket server, run as a second process.

wsproto does the opening handshake; after it the server reads and writes raw
frames itself, so its own cost stays far below the client's and the
benchmarks measure the client (raw trio-websocket or trio_conn), not this.

    python bench/server.py            # prints "ready PORT", serves until killed

What each connection does depends on its first message (a small text frame):

- ``flood N``: send N text frames of 32 bytes as fast as possible, then idle;
- ``sink N``: read N client frames, then answer ``done``;
- ``echo``: echo every text frame until the client goes;
- ``drop``: close the TCP connection at once, without a close frame;
- anything else or nothing: idle; pings are always answered.
"""

from __future__ import annotations

import struct
import sys

import trio
import wsproto
import wsproto.events

PAYLOAD = b"x" * 32


def text_frame(payload: bytes) -> bytes:
    """An unmasked server frame (payloads under 64 KiB)."""
    if len(payload) < 126:
        return bytes([0x81, len(payload)]) + payload
    return bytes([0x81, 126]) + struct.pack("!H", len(payload)) + payload


class FrameReader:
    """Reads masked client frames from a stream (payloads under 64 KiB)."""

    def __init__(self, stream: trio.abc.Stream, leftover: bytes) -> None:
        self.stream = stream
        self.buffer = bytearray(leftover)

    async def _fill(self, count: int) -> bool:
        while len(self.buffer) < count:
            data = await self.stream.receive_some(65536)
            if not data:
                return False
            self.buffer += data
        return True

    async def frame(self, *, unmask: bool = True) -> tuple[int, bytes] | None:
        """``(opcode, payload)`` of the next frame, or None at EOF.

        ``unmask=False`` skips decoding the payload (the sink only counts).
        """
        if not await self._fill(2):
            return None
        opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
        header = 2
        if length == 126:
            if not await self._fill(4):
                return None
            length = struct.unpack("!H", self.buffer[2:4])[0]
            header = 4
        if not await self._fill(header + 4 + length):
            return None
        mask = self.buffer[header : header + 4]
        masked = self.buffer[header + 4 : header + 4 + length]
        del self.buffer[: header + 4 + length]
        if not unmask:
            return opcode, b""
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(masked))
        return opcode, payload


async def handshake(stream: trio.abc.Stream) -> bytes | None:
    """Answer the upgrade request; return bytes read past it (None if the client left)."""
    ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    while True:
        data = await stream.receive_some(65536)
        if not data:
            return None
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, wsproto.events.Request):
                await stream.send_all(ws.send(wsproto.events.AcceptConnection()))
                # wsproto keeps any bytes after the request; a client does not
                # send before the answer, so there are none in practice.
                return b""


async def serve(stream: trio.abc.Stream) -> None:
    try:
        leftover = await handshake(stream)
        if leftover is None:
            return
        reader = FrameReader(stream, leftover)
        first = True
        echo = False
        sink_left = 0
        while (frame := await reader.frame(unmask=not sink_left)) is not None:
            opcode, payload = frame
            if opcode == 0x9:  # ping
                await stream.send_all(bytes([0x8A, len(payload)]) + payload)
                continue
            if opcode == 0x8:  # close: answer and stop
                await stream.send_all(bytes([0x88, len(payload)]) + payload)
                return
            if sink_left:
                sink_left -= 1
                if not sink_left:
                    await stream.send_all(text_frame(b"done"))
                continue
            if echo:
                await stream.send_all(text_frame(payload))
                continue
            if first:
                first = False
                command, _, argument = payload.decode().partition(" ")
                if command == "flood":
                    await stream.send_all(text_frame(PAYLOAD) * int(argument))
                elif command == "sink":
                    sink_left = int(argument)
                elif command == "echo":
                    echo = True
                elif command == "drop":  # abrupt: no close frame
                    return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def main() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=4096)
    print(f"ready {listeners[0].socket.getsockname()[1]}", flush=True)
    await trio.serve_listeners(serve, listeners)


if __name__ == "__main__":
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    trio.run(main)
    sys.exit(0)
