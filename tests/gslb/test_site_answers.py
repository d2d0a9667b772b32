"""DNS answers counted per site: on every path (packet cache, query shapes, full resolve), only when sent.

The server is never bound: :meth:`DnsServer.answer` is fed wire queries
directly, from a Paris, a New York and a Tokyo client network of the test geo
table (``tests/gslb/test_zone.py``), and the counts are compared with the
sites the answers really name. The cloud's collector is checked on its
Prometheus text.
"""

from __future__ import annotations

import dns.edns
import dns.message
from prometheus_client import CollectorRegistry, generate_latest

from edgefleet.cloud.gslbmetrics import GslbCollector
from edgefleet.gslb.dns import MAX_SITE_SLOTS, DnsServer
from edgefleet.gslb.rrl import RrlSettings
from tests.gslb.test_zone import NAME, ORIGIN, make_resolver

PARIS, NEW_YORK, TOKYO = "127.0.1.0", "127.0.5.0", "127.0.7.0"
SITE_OF = {PARIS: "par-edge", NEW_YORK: "nyc-edge", TOKYO: "tyo-edge"}
SITE_PREFIX = {"127.0.1": "par-edge", "127.0.5": "nyc-edge", "127.0.7": "tyo-edge"}


def wire(name: str = NAME, *, ecs: str | None = None, rdtype: str = "A", query_id: int = 1) -> bytes:
    options: list[dns.edns.Option] = [dns.edns.ECSOption(ecs, 24)] if ecs else []
    message = dns.message.make_query(name, rdtype, use_edns=0, options=options)
    message.id = query_id
    return message.to_wire()


def answered_site(reply: bytes | None) -> str | None:
    """The site whose nodes a reply names (by the nodes' address prefix), None for no address."""
    assert reply is not None
    found = {
        SITE_PREFIX[item.address.rsplit(".", 1)[0]]
        for rrset in dns.message.from_wire(reply).answer
        if rrset.rdtype == 1
        for item in rrset
    }
    assert len(found) <= 1
    return found.pop() if found else None


def test_answers_are_counted_per_site_on_the_cached_shaped_and_fresh_paths() -> None:
    servers = [DnsServer(make_resolver(), "127.0.0.1", 0), DnsServer(make_resolver(), "127.0.0.1", 0, cache_size=0)]
    for server in servers:
        expected: dict[str, int] = {}
        for round_ in range(3):  # first a full resolve or a new shape, then shapes and the packet cache
            for index, subnet in enumerate([PARIS, NEW_YORK, TOKYO, "127.0.1.0", "127.0.9.0"]):
                reply = server.answer(wire(ecs=subnet, query_id=round_ * 10 + index), "127.0.0.1", udp=True)
                site = answered_site(reply)
                assert site is not None
                expected[site] = expected.get(site, 0) + 1
            reply = server.answer(wire(), "127.0.0.1", udp=True)  # no ECS: placed by the sender (Paris)
            assert answered_site(reply) == "par-edge"
            expected["par-edge"] += 1
        assert server.answers_by_site() == expected
        assert expected["par-edge"] == 4 * 3 and expected["nyc-edge"] == expected["tyo-edge"] == 3


def test_answers_naming_no_site_and_rate_limited_answers_are_not_counted() -> None:
    server = DnsServer(make_resolver(), "127.0.0.1", 0, rrl=RrlSettings(rate=2, slip=0, exempt=()))
    for query in (wire(ORIGIN, rdtype="SOA"), wire(f"nothing.{ORIGIN}"), wire(NAME, rdtype="TXT")):
        assert server.answer(query, "192.0.2.7", udp=False) is not None
    assert server.answers_by_site() == {}
    sent = [server.answer(wire(query_id=i), "192.0.2.7", udp=True, now=100.0) for i in range(5)]
    assert sum(reply is not None for reply in sent) == 2  # the rest are over the rate and dropped
    assert server.answers_by_site() == {"par-edge": 2}


def test_site_slots_are_bounded() -> None:
    server = DnsServer(make_resolver(), "127.0.0.1", 0)
    slots = {server.site_slot(f"site-{index}") for index in range(MAX_SITE_SLOTS + 10)}
    assert len(server.site_answers) == MAX_SITE_SLOTS
    assert server.site_slot("site-0") == 1 and server.site_slot("site-1") == 2 and server.site_slot(None) == 0
    assert 0 in slots and max(slots) == MAX_SITE_SLOTS - 1


def test_the_collector_exports_answers_per_site_and_the_dns_counters() -> None:
    server = DnsServer(make_resolver(), "127.0.0.1", 0)
    for subnet in (PARIS, PARIS, TOKYO):
        server.answer(wire(ecs=subnet), "127.0.0.1", udp=True)
    server.answer(b"\x00\x01garbage!!!!!!", "127.0.0.1", udp=True)
    registry = CollectorRegistry()
    registry.register(GslbCollector(server))
    text = generate_latest(registry).decode()
    assert 'edgefleet_gslb_answers_total{site="par-edge"} 2.0' in text
    assert 'edgefleet_gslb_answers_total{site="tyo-edge"} 1.0' in text
    assert "edgefleet_gslb_queries_total 4.0" in text
    assert "edgefleet_gslb_packet_cache_hits_total 1.0" in text
    assert "edgefleet_gslb_formerr_total 1.0" in text
    assert 'edgefleet_gslb_responses_total{rcode="0"} 3.0' in text
