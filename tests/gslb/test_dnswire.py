"""DNS wire format: every parse rule, and what the builders write, read back by dnspython."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from edgefleet.gslb import dnswire
from edgefleet.gslb.dnswire import ClientSubnet, Query, parse_query
from edgefleet.gslb.errors import DnsFormatError

QNAME = b"\x04Demo\x03cdn\x09edgefleet\x04test\x00"


def header(qid: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)


def question(name: bytes = QNAME, qtype: int = 1, qclass: int = 1) -> bytes:
    return name + struct.pack(">HH", qtype, qclass)


def opt(udp: int = 1232, version: int = 0, do: bool = False, options: bytes = b"", owner: bytes = b"\x00") -> bytes:
    ttl = (version << 16) | (0x8000 if do else 0)
    return owner + struct.pack(">HHIH", 41, udp, ttl, len(options)) + options


def ecs(family: int, source: int, address: bytes, scope: int = 0) -> bytes:
    value = struct.pack(">HBB", family, source, scope) + address
    return struct.pack(">HH", 8, len(value)) + value


def query_with_opt(*options: bytes, **opt_fields: int | bool) -> bytes:
    return header(ar=1) + question() + opt(options=b"".join(options), **opt_fields)  # type: ignore[arg-type]


def dnspython_query(name: str = "Demo.cdn.edgefleet.test", rdtype: str = "A", **kwargs: object) -> bytes:
    return dns.message.make_query(name, rdtype, **kwargs).to_wire()  # type: ignore[arg-type]


# --- parsing what a real client sends ------------------------------------------------------


def test_parses_a_plain_query_keeping_the_question_case() -> None:
    query = parse_query(dnspython_query())
    assert query.qname == "demo.cdn.edgefleet.test"
    assert query.qname_wire == QNAME
    assert (query.qtype, query.qclass, query.edns) == (1, 1, None)
    assert query.flags & dnswire.FLAG_RD
    assert query.opcode == 0


def test_parses_edns_with_client_subnet_v4() -> None:
    data = dnspython_query(
        use_edns=0, payload=4096, want_dnssec=True, options=[dns.edns.ECSOption("198.51.100.77", 22)]
    )
    edns = parse_query(data).edns
    assert edns is not None
    assert (edns.udp_size, edns.do, edns.version) == (4096, True, 0)
    assert edns.ecs == ClientSubnet(1, 22, "198.51.100.0", bytes([198, 51, 100]), len(data) - 3)
    assert data[edns.ecs.address_offset :] == bytes([198, 51, 100])  # where the server's fast path reads it


def test_parses_client_subnet_v6() -> None:
    data = dnspython_query(use_edns=0, options=[dns.edns.ECSOption("2001:db8:2:ffff::1", 48)])
    edns = parse_query(data).edns
    assert edns is not None and edns.ecs is not None
    assert (edns.ecs.family, edns.ecs.source_prefix, edns.ecs.address) == (2, 48, "2001:db8:2::")


def test_client_subnet_with_source_zero_has_no_address() -> None:
    data = query_with_opt(ecs(1, 0, b""))
    edns = parse_query(data).edns
    assert edns is not None and edns.ecs == ClientSubnet(1, 0, "0.0.0.0", b"", len(data))


def test_unknown_edns_options_are_skipped() -> None:
    cookie = struct.pack(">HH", 10, 8) + bytes(8)
    edns = parse_query(query_with_opt(cookie, ecs(1, 24, bytes([192, 0, 2])))).edns
    assert edns is not None and edns.ecs is not None and edns.ecs.address == "192.0.2.0"


def test_reads_the_edns_version() -> None:
    edns = parse_query(query_with_opt(version=1)).edns
    assert edns is not None and edns.version == 1


def test_other_additional_records_are_walked_past_with_compressed_owners() -> None:
    record = b"\xc0\x0c" + struct.pack(">HHIH", 16, 1, 0, 2) + b"\x01x"  # owner: pointer to the question
    data = header(ar=2) + question() + record + opt()
    query = parse_query(data)
    assert query.edns is not None and query.edns.udp_size == 1232


def test_root_question() -> None:
    query = parse_query(header() + question(b"\x00", qtype=2))
    assert (query.qname, query.qname_wire) == ("", b"\x00")


def test_odd_bytes_in_labels_are_escaped_so_they_cannot_pass_for_a_served_name() -> None:
    name = b"\x0bdemo.cdn\x00\xffX\x04test\x00"  # one label holding a dot, NUL, 0xff
    query = parse_query(header() + question(name))
    assert query.qname == "demo\\046cdn\\000\\255x.test"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (header(qd=0), "questions"),
        (header(qd=2) + question() + question(), "questions"),
        (header(flags=0x8000) + question(), "response"),
        (header(an=1) + question(), "answer or authority"),
        (header(ns=1) + question(), "answer or authority"),
        (header() + b"\x04demo", "past the end"),
        (header() + b"\x04demo\x00\x00", "type and class"),
        (header() + question() + b"\x00", "after the question"),
        (header() + question(b"\xc0\x0c"), "compression"),
        (header() + question(b"\x40" + bytes(64) + b"\x00"), "extended label"),
        (header() + b"\x3f" + b"a" * 10, "past the end"),
        (header() + question((b"\x3f" + b"a" * 63) * 4 + b"\x00"), "255"),
        (header(ar=1) + question(), "past the end"),
        (header(ar=1) + question() + opt()[:-3], "cut short"),
        (header(ar=1) + question() + b"\x00" + struct.pack(">HHIH", 41, 512, 0, 9) + bytes(4), "past the end"),
        (header(ar=2) + question() + opt() + opt(), "more than one OPT"),
        (header(ar=1) + question() + opt(owner=b"\x01a\x00"), "root"),
        (header(ar=1) + question() + opt() + b"\x00", "after the last record"),
        (query_with_opt(b"\x00\x08\x00"), "option header"),
        (query_with_opt(struct.pack(">HH", 8, 10) + bytes(4)), "runs past"),
        (query_with_opt(ecs(1, 24, b"\x01\x02\x03"), ecs(1, 24, b"\x01\x02\x03")), "more than one Client Subnet"),
        (query_with_opt(struct.pack(">HH", 8, 2) + b"\x00\x01"), "shorter than 4"),
        (query_with_opt(ecs(3, 0, b"")), "family 3"),
        (query_with_opt(ecs(1, 33, bytes(5))), "longer than 32"),
        (query_with_opt(ecs(2, 129, bytes(17))), "longer than 128"),
        (query_with_opt(ecs(1, 24, bytes(3), scope=24)), "scope prefix must be 0"),
        (query_with_opt(ecs(1, 24, bytes(4))), "4 bytes for a /24"),
        (query_with_opt(ecs(1, 24, bytes(2))), "2 bytes for a /24"),
        (query_with_opt(ecs(1, 22, bytes([10, 0, 0b00000010]))), "bits set past"),
        (query_with_opt(ecs(2, 33, bytes([0x20, 1, 0xD, 0xB8, 0x40]))), "bits set past"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_malformed_queries_raise_format_errors_with_the_id(data: bytes, why: str) -> None:
    with pytest.raises(DnsFormatError, match=why) as caught:
        parse_query(data)
    assert caught.value.query_id == 0x1234


def test_a_message_shorter_than_a_header_has_no_id() -> None:
    with pytest.raises(DnsFormatError) as caught:
        parse_query(b"\x12\x34\x01")
    assert caught.value.query_id is None


@pytest.mark.parametrize("ahead", [0, 6], ids=["self", "forward"])
def test_compression_pointers_must_point_backwards(ahead: int) -> None:
    at = 12 + len(question())  # offset of the additional record's owner
    pointer = struct.pack(">H", 0xC000 | (at + ahead))
    data = header(ar=1) + question() + pointer + struct.pack(">HHIH", 16, 1, 0, 0)
    with pytest.raises(DnsFormatError, match="backwards"):
        parse_query(data)


def test_compression_loops_through_earlier_pointers_are_refused() -> None:
    # Record 1's owner is a label then a pointer to record 2's owner, which points back to record 1.
    first = 12 + len(question())
    rest = struct.pack(">HHIH", 16, 1, 0, 0)
    second = first + 4 + len(rest)
    data = header(ar=2) + question() + b"\x01a" + struct.pack(">H", 0xC000 | second) + rest
    data += struct.pack(">H", 0xC000 | first) + rest
    with pytest.raises(DnsFormatError, match="backwards"):
        parse_query(data)


def test_a_pointer_back_into_its_own_name_is_refused() -> None:
    # The owner is label "a" then a pointer to that label: backwards from the pointer, but not before the
    # name's start, so following it would read the same label again (it used to, until 255 bytes).
    at = 12 + len(question())
    data = header(ar=1) + question() + b"\x01a" + struct.pack(">H", 0xC000 | at) + struct.pack(">HHIH", 16, 1, 0, 0)
    with pytest.raises(DnsFormatError, match="before the name it ends"):
        parse_query(data)


def pointer_chain(hops: int) -> bytes:
    """A query whose only additional record is owned by a name reached through ``hops`` pointers."""
    root = 12 + len(question()) + 11  # in the RDATA of a first record, which the parser skips
    links = [root, *(root + 1 + 2 * link for link in range(hops - 1))]  # each link points at the one before
    skipped = b"\x00" + b"".join(struct.pack(">H", 0xC000 | target) for target in links[:-1])
    owner = struct.pack(">H", 0xC000 | links[-1])
    records = b"\x00" + struct.pack(">HHIH", 16, 1, 0, len(skipped)) + skipped
    return header(ar=2) + question() + records + owner + struct.pack(">HHIH", 16, 1, 0, 0)


def test_a_name_may_follow_up_to_the_hop_limit_of_pointers() -> None:
    assert parse_query(pointer_chain(dnswire.MAX_POINTER_HOPS)).qname == "demo.cdn.edgefleet.test"


def test_a_longer_chain_of_backward_pointers_is_refused() -> None:
    with pytest.raises(DnsFormatError, match=f"more than {dnswire.MAX_POINTER_HOPS} compression pointers"):
        parse_query(pointer_chain(dnswire.MAX_POINTER_HOPS + 1))


def test_at_most_four_additional_records_besides_opt() -> None:
    record = b"\xc0\x0c" + struct.pack(">HHIH", 16, 1, 0, 0)
    allowed = header(ar=5) + question() + record * 2 + opt() + record * 2
    assert parse_query(allowed).edns is not None
    too_many = header(ar=6) + question() + record * 2 + opt() + record * 3
    with pytest.raises(DnsFormatError, match="more than 4 additional records besides OPT"):
        parse_query(too_many)


def test_compressed_names_longer_than_255_bytes_are_refused() -> None:
    # Each owner is 4 labels of 63 (+ a pointer to the previous owner), so the second one expands past 255.
    first = 12 + len(question())
    owner = (b"\x3f" + b"a" * 63) * 3 + b"\x00"
    rest = struct.pack(">HHIH", 16, 1, 0, 0)
    data = header(ar=2) + question() + owner + rest + b"\x3f" + b"b" * 63 + struct.pack(">H", 0xC000 | first) + rest
    with pytest.raises(DnsFormatError, match="255"):
        parse_query(data)


# --- limits ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("advertised", "limit"), [(None, 512), (100, 512), (1000, 1000), (4096, 1232)])
def test_udp_limit(advertised: int | None, limit: int) -> None:
    data = header() + question() if advertised is None else query_with_opt(udp=advertised)
    assert parse_query(data).udp_limit() == limit


# --- records -------------------------------------------------------------------------------------


def build(
    query: Query,
    answers: list[bytes],
    authority: tuple[bytes, ...] = (),
    additional: tuple[bytes, ...] = (),
    *,
    rcode: int = 0,
    scope: int | None = None,
    max_size: int = 65535,
) -> dns.message.Message:
    wire = dnswire.response(query, rcode, answers, authority, additional, aa=True, ecs_scope=scope, max_size=max_size)
    return dns.message.from_wire(wire)


def test_every_record_type_reads_back_in_dnspython() -> None:
    query = parse_query(dnspython_query(rdtype="ANY"))
    q = query.qname_wire
    records = [
        dnswire.a("demo.cdn.edgefleet.test", 30, "192.0.2.1", question=q),
        dnswire.aaaa("demo.cdn.edgefleet.test", 30, "2001:db8::1", question=q),
        dnswire.cname("www.customer.example", 60, "demo.cdn.edgefleet.test", question=q),
        dnswire.ns("cdn.edgefleet.test", 3600, "ns1.cdn.edgefleet.test", question=q),
        dnswire.soa(
            "cdn.edgefleet.test",
            3600,
            "ns1.cdn.edgefleet.test",
            "hostmaster.cdn.edgefleet.test",
            2024010101,
            7200,
            600,
            604800,
            30,
            question=q,
        ),
        dnswire.txt("whoami.cdn.edgefleet.test", 0, ["client 192.0.2.1", "x" * 300, ""], question=q),
    ]
    texts = [rrset.to_text() for rrset in build(query, records).answer]
    assert texts == [
        "Demo.cdn.edgefleet.test. 30 IN A 192.0.2.1",  # the owner points at the question's letters
        "Demo.cdn.edgefleet.test. 30 IN AAAA 2001:db8::1",
        "www.customer.example. 60 IN CNAME Demo.cdn.edgefleet.test.",
        "cdn.edgefleet.test. 3600 IN NS ns1.cdn.edgefleet.test.",
        "cdn.edgefleet.test. 3600 IN SOA ns1.cdn.edgefleet.test. hostmaster.cdn.edgefleet.test. "
        "2024010101 7200 600 604800 30",
        f'whoami.cdn.edgefleet.test. 0 IN TXT "client 192.0.2.1" "{"x" * 255}" "{"x" * 45}" ""',
    ]


def test_names_are_compressed_against_the_question() -> None:
    query = parse_query(dnspython_query("WWW.Customer.Example"))
    q = query.qname_wire
    owner = dnswire.a("www.customer.example", 30, "192.0.2.1", question=q)
    assert owner[:2] == b"\xc0\x0c"  # the whole question name
    alias = dnswire.cname("www.customer.example", 30, "cdn.customer.example", question=q)
    assert alias.endswith(b"\x03cdn\xc0\x10")  # "customer.example" starts at 12 + len("\x03www")
    other = dnswire.a("demo.cdn.edgefleet.test", 30, "192.0.2.1", question=q)
    assert other.startswith(dnswire.name_wire("demo.cdn.edgefleet.test"))
    message = build(query, [alias, owner])
    assert [rrset.to_text() for rrset in message.answer] == [
        "WWW.Customer.Example. 30 IN CNAME cdn.Customer.Example.",  # names point at the question's letters
        "WWW.Customer.Example. 30 IN A 192.0.2.1",
    ]


def test_the_root_is_never_replaced_by_a_pointer() -> None:
    assert dnswire.compressed_name(".", QNAME) == b"\x00"
    assert dnswire.compressed_name("example.org", QNAME) == dnswire.name_wire("example.org")


@pytest.mark.parametrize("bad", ["a" * 64 + ".test", "a..b", ".".join(["abcdefg"] * 40)])
def test_invalid_names_are_refused_when_building(bad: str) -> None:
    with pytest.raises(ValueError):
        dnswire.name_wire(bad)


def test_address_records_check_the_family() -> None:
    with pytest.raises(ValueError):
        dnswire.a("x.test", 1, "2001:db8::1")
    with pytest.raises(ValueError):
        dnswire.aaaa("x.test", 1, "192.0.2.1")


# --- messages ---------------------------------------------------------------------------------------


def test_response_header_echoes_the_query() -> None:
    data = bytearray(dnspython_query())  # RD set by dnspython
    data[3] |= 0x10  # CD
    query = parse_query(bytes(data))
    message = build(query, [])
    assert message.id == query.id
    assert message.flags & dns.flags.QR and message.flags & dns.flags.AA
    assert message.flags & dns.flags.RD and message.flags & dns.flags.CD
    assert not message.flags & dns.flags.RA
    assert message.question[0].to_text() == "Demo.cdn.edgefleet.test. IN A"
    assert message.edns == -1  # no OPT: the query had none


def test_client_subnet_is_echoed_with_the_scope() -> None:
    query = parse_query(dnspython_query(use_edns=0, want_dnssec=True, options=[dns.edns.ECSOption("198.51.100.0", 24)]))
    message = build(query, [], scope=16)
    assert message.edns == 0 and message.payload == dnswire.MAX_UDP_PAYLOAD
    assert message.ednsflags & dns.flags.DO
    (option,) = message.options
    assert isinstance(option, dns.edns.ECSOption)
    assert (option.address, option.srclen, option.scopelen) == ("198.51.100.0", 24, 16)


def test_client_subnet_scope_is_zero_without_a_scope_or_for_source_zero() -> None:
    query = parse_query(dnspython_query(use_edns=0, options=[dns.edns.ECSOption("2001:db8::", 32)]))
    (option,) = build(query, [], scope=None).options
    assert isinstance(option, dns.edns.ECSOption) and option.scopelen == 0
    zero = parse_query(query_with_opt(ecs(1, 0, b"")))
    (option,) = build(zero, [], scope=24).options
    assert isinstance(option, dns.edns.ECSOption) and (option.srclen, option.scopelen) == (0, 0)


def test_badvers_uses_the_extended_rcode() -> None:
    query = parse_query(query_with_opt(version=1))
    message = build(query, [], rcode=dnswire.BADVERS)
    assert message.rcode() == dns.rcode.BADVERS and message.edns == 0


def test_an_extended_rcode_without_edns_becomes_servfail() -> None:
    message = build(parse_query(dnspython_query()), [], rcode=dnswire.BADVERS)
    assert message.rcode() == dns.rcode.SERVFAIL


def many_a_records(query: Query, count: int) -> list[bytes]:
    return [dnswire.a(query.qname, 30, f"192.0.2.{i}", question=query.qname_wire) for i in range(count)]


def test_truncation_sets_tc_and_empties_the_sections() -> None:
    query = parse_query(dnspython_query())
    answers = many_a_records(query, 40)  # 40 x 16 bytes: over 512
    soa = dnswire.soa("cdn.edgefleet.test", 30, "ns1.cdn.edgefleet.test", "h.cdn.edgefleet.test", 1, 2, 3, 4, 5)
    wire = dnswire.response(query, 0, answers, [soa], [], aa=True, ecs_scope=None, max_size=query.udp_limit())
    assert len(wire) <= 512
    message = dns.message.from_wire(wire)
    assert message.flags & dns.flags.TC
    assert (message.answer, message.authority) == ([], [])
    assert message.question[0].to_text() == "Demo.cdn.edgefleet.test. IN A"
    fits = build(query, many_a_records(query, 20), max_size=512)
    assert not fits.flags & dns.flags.TC and len(fits.answer[0]) == 20


def test_truncation_keeps_the_opt_record_and_caps_at_1232() -> None:
    query = parse_query(dnspython_query(use_edns=0, payload=4096, options=[dns.edns.ECSOption("192.0.2.0", 24)]))
    wire = dnswire.response(
        query, 0, many_a_records(query, 80), [], [], aa=True, ecs_scope=24, max_size=query.udp_limit()
    )
    message = dns.message.from_wire(wire)
    assert message.flags & dns.flags.TC and message.edns == 0 and len(message.options) == 1
    whole = build(query, many_a_records(query, 80), max_size=dnswire.MAX_MESSAGE)
    assert len(whole.answer[0]) == 80


def test_additional_records_are_dropped_before_truncating() -> None:
    query = parse_query(dnspython_query())
    glue = many_a_records(query, 30)
    message = build(query, many_a_records(query, 2), additional=tuple(glue), max_size=512)
    assert not message.flags & dns.flags.TC
    assert len(message.answer[0]) == 2 and message.additional == []


def test_formerr_reply() -> None:
    data = dnspython_query()
    reply = dnswire.formerr(data[:14])
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert message.id == int.from_bytes(data[:2], "big")
    assert message.rcode() == dns.rcode.FORMERR and message.flags & dns.flags.QR
    assert message.question == []


def test_formerr_drops_what_it_cannot_answer() -> None:
    assert dnswire.formerr(b"\x12\x34\x00") is None
    assert dnswire.formerr(header(flags=0x8000) + question()) is None


def test_with_id_replaces_only_the_id() -> None:
    wire = dnswire.response(parse_query(dnspython_query()), 0, [], [], [], aa=True, ecs_scope=None, max_size=512)
    assert dnswire.with_id(wire, 7)[:2] == b"\x00\x07" and dnswire.with_id(wire, 7)[2:] == wire[2:]


def test_notify_opcode_is_parsed_for_the_resolver_to_refuse() -> None:
    data = bytearray(dnspython_query())
    data[2] = (data[2] & 0x87) | (dns.opcode.NOTIFY << 3)
    assert parse_query(bytes(data)).opcode == dns.opcode.NOTIFY
