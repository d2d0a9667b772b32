"""The hub's frame splitter against the websockets library: same frames, any chunking, never a crash."""

from __future__ import annotations

import itertools
import os

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from edgefleet.cloud.wsframes import HAND_OVER, FrameSplitter, Split, frame_header

MAX = 70_000
OPCODES = [Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING, Opcode.PONG]


def client_frame(opcode: Opcode, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    """One frame as an agent's WebSocket client writes it (masked with a random key), or unmasked."""
    return Frame(opcode, payload, fin).serialize(mask=masked)


def legal(opcode: Opcode, payload: bytes, fin: bool) -> tuple[bytes, bool]:
    """Control frames are final and at most 125 bytes (the library refuses to write others)."""
    if opcode in (Opcode.PING, Opcode.PONG):
        return payload[:125], True
    return payload, fin


def split_all(splitter: FrameSplitter) -> list[Split]:
    frames = []
    while (frame := splitter.next()) is not None:
        assert frame is not HAND_OVER
        assert isinstance(frame, Split)
        frames.append(frame)
    return frames


frames_strategy = st.lists(
    st.tuples(
        st.sampled_from(OPCODES),
        st.one_of(st.binary(max_size=200), st.sampled_from([b"x" * 125, b"y" * 126, b"z" * 65535, b"w" * 65536])),
        st.booleans(),
        st.booleans(),
    ),
    min_size=1,
    max_size=8,
)


@given(frames=frames_strategy, cuts=st.lists(st.integers(0, 200_000), max_size=6))
def test_any_chunking_gives_back_the_same_whole_frames(
    frames: list[tuple[Opcode, bytes, bool, bool]], cuts: list[int]
) -> None:
    frames = [(opcode, *legal(opcode, payload, fin), masked) for opcode, payload, fin, masked in frames]
    wire = [client_frame(opcode, payload, fin, masked) for opcode, payload, fin, masked in frames]
    stream = b"".join(wire)
    bounds = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    splitter = FrameSplitter(MAX)
    out: list[Split] = []
    for start, end in itertools.pairwise(bounds):
        splitter.feed(stream[start:end])
        out.extend(split_all(splitter))
    assert [frame.raw for frame in out] == wire, "whole frames, in order, byte for byte"
    assert splitter.buffered == 0
    for (opcode, payload, fin, masked), frame in zip(frames, out, strict=True):
        fast = opcode is Opcode.TEXT and fin and masked
        assert frame.text == (payload if fast else None), "only a final masked text frame is unmasked here"


def test_a_header_over_the_limit_hands_everything_over() -> None:
    small = client_frame(Opcode.TEXT, b'{"type":"ack","seq":1}')
    big_header = bytes((0x81, 0x80 | 127)) + (MAX + 1).to_bytes(8, "big") + os.urandom(4)
    splitter = FrameSplitter(MAX)
    splitter.feed(small + big_header + b"rest")
    first = splitter.next()
    assert isinstance(first, Split) and first.text == b'{"type":"ack","seq":1}'
    assert splitter.next() is HAND_OVER
    assert splitter.rest() == big_header + b"rest", "the general parser gets the frame from its first byte"
    assert splitter.buffered == 0


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_garbage_never_raises_and_loses_no_byte(chunks: list[bytes]) -> None:
    splitter = FrameSplitter(1000)
    fed = taken = b""
    for chunk in chunks:
        splitter.feed(chunk)
        fed += chunk
        while (frame := splitter.next()) is not None:
            if frame is HAND_OVER:
                break
            assert isinstance(frame, Split)
            taken += frame.raw
        if frame is HAND_OVER:
            break
    assert taken + splitter.rest() == fed, "every byte is in a frame or handed over, in order"


def test_server_frame_headers_match_the_library() -> None:
    for length in (0, 1, 125, 126, 65535, 65536, 200_000):
        payload = b"a" * length
        for binary in (False, True):
            opcode = Opcode.BINARY if binary else Opcode.TEXT
            assert frame_header(length, binary) + payload == Frame(opcode, payload).serialize(mask=False)
