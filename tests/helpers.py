"""Helpers shared by the test modules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import trio

from trio_conn.testing import FaultServer


def all_tasks() -> Iterator[trio.lowlevel.Task]:
    """Every task of the current run, walked from the root."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    pending = [root]
    while pending:
        task = pending.pop()
        yield task
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)


def library_tasks() -> list[str]:
    """Names of the tasks of trio_conn's manager still alive anywhere in this run."""
    prefixes = (
        "trio_conn._supervisor",
        "trio_conn._session",
        "trio_conn._heartbeat",
        "trio_conn._transport",
    )
    return [task.name for task in all_tasks() if task.name.startswith(prefixes)]


class PassThroughStream(trio.abc.Stream):
    """A stream that forwards to another; subclasses change one behaviour."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self._inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._inner.aclose()


class FaultyStream(PassThroughStream):
    """A client stream a test breaks on purpose.

    ``stall``: the next writes of more than 100 bytes write half and hang
    until the stream is closed (a TCP send buffer that fills in the middle of
    a frame; closing the stream wakes the writer, as with a socket).
    ``broken``: every write fails as a reset connection would. ``delay``:
    seconds each write takes (a slow link, in virtual time). ``rate``: bytes
    per second the peer reads; a write takes its length over the rate (a
    slow but alive reader). :meth:`block`: a full send buffer: nothing can be
    written, ``wait_send_all_might_not_block`` waits, until :meth:`unblock`.
    ``writes`` counts the writes that reached the peer.
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.stall = False
        self.broken = False
        self.delay = 0.0
        self.rate: float | None = None
        self.writes = 0
        self._writable: trio.Event | None = None  # set while blocked
        self._closed = trio.Event()

    def block(self) -> None:
        self._writable = trio.Event()

    def unblock(self) -> None:
        if self._writable is not None:
            self._writable.set()
            self._writable = None

    async def wait_send_all_might_not_block(self) -> None:
        if self._writable is not None:
            await self._writable.wait()
        await super().wait_send_all_might_not_block()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._writable is not None:
            await self._writable.wait()
        if self.delay:
            await trio.sleep(self.delay)
        if self.rate:
            await trio.sleep(len(data) / self.rate)
        if self.broken:
            raise trio.BrokenResourceError("connection reset by peer")
        if self.stall and len(data) > 100:
            await super().send_all(data[: len(data) // 2])
            await self._closed.wait()
            raise trio.ClosedResourceError("the stream was closed during a write")
        await super().send_all(data)
        self.writes += 1

    async def aclose(self) -> None:
        self._closed.set()
        await super().aclose()


def faulty_opener(
    server: FaultServer,
) -> tuple[Callable[[str, int], Awaitable[trio.abc.Stream]], list[FaultyStream]]:
    """An ``open_stream`` for ``server`` whose streams are :class:`FaultyStream`, and the
    list they are appended to, in the order they were opened."""
    streams: list[FaultyStream] = []

    async def open_stream(host: str, port: int) -> trio.abc.Stream:
        stream = FaultyStream(await server.open_stream(host, port))
        streams.append(stream)
        return stream

    return open_stream, streams


async def start_server_process(module: str, port: int = 0) -> tuple[trio.Process, int]:
    """Start ``python -m module PORT`` (a server in its own process, for real-clock
    tests); return it and the port it prints in its ``ready PORT`` line."""
    root = Path(__file__).parent.parent
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", module, str(port)],
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert process.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await process.stdout.receive_some(1)
        assert chunk, f"{module} exited before it was ready"
        line += chunk
    word, number = line.decode().split()
    assert word == "ready"
    return process, int(number)


async def interrupt_after_lines(process: trio.Process, lines: int) -> tuple[bytes, bytes]:
    """Read ``process``'s stdout until ``lines`` lines, send SIGINT, and return
    ``(stdout, stderr)`` once it has exited (killed if anything goes wrong)."""
    assert process.stdout is not None
    assert process.stderr is not None
    stdout = stderr = b""
    try:
        while stdout.count(b"\n") < lines:
            chunk = await process.stdout.receive_some(4096)
            assert chunk, "the process exited early"
            stdout += chunk
        process.send_signal(signal.SIGINT)
        async with trio.open_nursery() as nursery:

            async def drain_stderr() -> None:
                nonlocal stderr
                assert process.stderr is not None
                while chunk := await process.stderr.receive_some(65536):
                    stderr += chunk

            nursery.start_soon(drain_stderr)
            await process.wait()
    finally:
        process.kill()
        await process.wait()
        await process.stdout.aclose()
        await process.stderr.aclose()
    return stdout, stderr
