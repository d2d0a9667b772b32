"""Acks are recognised without a JSON parse when they are exactly as the agent writes them, and only then."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.sync.errors import ProtocolError
from edgefleet.sync.messages import MAX_INT, Ack, decode_agent_message, encode

DIGEST = "0123456789abcdef" * 2


@given(seq=st.integers(1, MAX_INT), digest=st.one_of(st.none(), st.just(DIGEST)), as_bytes=st.booleans())
def test_an_encoded_ack_decodes_to_itself_as_text_or_bytes(seq: int, digest: str | None, as_bytes: bool) -> None:
    text = encode(Ack(seq, digest))
    assert decode_agent_message(text.encode() if as_bytes else text) == Ack(seq, digest)


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"ack","seq":0}',  # seq starts at 1
        '{"type":"ack","seq":01}',  # not JSON
        '{"type":"ack","seq":9223372036854775808}',  # over MAX_INT: the full decoder's range check
        '{"type":"ack","seq":1,"digest":"ABCDEF0123456789ABCDEF0123456789"}',  # digests are lowercase
        '{"type":"ack","seq":1,"extra":1}',
        '{"type":"ack","seq":"1"}',
    ],
)
def test_lookalikes_take_the_full_decoder_and_its_errors(text: str) -> None:
    with pytest.raises(ProtocolError):
        decode_agent_message(text)


def test_an_ack_with_spaces_is_still_an_ack() -> None:
    assert decode_agent_message('{ "type": "ack", "seq": 7 }') == Ack(7)
