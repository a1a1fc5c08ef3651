"""RFC 6455 frames as they pass through the splicing relay (`ocpp_link.relay`).

After both handshakes the two hops of a relayed connection carry identically framed bytes: a
charger's frames arrive masked, as a client's must be, and may go to the CSMS as they are (the relay
is the client on that hop, and a server does not care who chose the mask); the CSMS's frames arrive
unmasked and may go to the charger as they are. Both ends negotiated the same subprotocol and the
same permessage-deflate parameters, because the relay passed the offer and the answer through.

`FrameSplicer` is one direction of such a connection. It writes the bytes one peer sent to the other
peer unchanged, in the chunks they were read in where it can, and reads just enough of each frame
header on the way to know where frames begin and end. That lets it

* hand each complete data message (an unmasked, reassembled, inflated copy) to the tap, without the
  bytes themselves waiting for any of that;
* stop before the header of a frame that would make a message too big;
* cut out the pongs that answer the relay's own pings, and add frames of its own (ping, close)
  only between two complete frames of the stream it writes.

To make the last point safe it never writes an incomplete frame header or an incomplete control
frame: those bytes (at most 14, or 131 for a control frame) wait for the rest of their frame. The
receiving peer could not have acted on them earlier anyway; payload bytes of data frames are
written as soon as they arrive.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable

try:  # the C version that websockets builds; same function, pure Python otherwise
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
_DEFLATE_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 7.2.2: removed by the sender, added back to inflate

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameSplicer",
    "apply_mask",
    "close_payload",
    "encode_frame",
    "parse_close",
]


def encode_frame(
    opcode: int, payload: bytes = b"", *, mask: bool = False, fin: bool = True, rsv1: bool = False
) -> bytes:
    """One frame; `mask` for frames a client sends (a fresh random key, as RFC 6455 5.3 asks)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        key = os.urandom(4)
        return head + key + apply_mask(payload, key)
    return head + payload


def close_payload(code: int | None, reason: str = "") -> bytes:
    """Close frame body; None gives the empty body ("no status")."""
    if code is None:
        return b""
    return struct.pack("!H", code) + reason.encode()[:123]


def parse_close(payload: bytes) -> tuple[int, str]:
    """(code, reason) of a close frame body; 1005 for an empty one, as RFC 6455 7.1.5 defines."""
    if len(payload) < 2:
        return 1005, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


class FrameSplicer:
    """One direction of a spliced WebSocket connection: scan frames, forward bytes, feed the tap.

    `out` receives the bytes to forward. Subclasses override the hooks (`_wants`, `_on_message`,
    `_on_control`, `_on_close_out`, `_on_oversize`, `_on_violation`, `_on_undecodable`); hooks may
    call `inject` on this splicer only where noted, because bytes read before the hook was called
    may not have been written yet.
    """

    __slots__ = (
        "_collect",
        "_compressed",
        "_fin",
        "_frag",
        "_frame_parts",
        "_held",
        "_inflate_bits",
        "_inflate_reset",
        "_inflater",
        "_late_oversize",
        "_mask",
        "_msg_op",
        "_msg_parts",
        "_msg_size",
        "_need",
        "_pending",
        "_track_inflate",
        "dead",
        "discard",
        "masked",
        "max_message",
        "out",
        "rx",
    )

    def __init__(self, out: Callable[[bytes], object], *, masked: bool, max_message: int) -> None:
        self.out = out
        self.masked = masked  # frames from a client must be masked, frames from a server must not
        self.max_message = max_message
        self.discard = False  # a close frame went out (or the target is gone): write nothing more
        self.dead = False  # the input broke the protocol: stop reading it at all
        self.rx = False  # set on every read; the relay's liveness check clears it
        self._need = 0  # payload bytes of the current data frame still to come; 0 = between frames
        self._held = b""  # an incomplete header or control frame, waiting for the rest
        self._pending: list[tuple[bytes, bool]] = []  # own frames waiting for the end of this frame
        self._frag = False  # inside a fragmented message
        self._fin = True
        self._msg_op = 0
        self._msg_size = 0
        self._compressed = False
        self._collect = False  # copying the current message for the tap
        self._mask: bytes | None = None
        self._frame_parts: list[bytes] = []
        self._msg_parts: list[bytes] = []
        self._inflate_bits = 0  # 0: permessage-deflate not negotiated for this direction
        self._inflate_reset = False
        self._track_inflate = False
        self._inflater: zlib._Decompress | None = None
        self._late_oversize = False

    def use_deflate(self, window_bits: int, no_context_takeover: bool, track: bool) -> None:
        """permessage-deflate was negotiated; `track`: inflate every message (the tap is on)."""
        self._inflate_bits = max(9, min(15, window_bits))  # zlib cannot inflate with 8
        self._inflate_reset = no_context_takeover
        # With context takeover every compressed message must be inflated, wanted or not, or the
        # next one cannot be; without it, only the wanted ones.
        self._track_inflate = track and not no_context_takeover

    # --- hooks ----------------------------------------------------------------------------------

    def _wants(self, opcode: int) -> bool:
        """At the first frame of a data message: should the tap get a copy of it?"""
        return False

    def _on_message(self, opcode: int, payload: bytes | None, size: int) -> None:
        """A data message ended (payload None when not copied; size = payload bytes on the wire)."""

    def _on_control(self, opcode: int, payload: bytes) -> bool:
        """A complete ping, pong or close frame (unmasked payload); False cuts a ping or pong out."""
        return True

    def _on_close_out(self) -> None:
        """A close frame was just written to the output; nothing more will be."""

    def _on_oversize(self) -> None:
        """A message went over `max_message`; everything before its frame was written. May inject."""

    def _on_violation(self, why: str) -> None:
        """The input broke RFC 6455; everything before the bad frame was written. May inject."""

    def _on_undecodable(self) -> None:
        """A compressed message could not be inflated; the tap cannot follow this direction."""

    # --- injection ------------------------------------------------------------------------------

    def at_boundary(self) -> bool:
        """The output stream is between two complete frames (or will be once the held bytes are)."""
        return not self._need

    def inject(self, frame: bytes, close: bool = False) -> None:
        """Write a frame of the relay's own at the next frame boundary of the output."""
        if self.discard:
            return
        if self._need:
            self._pending.append((frame, close))
            return
        self.out(frame)
        if close:
            self.discard = True
            self._on_close_out()

    def _flush_pending(self, data: bytes, start: int, pos: int) -> int:
        if start < pos and not self.discard:
            self.out(data[start:pos])
        pending, self._pending = self._pending, []
        for frame, close in pending:
            if self.discard:
                break
            self.out(frame)
            if close:
                self.discard = True
                self._on_close_out()
        return pos

    # --- the scanner ----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes read from the input: forward them and scan the frames they hold."""
        self.rx = True
        if self.dead:
            return
        if self._held:
            data = self._held + data
            self._held = b""
        n = len(data)
        pos = 0  # scanning position
        start = 0  # first byte not written yet
        stop = n  # bytes from here on are held back
        while pos < n:
            need = self._need
            if need:  # inside the payload of a data frame
                end = pos + need
                if end > n:
                    if self._collect:
                        self._frame_parts.append(data[pos:] if pos else data)
                    self._need = end - n
                    break
                if self._collect:
                    self._frame_parts.append(data[pos:end])
                self._need = 0
                pos = end
                self._frame_done()
                if self._pending:
                    start = self._flush_pending(data, start, pos)
                continue

            # A frame header starts at pos.
            avail = n - pos
            if avail < 2:
                stop = pos
                break
            b0 = data[pos]
            b1 = data[pos + 1]
            length = b1 & 0x7F
            hl = 2
            if length == 126:
                hl = 4
                if avail < 4:
                    stop = pos
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
            elif length == 127:
                hl = 10
                if avail < 10:
                    stop = pos
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                if length >> 63:
                    self._violate(data, start, pos, "64-bit length with the top bit set")
                    return
            mask: bytes | None = None
            if b1 & 0x80:
                hl += 4
                if avail < hl:
                    stop = pos
                    break
                mask = data[pos + hl - 4 : pos + hl]
            if (mask is not None) != self.masked:
                self._violate(data, start, pos, "masked frame from the server" if mask else "unmasked client frame")
                return
            opcode = b0 & 0x0F

            if opcode & 0x08:  # control frame: always complete before it is looked at or written
                if not b0 & 0x80 or length > 125 or b0 & 0x70 or opcode > OP_PONG:
                    self._violate(data, start, pos, "bad control frame")
                    return
                fend = pos + hl + length
                if fend > n:
                    stop = pos
                    break
                payload = data[pos + hl : fend]
                if mask is not None:
                    payload = apply_mask(payload, mask)
                if opcode == OP_CLOSE:
                    self._on_control(opcode, payload)
                    if not self.discard:  # pass it on; nothing may follow it in this direction
                        self.out(data[start:fend])
                        self.discard = True
                        self._on_close_out()
                    start = fend
                elif not self._on_control(opcode, payload):
                    if start < pos and not self.discard:
                        self.out(data[start:pos])
                    start = fend
                pos = fend
                continue

            # data frame
            if opcode > OP_BINARY or b0 & 0x30:
                self._violate(data, start, pos, "reserved opcode or RSV bit")
                return
            rsv1 = b0 & 0x40
            if opcode == OP_CONT:
                if not self._frag or rsv1:
                    self._violate(data, start, pos, "unexpected continuation frame")
                    return
            else:
                if self._frag or (rsv1 and not self._inflate_bits):
                    self._violate(data, start, pos, "unexpected data frame")
                    return
                self._msg_op = opcode
                self._msg_size = 0
                self._compressed = bool(rsv1)
                self._collect = self._wants(opcode) or (bool(rsv1) and self._track_inflate)
            size = self._msg_size + length
            if size > self.max_message:
                if start < pos and not self.discard:
                    self.out(data[start:pos])
                start = pos
                self._collect = False
                self._msg_parts = []
                if not self.discard:  # already closing otherwise
                    self._on_oversize()
                self.discard = True  # the rest of this message never goes out
            self._msg_size = size
            self._fin = bool(b0 & 0x80)
            self._frag = not self._fin
            self._mask = mask
            pos += hl
            end = pos + length
            if end > n:
                if self._collect:
                    self._frame_parts.append(data[pos:])
                self._need = end - n
                break
            if self._collect and length:
                self._frame_parts.append(data[pos:end])
            pos = end
            self._frame_done()
            if self._pending:
                start = self._flush_pending(data, start, pos)

        if stop < n:
            self._held = data[stop:]
        if start < stop and not self.discard:
            self.out(data if start == 0 and stop == n else data[start:stop])
        if self._late_oversize:
            self._late_oversize = False
            if not self.discard:
                self._on_oversize()

    def _violate(self, data: bytes, start: int, pos: int, why: str) -> None:
        if start < pos and not self.discard:
            self.out(data[start:pos])
        self.dead = True
        self._on_violation(why)

    def _frame_done(self) -> None:
        payload: bytes | None = None
        if self._collect:
            parts = self._frame_parts
            payload = parts[0] if len(parts) == 1 else b"".join(parts)
            parts.clear()
            if self._mask is not None:
                payload = apply_mask(payload, self._mask)
            if not self._fin:
                self._msg_parts.append(payload)
                return
            if self._msg_parts:
                self._msg_parts.append(payload)
                payload = b"".join(self._msg_parts)
                self._msg_parts = []
            if self._compressed:
                payload = self._inflate(payload)
        elif not self._fin:
            return
        self._on_message(self._msg_op, payload, self._msg_size)

    def _inflate(self, payload: bytes) -> bytes | None:
        inflater = self._inflater
        if inflater is None:
            inflater = self._inflater = zlib.decompressobj(-self._inflate_bits)
        try:
            data = inflater.decompress(payload + _DEFLATE_TAIL, self.max_message + 1)
        except zlib.error:
            self._track_inflate = False  # the context is lost for good: stop copying for the tap
            self._inflater = None
            self._collect = False
            self._on_undecodable()
            return None
        if self._inflate_reset:
            self._inflater = None
        if len(data) > self.max_message:
            # The compressed frames were under the limit and have gone out already; end it now.
            self._late_oversize = True
            self._inflater = None
            self._track_inflate = False
            return None
        return data
