"""A message received in pieces, assembled within the limits.

wsproto hands a message over in pieces: one per fragment, and one per read
inside a frame. :class:`Assembly` checks ``max_message_size`` (bytes, UTF-8
for text, after decompression) and ``max_fragments`` as each piece arrives,
and keeps the pieces in one growing ``bytearray`` (text as UTF-8, decoded
once whole), so a message trickled a byte per read holds about its own size,
not an object per piece (a ``StringIO`` held about 8 bytes per character).
"""

from __future__ import annotations

from wsproto.events import BytesMessage, TextMessage

from ._frames import Data


class TooBig(Exception):
    """A message broke a limit (the message says which)."""


class Assembly:
    """The message being received, within ``max_size`` bytes and ``max_fragments`` frames."""

    __slots__ = ("fragments", "max_fragments", "max_size", "pieces", "size", "text")

    def __init__(self, max_size: int, max_fragments: int) -> None:
        self.max_size = max_size
        self.max_fragments = max_fragments
        #: The pieces so far (UTF-8 for text); None between messages.
        self.pieces: bytearray | None = None
        self.text = False
        self.size = 0
        self.fragments = 0

    def add(self, event: TextMessage | BytesMessage) -> Data | None:
        """Add a piece of a message; return the message once it is whole.

        :raises TooBig: the message broke a limit.
        """
        data = event.data
        pieces = self.pieces
        if event.message_finished and pieces is None:  # the usual case: one piece
            size = len(data) if type(data) is not str or data.isascii() else len(data.encode())
            if size > self.max_size:
                raise TooBig(f"a message of {size} bytes; the limit is {self.max_size}")
            return bytes(data) if isinstance(data, bytearray) else data
        raw = data.encode() if isinstance(data, str) else data
        self.size += len(raw)
        if event.frame_finished:
            self.fragments += 1
        if self.size > self.max_size:
            raise TooBig(f"a message of over {self.max_size} bytes")
        if self.fragments > self.max_fragments:
            raise TooBig(f"a message of over {self.max_fragments} fragments")
        if pieces is None:
            pieces = self.pieces = bytearray()
            self.text = isinstance(data, str)
        pieces += raw
        if not event.message_finished:
            return None
        self.pieces, self.size, self.fragments = None, 0, 0
        return pieces.decode() if self.text else bytes(pieces)
