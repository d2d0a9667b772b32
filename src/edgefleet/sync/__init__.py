"""The cloud-edge sync protocol: messages, per-node views and sans-I/O sessions.

This package is pure: no sockets, no clocks, no files. The hub (in
``edgefleet.cloud.hub``) and the agent (``edgefleet.edge.hubclient``) are thin
asyncio shells that feed it messages and send what it returns. Its place in
the system: docs/architecture.md, "Sync protocol"; this docstring is the
protocol's specification.

Modules: :mod:`~edgefleet.sync.errors` (one exception hierarchy),
:mod:`~edgefleet.sync.messages` (typed messages, strict decoders with size
limits), :mod:`~edgefleet.sync.views` (which objects each node needs, and
how they change), :mod:`~edgefleet.sync.cloud` and
:mod:`~edgefleet.sync.agent` (the two session state machines).

Transport
=========
A WebSocket at ``GET /edge/v1/sync`` that the agent dials out to, with
``Authorization: Bearer <node credential>``. Every frame is one text frame
holding one JSON object with a ``"type"``, except that an agent whose upgrade
carries ``X-Edgefleet-Compression: zlib`` receives cloud->agent messages of
16 KiB or more as one binary frame of zlib-compressed JSON text
(:func:`~edgefleet.sync.messages.compress_frame`; the inflated size is held
to the same limit). WebSocket permessage-deflate is not used: its
per-connection context cost half of an idle hub's memory per node. The hub
sends no WebSocket pings; it closes a session that sent nothing for three
heartbeats (agents report every heartbeat, and ping the hub themselves). Size limits (security limits,
enforced by the parser and by the WebSocket layer): 8 MiB for a cloud->agent
frame, 1 MiB for an agent->cloud frame. No message has to grow with the
view: batches are cut at about 1 MiB and an inventory is sent in parts. A
malformed, oversized or out-of-order message closes *that* session with code
1008 (policy) or 1009 (too big) and a logged reason; it affects no other
session.

Several hub replicas may serve the same store; an agent knows a list of
their base URLs (from ``edge join`` or the ClusterInfo of its view) and
dials them in random order, failing over between them. A replica over its
limits refuses the upgrade with HTTP 503 and ``Retry-After``, or releases a
session with close code 4000 and the reason ``rebalance [URL]`` naming a
less-loaded replica (:data:`~edgefleet.sync.messages.CLOSE_REBALANCE`); the
agent's side is :mod:`edgefleet.edge.hubclient`. Nothing in the handshake
depends on which replica answers.

The view
========
The cloud computes for each node the set of objects it needs (see
:mod:`edgefleet.sync.views`): its own Node, the Workloads selecting it, the
Domains its site serves, its Site and that site's parent Sites, the peer
Nodes of its site and the Nodes of its parent sites (and, for trust only,
the names and addresses of its child sites' Nodes), the open Purges and
Prefetches of its Domains, and every ClusterInfo (cluster-wide settings such
as the hub replicas' URLs, which the agent dials next: see
:mod:`edgefleet.api.clusterinfo`). Objects are *projected*
before they are sent (a peer Node carries spec, labels and ``status.phase``
only; the node's own Node carries no status), so a heartbeat of one node does
not wake its peers. Keys are store keys (``/registry/nodes/par-edge-1``).

Each held object carries ``rev``, its *content version*: the first 13 hex
digits of the SHA-256 of its canonical JSON (UTF-8, keys sorted, separators
``,`` and ``:``, non-ASCII kept), read as an integer. Equal content, equal
rev, whichever hub replica, hub restart or store epoch produced it. (A first
draft used the store ``mod_revision``: it moves on every status write, which
the projection hides, so a node could never hold the rev the cloud has
without being sent every heartbeat; and a "revision of the last projected
change" dies with the hub process, so every hub restart would resync every
node.)

The cloud also knows, per view object, ``since``: a store revision at or
after which its projected content last changed (exact for changes the hub
saw live, the object's ``mod_revision`` for objects it loaded at start:
never too early). ``since`` is never sent; it only narrows what may have
changed after a node's revision.

The node keeps, in its local SQLite, ``epoch`` (the store epoch it synced
from), ``revision`` (R: the hub revision its view was caught up to) and
its holdings (key -> rev, object). R and epoch are hints that make the
handshake cheap; correctness rests on the digest and the inventory only.
The *digest* of holdings is
``sha256("".join(f"{key}\\x00{rev}\\n" for key, rev in sorted(holdings)))``
over UTF-8, hex, first 32 characters; the empty view's digest is that of
the empty string.

Messages
========
agent -> cloud::

    {"type": "hello", "protocol": 1, "node": NAME, "epoch": E, "revision": R,
     "digest": D, "count": N, "agentVersion": V, "features": ["metrics"]}
                                                # "features" optional (absent: none); the cloud
                                                # sends a feature's messages only to agents naming it
    {"type": "inventory", "items": [[KEY, REV], ...], "more": false}
                                                # after need-inventory; split in parts,
                                                # "more": true on all but the last
    {"type": "ack", "seq": S}                   # batch S (and all before) committed locally
    {"type": "ack", "seq": S, "digest": D}      # the same, for a batch with "check": true;
                                                # D is the digest of the holdings after it
    {"type": "status", "status": {...}}         # Node status fields (wire names), coalesced
    {"type": "logs", "id": I, "data": TEXT, "error": null | MESSAGE}
    {"type": "metrics", "id": I, "data": TEXT, "truncated": BOOL, "error": null | MESSAGE}
                                                # Prometheus text, cut after a whole line at maxBytes

cloud -> agent::

    {"type": "welcome", "protocol": 1, "hub": HUB_ID, "epoch": E, "heartbeatSeconds": H}
    {"type": "need-inventory"}
    {"type": "batch", "seq": S, "revision": R,
     "put": [{"key": K, "rev": REV, "object": {...}}, ...], "delete": [K, ...]}
                                                # plus "check": true, see the handshake
    {"type": "logs-request", "id": I, "workload": NAME, "tail": LINES}
    {"type": "metrics-request", "id": I, "target": "agent" | "cache" | "cache/NAME", "maxBytes": N}
                                                # feature "metrics" (the cloud's Prometheus relay,
                                                # edgefleet.cloud.metricsrelay); a reply to an id the
                                                # cloud gave up on is dropped, to one never sent closes

Fields are exactly these (an unknown or missing field is an error); ``seq``
starts at 1 in every session; a key appears at most once per batch.

Handshake (cloud side, after ``hello``)
=======================================
The cloud answers ``welcome``, then, with V its current view at its
revision H:

1. ``digest(V) == hello.digest`` and ``len(V) == hello.count``: the node
   holds exactly V, whatever its epoch or revision. One empty batch at H.
   A whole reconnect is hello + welcome + empty batch + ack, a few hundred
   bytes whatever the view size; also after a hub restart, on another hub
   replica, or after a store restore that kept the content.
2. ``hello.epoch`` differs from the store's (a restored or replaced store)
   and the node holds something: R means nothing here. ``need-inventory``;
   the node sends its holdings' keys and revs; the cloud puts every k in V
   whose rev differs from the node's and deletes every held key not in V.
   Objects whose content did not change are not resent: the node reconciles
   by content, and a workload whose template did not change is not
   restarted.
3. Otherwise, with R = ``hello.revision`` (0 if the epoch differs):
   ``V_old = {k in V: since <= R}`` and ``C = V - V_old``, the objects
   created or changed after R. The cloud puts C.

   a. ``digest(V_old) == hello.digest`` and ``len(V_old) == hello.count``:
      the node held exactly V_old, and holds V once C is committed.
   b. Otherwise (the common case of objects *updated* while the node was
      away: it holds their older revs, which V_old cannot predict; or keys
      left the view, or entered it with an older ``since``; or the node's
      store is damaged), the batch that completes C carries
      ``"check": true`` and is the last one cut until its ack, whose digest
      must equal the digest of what the cloud believes the node now holds.
      Equal: streaming goes on, so updates cost nothing more than their
      objects. Different: ``need-inventory``, then as in 2.

(A first draft answered 3b with need-inventory at once, i.e. an inventory
of the whole view on every reconnect after any update, and sent case 2 as
one ``reset`` batch carrying all of V, which does not fit 8 MiB for a node
serving 100k domains and replaced the node's view wholesale.)

History is never needed: the diff is computed from the current view, so a
compacted store history never forces a full resend (the original brief said
it would; the digest makes it unnecessary: docs/architecture.md, "Departures
from the original brief").

Streaming
=========
After the handshake the cloud pushes view changes as batches in revision
order. Per session a *pending* map (key -> latest put or delete) coalesces
changes (latest wins). The cloud tracks what the node will hold after every
sent batch and drops a pending change that returns a key to it, or deletes a
key the node will not hold, so pending is bounded by the view size (plus
keys the node holds that are leaving it) however slow the node is. At most
``window`` batches are unacknowledged; batches are cut from pending, oldest
change first, each within about 1 MiB, when an ack makes room. Each batch's
``revision`` is chosen so that, once it is committed, the node holds every
view object whose ``since`` is at or below it: the hub's revision when it
was cut if it leaves nothing pending, else just below the oldest change it
leaves behind (never below the node's previous revision). So a connection
lost after some batches of a long resync resumes, on reconnect, with exactly
the missing objects (case 3a). The node commits the batch's objects and the
new revision in one local transaction *before* it acks; an ack acknowledges
every earlier batch too. An ack of a batch never sent is a protocol error; an ack of one already
acknowledged is ignored. A lost ack or a dropped connection loses nothing:
on reconnect the handshake resends whatever the node does not have.
Duplicate or stale batches (``seq`` not greater than the last applied) are
acknowledged again without being re-applied; a gap in ``seq`` is a protocol
error (applying out of order could put back an older object).
"""

PROTOCOL_VERSION = 1
