"""The events' vocabulary: their names, the library's fields, and the sentence a person reads.

Shared by the events (trio_conn/_events.py) and the renderers that turn a
library event into a sentence (ECS ``message``, the console, stdlib records).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STATE_CHANGED = "connection.state_changed"
HEARTBEAT_MISSED = "connection.heartbeat_missed"
STATE_STUCK = "connection.state_stuck"
RECOVERY = "connection.recovery"
HOOK_FAILED = "connection.hook_failed"
#: ``trio-conn connect`` reached FAILED: what it waits for (json and ecs formats).
WAITING_IN_FAILED = "cli.waiting_in_failed"
EVENT_NAMES = frozenset(
    {STATE_CHANGED, HEARTBEAT_MISSED, STATE_STUCK, RECOVERY, HOOK_FAILED, WAITING_IN_FAILED}
)
#: Every field a library event can carry. The console shows the sentence
#: instead (the JSON formats carry them all).
LIBRARY_FIELDS = frozenset(
    {
        "conn_id", "url", "from_state", "to_state", "reason", "duration_s",
        "consecutive_failures", "attempt", "error_kind", "error_type", "error_message",
        "close_code", "status_code", "retry_in_s", "outcome", "misses", "max_misses",
        "timeout", "state", "seconds", "limit", "hook", "detail", "probe_in_s",
    }
)  # fmt: skip


#: Names structlog's processors, the stdlib bridge, the renderers and ECS own:
#: a field bound by such a name would be dropped or overwritten, or would take
#: over the line (``exception``).
RESERVED_FIELDS = frozenset(
    {
        "event", "level", "timestamp", "exc_info", "exception", "stack_info", "stack",
        "logger", "logger_name", "message", "positional_args", "_record", "_from_structlog",
    }
)  # fmt: skip


def _seconds(value: Any) -> str:
    """12.5 -> "12.5", 3.0 -> "3", 0.0004 -> "0": millisecond precision for a sentence."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def sentence(name: str, ev: Mapping[str, Any]) -> str:
    """One sentence a person reads for a library event (ECS ``message``, the console)."""
    template, args = sentence_template(name, ev)
    return template % args


def _literal(value: Any) -> str:
    return f"{value}".replace("%", "%%")


def sentence_template(name: str, ev: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    """:func:`sentence` as a ``%``-template and its arguments (a stdlib record's
    ``msg`` and ``args``).

    The template holds only the library's own words (the event, the states,
    the hook), so there are few of them: a handler that groups records by
    template (Sentry does) groups them by event and edge, while the
    connection, the durations, the reason and the error, which vary, are
    arguments.
    """
    conn = f"{ev.get('conn_id', '?')}"
    error = f"{ev['error_type']}: {ev.get('error_message', '')}" if "error_type" in ev else None
    if name == STATE_CHANGED:
        template = (
            f"connection %s moved from {_literal(ev.get('from_state'))} to "
            f"{_literal(ev.get('to_state'))} after %s s: %s"
        )
        args = [conn, _seconds(ev.get("duration_s")), f"{ev.get('reason')}"]
        if "retry_in_s" in ev:
            template += "; next attempt in %s s"
            args.append(_seconds(ev["retry_in_s"]))
        return template, tuple(args)
    if name == WAITING_IN_FAILED:
        return "trio-conn: %s", (f"{ev.get('detail')}",)
    if name == HEARTBEAT_MISSED:
        return "connection %s missed heartbeat %s of %s (no reply within %s s)", (
            conn,
            f"{ev.get('misses')}",
            f"{ev.get('max_misses')}",
            _seconds(ev.get("timeout")),
        )
    if name == STATE_STUCK:
        return f"connection %s has been {_literal(ev.get('state'))} for %s s (limit %s s)", (
            conn,
            _seconds(ev.get("seconds")),
            _seconds(ev.get("limit")),
        )
    if name == RECOVERY:
        if ev.get("outcome") == "success":
            verb = "succeeded"
        elif ev.get("detail") or error:
            verb = "failed"
        else:  # it answered False: nothing to refresh, a routine outcome
            verb = "refreshed nothing"
        template = f"connection %s recovery hook {verb} after %s s"
        args = [conn, _seconds(ev.get("duration_s"))]
        for extra in (ev.get("detail"), error):
            if extra:
                template += ": %s"
                args.append(f"{extra}")
        return template, tuple(args)
    if ev.get("hook") == "handler":  # a group member's handler: its member is closed
        return "connection %s: handler raised %s; the member is closed", (conn, f"{error}")
    return f"connection %s: {_literal(ev.get('hook'))} hook raised %s; ignored", (conn, f"{error}")
