"""Messages: round trips, strict validation with clear reasons, size limits, and fuzzing."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.sync import messages
from edgefleet.sync.errors import MessageTooLarge, ProtocolError
from edgefleet.sync.messages import (
    Ack,
    Batch,
    Hello,
    Inventory,
    Logs,
    LogsRequest,
    NeedInventory,
    Status,
    ViewObject,
    Welcome,
    decode_agent_message,
    decode_cloud_message,
    encode,
)

DIGEST = "0" * 32
OBJECT = ViewObject.of("/registry/workloads/cache", {"kind": "Workload", "spec": {"x": "é"}}, since=3)

AGENT_MESSAGES: list[messages.AgentMessage] = [
    Hello("par-1", "epoch-1", 42, DIGEST, 7, "0.1.0"),
    Hello("par-1", "", 0, DIGEST, 0, ""),
    Inventory((("/registry/nodes/par-1", 12), ("/registry/sites/par", 0)), more=True),
    Inventory(()),
    Ack(3),
    Ack(4, DIGEST),
    Status({"phase": "Ready", "lastHeartbeat": "2024-01-01T00:00:00Z", "cache": {"hitRatio": 0.5}}),
    Logs(1, "line 1\nline 2\n", None),
    Logs(2, "", "no such workload"),
]
CLOUD_MESSAGES: list[messages.CloudMessage] = [
    Welcome("hub-a", "epoch-1", 10),
    NeedInventory(),
    Batch(1, 42, (OBJECT,), ("/registry/domains/old",)),
    Batch(2, 43, check=True),
    LogsRequest(5, "cache", 100),
]


@pytest.mark.parametrize("message", AGENT_MESSAGES, ids=lambda m: type(m).__name__)
def test_agent_messages_round_trip(message: Any) -> None:
    text = encode(message)
    assert decode_agent_message(text) == message
    assert decode_agent_message(text.encode()) == message
    assert text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)  # compact


@pytest.mark.parametrize("message", CLOUD_MESSAGES, ids=lambda m: type(m).__name__)
def test_cloud_messages_round_trip(message: Any) -> None:
    assert decode_cloud_message(encode(message)) == message


def test_put_items_carry_the_object_and_are_encoded_once() -> None:
    decoded = decode_cloud_message(encode(Batch(1, 1, (OBJECT,))))
    assert isinstance(decoded, Batch)
    assert decoded.put[0].object == OBJECT.object
    assert decoded.put[0].rev == OBJECT.rev
    assert "put_json" in OBJECT.__dict__  # seeded by ViewObject.of


def test_content_version_depends_on_content_only() -> None:
    a = ViewObject.of("/registry/sites/a", {"spec": {"x": 1, "y": [1, 2]}, "kind": "Site"}, since=1)
    b = ViewObject.of("/registry/sites/a", {"kind": "Site", "spec": {"y": [1, 2], "x": 1}}, since=99)
    c = ViewObject.of("/registry/sites/a", {"kind": "Site", "spec": {"y": [2, 1], "x": 1}}, since=1)
    assert a == b and a.rev == b.rev
    assert a != c
    assert 0 <= a.rev < 2**52


def test_the_spec_example_is_what_the_encoder_writes() -> None:
    assert json.loads(encode(Ack(3))) == {"type": "ack", "seq": 3}
    assert json.loads(encode(NeedInventory())) == {"type": "need-inventory"}
    assert json.loads(encode(Batch(2, 9))) == {"type": "batch", "seq": 2, "revision": 9, "put": [], "delete": []}


def _hello(**changes: Any) -> str:
    document = {
        "type": "hello",
        "protocol": 1,
        "node": "par-1",
        "epoch": "e",
        "revision": 1,
        "digest": DIGEST,
        "count": 0,
        "agentVersion": "0.1.0",
    }
    document.update(changes)
    return json.dumps({k: v for k, v in document.items() if v is not _MISSING})


def _batch(**changes: Any) -> str:
    document: dict[str, Any] = {"type": "batch", "seq": 1, "revision": 1, "put": [], "delete": []}
    document.update(changes)
    return json.dumps({k: v for k, v in document.items() if v is not _MISSING})


_MISSING = object()
PUT = {"key": "/registry/nodes/a", "rev": 1, "object": {}}

BAD_AGENT = [
    ("[]", "must be a JSON object"),
    ('{"type": 3}', "no string field 'type'"),
    ('{"type": "batch"}', "unknown message type 'batch'"),
    ("{", "not valid JSON"),
    ('{"type": "ack", "seq": NaN}', "not valid JSON"),
    ('{"type": "ack", "seq": 1e999}', "not valid JSON"),
    ('{"type": "ack", "seq": ' + "9" * 5000 + "}", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ('{"type": "ack", "seq": 0}', "ack.seq: 0 is out of range"),
    ('{"type": "ack", "seq": -1}', "out of range"),
    ('{"type": "ack", "seq": true}', "expected an integer, got a boolean"),
    ('{"type": "ack", "seq": 1.0}', "expected an integer, got a number"),
    ('{"type": "ack", "seq": 9223372036854775808}', "out of range"),
    ('{"type": "ack"}', "ack: missing field 'seq'"),
    ('{"type": "ack", "seq": 1, "extra": 1}', "ack: unknown field 'extra'"),
    ('{"type": "ack", "seq": 1, "digest": "XYZ"}', "ack.digest"),
    (_hello(protocol=2), "version 2 is not supported"),
    (_hello(node="Not A Name"), "hello.node"),
    (_hello(digest="abc"), "hello.digest"),
    (_hello(count=-1), "hello.count"),
    (_hello(epoch="x" * 300), "hello.epoch: length 300"),
    (_hello(agentVersion=_MISSING), "missing field 'agentVersion'"),
    ('{"type": "inventory", "items": [["/etc/passwd", 1]]}', "not a key under /registry/"),
    ('{"type": "inventory", "items": [["/registry/a\\u0000", 1]]}', "without NUL"),
    ('{"type": "inventory", "items": [["/registry/a", 1, 2]]}', "expected [key, rev]"),
    ('{"type": "inventory", "items": [["/registry/a"]]}', "expected [key, rev]"),
    ('{"type": "inventory", "items": {}}', "expected an array"),
    ('{"type": "inventory", "items": [], "more": 1}', "inventory.more: expected a boolean"),
    ('{"type": "inventory", "items": [["/registry/\\ud800", 1]]}', "lone surrogate"),
    ('{"type": "status", "status": []}', "expected an object"),
    ('{"type": "status", "status": {"bogus": 1}}', "unknown field 'bogus'"),
    ('{"type": "status", "status": {"phase": "Happy"}}', "status.phase"),
    ('{"type": "status", "status": {"cache": {"hitRatio": 2}}}', "status.cache.hitRatio"),
    ('{"type": "logs", "id": 1, "data": 5, "error": null}', "logs.data: expected a string"),
    ('{"type": "logs", "id": 1, "data": ""}', "missing field 'error'"),
]

BAD_CLOUD = [
    ('{"type": "hello"}', "unknown message type 'hello'"),
    ('{"type": "welcome", "protocol": 1, "hub": "", "epoch": "e", "heartbeatSeconds": 10}', "welcome.hub: length 0"),
    ('{"type": "welcome", "protocol": 1, "hub": "h", "epoch": "e", "heartbeatSeconds": 0}', "heartbeatSeconds"),
    ('{"type": "need-inventory", "please": true}', "unknown field 'please'"),
    (_batch(seq=0), "batch.seq: 0 is out of range"),
    (_batch(revision=-5), "batch.revision"),
    (_batch(put=[{"key": "/registry/nodes/a", "rev": 1}]), "exactly the fields key, rev and object"),
    (_batch(put=[{**PUT, "object": []}]), "batch.put[0].object: expected an object"),
    (_batch(put=[{**PUT, "rev": -1}]), "batch.put[0].rev"),
    (_batch(put=[PUT], delete=["/registry/nodes/a"]), "appears more than once"),
    (_batch(put=[PUT, PUT]), "appears more than once"),
    (_batch(delete=["nodes/a"]), "batch.delete[0]"),
    (_batch(check="yes"), "batch.check: expected a boolean"),
    (_batch(put=_MISSING), "missing field 'put'"),
    (_batch(delete=["/registry/a"] * 100_001), "batch.delete: 100001 items; the limit is 100000"),
    ('{"type": "logs-request", "id": 1, "workload": "cache", "tail": 0}', "logs-request.tail"),
    ('{"type": "logs-request", "id": 1, "workload": "../etc", "tail": 1}', "logs-request.workload"),
]


@pytest.mark.parametrize(("text", "reason"), BAD_AGENT, ids=range(len(BAD_AGENT)))
def test_bad_agent_messages_say_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_agent_message(text)
    assert reason in caught.value.reason
    assert caught.value.close_code == 1008


@pytest.mark.parametrize(("text", "reason"), BAD_CLOUD, ids=range(len(BAD_CLOUD)))
def test_bad_cloud_messages_say_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_cloud_message(text)
    assert reason in caught.value.reason


def test_size_limits_are_checked_before_parsing() -> None:
    big = '{"type": "logs", "id": 1, "data": "' + "x" * messages.MAX_AGENT_MESSAGE_BYTES + '", "error": null}'
    with pytest.raises(MessageTooLarge) as caught:
        decode_agent_message(big)
    assert caught.value.close_code == 1009
    # 'é' is one character but two bytes: the limit is on bytes.
    almost = '{"type":"logs","id":1,"error":null,"data":"' + "é" * (messages.MAX_AGENT_MESSAGE_BYTES // 2) + '"}'
    assert len(almost) < messages.MAX_AGENT_MESSAGE_BYTES
    with pytest.raises(MessageTooLarge):
        decode_agent_message(almost)
    # The cloud's limit is larger: the same text is a valid size for a cloud message.
    with pytest.raises(ProtocolError, match="unknown message type 'logs'"):
        decode_cloud_message(big)


def test_invalid_utf8_bytes_are_refused() -> None:
    with pytest.raises(ProtocolError, match="UTF-8"):
        decode_agent_message(b'{"type": "ack", "seq": 1, "x": "\xff"}')


def test_a_valid_surrogate_pair_is_accepted() -> None:
    message = decode_agent_message('{"type": "logs", "id": 1, "data": "\\ud83d\\ude00", "error": null}')
    assert isinstance(message, Logs) and message.data == "\U0001f600"


VALID_TEXTS = [encode(m) for m in [*AGENT_MESSAGES, *CLOUD_MESSAGES]]


@st.composite
def mutated(draw: st.DrawFn) -> str | bytes:
    """A valid message with random edits: the shapes a parser's corner cases hide in."""
    text = draw(st.sampled_from(VALID_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        match draw(st.sampled_from(["insert", "delete", "replace"])):
            case "insert":
                text = text[:position] + draw(st.text(max_size=8)) + text[position:]
            case "delete":
                text = text[:position] + text[position + draw(st.integers(1, 8)) :]
            case "replace":
                text = (
                    text[:position]
                    + draw(st.sampled_from(['"', "-1", "null", "[]", "{}", "1e9", "\\u"]))
                    + text[position + 1 :]
                )
    return text.encode("utf-8", "surrogatepass") if draw(st.booleans()) else text


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def json_documents(draw: st.DrawFn) -> str:
    """Random JSON objects with a real message type and random fields."""
    document = draw(st.dictionaries(st.sampled_from(_FIELD_NAMES), JSON_VALUES, max_size=8))
    document["type"] = draw(st.sampled_from(_TYPES))
    return json.dumps(document)


_TYPES = ["hello", "inventory", "ack", "status", "logs", "welcome", "need-inventory", "batch", "logs-request", "x"]
_FIELD_NAMES = sorted({name for text in VALID_TEXTS for name in json.loads(text)} | {"object", "key", "rev"})


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(mutated(), json_documents(), st.text(max_size=200), st.binary(max_size=200)))
def test_decoders_raise_only_protocol_errors(text: str | bytes) -> None:
    for decode in (decode_agent_message, decode_cloud_message):
        try:
            message = decode(text)
        except ProtocolError:
            continue
        assert decode(encode(message)) == message  # whatever is accepted re-encodes to itself


def test_compressed_frames_round_trip_and_refuse_bombs_and_garbage() -> None:
    text = '{"type":"batch",' + '"x":"' + "a" * 100_000 + '"}'
    data = messages.compress_frame(text)
    assert len(data) < len(text) // 50 and messages.decompress_frame(data) == text
    bomb = zlib.compress(b"a" * (messages.MAX_CLOUD_MESSAGE_BYTES + 10))
    with pytest.raises(MessageTooLarge):
        messages.decompress_frame(bomb)
    with pytest.raises(ProtocolError, match="does not inflate"):
        messages.decompress_frame(b"not zlib at all")
    with pytest.raises(ProtocolError, match="truncated"):
        messages.decompress_frame(data[: len(data) // 2])
    with pytest.raises(ProtocolError, match="not UTF-8"):
        messages.decompress_frame(zlib.compress(b"\xff\xfe"))
