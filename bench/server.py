"""The benchmarks' peer: a minimal WebSocket server, run as a second process.

wsproto does the opening handshake; after it the server reads and writes raw
frames itself, unmasking with websockets' C ``apply_mask`` when it is
installed, so that its own cost stays far below the client's and the
benchmarks measure the client, not this. asyncio protocol callbacks serve
the many idle connections (handshake, pings, ``drop``); a connection given a
data command moves to a thread of its own doing blocking socket calls, the
cheapest per message that Python offers (no event loop between the socket
and the frame). ``throughput.py`` reports the server's CPU time beside the
client's.

    python bench/server.py            # prints "ready PORT", serves until killed
    python bench/server.py --port 8765 --arrivals PATH

``--port``: listen there (default 0: a free port; an address still in
TIME_WAIT is reused, so a killed server can be restarted on its port).
``--arrivals``: append a line per event to PATH, ``accept T`` when a TCP
connection is accepted and ``open T`` when its handshake is answered, ``T``
being ``time.monotonic()`` (the same clock in every process on Linux);
flushed every 0.1 s and on SIGTERM (a SIGKILL loses the last 0.1 s).

What each connection does depends on its first message (a small text frame);
the messages are ``_messages.py``'s numbered ones, checked whole:

- ``flood SIZE N``: send messages 0 to N-1 of SIZE bytes as fast as the
  client takes them, then idle; ``flood SIZE N swap K`` sends K+1 before K,
  ``flood SIZE N corrupt K`` changes a byte of K (the client must notice);
- ``sink SIZE N``: read and check messages 0 to N-1, then answer ``done``;
- ``echo SIZE``: check each message (0, 1, 2, ...) and echo it;
- ``drop``: close the TCP connection at once, without a close frame;
- anything else or nothing: idle.

Pings are always answered, close frames too (then the server closes). A
message out of order or with wrong content is answered with a text message
``error: <what was wrong>`` instead of ``done`` or the echo; the connection
then idles, dropping what it reads, until the client goes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import socket
import struct
import threading
import time
from typing import TextIO

import wsproto
import wsproto.events
from _messages import corrupt, describe, filler_bytes, message_bytes

try:
    from websockets.speedups import apply_mask
except ImportError:  # the pure-Python fallback: ~30 us per 16 KiB instead of 0.5

    def apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
        length = len(data)
        repeated = (mask * (length // 4 + 1))[:length]
        return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
            length, "big"
        )


TEXT, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x8, 0x9, 0xA, 0x0
BATCH_BYTES = 256 * 1024  # a flood is written in batches of about this size
Frame = tuple[bool, int, bytes]  # fin, opcode, unmasked payload


def frame_header(length: int, opcode: int = TEXT) -> bytes:
    """The header of an unmasked, final server frame."""
    if length < 126:
        return bytes([0x80 | opcode, length])
    if length < 65536:
        return bytes([0x80 | opcode, 126]) + struct.pack("!H", length)
    return bytes([0x80 | opcode, 127]) + struct.pack("!Q", length)


def parse(buffer: bytearray, *, most: int = -1) -> list[Frame]:
    """The complete client frames at the start of ``buffer`` (``most`` of them), removed."""
    frames: list[Frame] = []
    position = 0
    while len(frames) != most:
        available = len(buffer) - position
        if available < 2:
            break
        second = buffer[position + 1]
        length, header = second & 0x7F, 2
        if length == 126:
            if available < 4:
                break
            length, header = (buffer[position + 2] << 8) | buffer[position + 3], 4
        elif length == 127:
            if available < 10:
                break
            length, header = int.from_bytes(buffer[position + 2 : position + 10], "big"), 10
        masked = second & 0x80
        end = position + header + (4 if masked else 0) + length
        if len(buffer) < end:
            break
        first = buffer[position]
        payload = bytes(buffer[end - length : end])
        if masked:
            payload = apply_mask(payload, bytes(buffer[end - length - 4 : end - length]))
        frames.append((bool(first & 0x80), first & 0x0F, payload))
        position = end
    del buffer[:position]
    return frames


class Closed(Exception):
    """The client went: end of stream, or a close frame (answered)."""


class Worker:
    """One connection doing a data command, in a thread of its own, blocking calls."""

    def __init__(self, sock: socket.socket, leftover: bytearray, words: list[str]) -> None:
        self.sock = sock
        self.buffer = leftover
        self.ready = parse(leftover)[::-1]  # pop() from the end, in order
        self.fragments: list[bytes] = []
        self.words = words

    def run(self) -> None:
        command, size = self.words[0], int(self.words[1])
        try:
            if command == "flood":
                fault = (self.words[3], int(self.words[4])) if len(self.words) > 3 else ("", -1)
                self.flood(size, int(self.words[2]), *fault)
            elif command == "sink":
                count = int(self.words[2])
                if all(self.check(index, size) is not None for index in range(count)):
                    self.send_text(b"done")
            else:  # echo
                index = 0
                while (got := self.check(index, size)) is not None:
                    self.send_text(got)
                    index += 1
            while True:  # idle until the client goes
                self.message()
        except (Closed, OSError):
            pass
        finally:
            self.sock.close()

    def message(self) -> bytes:
        """The next data message (fragments joined); pings and close answered on the way."""
        while True:
            while not self.ready:
                data = self.sock.recv(262144)
                if not data:
                    raise Closed
                self.buffer += data
                self.ready = parse(self.buffer)
                self.ready.reverse()  # pop() from the end, in order
            fin, opcode, payload = self.ready.pop()
            if opcode == PING:
                self.sock.sendall(frame_header(len(payload), PONG) + payload)
            elif opcode == CLOSE:
                self.sock.sendall(frame_header(len(payload), CLOSE) + payload)
                raise Closed
            elif opcode != PONG:
                if opcode != CONTINUATION:
                    self.fragments.clear()
                self.fragments.append(payload)
                if fin:
                    whole = b"".join(self.fragments)
                    self.fragments.clear()
                    return whole

    def check(self, index: int, size: int) -> bytes | None:
        """The next message if it is message ``index``; else report the error and return None."""
        got = self.message()
        if got == message_bytes(index, size):
            return got
        self.send_text(f"error: {describe(index, got, size)}".encode())
        return None

    def send_text(self, payload: bytes) -> None:
        self.sock.sendall(frame_header(len(payload)) + payload)

    def flood(self, size: int, count: int, fault: str, at: int) -> None:
        header = frame_header(size)
        per_batch = max(1, BATCH_BYTES // (size + len(header)))
        fills = filler_bytes(size)
        for first in range(0, count, per_batch):
            parts: list[bytes] = []
            for index in range(first, min(count, first + per_batch)):
                number = index
                if fault == "swap" and index in (at, at + 1):
                    number = at + 1 if index == at else at
                if fault == "corrupt" and index == at:
                    parts += (header, corrupt(message_bytes(index, size).decode()).encode())
                    continue
                parts += (header, b"%08d" % number, fills[number % len(fills)])
            self.sock.sendall(b"".join(parts))


ARRIVALS: list[str] = []  # lines not yet written to --arrivals


class Connection(asyncio.Protocol):
    """One client from its upgrade request until it goes idle, drops or gets a data command."""

    record = False  # --arrivals given

    def __init__(self) -> None:
        self.transport: asyncio.Transport
        self.handshake: wsproto.WSConnection | None = wsproto.WSConnection(
            wsproto.ConnectionType.SERVER
        )
        self.buffer = bytearray()
        self.commanded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.record:
            ARRIVALS.append(f"accept {time.monotonic():.6f}\n")

    def data_received(self, data: bytes) -> None:
        handshake = self.handshake
        if handshake is not None:
            handshake.receive_data(data)
            for event in handshake.events():
                if isinstance(event, wsproto.events.Request):
                    self.transport.write(handshake.send(wsproto.events.AcceptConnection()))
                    if self.record:
                        ARRIVALS.append(f"open {time.monotonic():.6f}\n")
                    # wsproto keeps any bytes after the request; a client does
                    # not send before the answer, so there are none in practice.
                    self.handshake = None
            return
        self.buffer += data
        while frames := parse(self.buffer, most=1):  # one at a time: a Worker takes the rest
            _fin, opcode, payload = frames[0]
            if opcode == PING:
                self.transport.write(frame_header(len(payload), PONG) + payload)
            elif opcode == CLOSE:
                self.transport.write(frame_header(len(payload), CLOSE) + payload)
                self.transport.close()
                return
            elif opcode == TEXT and not self.commanded:  # the first message: a command
                self.commanded = True
                words = payload.decode("utf-8", "replace").split()
                if words[:1] == ["drop"]:  # abrupt: no close frame
                    self.transport.abort()
                    return
                if words[:1] in (["flood"], ["sink"], ["echo"]):
                    self.hand_off(words)
                    return
            # any other message: idle, dropped

    def hand_off(self, words: list[str]) -> None:
        """Give the socket (and what follows the command) to a Worker thread."""
        self.transport.pause_reading()
        sock = self.transport.get_extra_info("socket")
        own = socket.socket(fileno=os.dup(sock.fileno()))
        own.setblocking(True)  # shared with asyncio's descriptor, which is idle from now
        leftover, self.buffer = self.buffer, bytearray()
        loop = asyncio.get_running_loop()

        def run() -> None:
            try:
                Worker(own, leftover, words).run()
            finally:
                loop.call_soon_threadsafe(self.transport.abort)

        threading.Thread(target=run, daemon=True).start()


def write_arrivals(out: TextIO) -> None:
    if ARRIVALS:
        out.writelines(ARRIVALS)
        ARRIVALS.clear()
        out.flush()


async def flush_arrivals(out: TextIO) -> None:
    while True:
        await asyncio.sleep(0.1)
        write_arrivals(out)


async def main(port: int, arrivals: TextIO | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        Connection, "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    if arrivals is None:
        print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()
        return
    Connection.record = True
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    flusher = asyncio.create_task(flush_arrivals(arrivals))
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    await stopped.wait()
    flusher.cancel()
    write_arrivals(arrivals)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="default 0: a free port")
    parser.add_argument("--arrivals", help="append accept and handshake times to this file")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.arrivals is None:
        asyncio.run(main(args.port, None))
    else:
        with open(args.arrivals, "a", encoding="ascii") as out:
            asyncio.run(main(args.port, out))
