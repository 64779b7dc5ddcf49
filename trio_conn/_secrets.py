r"""Secrets, and finding them in any text, in any encoding, by any 8-character fragment.

Rules of the house:

- A registered secret is found in the forms an error message or a log line
  may carry it: raw, percent-encoded (with and without ``/`` kept, ``+`` for
  spaces), JSON-escaped as Python, Go (``\u0026`` for ``&``, ``<``, ``>``,
  U+2028, U+2029), .NET (also ``'``, ``+`` and the backtick) and PHP (``\/``) write
  it, backslash-escaped, and base64 (standard and URL-safe, with and without
  padding) of its UTF-8 bytes, also inside a larger payload, at any of the
  three byte alignments; and each of those once more JSON-escaped or
  ``repr()``-escaped (a JSON line quoting an escaped form, the console's
  repr of a field). Hex digits are matched in either case, mixed within one
  text too (``%2F`` and ``%2f``, ``\u00E9``: see :func:`fold`). A secret is
  found by any fragment of :data:`MIN_FRAGMENT` characters or
  more of any of those forms, so a secret cut by a truncation, or echoed in
  part, is found too.
- Shorter secrets (:data:`MIN_SECRET` to ``MIN_FRAGMENT - 1`` characters)
  are found only whole (not inside a longer word or number: "fresh" stays in
  "refreshed"), in every string value an event holds (a sink scrubs each
  value, and adds its timestamp after), but not in a whole rendered line
  (``short=False``, the CLI's): "2026" or "1000" as a query value would
  otherwise vanish from every timestamp. Shorter still are ignored.
- A closed connection's secrets stay registered while it is one of the last
  :data:`CLOSED_KEPT` to close (:func:`retire`): an application's own line
  right after the block (an error it caught) still finds them, and a process
  that opens connections by the thousand holds a bounded number.
- Registering a secret costs O(its length); scrubbing a text costs
  O(its length): only runs of characters that occur in some secret are
  looked at, 8 characters at a time, in a hash set.
- Whatever is found is replaced by ``REDACTED``; overlapping and adjacent
  finds become one.

Nothing here imports Trio or structlog.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "REDACTED"
#: Fragments of secrets this long or longer are found anywhere.
MIN_FRAGMENT = 8
#: Secrets shorter than this are ignored.
MIN_SECRET = 4
_FOLD = str.maketrans("ABCDEF", "abcdef")
_GO_ESCAPES = str.maketrans(
    {"&": "\\u0026", "<": "\\u003c", ">": "\\u003e", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)
_NET_ESCAPES = str.maketrans(
    {"&": "\\u0026", "<": "\\u003c", ">": "\\u003e", "'": "\\u0027", "+": "\\u002b", "`": "\\u0060"}
)
_URLSAFE = str.maketrans("+/", "-_")
_CACHED_TEXTS = 2048
_SCALARS = frozenset({int, float, bool, type(None)})
_CACHED_LENGTH = 4096


def forms(secret: str) -> set[str]:
    """The encodings of ``secret`` a text may carry it in (see the module's rules),
    folded as :func:`fold` folds a text."""
    ascii_json = json.dumps(secret)[1:-1]
    utf8_json = json.dumps(secret, ensure_ascii=False)[1:-1]
    found = {
        secret,
        quote(secret, safe=""),
        quote(secret),  # "/" kept
        quote_plus(secret),
        ascii_json,
        utf8_json,
        utf8_json.translate(_GO_ESCAPES),  # Go's encoding/json
        ascii_json.translate(_NET_ESCAPES),  # .NET's System.Text.Json
        ascii_json.replace("/", "\\/"),  # PHP's json_encode
        utf8_json.replace("/", "\\/"),  # ... with JSON_UNESCAPED_UNICODE
        secret.encode("unicode_escape").decode("ascii"),
    }
    raw = secret.encode("utf-8")
    for offset in range(3):
        # Inside a larger payload the secret starts at any byte: the base64
        # characters of the groups holding only its bytes are the same
        # whatever surrounds it; the partial groups at either edge are not.
        encoded = base64.b64encode(b"\0" * offset + raw).decode("ascii")
        texts = [encoded[4 if offset else 0 : (offset + len(raw)) // 3 * 4]]
        if not offset:
            texts += [encoded, encoded.rstrip("=")]
        for text in texts:
            found |= {text, text.translate(_URLSAFE)}
    # Once more escaped: an escaped form inside a JSON string or a repr()
    # (a message quoting JSON, the console's repr of a field).
    found |= {json.dumps(form)[1:-1] for form in list(found)}
    found |= {repr(form)[1:-1] for form in list(found)}
    return {fold(form) for form in found if len(form) >= MIN_SECRET}


def fold(text: str) -> str:
    """``text`` with ``A``-``F`` in lower case: the same length, so a span found
    in the folded text is the span in ``text``.

    Hex digits are written in either case (``%2F`` and ``%2f``, ``\\u00E9``
    and ``\\u00e9``), mixed within one text, and a fragment may start after
    the ``%`` or the ``\\u``: folding every A-F, not only escapes, finds them
    all. The price (decision): a text that differs from a secret only in the
    case of those six letters is hidden too.
    """
    return text.translate(_FOLD)


class SecretSet:
    """Secrets registered by any number of owners, found in any text.

    Thread-safe: logging may run in other threads than the connection's.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grams: Counter[str] = Counter()  # 8-character fragments of long forms
        self._short: Counter[str] = Counter()  # whole short forms
        self._alphabet: set[str] = set()
        self._runs: re.Pattern[str] | None = None  # runs of alphabet characters
        # Texts scrubbed since the last change (with and without short secrets):
        # the values of events repeat (a URL, a reason, a field name).
        self._cache: dict[str, str] = {}
        self._cache_long_only: dict[str, str] = {}
        #: Changes whenever a secret is added or removed (for callers' caches).
        self.version = 0

    def __bool__(self) -> bool:
        return bool(self._grams or self._short)

    def __len__(self) -> int:
        """How many distinct fragments and short forms are registered (memory, not secrets)."""
        return len(self._grams) + len(self._short)

    def add(self, secrets: Iterable[str]) -> list[str]:
        """Register ``secrets``; return their forms, to give back to :meth:`remove`.

        Non-strings and secrets shorter than :data:`MIN_SECRET` are ignored.
        """
        added: list[str] = []
        for secret in secrets:
            if isinstance(secret, str) and len(secret) >= MIN_SECRET:
                added += forms(secret)
        if not added:
            return added
        with self._lock:
            for form in added:
                if len(form) >= MIN_FRAGMENT:
                    self._grams.update(_grams(form))
                else:
                    self._short[form] += 1
                new = set(form) - self._alphabet
                if new:
                    self._alphabet |= new
                    self._runs = None
            self._cache, self._cache_long_only = {}, {}
            self.version += 1
        return added

    def remove(self, added: Iterable[str]) -> None:
        """Forget what :meth:`add` returned (shared fragments stay while still registered)."""
        with self._lock:
            for form in added:
                if len(form) >= MIN_FRAGMENT:
                    grams = _grams(form)
                    self._grams.subtract(grams)
                    for gram in grams:
                        if self._grams.get(gram, 0) <= 0:
                            self._grams.pop(gram, None)
                else:
                    self._short[form] -= 1
                    if self._short[form] <= 0:
                        del self._short[form]
            self._cache, self._cache_long_only = {}, {}
            self.version += 1

    def scrub(self, text: str, *, short: bool = True) -> str:
        """``text`` with every registered secret, in any form or fragment, replaced.

        :param short: also replace whole short secrets (for a value; the CLI,
            scrubbing a whole line with its timestamp, passes False).
        """
        if not (self._grams or (short and self._short)) or len(text) < MIN_SECRET:
            return text
        cache = self._cache if short else self._cache_long_only
        clean = cache.get(text)
        if clean is not None:
            return clean
        with self._lock:
            clean = self._scrub(text, fold(text), short)
        if len(text) <= _CACHED_LENGTH:
            if len(cache) >= _CACHED_TEXTS:  # a crude bound: texts that repeat come back
                cache.clear()
            cache[text] = clean
        return clean

    def scrub_items(
        self, items: Iterable[tuple[Any, Any]], other: Callable[[Any], Any]
    ) -> dict[Any, Any]:
        """A dict of ``items`` with every str key and value scrubbed (as
        :meth:`scrub`, short secrets included); numbers, booleans and None are
        kept, and every other value is given to ``other``.

        The sink's fast path: an event's values repeat (a URL, a reason, a
        field name), and a text seen before costs one dict lookup here.
        """
        get = self._cache.get
        scrub = self.scrub
        out: dict[Any, Any] = {}
        for key, value in items:
            if type(key) is str:
                clean = get(key)
                key = clean if clean is not None else scrub(key)
            kind = type(value)
            if kind is str or (kind not in _SCALARS and isinstance(value, str)):
                clean = get(value)
                value = clean if clean is not None else scrub(value)
            elif kind not in _SCALARS:
                value = other(value)
            out[key] = value
        return out

    def _scrub(self, text: str, folded: str, with_short: bool) -> str:
        """``text`` with what is found in ``folded`` (the same length) replaced."""
        runs = self._runs
        if runs is None:
            alphabet = "".join(sorted(self._alphabet))
            runs = self._runs = re.compile(f"[{re.escape(alphabet)}]{{{MIN_SECRET},}}")
        grams, short = self._grams, self._short if with_short else None
        spans: list[tuple[int, int]] = []
        width = MIN_FRAGMENT
        for run in runs.finditer(folded):
            start, end = run.span()
            if short:
                chunk = folded[start:end]
                for form in short:
                    found = chunk.find(form)
                    while found != -1:
                        begin, finish = start + found, start + found + len(form)
                        if _whole(folded, begin, finish):
                            spans.append((begin, finish))
                        found = chunk.find(form, found + 1)
            if grams and end - start >= width:
                for i in range(start, end - width + 1):
                    if folded[i : i + width] in grams:
                        spans.append((i, i + width))
        if not spans:
            return text
        spans.sort()
        pieces: list[str] = []
        cursor = 0
        span_start, span_end = spans[0]
        for begin, finish in spans[1:]:
            if begin <= span_end:
                span_end = max(span_end, finish)
                continue
            pieces += (text[cursor:span_start], REDACTED)
            cursor = span_end
            span_start, span_end = begin, finish
        pieces += (text[cursor:span_start], REDACTED, text[span_end:])
        return "".join(pieces)


def _whole(text: str, begin: int, end: int) -> bool:
    """Whether ``text[begin:end]`` is not part of a longer word or number."""
    return not (begin > 0 and text[begin - 1].isalnum()) and not (
        end < len(text) and text[end].isalnum()
    )


def _grams(form: str) -> list[str]:
    return [form[i : i + MIN_FRAGMENT] for i in range(len(form) - MIN_FRAGMENT + 1)]


#: The process's secrets: every connection registers its own; every sink scrubs them all.
SECRETS = SecretSet()
#: How many closed connections' secrets stay registered (see the module's rules).
CLOSED_KEPT = 64
_retired: deque[list[list[str]]] = deque()
_retired_lock = threading.Lock()


def retire(registrations: list[list[str]]) -> None:
    """Keep a closed connection's ``registrations`` (what :meth:`SecretSet.add`
    returned) among the last :data:`CLOSED_KEPT`; forget the oldest beyond.
    Empties ``registrations``: they belong to this queue now."""
    if not registrations:
        return
    with _retired_lock:
        _retired.append(list(registrations))
        registrations.clear()
        evicted = [_retired.popleft() for _ in range(len(_retired) - CLOSED_KEPT)]
    for old in evicted:
        for added in old:
            SECRETS.remove(added)


def release_retired() -> None:
    """Forget every closed connection's secrets now (tests start from a clean set)."""
    with _retired_lock:
        evicted = list(_retired)
        _retired.clear()
    for old in evicted:
        for added in old:
            SECRETS.remove(added)


def register_secrets(*values: str) -> Callable[[], None]:
    """Hide ``values`` from every log line trio_conn's sinks write, from now on.

    For an application's own secrets, and for a URL it logs before
    ``open_connection`` (which registers the URL's own when it starts). Each
    value is found as :class:`SecretSet` finds any: in every encoding, by any
    fragment of 8 characters; one of 4 to 7 characters only as a whole word;
    shorter ones are ignored. They stay registered until the function
    returned is called (calling it again does nothing).

    :raises TypeError: a value is not a str.
    """
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"secrets must be str, got {type(value).__name__}")
    added: list[str] | None = SECRETS.add(values)

    def forget() -> None:
        nonlocal added
        if added is not None:
            SECRETS.remove(added)
            added = None

    return forget
