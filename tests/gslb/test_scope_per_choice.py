"""An answer that depends on the client's subnet is scoped to the subnet, whichever client built its records first.

The records of a chosen site are built once per (name, type, site) and
shared by every client placed there. Whether an answer depends on the
subnet (the ``draw`` of shedding or ``weighted``) is a property of the
*client's* decision, not of the records: a New York client (no draw) and a
Paris client whose site sheds load and drew New York get the same records,
but only the Paris answer must carry the source prefix as its scope, so a
resolver does not reuse a drawn answer for the whole geo block. Checked on
the full resolve and on the DNS server's fast path, in both orders.
"""

from __future__ import annotations

from typing import Any

import dns.message

from edgefleet.gslb.dns import DnsServer
from tests.gslb.test_site_answers import wire
from tests.gslb.test_zone import (
    SITES,
    addresses,
    ask,
    domain_document,
    make_resolver,
    node_document,
    scope_of,
    site_document,
)

PARIS_SUBNETS = [f"127.1.{index}.0" for index in range(64)]  # Paris by the geo table's 127.0.0.0/8
NEW_YORK = "127.0.5.0"  # New York by its /24


def shedding_fleet() -> list[dict[str, Any]]:
    """The test fleet with Paris over its shedding threshold: Paris clients draw between Paris and the next site."""
    documents: list[dict[str, Any]] = []
    for name, (country, lat, lon, v4, _) in SITES.items():
        status: dict[str, Any] = {"load": 0.99} if name == "par-edge" else {}
        documents.append(site_document(name, country, lat, lon, **status))
        documents += [node_document(f"{name}-{i}", name, [f"{v4}.{i}"]) for i in (1, 2)]
    documents.append(domain_document(shedThreshold=0.5, shedShare=0.5))
    return documents


def paris_scopes_of_new_york_answers(new_york_first: bool) -> set[int]:
    resolver = make_resolver(shedding_fleet())
    if new_york_first:
        assert scope_of(ask(resolver, ecs=(NEW_YORK, 24))) == 24
    scopes = set()
    for subnet in PARIS_SUBNETS:
        message = ask(resolver, ecs=(subnet, 24))
        if addresses(message) == ["127.0.5.1", "127.0.5.2"]:
            scopes.add(scope_of(message))
    return scopes


def test_a_drawn_answer_is_scoped_to_the_subnet_in_either_order() -> None:
    assert paris_scopes_of_new_york_answers(new_york_first=False) == {24}
    assert paris_scopes_of_new_york_answers(new_york_first=True) == {24}


def test_the_fast_path_scopes_drawn_answers_to_the_subnet_too() -> None:
    server = DnsServer(make_resolver(shedding_fleet()), "127.0.0.1", 0)
    server.answer(wire(ecs=NEW_YORK), "127.0.0.1", udp=False)
    drawn = 0
    for index, subnet in enumerate(PARIS_SUBNETS):
        reply = server.answer(wire(ecs=subnet, query_id=index), "127.0.0.1", udp=False)
        assert reply is not None
        message = dns.message.from_wire(reply)
        if addresses(message) == ["127.0.5.1", "127.0.5.2"]:
            drawn += 1
            assert scope_of(message) == 24
    assert 0 < drawn < len(PARIS_SUBNETS)
