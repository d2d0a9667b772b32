"""A parent site's cache trusts the nodes of its child sites (their addresses are in ``site.trusted``).

The view comes from the hub's own index (:class:`edgefleet.sync.views.FleetIndex`), so the test covers
the projection the parent really receives, not a hand-made one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgefleet.api.documents import StoredDocument
from edgefleet.api.workloads import WorkloadTemplate
from edgefleet.cache.upstream.forwarding import fleet_addresses
from edgefleet.cache.upstream.tiers import TierTrust
from edgefleet.edge.cacheconfig import render_cache_config
from edgefleet.sync.views import FleetIndex

CACHE = WorkloadTemplate.model_validate(
    {"builtin": "cache", "command": ["edgefleet", "cache"], "ports": [{"name": "http", "port": 8081}]}
)
WORKDIR = Path("/srv/edge/workloads/cache/abc")


def document(kind: str, name: str, spec: dict[str, Any]) -> StoredDocument:
    return {"apiVersion": "edgefleet.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def fleet() -> FleetIndex:
    """Parent site fra (fra-1), its child edge sites par (par-1, par-2) and lyo (lyo-1), and ams on its own."""
    objects = [
        document("Site", "fra", {"region": "eu", "parents": []}),
        document("Site", "par", {"region": "eu", "parents": ["fra"]}),
        document("Site", "lyo", {"region": "eu", "parents": ["fra"]}),
        document("Site", "ams", {"region": "eu", "parents": []}),
        document("Node", "fra-1", {"site": "fra", "addresses": ["10.0.0.1"]}),
        document("Node", "par-1", {"site": "par", "addresses": ["10.0.1.1", "2001:db8::11"]}),
        document("Node", "par-2", {"site": "par", "addresses": ["10.0.1.2"]}),
        document("Node", "lyo-1", {"site": "lyo", "addresses": ["10.0.2.1"]}),
        document("Node", "ams-1", {"site": "ams", "addresses": ["10.0.3.1"]}),
    ]
    index = FleetIndex()
    index.load([(f"/registry/{o['kind'].lower()}s/{o['metadata']['name']}", 1, o) for o in objects], 1)
    return index


def test_the_parent_trusts_its_child_sites_nodes_and_no_one_else() -> None:
    view = [obj.object for obj in fleet().view("fra-1").values()]
    config = render_cache_config("fra-1", view, CACHE, WORKDIR)
    assert config.site is not None
    assert config.site.trusted == ["10.0.0.1/32", "10.0.1.1/32", "10.0.1.2/32", "10.0.2.1/32", "2001:db8::11/128"]
    # The children are trusted, not peers or parents: the parent never forwards to them.
    assert [peer.name for peer in config.site.peers] == ["fra-1"] and config.site.parents == []
    trust = TierTrust(fleet_addresses(config))
    assert trust.trusts("10.0.1.2") and trust.trusts("2001:db8::11") and trust.trusts("::ffff:10.0.2.1")
    assert not trust.trusts("10.0.3.1") and not trust.trusts("203.0.113.9")


def test_an_edge_node_does_not_trust_the_other_edge_sites() -> None:
    view = [obj.object for obj in fleet().view("par-1").values()]
    config = render_cache_config("par-1", view, CACHE, WORKDIR)
    assert config.site is not None
    assert "10.0.2.1/32" not in config.site.trusted and "10.0.0.1/32" in config.site.trusted
