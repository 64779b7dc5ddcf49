"""The receive buffer: order, backpressure, close, cancellation and fairness."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_conn._mailbox import YIELD_EVERY, Mailbox


async def test_fifo_and_capacity() -> None:
    box: Mailbox[int] = Mailbox(3)
    for i in range(3):
        box.put_nowait(i)
    with pytest.raises(trio.WouldBlock):
        box.put_nowait(3)
    assert [await box.get() for _ in range(3)] == [0, 1, 2]
    assert len(box) == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        Mailbox(0)


async def test_put_waits_until_half_drained(autojump_clock: trio.testing.MockClock) -> None:
    box: Mailbox[int] = Mailbox(4)
    for i in range(4):
        box.put_nowait(i)
    put_done = trio.Event()

    async def producer() -> None:
        await box.put(4)
        put_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert not put_done.is_set()
        assert await box.get() == 0  # 3 left: above half, the producer sleeps on
        await trio.testing.wait_all_tasks_blocked()
        assert not put_done.is_set()
        assert await box.get() == 1  # 2 left: half, the producer is woken
        await put_done.wait()
    assert [await box.get() for _ in range(3)] == [2, 3, 4]


async def test_close_drains_then_ends() -> None:
    box: Mailbox[str] = Mailbox(4)
    box.put_nowait("a")
    box.close()
    with pytest.raises(trio.ClosedResourceError):
        box.put_nowait("b")
    with pytest.raises(trio.ClosedResourceError):
        await box.put("b")
    assert await box.get() == "a"
    with pytest.raises(trio.EndOfChannel):
        await box.get()


async def test_close_wakes_waiters(autojump_clock: trio.testing.MockClock) -> None:
    box: Mailbox[int] = Mailbox(1)
    box.put_nowait(0)
    outcomes: list[str] = []

    async def blocked_put() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await box.put(1)
        outcomes.append("put")

    empty: Mailbox[int] = Mailbox(1)

    async def blocked_get() -> None:
        with pytest.raises(trio.EndOfChannel):
            await empty.get()
        outcomes.append("get")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked_put)
        nursery.start_soon(blocked_get)
        await trio.testing.wait_all_tasks_blocked()
        box.close()
        empty.close()
    assert sorted(outcomes) == ["get", "put"]


async def test_get_with_an_item_ready_still_honours_cancellation() -> None:
    box: Mailbox[int] = Mailbox(2)
    box.put_nowait(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await box.get()
        raise AssertionError("get returned in a cancelled scope")
    assert scope.cancelled_caught
    assert len(box) == 1  # the item was not lost


async def test_a_busy_consumer_does_not_starve_others() -> None:
    box: Mailbox[int] = Mailbox(10_000)
    for i in range(10_000):
        box.put_nowait(i)
    other_ran = 0

    async def other() -> None:
        nonlocal other_ran
        while True:
            other_ran += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        for _ in range(10_000):
            await box.get()
        nursery.cancel_scope.cancel()
    # It yielded at least once per YIELD_EVERY gets.
    assert other_ran >= 10_000 // YIELD_EVERY - 1
