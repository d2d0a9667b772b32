"""WebSocket frames on the hub's direct lane: split an agent's bytes into whole frames; frame the hub's messages.

How: :class:`FrameSplitter` is sans-I/O. The hub's WebSocket protocol
(:class:`edgefleet.cloud.agentsocket.HubWebSocketProtocol`) feeds it what
the socket read and takes whole frames out, in order. A final, masked text
frame comes out with its payload unmasked (:attr:`Split.text`): the hub
handles it itself (an agent's acknowledgement, status report...). Every
other frame (ping, pong, close, binary, fragments, an unmasked frame, a
frame with RSV bits) comes out whole (:attr:`Split.raw`) and goes to the
``websockets`` library's parser, one whole frame at a time, so that parser
is always at a frame boundary and keeps every rule of RFC 6455 it enforces
(close handshake, masking, fragmentation, control frames). A header that
announces more than ``max_size`` bytes makes the splitter give up
(:data:`HAND_OVER`): the caller passes :meth:`FrameSplitter.rest` and all
later bytes to the general parser, which refuses the frame with 1009 as
before. The splitter never raises on any input, and holds at most one
incomplete frame (within ``max_size``).

:func:`frame_header` is the header of a server frame: unmasked, final, a
two-, four- or ten-byte header (RFC 6455, 5.2), so the hub writes a message
as ``header + payload`` without building a ``Frame`` object.

Why: the ``websockets`` parser is a chain of generators; for an ack of
twenty-odd bytes it cost about as much as all of the hub's own work on the
ack (measured: 8-20 µs a frame on the 2-core VM), and a push to N nodes
brings N acks.
"""

import enum
import struct
from dataclasses import dataclass

try:
    from websockets.speedups import apply_mask
except ImportError:  # a websockets built without its C extension
    from websockets.utils import apply_mask

_FIN_TEXT = 0x81
_MASKED = 0x80


class _HandOver(enum.Enum):
    HAND_OVER = "hand over"


HAND_OVER = _HandOver.HAND_OVER
"""The splitter gave up: the general parser takes :meth:`FrameSplitter.rest` and everything after."""


@dataclass(frozen=True, slots=True)
class Split:
    """One whole frame: its bytes, and for a final masked text frame its unmasked payload."""

    raw: bytes
    text: bytes | None


def frame_header(length: int, binary: bool = False) -> bytes:
    """The header of one unmasked, final server frame carrying ``length`` payload bytes."""
    first = 0x82 if binary else 0x81
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


class FrameSplitter:
    """Whole frames out of a byte stream that starts at a frame boundary (see the module docstring)."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def next(self) -> Split | _HandOver | None:
        """The next whole frame; None: incomplete (feed more); HAND_OVER: give the rest to the general parser."""
        buffer, pos = self._buffer, self._pos
        available = len(buffer) - pos
        if available < 2:
            return None
        first, second = buffer[pos], buffer[pos + 1]
        length = second & 0x7F
        head = pos + 2
        if length == 126:
            if available < 4:
                return None
            length = (buffer[pos + 2] << 8) | buffer[pos + 3]
            head += 2
        elif length == 127:
            if available < 10:
                return None
            length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
            head += 8
        if length > self.max_size:
            return HAND_OVER
        masked = second & _MASKED
        if masked:
            head += 4
        end = head + length
        if len(buffer) < end:
            return None
        self._pos = end
        text = None
        if first == _FIN_TEXT and masked:
            text = apply_mask(bytes(buffer[head:end]), bytes(buffer[head - 4 : head]))
        return Split(bytes(buffer[pos:end]), text)

    def rest(self) -> bytes:
        """Every byte fed and not yet returned as a frame (and forget them)."""
        rest = bytes(self._buffer[self._pos :])
        self._buffer = bytearray()
        self._pos = 0
        return rest

    @property
    def buffered(self) -> int:
        """Bytes held: at most one incomplete frame."""
        return len(self._buffer) - self._pos
