"""Argument checks shared by the public constructors: hooks of the right colour.

A hook that must be awaited is refused at construction if it is a plain
function, and one that is called synchronously if it is ``async def``: the
mistake shows at once, with the argument's name, not at the first attempt.
"""

from __future__ import annotations

import functools
import inspect


def _is_coroutine_function(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(inspect.unwrap(fn))  # type: ignore[arg-type]


def check_sync_callable(name: str, fn: object, *, required: bool = False) -> None:
    """Refuse what cannot be called synchronously: a non-callable, or an ``async def``.

    :raises TypeError: naming the argument and the rule (never echoing a value
        other than a function's name).
    """
    if fn is None and not required:
        return
    if not callable(fn):
        raise TypeError(f"{name} must be callable{'' if required else ' or None'}, got {fn!r}")
    if _is_coroutine_function(fn):
        raise TypeError(
            f"{name} must be a plain function (it is called synchronously), got the async "
            f"function {getattr(fn, '__qualname__', fn)!r}"
        )


def check_async_callable(name: str, fn: object) -> None:
    """Refuse what cannot be awaited: a non-callable, or a plain ``def`` function.

    A callable object (``async def __call__``), a partial of an async
    function, or a ``functools.wraps`` wrapper whose original is async is
    accepted: only a plain function is known to be wrong here.

    :raises TypeError: naming the argument and the rule.
    """
    if fn is None:
        return
    if not callable(fn):
        raise TypeError(f"{name} must be callable (an async function) or None, got {fn!r}")
    target: object = fn
    while True:  # to the original: through partials and functools.wraps
        if isinstance(target, functools.partial):
            target = target.func
        elif callable(target) and hasattr(target, "__wrapped__"):
            target = inspect.unwrap(target)
        else:
            break
    if inspect.isbuiltin(target) or (
        (inspect.isfunction(target) or inspect.ismethod(target))
        and not inspect.iscoroutinefunction(target)
    ):
        raise TypeError(
            f"{name} must be an async function (async def), got the plain function "
            f"{getattr(fn, '__qualname__', fn)!r}"
        )
