"""What a log line may say of a URL, a header value and an exception.

- :func:`redact_url`: the URL as events show it (no userinfo, no query values).
- :func:`url_secrets`, :func:`header_secrets`: what to register as secrets.
- :func:`error_type`, :func:`error_message`: an exception as
  ``error_type`` and ``error_message`` (scrubbed before it is cut). trio's
  bare OSError for "all attempts to connect failed" is named by its
  attempts' type when they agree, as the reason names it
  (``trio_conn/_exceptions.py``, ``shown_type``), and its message carries
  their errno texts.
- :func:`scrub_value`: any field value (a bound dict, a context list, an
  object) with every registered secret replaced, nested values included.

Nothing here raises on strange input: a log call must never fail.
"""

from __future__ import annotations

import base64
import builtins
import os
import re
import sys
from urllib.parse import parse_qsl, unquote

from ._exceptions import leaves, shown_type
from ._secrets import MIN_FRAGMENT, REDACTED, SECRETS

#: Error messages are cut to this many characters (a server's body can be long),
#: after secrets are scrubbed, so no part of one is left at the cut.
MAX_ERROR_MESSAGE = 1000
_SEPARATORS = re.compile(r"[;,\s]+")
_AMBIGUOUS_PARTS = re.compile(r"[:?#&=/]")
# A host and port as shown when the rest of a URL is ambiguous.
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]*)?|\[[0-9A-Fa-f:.]+\](?::[0-9]*)?")


def _split_url(url: str) -> tuple[str, str, str, str, str] | None:
    """``(scheme, userinfo, host_and_path, query, at)`` of ``scheme://...``, or None.

    The userinfo is everything before the *last* ``@``: a typed password
    with an unencoded ``/``, ``?`` or ``#`` is then still userinfo, never
    mistaken for a host, a path or a query and shown. When the userinfo holds
    a ``?`` or ``#``, the URL is ambiguous (it may be a query or fragment with
    an ``@`` in it: ``parse_url`` refuses it): only the host after the ``@``
    is kept, and nothing of the path or query.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        return None
    userinfo, at, after = rest.rpartition("@")
    before_query, _, query = after.partition("#")[0].partition("?")
    if not before_query.partition("/")[0]:
        return None
    if "?" in userinfo or "#" in userinfo:
        host, slash, path = before_query.partition("/")
        # Everything after the host counts as query: its values are registered, never shown.
        rest_after_host = f"{slash}{path}&{query}" if query else f"{slash}{path}"
        return (scheme, userinfo, host, rest_after_host, at) if _HOST.fullmatch(host) else None
    return scheme, userinfo, before_query, query, at


def redact_url(url: str) -> str:
    """Return ``url`` safe to log.

    The userinfo becomes ``REDACTED`` (user and password alike, and everything
    up to the last ``@``: see ``_split_url``), every query value becomes
    ``REDACTED`` (keys are kept; a bare item without ``=`` counts as a value),
    the fragment is dropped; scheme, host, port and path are kept. Anything
    that is not ``scheme://host...`` is ``REDACTED`` as a whole. Never raises.
    """
    try:
        parts = _split_url(url)
        if parts is None:
            return REDACTED
        scheme, userinfo, host_and_path, query, at = parts
        text = f"{scheme}://"
        if at:
            text += f"{REDACTED}:{REDACTED}@" if ":" in userinfo else f"{REDACTED}@"
        text += host_and_path
        if query and not ("?" in userinfo or "#" in userinfo):
            text += "?" + "&".join(_redact_query_item(item) for item in query.split("&"))
        return text
    except Exception:  # garbage in: reveal nothing rather than raise in a log call
        return REDACTED


def _redact_query_item(item: str) -> str:
    key, eq, value = item.partition("=")
    if not eq:
        return REDACTED if key else ""
    return f"{key}={REDACTED}" if value else f"{key}="


def url_secrets(url: str) -> list[str]:
    """The userinfo (user and password) and query values of ``url``, raw and
    percent-decoded. Never raises."""
    try:
        parts = _split_url(url)
        if parts is None:
            return []
        _, userinfo, _, query, at = parts
        found: list[str] = []
        if at:
            found += [userinfo, *userinfo.split(":", 1)]
            if "?" in userinfo or "#" in userinfo:  # ambiguous: each part may be a value
                found += _AMBIGUOUS_PARTS.split(userinfo)
        for item in query.split("&"):
            key, eq, value = item.partition("=")
            found.append(value if eq else key)
        found += [value for _, value in parse_qsl(query, keep_blank_values=True)]
        found += [unquote(value) for value in found]
        return found
    except Exception:
        return []


def header_secrets(value: str) -> list[str]:
    """What to register of a request header's value.

    The value itself when it has no separator (``;``, ``,``, whitespace);
    otherwise each part; and of a ``name=value`` its value (a cookie's), so
    that a token is found wherever it appears, alone or in the
    whole, while a cookie's name, and a part that is a short word of letters
    only (an auth scheme such as "Bearer", a cookie value such as "dark"),
    stay readable. Basic credentials (RFC 7617) are registered decoded too:
    ``user:password``, the user and the password.
    """
    value = value.strip()
    parts = [part for part in _SEPARATORS.split(value) if part]
    if len(parts) <= 1:
        return [_value_of(value)]
    found = []
    for part in parts:
        secret = _value_of(part)
        if len(secret) >= MIN_FRAGMENT or not secret.isalpha():
            found.append(secret)
    if len(parts) == 2 and parts[0].lower() == "basic":
        try:
            decoded = base64.b64decode(parts[1], validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            pass
        else:
            found += [decoded, *decoded.split(":", 1)]
    return found


def _value_of(part: str) -> str:
    """``"sid=abc"`` -> ``"abc"``; a base64 token's ``=`` padding is not a separator."""
    name, eq, rest = part.partition("=")
    return rest if eq and name and rest.strip("=") else part


# Exception classes are few and long-lived; a plain dict is the cheapest cache.
_TYPE_NAMES: dict[type[BaseException], str] = {}


def error_type_name(cls: type[BaseException]) -> str:
    """``error_type`` of an exception class; cached per class. Never raises.

    The class name qualified by its *public* package when the class is
    exported there (``trio_conn.ConnectionClosed``), by its defining module
    otherwise, and bare for builtins (``ConnectionResetError``).
    """
    cached = _TYPE_NAMES.get(cls)
    if cached is not None:
        return cached
    module, name = getattr(cls, "__module__", None), getattr(cls, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(name, str)):  # a class built oddly
        result = str(getattr(cls, "__name__", "UnknownError"))
    elif module == "builtins" and getattr(builtins, name, None) is cls:
        result = name
    elif getattr(sys.modules.get(module.partition(".")[0]), name, None) is cls:
        result = f"{module.partition('.')[0]}.{name}"
    else:
        result = f"{module}.{name}"
    _TYPE_NAMES[cls] = result
    return result


def error_type(error: BaseException) -> str:
    """``error_type`` of an exception: :func:`error_type_name` of the type that
    names it (``shown_type``: ConnectionRefusedError for trio's "all attempts
    to connect failed" OSError). Never raises."""
    try:
        return error_type_name(shown_type(error))
    except Exception:  # a cause whose leaves cannot be read: its own type says enough
        return error_type_name(type(error))


def _errno_texts(error: BaseException) -> str:
    """``": [Errno 111] Connection refused"``: the distinct errno texts of the
    attempts a bare connect OSError stands for (its message names only the host)."""
    if type(error) is not OSError or error.__cause__ is None:
        return ""
    texts: list[str] = []
    for leaf in leaves(error.__cause__):
        number = getattr(leaf, "errno", None)
        if isinstance(leaf, OSError) and isinstance(number, int):
            text = f"[Errno {number}] {os.strerror(number)}" if number > 0 else str(leaf)
            if text not in texts:
                texts.append(text)
    return f": {'; '.join(texts[:4])}" if texts else ""


def error_message(error: BaseException) -> str:
    """``error_message`` of an exception: ``str(error)``, scrubbed, then cut to
    :data:`MAX_ERROR_MESSAGE` characters.

    An exception that carries HTTP ``headers`` (a rejected handshake, whose
    response may set cookies) is rendered as its status only. An exception
    with no message of its own is described by its ``__cause__``. Never raises.
    """
    try:
        if getattr(error, "headers", None) is not None and hasattr(error, "status_code"):
            text = f"HTTP status {error.status_code}"
        else:
            text = str(error)
        cause = error.__cause__
        if not text and cause is not None:  # e.g. BrokenResourceError from an SSLError
            text = f"{type(cause).__name__}: {cause}"
        text += _errno_texts(error)
    except Exception:
        text = f"<unprintable {type(error).__name__}>"
    text = SECRETS.scrub(text)
    if len(text) > MAX_ERROR_MESSAGE:
        text = text[: MAX_ERROR_MESSAGE - 1] + "…"
    return text


#: Containers nested deeper than this become their scrubbed repr.
_MAX_DEPTH = 32
_KEPT = (int, float, bool, type(None))


def scrub_value(value: object, depth: int = 0) -> object:
    """``value`` with every registered secret replaced, at any depth. Never raises.

    Strings are scrubbed (short secrets included: a field's text); dicts,
    lists, tuples, sets and frozensets are rebuilt of scrubbed items (a key
    too); numbers, booleans and None are kept; any other object is kept when
    its ``repr`` holds no secret, and becomes its scrubbed ``repr`` otherwise
    (what a renderer would write of it). Nothing is copied when nothing is
    registered: the common case costs one check.
    """
    if not SECRETS:
        return value
    return _scrubbed(value, depth)


def _scrubbed(value: object, depth: int) -> object:
    if isinstance(value, str):
        return SECRETS.scrub(value)
    if isinstance(value, _KEPT):
        return value
    try:
        if depth < _MAX_DEPTH:
            if isinstance(value, dict):
                return {
                    _scrubbed(key, depth + 1): _scrubbed(item, depth + 1)
                    for key, item in value.items()
                }
            for kind in (list, tuple, frozenset, set):  # subclasses become their base
                if isinstance(value, kind):
                    return kind(_scrubbed(item, depth + 1) for item in value)
        text = repr(value)
    except Exception:  # a repr, a hash or a subclass's constructor that fails
        return f"<unrepresentable {type(value).__name__}>"
    clean = SECRETS.scrub(text)
    return value if clean == text else clean
