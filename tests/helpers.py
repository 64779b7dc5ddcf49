"""Helpers shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator

import trio


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
    prefixes = ("trio_conn._supervisor", "trio_conn._session", "trio_conn._heartbeat")
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
