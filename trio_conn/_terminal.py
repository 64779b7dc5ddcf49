"""Text from outside, made safe to print on a terminal.

A server's message, a connection id read from a log file: printed raw, an
escape sequence in them can move the cursor, rewrite or hide earlier lines,
or write the clipboard (OSC 52). Every character that is not printable
(Unicode categories Cc, Cf, Cs, Co, Cn, Zl, Zp: controls, format characters
such as bidirectional overrides, surrogates, unassigned code points, line and
paragraph separators) is written as a Python escape, and so is the backslash,
so that the output can be read back without ambiguity.
"""

from __future__ import annotations

import unicodedata

#: Unicode categories never written raw (to a terminal, or in a JSON line).
NOT_PRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with every non-printable character and ``\\`` escaped (see the module)."""
    if text.isprintable() and "\\" not in text:  # the common case, in C
        return text
    return "".join(_escape(ch) for ch in text)


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    if ch.isprintable() or unicodedata.category(ch) not in NOT_PRINTABLE:
        return ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
