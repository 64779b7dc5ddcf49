"""The sink of the pipelines ``configure_logging`` builds: scrub every value, render safely.

Rules of the house:

- :func:`scrub_event`, right before the renderer, scrubs every registered
  secret, in every encoding (trio_conn/_secrets.py), from every key and
  every value of the event, recursively: the traceback, the error message,
  the application's own fields and context, and the repr of any object the
  renderer would write through ``repr``. The renderer adds only its own
  constants, so the rendered line holds no secret, and a JSON line stays
  valid JSON whatever was replaced. (Scrubbing values rather than the
  rendered text lets repeated values, a URL or a reason, cost one lookup:
  a JSON event stays within its 10 us budget.) A secret of 4 to 7
  characters is found as a whole word in every string; the timestamp and
  the level are added after this step, so "2026" as a password hides no year.
- :func:`scrub_secrets` is the same step for a pipeline the application
  built itself (public: ``trio_conn.scrub_secrets``).
- A JSON line (json and ecs) holds no character a terminal or an editor
  would act on or hide: every one that is not printable (controls, C1
  included, format characters such as bidirectional overrides, line and
  paragraph separators, surrogates, private and unassigned code points,
  as in trio_conn/_terminal.py) is written as a ``\\uXXXX`` escape
  (:func:`json_line`); orjson escapes only those below U+0020.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

from ._events import CLEAN_MARK, SINK_ATTRIBUTE
from ._secrets import SECRETS
from ._terminal import NOT_PRINTABLE

_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS
# Deeper values are written as one scrubbed string when a line is rendered again.
_MAX_DEPTH = 64
_NON_ASCII = re.compile(r"[^\x20-\x7e]")


def scrub_line(line: str) -> str:
    """A rendered text line (the CLI's own output) with every registered secret
    replaced; short ones are left (the line's timestamp would lose its year)."""
    return SECRETS.scrub(line, short=False)


def _scrubbed_value(value: Any, depth: int) -> Any:
    """``value`` with every registered secret replaced in every string it holds.

    What a renderer would write through ``repr`` (any object that is not a
    JSON value) becomes its scrubbed repr here, so that nothing reaches the
    line unscrubbed. Containers deeper than :data:`_MAX_DEPTH` become one
    scrubbed string.
    """
    if isinstance(value, str):
        return SECRETS.scrub(value)
    if value is None or isinstance(value, bool | int | float | datetime.datetime):
        return value
    if depth >= _MAX_DEPTH:
        return SECRETS.scrub(safe_repr(value))
    if isinstance(value, dict):
        return {_scrubbed_key(key): _scrubbed_value(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed_value(item, depth + 1) for item in value]
    return SECRETS.scrub(_text_of(value))


def _scrubbed_key(key: Any) -> Any:
    """A dict key every renderer writes: a str (scrubbed), a number, a bool or None
    as it is, any other (a tuple, a frozenset) its scrubbed repr: a list, what
    the values' rule makes of a tuple, is no key at all."""
    if isinstance(key, str):
        return SECRETS.scrub(key)
    if key is None or isinstance(key, bool | int | float):
        return key
    return SECRETS.scrub(safe_repr(key))


def _text_of(value: Any) -> str:
    """What a renderer writes of an object: its ``__structlog__`` or its repr. Never raises."""
    try:
        structlog_repr = getattr(value, "__structlog__", None)
        text = structlog_repr() if callable(structlog_repr) else None
    except Exception:  # the object's own hook fails: its repr says what it is
        text = None
    return text if isinstance(text, str) else safe_repr(value)


def safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # an object whose repr raises: say so, the event goes on
        return f"<unrepresentable {type(value).__name__}>"


def scrub_event(logger: WrappedLogger, method_name: str, ev: EventDict) -> EventDict:
    """The sink's step: every key and value of the event scrubbed (see the module).

    Never raises: an event whose fields defeat every rule (a key that cannot
    hash once scrubbed, a repr that fails inside a repr) goes on as
    :func:`safe_event` makes it.
    """
    try:
        return _scrub_event(ev)
    except Exception:
        return safe_event(ev)


def _scrub_event(ev: EventDict) -> EventDict:
    """The work of :func:`scrub_event`.

    It runs after every processor that adds or changes a field and right
    before the renderer, which adds only its own constants (a level, a
    timestamp, punctuation), so the rendered line holds no registered secret.
    A library event says which of its fields it scrubbed when it was built
    (``CLEAN_MARK``, valid while no secret was added or removed since): only
    the others are scanned here.
    """
    mark = ev.pop(CLEAN_MARK, None)
    if not SECRETS:
        return ev
    if mark is not None and mark[0] == SECRETS.version:
        dirty = ev.keys() - mark[1]
        if not dirty:
            return ev
        if all(SECRETS.scrub(key) == key for key in dirty if isinstance(key, str)):
            for key in dirty:
                ev[key] = _scrubbed_value(ev[key], 0)
            return ev
    return SECRETS.scrub_items(ev.items(), _scrub_nested)


setattr(scrub_event, SINK_ATTRIBUTE, True)  # what ConnectionEvents looks for


def scrub_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A structlog processor: every registered secret replaced in every key and
    value of the event, nested ones and the repr of any object included.

    For an application that configures structlog itself: put it after every
    processor that adds or changes a field, right before the renderer (a
    ``TimeStamper`` may come after it: a short secret such as "2026" would
    otherwise hide the year). An ``exc_info`` still in the event is rendered
    here, as structlog's ``format_exc_info`` does (a plain traceback under
    ``exception``), and scrubbed: a renderer would write it unscrubbed. Never
    raises.
    """
    event_dict.pop(CLEAN_MARK, None)  # marks are for configure_logging's chains only
    try:
        if "exc_info" in event_dict:
            event_dict = structlog.processors.format_exc_info(logger, method_name, event_dict)
        if not SECRETS:
            return event_dict
        return SECRETS.scrub_items(event_dict.items(), _scrub_nested)
    except Exception:  # a key that cannot hash once scrubbed, say: every field as text
        return safe_event(event_dict)


def drop_mark(logger: WrappedLogger, method_name: str, ev: EventDict) -> EventDict:
    """The ecs and console chains rename or drop fields before their sink: no shortcut."""
    ev.pop(CLEAN_MARK, None)
    return ev


def _scrub_nested(value: Any) -> Any:
    return _scrubbed_value(value, 1)


def _orjson_default(value: Any) -> Any:
    structlog_repr = getattr(value, "__structlog__", None)
    return structlog_repr() if callable(structlog_repr) else repr(value)


def render_json(logger: WrappedLogger, method_name: str, ev: EventDict) -> str:
    """The json line. Never raises: what orjson refuses (an int beyond 64 bits, a
    lone surrogate, a key of no JSON type) is written as :func:`safe_event` makes it."""
    try:
        raw = orjson.dumps(ev, default=_orjson_default, option=_JSON_OPTIONS)
    except Exception:
        raw = orjson.dumps(safe_event(ev), option=_JSON_OPTIONS)
    return json_line(raw.decode("utf-8"))


def safe_event(ev: EventDict) -> EventDict:
    """``ev`` as any renderer writes it: every key a str, every value a scrubbed
    str, a number within 64 bits, a bool, None or a datetime; a string holding
    a lone surrogate gets it as an escape. Never raises."""
    out: EventDict = {}
    for key, value in list(ev.items()):
        out[_safe_text(key if isinstance(key, str) else safe_repr(key))] = _safe_scalar(value)
    return out


def _safe_scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool | float | datetime.datetime):
        return value
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return value
    return _safe_text(value if isinstance(value, str) else _text_of(value))


def _safe_text(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: UTF-8 cannot hold it
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return SECRETS.scrub(text)


def json_line(line: str) -> str:
    """A rendered JSON line with every non-printable character escaped (see the module).

    Valid JSON stays valid: outside strings a JSON line holds only printable
    ASCII, and inside one an escape reads back as the same character.
    """
    # The common case costs next to nothing: isascii() reads a flag, "in" is a memchr.
    if line.isascii() and "\x7f" not in line:
        return line
    return _NON_ASCII.sub(_json_escape, line)


def _json_escape(match: re.Match[str]) -> str:
    ch = match.group()
    if unicodedata.category(ch) not in NOT_PRINTABLE:
        return ch
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON escapes a character beyond the BMP as a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
