"""The messages of the sync protocol: typed values, one encoder, two strict decoders.

How: every message of :mod:`edgefleet.sync` is a frozen dataclass.
:func:`encode` turns any of them into compact JSON text (one WebSocket text
frame). :func:`decode_agent_message` and :func:`decode_cloud_message` turn
text from the peer back into a message, or raise
:class:`~edgefleet.sync.errors.ProtocolError` saying exactly what is wrong:
unknown type, missing, extra or ill-typed field, a number out of range, too
many items, a key outside ``/registry/``, a lone surrogate. Nothing else ever
escapes a decoder, whatever the input (a hypothesis test feeds it garbage).

Security limits, checked before parsing (a frame over its limit raises
:class:`~edgefleet.sync.errors.MessageTooLarge`, close code 1009):
:data:`MAX_AGENT_MESSAGE_BYTES` for agent->cloud frames (the cloud takes
frames from thousands of nodes), :data:`MAX_CLOUD_MESSAGE_BYTES` for
cloud->agent frames. Lists are capped at :data:`MAX_LIST_ITEMS`, keys at
:data:`MAX_KEY_LENGTH` characters. JSON's ``NaN``/``Infinity`` and numbers
that overflow a float are refused; of duplicate object keys the last wins.

A :class:`ViewObject` is one object of a node's view, as held and as sent in a
batch's ``put``. Its ``rev`` is the *content version* of the projected object
(see the package docstring): :meth:`ViewObject.of` computes it from the
object's canonical JSON and keeps that JSON, so a change sent to a thousand
nodes is serialised once, not a thousand times.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, TypeAlias, cast

from pydantic import ValidationError

from edgefleet.api.documents import JSONObject
from edgefleet.api.meta import check_dns1123_subdomain, validation_errors
from edgefleet.api.nodes import NodeStatus
from edgefleet.sync import PROTOCOL_VERSION
from edgefleet.sync.errors import MessageTooLarge, ProtocolError

MAX_AGENT_MESSAGE_BYTES = 1024 * 1024
"""Security limit: the largest agent->cloud message, in UTF-8 bytes."""

MAX_CLOUD_MESSAGE_BYTES = 8 * 1024 * 1024
"""Security limit: the largest cloud->agent message, in UTF-8 bytes."""

MAX_LIST_ITEMS = 100_000
"""Security limit: items in one batch (put + delete) or one inventory message."""

MAX_KEY_LENGTH = 1024
"""Security limit: characters in one key."""

MAX_TEXT_LENGTH = 256
"""Security limit: characters in an epoch, hub id or agent version."""

MAX_ERROR_LENGTH = 4096
"""Security limit: characters in a logs reply's error message."""

MAX_LOGS_TAIL = 100_000
"""The most log lines one logs-request may ask for."""

MAX_FEATURES = 32
"""Security limit: features one hello may name (each at most 64 characters)."""

FEATURE_METRICS = "metrics"
"""A hello feature: the agent answers metrics-request (the cloud's Prometheus relay).

The cloud sends a message type only to agents whose hello names its
feature, so an agent older than the feature is never sent a message it
would close the session over; the relay skips it ("unsupported"). A hub
older than a feature refuses a hello that names features (strict fields):
upgrade the cloud before the agents, as with every protocol change.
"""

MAX_METRICS_TARGET_LENGTH = 64

MAX_HEARTBEAT_SECONDS = 86_400
MAX_INT = 2**63 - 1
"""Sequence numbers, revisions, revs and ids fit a signed 64-bit integer (SQLite, etcd)."""

KEY_PREFIX = "/registry/"

CLOSE_REBALANCE = 4000
"""WebSocket close code: the hub releases the session to even out its replicas' loads.

The close reason is ``rebalance`` optionally followed by one space and the
base URL (``http(s)://host:port``, the form ``edge join --server`` takes) of
a less-loaded replica. The agent reconnects at once (after a short jitter),
to that URL if it is one of its servers or came in the hint, else to another
of its servers; nothing is lost, the digest handshake resends what changed.
"""

CLOSE_REBALANCE_REASON = "rebalance"

COMPRESSION_HEADER = "X-Edgefleet-Compression"
"""Sent by the agent in its WebSocket upgrade, value ``zlib``: it takes compressed frames (below).

Why not permessage-deflate: it keeps a compression context per connection
for the connection's whole life (about 50 KiB each, half the hub's memory
per idle node) and compresses every tiny ack-sized batch, which cost the
hub a third of its push time. Instead a cloud->agent message of at least
:data:`COMPRESS_MIN_BYTES` is sent as one *binary* frame holding the
zlib-compressed UTF-8 JSON text (one-shot: no context is kept), and
everything smaller as plain text. An agent that did not send the header
never gets a binary frame.
"""

COMPRESS_MIN_BYTES = 16 * 1024
"""cloud->agent messages at least this long are compressed for agents that asked."""

OVERLOADED_STATUS = 503
"""HTTP status of a refused WebSocket upgrade while the hub is over its
connection or handshake limits; the ``Retry-After`` header (seconds) says
when to try again. The agent waits at least that long (jittered) and may try
another of its servers first."""

DIGEST_LENGTH = 32

_DIGEST = re.compile(r"[0-9a-f]{32}")
# A JSON escape of a UTF-16 surrogate: json.loads turns a lone one into a str
# that cannot be encoded to UTF-8, which would crash whoever stores it later.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_ACK_PATTERN = r'\{"type":"ack","seq":([1-9][0-9]{0,17})(?:,"digest":"([0-9a-f]{32})")?\}'
# An ack as encode() writes it; 18 digits stay below MAX_INT (longer ones take the full decoder and its range check).
_ACK_TEXT = re.compile(_ACK_PATTERN)
_ACK_BYTES = re.compile(_ACK_PATTERN.encode())
_ACK_MAX_LENGTH = 100
_STATUS_FIELDS = frozenset(info.alias or name for name, info in NodeStatus.model_fields.items())
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_canonical_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True).encode


def compress_frame(text: str) -> bytes:
    """A cloud->agent message as one binary frame: zlib-compressed UTF-8 (see :data:`COMPRESSION_HEADER`)."""
    return zlib.compress(text.encode("utf-8"), 6)


def decompress_frame(data: bytes) -> str:
    """The message text of a compressed frame; MessageTooLarge past the cloud->agent limit (a zip bomb)."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, MAX_CLOUD_MESSAGE_BYTES + 1)
    except zlib.error as exc:
        raise ProtocolError(f"a compressed frame does not inflate: {exc}") from None
    if len(raw) > MAX_CLOUD_MESSAGE_BYTES or inflater.unconsumed_tail:
        raise MessageTooLarge(f"a compressed frame inflates past {MAX_CLOUD_MESSAGE_BYTES} bytes")
    if not inflater.eof:
        raise ProtocolError("a compressed frame is truncated")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"a compressed frame is not UTF-8: {exc}") from None


def cut_at_line(text: str, max_bytes: int) -> tuple[str, bool]:
    """``text`` within ``max_bytes`` UTF-8 bytes, cut after its last whole line; (text, whether it was cut).

    Prometheus text cut this way stays valid exposition (whole samples only).
    """
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text, False
    end = data.rfind(b"\n", 0, max_bytes)
    return data[: end + 1].decode("utf-8") if end >= 0 else "", True


def canonical_json(document: Mapping[str, Any]) -> str:
    """Sorted keys, no spaces, non-ASCII kept: one text per content."""
    return _canonical_dumps(document)


def content_version(canonical: str) -> int:
    """The content version of an object from its canonical JSON: 52 bits of SHA-256."""
    return int(hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:13], 16)


@dataclass(frozen=True)
class ViewObject:
    """One object of a node's view: store key, content version and projected document.

    ``since`` is only meaningful on the cloud side: a store revision at or
    after which the projected content last changed (see the package
    docstring). It is never sent. Two ViewObjects are equal when key and
    rev are (rev is a hash of the content).
    """

    key: str
    rev: int
    object: JSONObject = field(compare=False)
    since: int = field(default=0, compare=False)

    @classmethod
    def of(cls, key: str, document: JSONObject, since: int = 0) -> ViewObject:
        """Build a ViewObject, computing rev from the document's canonical JSON."""
        canonical = canonical_json(document)
        view_object = cls(key, content_version(canonical), document, since)
        # Seed the cached property so the document is serialised once.
        view_object.__dict__["put_json"] = _put_json(key, view_object.rev, canonical)
        return view_object

    @cached_property
    def put_json(self) -> str:
        """This object as an item of a batch's ``put`` list, encoded."""
        return _put_json(self.key, self.rev, canonical_json(self.object))

    @cached_property
    def put_size(self) -> int:
        """UTF-8 bytes this object adds to a batch (with its separating comma); kept: a push asks once per node."""
        return len(self.put_json.encode("utf-8")) + 1


def _put_json(key: str, rev: int, canonical: str) -> str:
    return f'{{"key":{_dumps(key)},"rev":{rev},"object":{canonical}}}'


# --- agent -> cloud -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """The first message of a session: who the node is and what it holds."""

    TYPE: ClassVar[str] = "hello"
    node: str
    epoch: str
    revision: int
    digest: str
    count: int
    agent_version: str
    protocol: int = PROTOCOL_VERSION
    features: tuple[str, ...] = ()
    """What the agent answers beyond the base protocol (:data:`FEATURE_METRICS`); not sent when empty."""


@dataclass(frozen=True, slots=True)
class Inventory:
    """One part of the node's holdings (key, rev); ``more`` is true on all but the last part."""

    TYPE: ClassVar[str] = "inventory"
    items: tuple[tuple[str, int], ...]
    more: bool = False


@dataclass(frozen=True, slots=True)
class Ack:
    """Batch ``seq`` (and every one before it) is committed locally.

    ``digest`` is the digest of the node's holdings after the batch; it is
    present exactly when the batch had ``check`` set.
    """

    TYPE: ClassVar[str] = "ack"
    seq: int
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class Status:
    """Node status fields (wire names, as in NodeStatus) the agent reports."""

    TYPE: ClassVar[str] = "status"
    status: JSONObject


@dataclass(frozen=True, slots=True)
class Logs:
    """The answer to logs-request ``id``: the log tail, or an error message."""

    TYPE: ClassVar[str] = "logs"
    id: int
    data: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Metrics:
    """The answer to metrics-request ``id``: Prometheus text, cut at a line if over the asked size, or an error."""

    TYPE: ClassVar[str] = "metrics"
    id: int
    data: str
    truncated: bool = False
    error: str | None = None


# --- cloud -> agent -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    """The cloud's answer to hello: which hub replica, which store epoch, heartbeat period."""

    TYPE: ClassVar[str] = "welcome"
    hub: str
    epoch: str
    heartbeat_seconds: int
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class NeedInventory:
    """The cloud asks for the node's holdings (keys and revs)."""

    TYPE: ClassVar[str] = "need-inventory"


@dataclass(frozen=True, slots=True)
class Batch:
    """Changes to commit atomically; ``check`` asks for the holdings' digest in the ack."""

    TYPE: ClassVar[str] = "batch"
    seq: int
    revision: int
    put: tuple[ViewObject, ...] = ()
    delete: tuple[str, ...] = ()
    check: bool = False


@dataclass(frozen=True, slots=True)
class LogsRequest:
    """The cloud asks for the last ``tail`` log lines of a workload on the node."""

    TYPE: ClassVar[str] = "logs-request"
    id: int
    workload: str
    tail: int


@dataclass(frozen=True, slots=True)
class MetricsRequest:
    """The cloud asks for the Prometheus text of ``target`` on the node (``agent``, ``cache``,
    ``cache/<workload>``), at most ``max_bytes`` of it; sent only to agents whose hello names
    :data:`FEATURE_METRICS`."""

    TYPE: ClassVar[str] = "metrics-request"
    id: int
    target: str
    max_bytes: int


AgentMessage: TypeAlias = Hello | Inventory | Ack | Status | Logs | Metrics
CloudMessage: TypeAlias = Welcome | NeedInventory | Batch | LogsRequest | MetricsRequest
Message: TypeAlias = AgentMessage | CloudMessage


# --- encoding -------------------------------------------------------------


def encode(message: Message) -> str:
    """The message as compact JSON text (one WebSocket text frame)."""
    if isinstance(message, Batch):
        return _encode_batch(message)
    return _dumps({"type": message.TYPE, **_fields_of(message)})


def _fields_of(message: Message) -> JSONObject:
    match message:
        case Hello():
            hello: JSONObject = {
                "protocol": message.protocol,
                "node": message.node,
                "epoch": message.epoch,
                "revision": message.revision,
                "digest": message.digest,
                "count": message.count,
                "agentVersion": message.agent_version,
            }
            if message.features:  # absent when empty: a hello without features is what older hubs take
                hello["features"] = list(message.features)
            return hello
        case Inventory():
            return {"items": [list(item) for item in message.items], "more": message.more}
        case Ack():
            return {"seq": message.seq} if message.digest is None else {"seq": message.seq, "digest": message.digest}
        case Status():
            return {"status": message.status}
        case Logs():
            return {"id": message.id, "data": message.data, "error": message.error}
        case Metrics():
            return {"id": message.id, "data": message.data, "truncated": message.truncated, "error": message.error}
        case MetricsRequest():
            return {"id": message.id, "target": message.target, "maxBytes": message.max_bytes}
        case Welcome():
            return {
                "protocol": message.protocol,
                "hub": message.hub,
                "epoch": message.epoch,
                "heartbeatSeconds": message.heartbeat_seconds,
            }
        case NeedInventory():
            return {}
        case LogsRequest():
            return {"id": message.id, "workload": message.workload, "tail": message.tail}
    raise TypeError(f"not a sync message: {message!r}")


def _encode_batch(batch: Batch) -> str:
    # Put items are pre-encoded (ViewObject.put_json): join, do not re-serialise.
    check = ',"check":true' if batch.check else ""
    delete = _dumps(list(batch.delete)) if batch.delete else "[]"
    return (
        f'{{"type":"batch","seq":{batch.seq},"revision":{batch.revision},'
        f'"put":[{",".join([item.put_json for item in batch.put])}],'
        f'"delete":{delete}{check}}}'
    )


_EMPTY_BATCH_BYTES = len('{"type":"batch","seq":,"revision":,"put":[],"delete":[],"check":true}')


def batch_overhead(seq: int, revision: int) -> int:
    """Bytes of an empty batch with ``check``: what a cut adds around its items."""
    return _EMPTY_BATCH_BYTES + len(str(seq)) + len(str(revision))


def put_size(item: ViewObject) -> int:
    """UTF-8 bytes ``item`` adds to a batch (with its separating comma)."""
    return item.put_size


def delete_size(key: str) -> int:
    """UTF-8 bytes a deletion of ``key`` adds to a batch (with its separating comma)."""
    return len(_dumps(key).encode("utf-8")) + 1


# --- decoding -------------------------------------------------------------


def decode_agent_message(text: str | bytes) -> AgentMessage:
    """Parse and validate one agent->cloud message; ProtocolError if it is not one.

    An ack in exactly the form :func:`encode` writes it (the common message:
    one per batch per node) is recognised by one regular expression instead
    of being parsed as JSON; anything else takes the full decoder.
    """
    ack = _fast_ack(text) if len(text) <= _ACK_MAX_LENGTH else None
    if ack is not None:
        return ack
    document = _load(text, MAX_AGENT_MESSAGE_BYTES, "agent")
    return cast(AgentMessage, _dispatch(document, _AGENT_DECODERS))


def _fast_ack(text: str | bytes) -> Ack | None:
    """The ack ``text`` is when it is one exactly as :func:`encode` writes it, else None (decode it fully)."""
    if isinstance(text, bytes):
        found = _ACK_BYTES.fullmatch(text)
        if found is None:
            return None
        digest = found[2]
        return Ack(int(found[1]), None if digest is None else digest.decode("ascii"))
    found_text = _ACK_TEXT.fullmatch(text)
    return None if found_text is None else Ack(int(found_text[1]), found_text[2])


def decode_cloud_message(text: str | bytes) -> CloudMessage:
    """Parse and validate one cloud->agent message; ProtocolError if it is not one."""
    document = _load(text, MAX_CLOUD_MESSAGE_BYTES, "cloud")
    return cast(CloudMessage, _dispatch(document, _CLOUD_DECODERS))


class _Rejected(ValueError):
    """Raised from json.loads hooks; caught with every other ValueError."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Rejected(f"number {text[:40]} overflows a float")
    return value


def _no_constant(name: str) -> Any:
    raise _Rejected(f"{name} is not valid JSON")


def _load(text: str | bytes, limit: int, sender: str) -> JSONObject:
    if len(text) > limit:
        raise MessageTooLarge(f"{sender} message is over {limit} bytes")
    data = _utf8(text)
    if len(data) > limit:
        raise MessageTooLarge(f"{sender} message is {len(data)} bytes; the limit is {limit}")
    try:
        document = json.loads(data, parse_float=_finite_float, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"{sender} message is not valid JSON: {str(exc)[:200]}") from None
    if _SURROGATE_ESCAPE.search(data) is not None:
        _check_encodable(document, sender)
    if not isinstance(document, dict):
        raise ProtocolError(f"{sender} message must be a JSON object, not {_json_type(document)}")
    return document


def _utf8(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("message is not valid UTF-8") from None
        return text
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError("message contains a lone surrogate") from None


def _check_encodable(document: Any, sender: str) -> None:
    try:
        _dumps(document).encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(f"{sender} message contains a lone surrogate (\\ud800-\\udfff)") from None
    except (ValueError, RecursionError):
        raise ProtocolError(f"{sender} message cannot be re-encoded") from None


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", float: "a number"}
    if value is None:
        return "null"
    if type(value) is int:
        return "an integer"
    return names.get(type(value), type(value).__name__)


Decoder = Callable[[JSONObject], Any]


def _dispatch(document: JSONObject, decoders: Mapping[str, Decoder]) -> Any:
    kind = document.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("message has no string field 'type'")
    decoder = decoders.get(kind)
    if decoder is None:
        raise ProtocolError(f"unknown message type {kind[:64]!r}; expected one of {', '.join(sorted(decoders))}")
    return decoder(document)


def _fields(document: JSONObject, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> str:
    """Check the field names of a message; returns its type for error messages."""
    kind = str(document["type"])
    for name in required:
        if name not in document:
            raise ProtocolError(f"{kind}: missing field {name!r}")
    extra = set(document) - {"type", *required, *optional}
    if extra:
        raise ProtocolError(f"{kind}: unknown field {sorted(extra)[0][:64]!r}")
    return kind


def _int(value: Any, where: str, low: int = 0, high: int = MAX_INT) -> int:
    if type(value) is not int:
        raise ProtocolError(f"{where}: expected an integer, got {_json_type(value)}")
    if not low <= value <= high:
        raise ProtocolError(f"{where}: {value} is out of range {low}..{high}")
    return value


def _str(value: Any, where: str, max_length: int, min_length: int = 0) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{where}: expected a string, got {_json_type(value)}")
    if not min_length <= len(value) <= max_length:
        raise ProtocolError(f"{where}: length {len(value)} is out of range {min_length}..{max_length}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{where}: expected a boolean, got {_json_type(value)}")
    return value


def _name(value: Any, where: str) -> str:
    text = _str(value, where, 253, 1)
    try:
        return check_dns1123_subdomain(text)
    except ValueError as exc:
        raise ProtocolError(f"{where}: {exc}") from None


def _digest(value: Any, where: str) -> str:
    text = _str(value, where, DIGEST_LENGTH, DIGEST_LENGTH)
    if not _DIGEST.fullmatch(text):
        raise ProtocolError(f"{where}: expected {DIGEST_LENGTH} lowercase hex digits")
    return text


def _key(value: Any, where: str) -> str:
    key = _str(value, where, MAX_KEY_LENGTH, len(KEY_PREFIX) + 1)
    if not key.startswith(KEY_PREFIX) or "\x00" in key:
        raise ProtocolError(f"{where}: {key[:80]!r} is not a key under {KEY_PREFIX} without NUL")
    return key


def _list(value: Any, where: str, max_items: int = MAX_LIST_ITEMS) -> list[Any]:
    if not isinstance(value, list):
        raise ProtocolError(f"{where}: expected an array, got {_json_type(value)}")
    if len(value) > max_items:
        raise ProtocolError(f"{where}: {len(value)} items; the limit is {max_items}")
    return value


def _decode_hello(document: JSONObject) -> Hello:
    _fields(document, ("protocol", "node", "epoch", "revision", "digest", "count", "agentVersion"), ("features",))
    protocol = _int(document["protocol"], "hello.protocol")
    if protocol != PROTOCOL_VERSION:
        raise ProtocolError(f"hello.protocol: version {protocol} is not supported; this hub speaks {PROTOCOL_VERSION}")
    return Hello(
        node=_name(document["node"], "hello.node"),
        epoch=_str(document["epoch"], "hello.epoch", MAX_TEXT_LENGTH),
        revision=_int(document["revision"], "hello.revision"),
        digest=_digest(document["digest"], "hello.digest"),
        count=_int(document["count"], "hello.count"),
        agent_version=_str(document["agentVersion"], "hello.agentVersion", MAX_TEXT_LENGTH),
        features=tuple(
            _str(item, f"hello.features[{index}]", 64, 1)
            for index, item in enumerate(_list(document.get("features", []), "hello.features", MAX_FEATURES))
        ),
    )


def _decode_inventory(document: JSONObject) -> Inventory:
    _fields(document, ("items",), ("more",))
    items: list[tuple[str, int]] = []
    for index, item in enumerate(_list(document["items"], "inventory.items")):
        where = f"inventory.items[{index}]"
        if not isinstance(item, list) or len(item) != 2:
            raise ProtocolError(f"{where}: expected [key, rev], got {_json_type(item)}")
        items.append((_key(item[0], where), _int(item[1], where)))
    more = _bool(document.get("more", False), "inventory.more")
    return Inventory(tuple(items), more)


def _decode_ack(document: JSONObject) -> Ack:
    _fields(document, ("seq",), ("digest",))
    digest = document.get("digest")
    return Ack(
        seq=_int(document["seq"], "ack.seq", 1),
        digest=None if digest is None else _digest(digest, "ack.digest"),
    )


def _decode_status(document: JSONObject) -> Status:
    _fields(document, ("status",))
    return Status(check_status(document["status"]))


def check_status(status: Any) -> JSONObject:
    """``status`` itself if it is a valid set of Node status fields (wire names), else ProtocolError."""
    if not isinstance(status, dict):
        raise ProtocolError(f"status.status: expected an object, got {_json_type(status)}")
    unknown = set(status) - _STATUS_FIELDS
    if unknown:
        raise ProtocolError(f"status.status: unknown field {sorted(unknown)[0][:64]!r}")
    try:
        NodeStatus.model_validate(status)
    except ValidationError as exc:
        raise ProtocolError(f"{validation_errors(exc, ('status',))[0]}"[:500]) from None
    return status


def _decode_logs(document: JSONObject) -> Logs:
    _fields(document, ("id", "data", "error"))
    error = document["error"]
    return Logs(
        id=_int(document["id"], "logs.id", 1),
        data=_str(document["data"], "logs.data", MAX_AGENT_MESSAGE_BYTES),
        error=None if error is None else _str(error, "logs.error", MAX_ERROR_LENGTH),
    )


def _decode_metrics(document: JSONObject) -> Metrics:
    _fields(document, ("id", "data", "truncated", "error"))
    error = document["error"]
    return Metrics(
        id=_int(document["id"], "metrics.id", 1),
        data=_str(document["data"], "metrics.data", MAX_AGENT_MESSAGE_BYTES),
        truncated=_bool(document["truncated"], "metrics.truncated"),
        error=None if error is None else _str(error, "metrics.error", MAX_ERROR_LENGTH),
    )


def _decode_metrics_request(document: JSONObject) -> MetricsRequest:
    _fields(document, ("id", "target", "maxBytes"))
    target = _str(document["target"], "metrics-request.target", MAX_METRICS_TARGET_LENGTH, 1)
    if not re.fullmatch(r"[a-z0-9]([a-z0-9./-]*[a-z0-9])?", target):
        raise ProtocolError(f"metrics-request.target: {target!r} is not agent, cache or cache/<workload>")
    return MetricsRequest(
        id=_int(document["id"], "metrics-request.id", 1),
        target=target,
        max_bytes=_int(document["maxBytes"], "metrics-request.maxBytes", 1, MAX_AGENT_MESSAGE_BYTES),
    )


def _decode_welcome(document: JSONObject) -> Welcome:
    _fields(document, ("protocol", "hub", "epoch", "heartbeatSeconds"))
    protocol = _int(document["protocol"], "welcome.protocol")
    if protocol != PROTOCOL_VERSION:
        raise ProtocolError(f"welcome.protocol: version {protocol} is not supported; this agent speaks 1")
    return Welcome(
        hub=_str(document["hub"], "welcome.hub", MAX_TEXT_LENGTH, 1),
        epoch=_str(document["epoch"], "welcome.epoch", MAX_TEXT_LENGTH),
        heartbeat_seconds=_int(document["heartbeatSeconds"], "welcome.heartbeatSeconds", 1, MAX_HEARTBEAT_SECONDS),
    )


def _decode_need_inventory(document: JSONObject) -> NeedInventory:
    _fields(document, ())
    return NeedInventory()


def _decode_batch(document: JSONObject) -> Batch:
    _fields(document, ("seq", "revision", "put", "delete"), ("check",))
    put = tuple(_put_item(item, index) for index, item in enumerate(_list(document["put"], "batch.put")))
    delete = tuple(
        _key(key, f"batch.delete[{index}]") for index, key in enumerate(_list(document["delete"], "batch.delete"))
    )
    if len(put) + len(delete) > MAX_LIST_ITEMS:
        raise ProtocolError(f"batch: {len(put) + len(delete)} items; the limit is {MAX_LIST_ITEMS}")
    keys = [item.key for item in put] + list(delete)
    if len(set(keys)) != len(keys):
        raise ProtocolError("batch: a key appears more than once in put and delete")
    return Batch(
        seq=_int(document["seq"], "batch.seq", 1),
        revision=_int(document["revision"], "batch.revision"),
        put=put,
        delete=delete,
        check=_bool(document.get("check", False), "batch.check"),
    )


def _put_item(item: Any, index: int) -> ViewObject:
    where = f"batch.put[{index}]"
    if not isinstance(item, dict):
        raise ProtocolError(f"{where}: expected an object, got {_json_type(item)}")
    if set(item) != {"key", "rev", "object"}:
        raise ProtocolError(f"{where}: expected exactly the fields key, rev and object")
    obj = item["object"]
    if not isinstance(obj, dict):
        raise ProtocolError(f"{where}.object: expected an object, got {_json_type(obj)}")
    return ViewObject(_key(item["key"], f"{where}.key"), _int(item["rev"], f"{where}.rev"), obj)


def _decode_logs_request(document: JSONObject) -> LogsRequest:
    _fields(document, ("id", "workload", "tail"))
    return LogsRequest(
        id=_int(document["id"], "logs-request.id", 1),
        workload=_name(document["workload"], "logs-request.workload"),
        tail=_int(document["tail"], "logs-request.tail", 1, MAX_LOGS_TAIL),
    )


_AGENT_DECODERS: dict[str, Decoder] = {
    "hello": _decode_hello,
    "inventory": _decode_inventory,
    "ack": _decode_ack,
    "status": _decode_status,
    "logs": _decode_logs,
    "metrics": _decode_metrics,
}
_CLOUD_DECODERS: dict[str, Decoder] = {
    "welcome": _decode_welcome,
    "need-inventory": _decode_need_inventory,
    "batch": _decode_batch,
    "logs-request": _decode_logs_request,
    "metrics-request": _decode_metrics_request,
}

__all__ = [
    "FEATURE_METRICS",
    "MAX_AGENT_MESSAGE_BYTES",
    "MAX_CLOUD_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "Ack",
    "AgentMessage",
    "Batch",
    "CloudMessage",
    "Hello",
    "Inventory",
    "Logs",
    "LogsRequest",
    "Message",
    "Metrics",
    "MetricsRequest",
    "NeedInventory",
    "Status",
    "ViewObject",
    "Welcome",
    "canonical_json",
    "check_status",
    "content_version",
    "cut_at_line",
    "decode_agent_message",
    "decode_cloud_message",
    "encode",
]
