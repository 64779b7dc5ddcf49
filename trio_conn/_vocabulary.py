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
EVENT_NAMES = frozenset({STATE_CHANGED, HEARTBEAT_MISSED, STATE_STUCK, RECOVERY, HOOK_FAILED})
#: Every field a library event can carry. The console shows the sentence
#: instead (the JSON formats carry them all).
LIBRARY_FIELDS = frozenset(
    {
        "conn_id", "url", "from_state", "to_state", "reason", "duration_s",
        "consecutive_failures", "attempt", "error_kind", "error_type", "error_message",
        "close_code", "status_code", "retry_in_s", "outcome", "misses", "max_misses",
        "timeout", "state", "seconds", "limit", "hook", "detail",
    }
)  # fmt: skip


def _seconds(value: Any) -> str:
    """12.5 -> "12.5", 3.0 -> "3", 0.0004 -> "0": millisecond precision for a sentence."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def sentence(name: str, ev: Mapping[str, Any]) -> str:
    """One sentence a person reads for a library event (ECS ``message``, stdlib records)."""
    conn = f"connection {ev.get('conn_id', '?')}"
    error = f"{ev['error_type']}: {ev.get('error_message', '')}" if "error_type" in ev else None
    if name == STATE_CHANGED:
        text = (
            f"{conn} moved from {ev.get('from_state')} to {ev.get('to_state')} after "
            f"{_seconds(ev.get('duration_s'))} s: {ev.get('reason')}"
        )
        if "retry_in_s" in ev:
            text += f"; next attempt in {_seconds(ev['retry_in_s'])} s"
        return text
    if name == HEARTBEAT_MISSED:
        return (
            f"{conn} missed heartbeat {ev.get('misses')} of {ev.get('max_misses')} "
            f"(no reply within {_seconds(ev.get('timeout'))} s)"
        )
    if name == STATE_STUCK:
        return (
            f"{conn} has been {ev.get('state')} for {_seconds(ev.get('seconds'))} s "
            f"(limit {_seconds(ev.get('limit'))} s)"
        )
    if name == RECOVERY:
        if ev.get("outcome") == "success":
            verb = "succeeded"
        elif ev.get("detail") or error:
            verb = "failed"
        else:  # it answered False: nothing to refresh, a routine outcome
            verb = "refreshed nothing"
        text = f"{conn} recovery hook {verb} after {_seconds(ev.get('duration_s'))} s"
        for extra in (ev.get("detail"), error):
            if extra:
                text += f": {extra}"
        return text
    if ev.get("hook") == "handler":  # a group member's handler: its member is closed
        return f"{conn}: handler raised {error}; the member is closed"
    return f"{conn}: {ev.get('hook')} hook raised {error}; ignored"
