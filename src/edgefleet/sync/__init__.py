"""The cloud-edge sync protocol: messages, per-node views and sans-I/O sessions.

This package is pure: no sockets, no clocks, no files. The hub (in
``edgefleet.cloud.hub``) and the agent (``edgefleet.edge.hubclient``) are thin
asyncio shells that feed it messages and send what it returns.

Transport
=========
A WebSocket at ``GET /edge/v1/sync`` that the agent dials out to, with
``Authorization: Bearer <node credential>``. Every frame is one text frame
holding one JSON object with a ``"type"``. Size limits (security limits,
enforced by the parser and by the WebSocket layer): 8 MiB for a cloud->agent
frame, 1 MiB for an agent->cloud frame. A malformed, oversized or
out-of-order message closes *that* session with code 1008 (policy) or 1009
(too big) and a logged reason; it affects no other session.

The view
========
The cloud computes for each node the set of objects it needs (see
:mod:`edgefleet.sync.views`): its own Node, the Workloads selecting it, the
Domains its site serves, its Site and that site's parent Sites, the peer
Nodes of its site and the Nodes of its parent sites. Objects are *projected*
before they are sent (a peer Node carries spec, labels and ``status.phase``
only; the node's own Node carries no status), so a heartbeat of one node does
not wake its peers. Keys are store keys (``/registry/nodes/par-edge-1``);
each held object carries ``rev``, the store ``mod_revision`` of the source
object.

The node keeps, in its local SQLite, ``epoch`` (the store epoch it synced
from), ``revision`` (R: the store revision its view is complete up to) and
its holdings (key -> rev, object). The *digest* of holdings is
``sha256("".join(f"{key}\\x00{rev}\\n" for key, rev in sorted(holdings)))``,
hex, first 32 characters; the empty view's digest is that of the empty string.

Messages
========
agent -> cloud::

    {"type": "hello", "protocol": 1, "node": NAME, "epoch": E, "revision": R,
     "digest": D, "count": N, "agentVersion": V}
    {"type": "inventory", "items": [[KEY, REV], ...]}     # only after need-inventory
    {"type": "ack", "seq": S}                            # batch S is committed locally
    {"type": "status", "status": {...}}                  # Node status fields, coalesced
    {"type": "logs", "id": I, "data": TEXT, "error": null | MESSAGE}

cloud -> agent::

    {"type": "welcome", "protocol": 1, "hub": HUB_ID, "epoch": E, "heartbeatSeconds": H}
    {"type": "need-inventory"}
    {"type": "batch", "seq": S, "revision": R, "reset": false,
     "put": [{"key": K, "rev": REV, "object": {...}}, ...], "delete": [K, ...]}
    {"type": "logs-request", "id": I, "workload": NAME, "tail": LINES}

Handshake (cloud side, after ``hello``)
=======================================
The cloud answers ``welcome``, then, with V its current view at its
revision H:

1. ``hello.epoch`` differs from the store's epoch (a restored or replaced
   store) and the node holds something: one batch with ``reset: true``
   carrying all of V. The node replaces its view; the workload supervisor
   reconciles by *content* (a workload whose template did not change is not
   restarted), never by revision.
2. Same epoch: ``V_old = {k: rev in V if rev <= hello.revision}``. If
   ``digest(V_old) == hello.digest`` and ``len(V_old) == hello.count`` the
   node holds exactly the unchanged part: one batch puts ``{k in V: rev > R}``
   and deletes nothing. With nothing changed that batch is empty: a whole
   reconnect is hello + welcome + empty batch + ack, a few hundred bytes
   whatever the view size.
3. Otherwise (objects were deleted or left the view while the node was away,
   or the node's store is damaged): ``need-inventory``; the node sends its
   holdings' keys and revs; the cloud sends one batch: put every k in V whose
   rev differs from the node's, delete every held key not in V.

History is never needed: the diff is computed from the current view, so a
compacted store history never forces a full resend (DESIGN.md said it would;
the digest makes it unnecessary).

Streaming
=========
After the handshake the cloud pushes view changes as batches in revision
order. Per session a *pending* map (key -> latest put or delete) coalesces
changes (latest wins), so it is bounded by the view size however slow the
node is. At most ``window`` batches are unacknowledged; the next batch is
cut from pending when an ack arrives. Each batch's ``revision`` is the hub's
revision when it was cut; the node commits the batch's objects and the new
revision in one local transaction *before* it acks. A lost ack or a dropped
connection loses nothing: on reconnect the handshake diff resends whatever
the node does not have. Duplicate or stale batches (``seq`` not greater than
the last applied) are acknowledged again without being re-applied.
"""

PROTOCOL_VERSION = 1
