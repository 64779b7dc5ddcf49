"""Mailbox: the receive buffer between the reader task and ``receive()``.

A bounded deque with two parking lots, instead of a memory channel, for the
hot path: a ``get`` that finds a message ready takes it without a schedule
point (checking cancellation first, and yielding every ``YIELD_EVERY`` gets so
no other task starves), and a producer blocked on a full mailbox is woken only
once it has drained to half, not once per message. On the 2-core development
machine that is the difference between about 0.7x and 1.0x of raw
trio-websocket's receive throughput (bench/throughput.py).
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import trio

T = TypeVar("T")

#: A get that finds an item ready yields to the scheduler once per this many.
YIELD_EVERY = 32


class Mailbox(Generic[T]):
    """A bounded FIFO for one producer and any consumers, closable once.

    :param capacity: most items held; ``put`` waits while it is reached.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        # Each idle connection has one: its deque (a 64-slot block even when
        # empty) and its parking lots are made on first use.
        self._items: deque[T] | None = None
        self._capacity = capacity
        self._low_water = capacity // 2
        self._closed = False
        self._readable: trio.lowlevel.ParkingLot | None = None
        self._writable: trio.lowlevel.ParkingLot | None = None
        self._gets_since_yield = 0

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else 0

    def put_nowait(self, item: T) -> None:
        """Add ``item``.

        :raises trio.WouldBlock: the mailbox is full.
        :raises trio.ClosedResourceError: the mailbox is closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("mailbox is closed")
        items = self._items
        if items is None:
            items = self._items = deque()
        elif len(items) >= self._capacity:
            raise trio.WouldBlock
        items.append(item)
        if self._readable:  # a lot with parked tasks is truthy
            self._readable.unpark()

    async def put(self, item: T) -> None:
        """Add ``item``, waiting while the mailbox is full.

        :raises trio.ClosedResourceError: the mailbox is closed.
        """
        while True:
            try:
                self.put_nowait(item)
            except trio.WouldBlock:
                if self._writable is None:
                    self._writable = trio.lowlevel.ParkingLot()
                await self._writable.park()
            else:
                await trio.lowlevel.checkpoint()
                return

    async def get(self) -> T:
        """Take the oldest item, waiting for one.

        :raises trio.EndOfChannel: closed, and every item has been taken.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._items:  # None or empty
            if self._closed:
                raise trio.EndOfChannel
            if self._readable is None:
                self._readable = trio.lowlevel.ParkingLot()
            await self._readable.park()
        item = self._items.popleft()
        if self._writable and len(self._items) <= self._low_water:
            self._writable.unpark_all()
        self._gets_since_yield += 1
        if self._gets_since_yield >= YIELD_EVERY:
            self._gets_since_yield = 0
            await trio.lowlevel.cancel_shielded_checkpoint()
        return item

    def get_nowait(self) -> T:
        """Take the oldest item without waiting.

        :raises trio.WouldBlock: the mailbox is empty (and not closed).
        :raises trio.EndOfChannel: closed, and every item has been taken.
        """
        if not self._items:
            if self._closed:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        item = self._items.popleft()
        if self._writable and len(self._items) <= self._low_water:
            self._writable.unpark_all()
        return item

    def close(self) -> None:
        """No more puts; gets drain what is left, then raise EndOfChannel."""
        self._closed = True
        for lot in (self._readable, self._writable):
            if lot is not None:
                lot.unpark_all()
