"""One member of a connection group: its connection's life, its handler, its end.

The group (``trio_conn/_group.py``) decides which members exist; a
:class:`Member` runs one: its supervisor directly in the group's nursery, its
handler in a task of its own, and its end, shielded and bounded. Apart from
the group so that "which members" and "how one member lives" are each read in
one place.

Rules of the house (the group's, as they concern one member):

- Ending a member is shielded and bounded: the close within
  ``close_timeout`` plus a margin, then the handler gets ``close_timeout`` to
  drain what was buffered, then it is cancelled, and that wait is bounded
  too (a handler shielded in a wait of its own ends when that does).
- The handler owns its member's life: when it returns, the member is closed
  (``handler returned``); when it raises, the error is logged as
  ``connection.hook_failed`` (hook ``handler``) and the member is closed.
- A caller inside the member's own tasks cannot wait for them: from its
  hooks (the supervisor's task tree) see :meth:`Member.calls_from_its_hooks`;
  from its handler's tree the handler is given its grace and not waited for.
- Its secrets go once its supervisor and its handler have both ended.
"""

from __future__ import annotations

import trio

from ._connection import ManagedConnection, close_within_bound, supervisor_of
from ._membership import Handler, MemberOptions
from ._state import ConnectionState

__all__ = ["Member"]

S = ConnectionState


class Member:
    """A group member: its connection, the options it was made with, its tasks."""

    __slots__ = (
        "conn",
        "handler_done",
        "handler_scope",
        "handler_task",
        "options",
        "replacing",
        "run_done",
        "run_task",
    )

    def __init__(self, conn: ManagedConnection, options: MemberOptions) -> None:
        self.conn = conn
        self.options = options
        self.run_done = trio.Event()
        self.handler_scope = trio.CancelScope()
        self.handler_done = trio.Event()
        self.handler_task: trio.lowlevel.Task | None = None
        self.run_task: trio.lowlevel.Task | None = None  # its supervisor's: hooks run there
        #: A restart asked from a hook is replacing it (once it has ended).
        self.replacing = False

    def start(self, nursery: trio.Nursery, key: str) -> None:
        """Start the supervisor, and the handler if there is one, in ``nursery``."""
        nursery.start_soon(self._run, nursery, name=f"trio_conn member {key}")
        handler = self.options.handler
        if handler is None:
            self.handler_done.set()
        else:
            nursery.start_soon(self._run_handler, handler, name=f"trio_conn handler {key}")

    def totals(self) -> tuple[int, int]:
        """``(attempts, total_failures)`` of its connection."""
        return supervisor_of(self.conn).totals()

    def calls_from_its_hooks(self) -> bool:
        """Whether the current task is the member's supervisor or one it started:
        its on_connect, its on_failed, or a task of theirs. Such a caller cannot
        wait for the member's close (the close waits for the hook)."""
        return _within(self.run_task)

    async def stop(self, reason: str) -> None:
        """Close the member and end its tasks, shielded and bounded (rules above)."""
        await close_within_bound(self.conn, reason)
        await self.finish()

    async def finish(self) -> None:
        """Wait for the member's end once its close was requested: its supervisor
        (bounded by ``close_timeout`` plus a second), then its handler; shielded."""
        grace = self.conn.config.close_timeout
        with trio.CancelScope(shield=True):
            # Bounded: a hook of this member shielded in a wait of its own (a
            # remove of another member) must not hold the group for ever.
            with trio.move_on_after(grace + 1.0):
                await self.run_done.wait()  # the hook returns, CLOSED follows
            await self._end_handler(grace)

    async def _run(self, nursery: trio.Nursery) -> None:
        self.run_task = trio.lowlevel.current_task()
        try:
            await supervisor_of(self.conn).run(nursery)
        finally:
            self.run_done.set()
            self._forget_secrets_when_done()

    async def _run_handler(self, handler: Handler) -> None:
        self.handler_task = trio.lowlevel.current_task()
        conn = self.conn
        try:
            with self.handler_scope:
                await handler(conn)
            if not self.handler_scope.cancelled_caught:
                # The handler owns the member's life, as a server's handler owns
                # its connection: nobody would read its messages any more.
                supervisor_of(conn).request_stop(S.CLOSED, "handler returned")
        except Exception as exc:
            supervisor_of(conn).events.hook_failed(hook="handler", error=exc)
            supervisor_of(conn).request_stop(S.CLOSED, f"handler raised {type(exc).__name__}")
        finally:
            self.handler_done.set()
            self._forget_secrets_when_done()

    async def _end_handler(self, grace: float) -> None:
        if _within(self.handler_task):
            # Called from the handler (or a task of its): it cannot wait for
            # itself. It has the grace to end; then it is cancelled.
            self.handler_scope.deadline = min(
                self.handler_scope.deadline, trio.current_time() + grace
            )
            return
        with trio.move_on_after(grace):
            await self.handler_done.wait()  # it drains the buffer, sees the end
        self.handler_scope.cancel()
        # Bounded too: a handler shielded in a wait of its own (removing
        # another member whose handler removes this one) ends when that does.
        with trio.move_on_after(grace):
            await self.handler_done.wait()

    def _forget_secrets_when_done(self) -> None:
        """Once the supervisor and the handler have both ended, no event of the
        member follows: its secrets can go (a handler's error after CLOSED is
        still scrubbed)."""
        if self.run_done.is_set() and self.handler_done.is_set():
            supervisor_of(self.conn).events.forget_secrets()


def _within(ancestor: trio.lowlevel.Task | None) -> bool:
    """Whether the current task is ``ancestor`` or a task below it."""
    if ancestor is None:
        return False
    task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
    for _ in range(1000):  # a task tree is never that deep; bounded anyway
        if task is None:
            return False
        if task is ancestor:
            return True
        nursery = task.parent_nursery
        task = None if nursery is None else nursery.parent_task
    return False
