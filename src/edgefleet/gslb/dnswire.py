"""DNS wire format for an authoritative server: parse one query, build one answer.

How: :func:`parse_query` reads the header, the single question and the
additional section of a query (RFC 1035 §4), and from the OPT record (RFC
6891) the UDP payload size, the DO bit, the EDNS version and the Client
Subnet option (RFC 7871). Everything malformed raises
:class:`~edgefleet.gslb.errors.DnsFormatError` carrying the query id when the
header was readable, so the server can answer FORMERR (:func:`formerr`) or
drop the packet. The record builders (:func:`a`, :func:`aaaa`,
:func:`cname`, :func:`ns`, :func:`soa`, :func:`txt`) return the wire bytes of
one resource record; :func:`response` puts a header, the echoed question,
the sections and an OPT record (echoing the Client Subnet with the scope the
caller gives) together, and truncates to ``max_size`` (TC bit, empty
sections) so a UDP client retries over TCP.

Why hand-written rather than dnspython: the parse and build of one query are
the GSLB's hot path. Measured on the machine this was written on, for an A
query with an ECS option: dnspython's ``from_wire`` + ``make_response`` +
``to_wire`` take about 100 µs, which alone would cap one worker near 10,000
queries/s; this module's :func:`parse_query` takes about 3.5 µs and
:func:`response` about 1 µs, because they read only what an authoritative
server needs (one question, the OPT record) with ``struct`` and slices, keep
names as the bytes they arrived as, and build records as bytes that can be
cached and reused. dnspython stays in the tests as an independent parser of
what this module builds.

Name compression: every name written by a builder is compressed against
the question name only (RFC 1035 §4.1.4). The question always sits at
offset 12 of a response, so an RR built for a query is valid in any
response to that query and can be cached and reused as bytes.

Rules enforced (each a FORMERR when broken, with the id when readable):

- header of 12 bytes; exactly one question; no answer or authority records
  in a query; nothing after the last record;
- names: labels of at most 63 bytes, names of at most 255 bytes, no
  extended label types (0x40, 0x80); no compression in the question;
  a compression pointer elsewhere must point strictly before the start of
  the part of the name being read (the name's first byte, or the target of
  the previous pointer), and a name follows at most :data:`MAX_POINTER_HOPS`
  pointers;
- the additional section holds at most one OPT record, owned by the root
  name, and at most :data:`MAX_OTHER_ADDITIONAL` other records (every record
  is walked, so that "nothing after the last record" can be checked; a query
  has no use for more: TSIG or SIG(0) is one); each record walked takes at
  least 11 bytes or the walk stops with an error, so ARCOUNT cannot make it
  go further than the message;
- EDNS options must fit their record; at most one Client Subnet option;
  its family is 1 (IPv4) or 2 (IPv6), its source prefix at most 32 or 128,
  its scope prefix 0 (RFC 7871 §6: "in queries, it MUST be set to 0"), its
  address exactly ``ceil(source / 8)`` bytes with no bit set past the
  source prefix (RFC 7871 §6 and §7.1.2 ask for FORMERR).

A response (QR bit set) is never answered, not even with FORMERR, so two
servers cannot bounce errors at each other: :func:`formerr` returns None.

Security limits: :data:`MAX_UDP_PAYLOAD` caps what a UDP answer may grow to
whatever the client advertises (1232 bytes, the DNS flag day 2020 value
that avoids IP fragmentation); :data:`MAX_MESSAGE` is the TCP limit.

Why the pointer and record limits (issue 12): "backwards" alone is not a
bound. A chain of pointers each pointing two bytes back is backwards all the
way, and a query whose additional section holds thousands of records owned
by the end of such a chain made a naive walk follow the chain once per
record: O(size²), about 30-45 ms for a 4 KB UDP datagram and 4-8 s for a
64 KB TCP message, on the event loop. With the limits, a query holds at most
six names (the question and five additional owners), each costing at most
:data:`MAX_POINTER_HOPS` jumps and 128 labels: parsing any message is a few
microseconds of work whatever its bytes, and a bad one is a FORMERR.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import struct
from collections.abc import Sequence
from typing import NamedTuple

from edgefleet.gslb.errors import DnsFormatError

# --- constants -------------------------------------------------------------------

A = 1
NS = 2
CNAME = 5
SOA = 6
TXT = 16
AAAA = 28
OPT = 41
IXFR = 251
AXFR = 252
ANY = 255

CLASS_IN = 1

NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
BADVERS = 16
"""Extended RCODE (RFC 6891 §6.1.3): the upper 8 bits travel in the OPT record."""

OPCODE_QUERY = 0
OPTION_CLIENT_SUBNET = 8
FAMILY_IPV4 = 1
FAMILY_IPV6 = 2

MIN_UDP_PAYLOAD = 512
MAX_UDP_PAYLOAD = 1232
"""Security limit: the largest UDP response sent, whatever size the client advertises."""
MAX_MESSAGE = 65535
"""Security limit: the largest message over TCP (its length prefix is 16 bits)."""
MAX_NAME_WIRE = 255
MAX_LABEL = 63
MAX_POINTER_HOPS = 16
"""Security limit: compression pointers followed in one name (real encoders use one or two)."""
MAX_OTHER_ADDITIONAL = 4
"""Security limit: additional records other than OPT in a query (TSIG or SIG(0) need one)."""

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_CD = 0x0010
_OPCODE_MASK = 0x7800
_ECHOED_FLAGS = _OPCODE_MASK | FLAG_RD | FLAG_CD
_DO_BIT = 0x8000

_HEADER = struct.Struct(">HHHHHH")
_TWO_SHORTS = struct.Struct(">HH")
_RR_FIXED = struct.Struct(">HHIH")
_OPTION_HEADER = struct.Struct(">HH")
_ECS_HEADER = struct.Struct(">HBB")
_SOA_NUMBERS = struct.Struct(">IIIII")
_POINTER = struct.Struct(">H")

_PLAIN_NAME = re.compile(rb"[-0-9A-Za-z_*.]*")


# --- parsed query -------------------------------------------------------------------
# NamedTuples rather than dataclasses: built once per query on the hot path, and
# a NamedTuple is created about three times faster than a frozen dataclass.


class ClientSubnet(NamedTuple):
    """The EDNS Client Subnet of a query: family 1 or 2, source prefix, address padded with zeros."""

    family: int
    source_prefix: int
    address: str
    address_wire: bytes = b""
    """The address bytes as sent (``ceil(source_prefix / 8)`` of them), echoed in the answer."""
    address_offset: int = -1
    """Where ``address_wire`` starts in the message (-1: not parsed from a message). A server
    uses it to recognise queries that differ only in their client subnet (:mod:`edgefleet.gslb.dns`)."""


class Edns(NamedTuple):
    """What the OPT record of a query says."""

    udp_size: int
    do: bool
    ecs: ClientSubnet | None
    version: int


class Query(NamedTuple):
    """A parsed query: ``qname`` lowercase without the trailing dot, ``qname_wire`` as sent."""

    id: int
    flags: int
    qname: str
    qname_wire: bytes
    qtype: int
    qclass: int
    edns: Edns | None

    @property
    def opcode(self) -> int:
        return (self.flags & _OPCODE_MASK) >> 11

    def udp_limit(self) -> int:
        """The largest UDP response this query allows: 512 without EDNS, else its size up to 1232."""
        if self.edns is None:
            return MIN_UDP_PAYLOAD
        return min(max(self.edns.udp_size, MIN_UDP_PAYLOAD), MAX_UDP_PAYLOAD)


# --- parsing ----------------------------------------------------------------------------


def parse_query(data: bytes) -> Query:
    """Parse a DNS query; DnsFormatError (with the id once readable) if it breaks a rule above."""
    if len(data) < 12:
        raise DnsFormatError(f"message of {len(data)} bytes is shorter than a DNS header")
    query_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & FLAG_QR:
        raise DnsFormatError("the message is a response, not a query", query_id)
    if qdcount != 1:
        raise DnsFormatError(f"{qdcount} questions; a query has exactly one", query_id)
    if ancount or nscount:
        raise DnsFormatError("a query carries no answer or authority records", query_id)
    end, qname = _question_name(data, query_id)
    if end + 4 > len(data):
        raise DnsFormatError("the question ends before its type and class", query_id)
    qtype, qclass = _TWO_SHORTS.unpack_from(data, end)
    if arcount:
        edns = _additional_section(data, end + 4, arcount, query_id)
    elif end + 4 == len(data):
        edns = None
    else:
        raise DnsFormatError(f"{len(data) - end - 4} bytes after the question", query_id)
    return Query(query_id, flags, qname, data[12:end], qtype, qclass, edns)


def _question_name(data: bytes, query_id: int) -> tuple[int, str]:
    """End offset and text form of the question name (no compression allowed there)."""
    labels = []
    pos = 12
    size = len(data)
    while True:
        if pos >= size:
            raise DnsFormatError("the question name runs past the end of the message", query_id)
        length = data[pos]
        if length == 0:
            break
        if length > MAX_LABEL:
            raise DnsFormatError("compression or extended label type in the question name", query_id)
        labels.append(data[pos + 1 : pos + 1 + length])
        pos += length + 1
        if pos - 12 >= MAX_NAME_WIRE:
            raise DnsFormatError("the question name is longer than 255 bytes", query_id)
    if pos + 1 > size:
        raise DnsFormatError("the question name runs past the end of the message", query_id)
    return pos + 1, name_text(labels)


def name_text(labels: Sequence[bytes]) -> str:
    """Lowercase presentation form of a name without the trailing dot ("" for the root).

    Bytes other than letters, digits, ``-``, ``_`` and ``*``, and dots inside a
    label, are written ``\\DDD`` (RFC 1035 §5.1), so a label holding a dot can
    never pass for two labels when the name is compared with the names served.
    """
    text = b".".join(labels)
    if _PLAIN_NAME.fullmatch(text) and text.count(b".") == len(labels) - 1:
        return text.decode("ascii").lower()
    return ".".join(_escaped_label(label) for label in labels).lower()


def _escaped_label(label: bytes) -> str:
    return "".join(
        chr(byte) if _PLAIN_NAME.fullmatch(bytes((byte,))) and byte != 0x2E else f"\\{byte:03d}" for byte in label
    )


def _additional_section(data: bytes, pos: int, count: int, query_id: int) -> Edns | None:
    """Walk the additional records; the OPT record's content, if there is one."""
    edns: Edns | None = None
    size = len(data)
    others = 0
    for _ in range(count):
        owner_is_root = pos < size and data[pos] == 0
        pos = skip_name(data, pos, query_id)
        if pos + 10 > size:
            raise DnsFormatError("an additional record is cut short", query_id)
        rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, pos)
        pos += 10
        if pos + rdlength > size:
            raise DnsFormatError("an additional record's data runs past the end of the message", query_id)
        if rtype == OPT:
            if edns is not None:
                raise DnsFormatError("more than one OPT record", query_id)
            if not owner_is_root:
                raise DnsFormatError("the OPT record is not owned by the root name", query_id)
            edns = _opt(data[pos : pos + rdlength], rclass, ttl, query_id, pos)
        else:
            others += 1
            if others > MAX_OTHER_ADDITIONAL:
                raise DnsFormatError(f"more than {MAX_OTHER_ADDITIONAL} additional records besides OPT", query_id)
        pos += rdlength
    if pos != size:
        raise DnsFormatError(f"{size - pos} bytes after the last record", query_id)
    return edns


def skip_name(data: bytes, pos: int, query_id: int | None = None) -> int:
    """Offset just after the (possibly compressed) name at ``pos``, checking the whole name.

    Pointers are followed to check the name they lead to; each must point
    before the start of the part of the name it ends (which rules out loops
    and overlaps), and at most :data:`MAX_POINTER_HOPS` are followed (which
    bounds the work: see the module docstring).
    """
    end = -1
    wire_length = 0
    hops = 0
    segment_start = pos
    size = len(data)
    while True:
        if pos >= size:
            raise DnsFormatError("a name runs past the end of the message", query_id)
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= size:
                raise DnsFormatError("a compression pointer is cut short", query_id)
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= segment_start:
                raise DnsFormatError(
                    "a compression pointer does not point backwards, before the name it ends", query_id
                )
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise DnsFormatError(f"a name follows more than {MAX_POINTER_HOPS} compression pointers", query_id)
            end = pos + 2 if end < 0 else end
            pos = segment_start = target
            continue
        if length > MAX_LABEL:
            raise DnsFormatError(f"unknown label type 0x{length & 0xC0:02x}", query_id)
        wire_length += length + 1
        if wire_length > MAX_NAME_WIRE:
            raise DnsFormatError("a name is longer than 255 bytes", query_id)
        pos += length + 1
        if length == 0:
            return pos if end < 0 else end


def _opt(rdata: bytes, udp_size: int, ttl: int, query_id: int, offset: int = -1) -> Edns:
    """The OPT record's fields: payload size (class), version and DO (TTL), options (RDATA)."""
    ecs: ClientSubnet | None = None
    pos = 0
    while pos < len(rdata):
        if pos + 4 > len(rdata):
            raise DnsFormatError("an EDNS option header is cut short", query_id)
        code, length = _OPTION_HEADER.unpack_from(rdata, pos)
        pos += 4
        if pos + length > len(rdata):
            raise DnsFormatError(f"EDNS option {code} runs past the OPT record", query_id)
        if code == OPTION_CLIENT_SUBNET:
            if ecs is not None:
                raise DnsFormatError("more than one Client Subnet option", query_id)
            ecs = parse_client_subnet(rdata[pos : pos + length], query_id, offset + pos if offset >= 0 else -1)
        pos += length
    return Edns(udp_size, bool(ttl & _DO_BIT), ecs, (ttl >> 16) & 0xFF)


def parse_client_subnet(value: bytes, query_id: int | None = None, offset: int = -1) -> ClientSubnet:
    """An ECS option's value (RFC 7871 §6), checked as the module docstring says.

    ``offset``: where the option's value starts in the message (-1: unknown).
    """
    if len(value) < 4:
        raise DnsFormatError("the Client Subnet option is shorter than 4 bytes", query_id)
    family, source, scope = _ECS_HEADER.unpack_from(value)
    if family not in (FAMILY_IPV4, FAMILY_IPV6):
        raise DnsFormatError(f"Client Subnet family {family} is neither 1 (IPv4) nor 2 (IPv6)", query_id)
    bits = 32 if family == FAMILY_IPV4 else 128
    if source > bits:
        raise DnsFormatError(f"Client Subnet source prefix /{source} is longer than {bits} bits", query_id)
    if scope:
        raise DnsFormatError("a query's Client Subnet scope prefix must be 0", query_id)
    address = value[4:]
    if len(address) != (source + 7) // 8:
        raise DnsFormatError(f"Client Subnet address of {len(address)} bytes for a /{source} prefix", query_id)
    if source % 8 and address[-1] & (0xFF >> (source % 8)):
        raise DnsFormatError(f"Client Subnet address has bits set past its /{source} prefix", query_id)
    return ClientSubnet(family, source, address_text(family, address), address, offset + 4 if offset >= 0 else -1)


def address_text(family: int, address: bytes) -> str:
    """Text form of an ECS address (family 1 or 2), zero-padded to a whole address."""
    if family == FAMILY_IPV4:
        padded = address + bytes(4 - len(address))
        return f"{padded[0]}.{padded[1]}.{padded[2]}.{padded[3]}"
    return ipaddress.IPv6Address(address + bytes(16 - len(address))).compressed


# --- building records ----------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def name_wire(name: str) -> bytes:
    """Uncompressed wire form of a presentation name (trailing dot optional); ValueError if invalid."""
    text = name.rstrip(".") if name != "." else ""
    if not text:
        return b"\x00"
    parts = []
    for label in text.split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) <= MAX_LABEL:
            raise ValueError(f"{name!r}: labels must be 1 to 63 bytes")
        parts.append(bytes((len(raw),)) + raw)
    wire = b"".join(parts) + b"\x00"
    if len(wire) > MAX_NAME_WIRE:
        raise ValueError(f"{name!r}: longer than 255 bytes")
    return wire


@functools.lru_cache(maxsize=8192)
def compressed_name(name: str, question: bytes = b"") -> bytes:
    """``name`` in wire form, its longest suffix shared with ``question`` replaced by a pointer.

    ``question`` is the question name's wire form (any case), which every
    response carries at offset 12.
    """
    wire = name_wire(name)
    if not question:
        return wire
    suffixes = _suffix_offsets(question.lower())
    lowered = wire.lower()
    pos = 0
    while wire[pos]:
        offset = suffixes.get(lowered[pos:])
        if offset is not None:
            return wire[:pos] + _POINTER.pack(0xC000 | offset)
        pos += wire[pos] + 1
    return wire


@functools.lru_cache(maxsize=1024)
def _suffix_offsets(question: bytes) -> dict[bytes, int]:
    """Each non-root suffix of the question name -> its offset in a response."""
    offsets = {}
    pos = 0
    while pos < len(question) and question[pos]:
        offsets[question[pos:]] = 12 + pos
        pos += question[pos] + 1
    return offsets


@functools.lru_cache(maxsize=4096)
def _packed_address(address: str, version: int) -> bytes:
    parsed = ipaddress.ip_address(address)
    if parsed.version != version:
        raise ValueError(f"{address!r} is not an IPv{version} address")
    return parsed.packed


def record(name: str, rtype: int, ttl: int, rdata: bytes, *, question: bytes = b"") -> bytes:
    """One resource record of class IN: owner (compressed against ``question``), type, TTL, data."""
    return compressed_name(name, question) + _RR_FIXED.pack(rtype, CLASS_IN, ttl, len(rdata)) + rdata


def a(name: str, ttl: int, address: str, *, question: bytes = b"") -> bytes:
    return record(name, A, ttl, _packed_address(address, 4), question=question)


def aaaa(name: str, ttl: int, address: str, *, question: bytes = b"") -> bytes:
    return record(name, AAAA, ttl, _packed_address(address, 6), question=question)


def cname(name: str, ttl: int, target: str, *, question: bytes = b"") -> bytes:
    return record(name, CNAME, ttl, compressed_name(target, question), question=question)


def ns(name: str, ttl: int, target: str, *, question: bytes = b"") -> bytes:
    return record(name, NS, ttl, compressed_name(target, question), question=question)


def soa(
    name: str,
    ttl: int,
    mname: str,
    rname: str,
    serial: int,
    refresh: int,
    retry: int,
    expire: int,
    minimum: int,
    *,
    question: bytes = b"",
) -> bytes:
    rdata = (
        compressed_name(mname, question)
        + compressed_name(rname, question)
        + _SOA_NUMBERS.pack(serial & 0xFFFFFFFF, refresh, retry, expire, minimum)
    )
    return record(name, SOA, ttl, rdata, question=question)


def txt(name: str, ttl: int, strings: Sequence[str], *, question: bytes = b"") -> bytes:
    """A TXT record; strings longer than 255 bytes are split into several character-strings."""
    chunks: list[bytes] = []
    for text in strings:
        raw = text.encode("utf-8")
        chunks.extend(raw[i : i + 255] for i in range(0, len(raw), 255))
        if not raw:
            chunks.append(b"")
    rdata = b"".join(bytes((len(chunk),)) + chunk for chunk in chunks)
    if len(rdata) > MAX_MESSAGE - 512:
        raise ValueError("TXT data too long for a DNS message")
    return record(name, TXT, ttl, rdata, question=question)


# --- building messages ------------------------------------------------------------------------


def response(
    query: Query,
    rcode: int,
    answers: Sequence[bytes],
    authority: Sequence[bytes],
    additional: Sequence[bytes],
    *,
    aa: bool,
    ecs_scope: int | None,
    max_size: int,
) -> bytes:
    """The answer to ``query``: header, echoed question, sections, OPT if the query had EDNS.

    Over ``max_size`` (``query.udp_limit()`` on UDP, :data:`MAX_MESSAGE` on
    TCP) the additional records (optional glue, RFC 2181 §9) are dropped
    first; if it still does not fit, the TC bit is set and the answer and
    authority sections are left empty so the client retries over TCP.
    ``ecs_scope`` is the Client Subnet scope prefix to echo (None: 0).
    Extended rcodes (BADVERS) need a query with EDNS; without, SERVFAIL.
    """
    if rcode > 15 and query.edns is None:
        rcode = SERVFAIL
    flags = FLAG_QR | (query.flags & _ECHOED_FLAGS) | (FLAG_AA if aa else 0) | (rcode & 0xF)
    question = query.qname_wire + _TWO_SHORTS.pack(query.qtype, query.qclass)
    opt = _opt_record(query.edns, rcode, ecs_scope) if query.edns is not None else b""
    extra = len(additional) + (1 if opt else 0)
    head = _HEADER.pack(query.id, flags, 1, len(answers), len(authority), extra)
    message = b"".join((head, question, *answers, *authority, *additional, opt))
    if len(message) <= max_size:
        return message
    if additional:
        return response(query, rcode, answers, authority, (), aa=aa, ecs_scope=ecs_scope, max_size=max_size)
    head = _HEADER.pack(query.id, flags | FLAG_TC, 1, 0, 0, 1 if opt else 0)
    return head + question + opt


def _opt_record(edns: Edns, rcode: int, ecs_scope: int | None) -> bytes:
    """Our OPT record: our payload size, version 0, the extended rcode, DO echoed, ECS echoed."""
    ttl = ((rcode >> 4) << 24) | (_DO_BIT if edns.do else 0)
    options = b""
    ecs = edns.ecs
    if ecs is not None:
        scope = 0 if ecs_scope is None or ecs.source_prefix == 0 else min(ecs_scope, 32 if ecs.family == 1 else 128)
        value = _ECS_HEADER.pack(ecs.family, ecs.source_prefix, scope) + ecs.address_wire
        options = _OPTION_HEADER.pack(OPTION_CLIENT_SUBNET, len(value)) + value
    return b"\x00" + _RR_FIXED.pack(OPT, MAX_UDP_PAYLOAD, ttl, len(options)) + options


def formerr(data: bytes) -> bytes | None:
    """A FORMERR reply to a message that failed to parse, or None (drop) when there is nothing to reply to.

    Nothing is sent for messages shorter than a header (no id) or with the QR
    bit set (a response: answering could start a loop between two servers).
    The reply carries no question, since the question may be what is broken.
    """
    if len(data) < 12:
        return None
    query_id, flags = _TWO_SHORTS.unpack_from(data)
    if flags & FLAG_QR:
        return None
    return _HEADER.pack(query_id, FLAG_QR | (flags & _ECHOED_FLAGS) | FORMERR, 0, 0, 0, 0)


def with_id(message: bytes, query_id: int) -> bytes:
    """``message`` with its id replaced (a cached answer reused for another query)."""
    return _POINTER.pack(query_id) + message[2:]
