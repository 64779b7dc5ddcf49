"""Exception groups at a context manager's edge: give back the application's own error."""

from __future__ import annotations

from typing import NoReturn

import trio

from ._exceptions import leaves


def holds_only(error: BaseException, group: BaseExceptionGroup[BaseException]) -> bool:
    """Whether ``group`` holds ``error`` and cancellations only.

    Compared leaf by leaf: a group the application raised comes back derived
    (Trio splits the cancellations out of it), with the same leaves.
    """
    mine = [leaf for leaf in leaves(error) if not isinstance(leaf, trio.Cancelled)]
    found = [leaf for leaf in leaves(group) if not isinstance(leaf, trio.Cancelled)]
    return len(found) == len(mine) and all(a is b for a, b in zip(found, mine, strict=True))


def reraise(error: BaseException) -> NoReturn:
    """Raise ``error`` keeping its own context, not the group it was found in."""
    context = error.__context__
    try:
        raise error
    finally:
        error.__context__ = context
        del error, context


def split_cancelled(exc: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """``(the trio.Cancelled part, the rest)`` of an exception or exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)
    if isinstance(exc, trio.Cancelled):
        return exc, None
    return None, exc
