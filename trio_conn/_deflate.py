"""permessage-deflate (RFC 7692) for the client, on wsproto's public extension hooks.

wsproto 1.3.2's :class:`~wsproto.extensions.PerMessageDeflate` forgets, on a
control frame, that a message is being received compressed
(``frame_inbound_complete`` resets the message's state for a ping between two
fragments, which RFC 6455 section 5.4 allows): the fragments after the ping
are then taken as uncompressed, so binary data arrives corrupted and text
fails as invalid UTF-8 (upstream: python-hyper/wsproto#205).

:class:`Deflate` keeps wsproto's outbound side (``frame_outbound``) and
replaces the inbound side with the public hooks ``frame_inbound_header``,
``frame_inbound_payload_data`` and ``frame_inbound_complete``, with state of
its own under names of its own: a control frame passes through and leaves
the message's state alone. It also checks the server's answer to our offer
as RFC 7692 section 7.1 says (``finalize``), so a hostile parameter fails the
handshake with wsproto's :class:`~wsproto.utilities.RemoteProtocolError`
instead of a ``ValueError`` or ``IndexError`` from the parser.
"""

from __future__ import annotations

import zlib
from typing import Any

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits
from wsproto.utilities import RemoteProtocolError

_FLAGS = ("server_no_context_takeover", "client_no_context_takeover")
_WINDOWS = ("server_max_window_bits", "client_max_window_bits")
#: The 4 bytes RFC 7692 section 7.2.2 has the receiver append to a message.
_TAIL = b"\x00\x00\xff\xff"


class Deflate(PerMessageDeflate):
    """The client's permessage-deflate: wsproto's, with control frames between fragments.

    Offered with wsproto's defaults (window bits 15 both ways, context takeover).
    """

    def __init__(self) -> None:
        super().__init__()
        #: The server's answer has been accepted (``finalize``).
        self.negotiated = False
        #: Window bits the server compresses with (8..15, RFC 7692 section 7.1.2.1).
        self.inbound_window_bits = 15
        #: Inflates the server's messages; made at the first compressed one.
        self.inflater: Any = None  # zlib's decompressor type is not public
        #: The message being received is compressed (None: between messages).
        self.message_compressed: bool | None = None
        #: The frame being received is a control frame (passed through untouched).
        self.control_frame = False

    def enabled(self) -> bool:
        return self.negotiated

    def finalize(self, offer: str) -> None:
        """Accept the server's answer ``offer`` (its ``Sec-WebSocket-Extensions`` element).

        :raises RemoteProtocolError: the answer repeats the extension, or has
            a parameter that is unknown, repeated, or has a bad value (RFC
            7692 section 5: the client must fail the connection).
        """
        if self.negotiated:
            raise _refused("permessage-deflate accepted twice")
        seen: set[str] = set()
        for element in offer.split(";")[1:]:
            name, equals, raw = (part.strip() for part in element.partition("="))
            if name in seen or name not in _FLAGS + _WINDOWS:
                raise _refused(f"a repeated or unknown parameter {name[:40]!r}")
            seen.add(name)
            if name in _FLAGS:
                if equals:
                    raise _refused(f"{name} takes no value")
                setattr(self, name, True)
                continue
            bits = _window_bits(name, raw.strip('"'))
            if name == "server_max_window_bits":
                self.inbound_window_bits = bits
            elif bits < 9:  # zlib cannot compress with a 256-byte window (it uses 512)
                raise _refused("client_max_window_bits=8 cannot be honoured")
            else:
                self.client_max_window_bits = bits  # our compressor's, in frame_outbound
        self.negotiated = True

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        # RFC 7692 section 6: RSV1 only on the first frame of a data message.
        if rsv.rsv1 and (opcode.iscontrol() or opcode is Opcode.CONTINUATION):
            return CloseReason.PROTOCOL_ERROR
        self.control_frame = opcode.iscontrol()
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self.message_compressed = rsv.rsv1
            if rsv.rsv1 and self.inflater is None:
                # At least 9: zlib compresses with a 9-bit window when asked for 8.
                self.inflater = zlib.decompressobj(-max(self.inbound_window_bits, 9))
        return RsvBits(True, False, False)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if self.control_frame or not self.message_compressed:
            return data
        try:
            return self.inflater.decompress(data)  # type: ignore[no-any-return]
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if self.control_frame or not fin:
            return None  # a control frame between fragments leaves the message alone
        compressed, self.message_compressed = self.message_compressed, None
        if not compressed:
            return None
        try:
            data: bytes = self.inflater.decompress(_TAIL) + self.inflater.flush()
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if self.server_no_context_takeover:
            self.inflater = None
        return data


def _window_bits(name: str, raw: str) -> int:
    """An ``*_max_window_bits`` value: 8..15, decimal digits without a leading zero
    (RFC 7692 section 7.1.2)."""
    if not (raw.isascii() and raw.isdigit() and raw[0] != "0" and 8 <= int(raw) <= 15):
        raise _refused(f"{name} must be 8..15, got {raw[:20]!r}")
    return int(raw)


def _refused(why: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"the server's permessage-deflate answer is not valid: {why}")
