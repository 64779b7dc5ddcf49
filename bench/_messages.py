"""The benchmarks' numbered messages: built and checked the same way at both ends.

Message ``i`` of ``size`` bytes is ASCII text: ``i`` in 8 decimal digits, then
a filler of ``size - 8`` characters, one of 16 rotations of an alphabet
chosen by ``i % 16``. A message out of order shows in its number; a wrong,
missing or misplaced byte shows in its filler (neighbours differ). Both ends
compare whole messages, so every byte is checked; building the expected
message costs about a microsecond at 16 KiB, the same for every client.

Kept free of heavy imports: ``server.py`` uses it too.
"""

from __future__ import annotations

import functools
import string

DIGITS = 8
VARIANTS = 16
_ALPHABET = string.ascii_letters + string.digits


class MessageError(Exception):
    """A message out of order or with wrong content: the run stops, nothing is counted."""


@functools.cache
def fillers(size: int) -> tuple[str, ...]:
    if size <= DIGITS:
        raise ValueError(f"messages must be longer than {DIGITS} bytes, not {size}")
    length = size - DIGITS
    out = []
    for variant in range(VARIANTS):
        rotated = _ALPHABET[variant:] + _ALPHABET[:variant]
        out.append((rotated * (length // len(rotated) + 1))[:length])
    return tuple(out)


@functools.cache
def filler_bytes(size: int) -> tuple[bytes, ...]:
    return tuple(filler.encode("ascii") for filler in fillers(size))


def message(index: int, size: int) -> str:
    """Message ``index`` of ``size`` bytes, as the clients send and expect it."""
    return f"{index:08d}{fillers(size)[index % VARIANTS]}"


def message_bytes(index: int, size: int) -> bytes:
    """The same message as UTF-8 bytes, as the server sends and expects it."""
    return b"%08d" % index + filler_bytes(size)[index % VARIANTS]


def describe(index: int, got: str | bytes, size: int) -> str:
    """What is wrong with ``got``, received where message ``index`` was due."""
    text = got.decode("utf-8", "replace") if isinstance(got, bytes) else got
    head = text[:DIGITS]
    if head.isdigit() and int(head) != index:
        return f"out of order: expected message #{index}, got #{int(head)}"
    if len(text) != size:
        return f"message #{index}: expected {size} bytes, got {len(text)}: {text[:40]!r}"
    expected = message(index, size)
    at = next((i for i, (a, b) in enumerate(zip(expected, text, strict=True)) if a != b), None)
    if at is None:  # the same text: the wrong type (bytes for a text message)
        return f"message #{index} came as {type(got).__name__}, not as text"
    return (
        f"wrong content in message #{index} at byte {at}: "
        f"expected {expected[at : at + 16]!r}, got {text[at : at + 16]!r}"
    )


def corrupt(text: str) -> str:
    """``text`` with its last character changed (for checking the checks)."""
    return text[:-1] + ("?" if text[-1] != "?" else "!")
