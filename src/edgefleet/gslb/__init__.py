"""The global server load balancer: geo table, routing policy, fleet state, DNS.

How the parts fit, from a DNS question to an answer:

- :mod:`~edgefleet.gslb.geo` places a client address (the EDNS Client Subnet,
  else the resolver's address) with a longest-prefix match over a CSV (or
  MaxMind) table of CIDR -> country, region, coordinates.
- :mod:`~edgefleet.gslb.fleet` keeps the Sites, Nodes and Domains the GSLB
  needs, as the API returns them, and turns them into plain values: which
  Domain a name belongs to, its candidate sites with their answerable nodes
  (data-plane health votes, draining), its routing policy.
- :mod:`~edgefleet.gslb.policy` picks the site (geo, latency, weighted,
  failover, with load shedding) and the node answers (rendezvous hashing).
  It is a pure function of its arguments: the ``edgefleet route`` CLI, the
  DNS server and the 302 redirector all call the same ``choose``.
- :mod:`~edgefleet.gslb.dnswire`, :mod:`~edgefleet.gslb.zone` and
  :mod:`~edgefleet.gslb.dns` are the DNS wire format, the authoritative zone
  logic and the asyncio server shell.

``errors``, ``geo`` (apart from reading the table file the operator names),
``policy`` and ``fleet`` import no I/O modules; ``tests/gslb/test_purity.py``
keeps it so.
"""
