"""A CloudSession and an AgentSession wired through an in-memory network: the scenarios of the protocol."""

from __future__ import annotations

import copy

import pytest

from edgefleet.sync.cloud import LogsReply, StatusReport
from edgefleet.sync.errors import ProtocolError

from .fleet import (
    Cloud,
    EdgeNode,
    Link,
    big_fleet,
    domain_doc,
    key,
    node_doc,
    site_doc,
    small_fleet,
    sync,
    workload_doc,
)


def synced(size: int = 200) -> tuple[Cloud, EdgeNode]:
    """A cloud whose par-1 holds ``size`` objects, and par-1 synced and disconnected."""
    cloud = Cloud()
    big_fleet(cloud, "par-1", size)
    node = EdgeNode("par-1")
    sync(cloud, node).cut()
    assert node.matches(cloud.view("par-1"))
    return cloud, node


def test_first_sync_of_an_empty_node() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    node = EdgeNode("par-1")
    link = sync(cloud, node)
    assert node.matches(cloud.view("par-1"))
    assert (node.epoch, node.revision) == (cloud.epoch, cloud.revision)
    assert link.types("up") == ["hello", "ack"]
    assert link.types("down") == ["welcome", "batch"]


def test_reconnect_with_nothing_changed_costs_a_few_hundred_bytes() -> None:
    cloud, node = synced(200)
    link = sync(cloud, node)
    print(f"\nreconnect of a node holding 200 objects, nothing changed: {link.bytes()} bytes")
    assert link.bytes() < 2000
    assert link.types("down") == ["welcome", "batch"] and link.put_keys() == []


def test_a_hub_restart_does_not_resync_anyone() -> None:
    cloud, node = synced(200)
    cloud.restore(cloud.epoch, cloud.docs, start_revision=cloud.revision)  # a new hub process loads the store
    link = sync(cloud, node)
    assert link.put_keys() == [] and link.bytes() < 2000


def test_reconnect_after_updates_only_sends_the_changed_objects() -> None:
    cloud, node = synced(200)
    updated = [key("workloads", f"w-{i}") for i in range(5)] + [key("nodes", "par-2")]
    for k in updated[:5]:
        cloud.edit(k, "spec.template.args", ["new"])
    cloud.edit(key("nodes", "par-2"), "status.phase", "NotReady")
    link = sync(cloud, node)
    assert sorted(link.put_keys()) == sorted(updated)
    assert "need-inventory" not in link.types("down")  # the check batch's ack settled it
    assert link.messages("down", "batch")[-1].get("check") is True
    assert node.matches(cloud.view("par-1"))


def test_created_updated_and_deleted_while_disconnected() -> None:
    cloud, node = synced(50)
    cloud.put(key("workloads", "created"), workload_doc("created", "role=cache"))
    cloud.edit(key("workloads", "w-1"), "spec.template.args", ["updated"])
    cloud.delete(key("workloads", "w-2"))
    # One object lives and dies entirely while the node is away: the node never hears of it.
    cloud.put(key("workloads", "ephemeral"), workload_doc("ephemeral", "role=cache"))
    cloud.edit(key("workloads", "ephemeral"), "spec.template.args", ["x"])
    cloud.delete(key("workloads", "ephemeral"))
    link = sync(cloud, node)
    assert node.matches(cloud.view("par-1"))
    # The deletion can only be found from the node's word: need-inventory, then the diff.
    assert link.types("down")[:3] == ["welcome", "batch", "need-inventory"]
    assert "inventory" in link.types("up")
    assert sorted(link.put_keys()) == [key("workloads", "created"), key("workloads", "w-1")]
    assert link.deleted_keys() == [key("workloads", "w-2")]


def test_an_object_created_and_deleted_while_away_costs_nothing() -> None:
    cloud, node = synced(50)
    cloud.put(key("workloads", "ephemeral"), workload_doc("ephemeral", "role=cache"))
    cloud.delete(key("workloads", "ephemeral"))
    link = sync(cloud, node)
    assert link.put_keys() == [] and "need-inventory" not in link.types("down")


def test_changes_to_other_nodes_objects_do_not_reach_the_node() -> None:
    cloud, node = synced(200)
    before = cloud.revision
    for i in range(250):
        cloud.edit(key("workloads", f"other-{i % 50}"), "spec.template.args", [str(i)])  # selects role=dns
        cloud.edit(key("nodes", "lyo-1"), "metadata.labels", {"role": "cache", "n": str(i)})  # another site
        heartbeat = copy.deepcopy(cloud.docs[key("nodes", "par-2")])  # a peer's heartbeat
        heartbeat["status"]["lastHeartbeat"] = f"2024-01-01T00:{i // 60:02}:{i % 60:02}Z"
        cloud.put(key("nodes", "par-2"), heartbeat)
        cloud.edit(key("domains", "origin-shield"), "spec.cachePolicy.defaultTtl", i)  # parent tier only
    assert cloud.revision - before == 1000
    link = sync(cloud, node)
    assert link.put_keys() == [] and link.deleted_keys() == []
    assert link.bytes() < 2000


def test_a_duplicated_batch_is_acked_again_not_applied_again() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    node = EdgeNode("par-1")
    link = sync(cloud, node)
    cloud.edit(key("workloads", "cache"), "spec.template.args", ["v2"])
    batch = link.down[0]
    link.down.append(batch)  # the network delivers it twice
    link.pump()
    assert node.applied_batches == 2  # the first sync and this batch, once
    assert [m["seq"] for m in link.messages("up", "ack")] == [1, 2, 2]  # the cloud ignores the repeated ack
    assert link.session.in_flight_count == 0
    assert node.matches(cloud.view("par-1"))


def test_reordered_batches_close_the_session_and_the_reconnect_repairs_it() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    node = EdgeNode("par-1")
    link = sync(cloud, node, window=4, max_batch_bytes=300)  # small batches: one change each
    cloud.edit(key("workloads", "cache"), "spec.template.args", ["v2"])
    cloud.edit(key("workloads", "par-only"), "spec.template.args", ["v2"])
    assert len(link.down) == 2
    link.down.reverse()
    with pytest.raises(ProtocolError, match=r"batch (\d+) arrived but \d+ was expected") as caught:
        link.deliver_down()
    assert caught.value.close_code == 1008
    link.cut()
    sync(cloud, node)
    assert node.matches(cloud.view("par-1"))


def test_lost_acks_are_repaired_by_resending_exactly_what_is_missing() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    node = EdgeNode("par-1")
    link = sync(cloud, node, max_batch_bytes=300)
    changed = [key("workloads", "cache"), key("workloads", "par-only"), key("domains", "shop")]
    for k in changed:
        cloud.edit(k, "metadata.labels", {"v": "2"})
    assert len(link.down) == 3  # three batches in flight
    link.deliver_down()  # the first is applied; its ack and the other two batches are lost
    link.cut()
    assert node.store[changed[0]] == cloud.view("par-1")[changed[0]]
    again = sync(cloud, node)
    assert sorted(again.put_keys()) == sorted(changed[1:])
    assert "need-inventory" not in again.types("down")
    assert node.matches(cloud.view("par-1"))


def test_an_interrupted_first_sync_resumes_where_it_stopped() -> None:
    cloud = Cloud()
    big_fleet(cloud, "par-1", 100)
    node = EdgeNode("par-1")
    link = Link(cloud, node, window=4, max_batch_bytes=2000)
    link.deliver_up()  # hello: the first batches are cut from a pending map holding the whole view
    link.deliver_down()  # welcome
    link.deliver_down()
    link.deliver_down()  # two batches applied, their acks and the rest lost
    link.cut()
    received = set(node.store)
    assert 0 < len(received) < 100
    again = sync(cloud, node)
    assert sorted(again.put_keys()) == sorted(set(cloud.view("par-1")) - received)
    assert "need-inventory" not in again.types("down")
    assert all("check" not in batch for batch in again.messages("down", "batch"))  # the hello was exact
    assert node.matches(cloud.view("par-1"))


def test_a_reconnect_in_the_middle_of_a_batch_applies_nothing_twice_and_misses_nothing() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    node = EdgeNode("par-1")
    link = sync(cloud, node)
    node.crash_before_commit = True  # the agent gets the batch, the connection dies before the commit
    cloud.edit(key("workloads", "cache"), "spec.template.args", ["v2"])
    cloud.delete(key("workloads", "par-only"))
    link.pump()
    link.cut()
    assert node.store[key("workloads", "cache")] != cloud.view("par-1")[key("workloads", "cache")]
    node.crash_before_commit = False
    sync(cloud, node)
    assert node.matches(cloud.view("par-1"))


def test_a_restored_store_with_the_same_content_costs_nothing() -> None:
    cloud, node = synced(100)
    cloud.restore("epoch-2", cloud.docs, start_revision=7)  # other revisions, same content
    link = sync(cloud, node)
    assert link.put_keys() == [] and "need-inventory" not in link.types("down")
    assert node.epoch == "epoch-2" and node.revision == cloud.revision


def test_a_restored_store_resends_only_what_differs() -> None:
    cloud, node = synced(100)
    before = dict(node.store)
    docs = dict(cloud.docs)
    docs[key("workloads", "w-3")] = workload_doc("w-3", "role=cache", args=("restored",))
    del docs[key("workloads", "w-4")]
    docs[key("domains", "restored")] = domain_doc("restored", "")
    cloud.restore("epoch-2", docs, start_revision=1)
    link = sync(cloud, node)
    assert link.types("down")[:2] == ["welcome", "need-inventory"]
    assert sorted(link.put_keys()) == [key("domains", "restored"), key("workloads", "w-3")]
    assert link.deleted_keys() == [key("workloads", "w-4")]
    assert node.matches(cloud.view("par-1")) and node.epoch == "epoch-2"
    # Content-equal objects are still the very same versions: the supervisor restarts nothing.
    unchanged = set(before) - {key("workloads", "w-3"), key("workloads", "w-4")}
    assert all(node.store[k].rev == before[k].rev for k in unchanged)


def test_a_node_whose_labels_change_gets_workloads_added_and_removed() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    node = EdgeNode("par-1")
    link = sync(cloud, node)
    cloud.edit(key("nodes", "par-1"), "metadata.labels", {"role": "dns"})
    link.pump()
    held = set(node.store)
    assert key("workloads", "dns") in held and key("workloads", "cache") not in held
    assert node.matches(cloud.view("par-1"))


def test_a_site_whose_parents_change() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    cloud.put(key("sites", "ams-parent"), site_doc("ams-parent", labels={"tier": "parent"}))
    cloud.put(key("nodes", "ams-1"), node_doc("ams-1", "ams-parent"))
    node = EdgeNode("par-1")
    link = sync(cloud, node)
    assert key("nodes", "fra-1") in node.store
    cloud.edit(key("sites", "par-edge"), "spec.parents", ["ams-parent"])
    link.pump()
    held = set(node.store)
    assert {key("sites", "ams-parent"), key("nodes", "ams-1")} <= held
    assert not {key("sites", "fra-parent"), key("nodes", "fra-1")} & held
    assert node.matches(cloud.view("par-1"))


def test_peer_heartbeats_cause_no_traffic() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    node = EdgeNode("par-1")
    link = sync(cloud, node)
    sent = len(link.delivered)
    for second in range(100):
        for peer in ("par-2", "par-3", "fra-1"):
            heartbeat = copy.deepcopy(cloud.docs[key("nodes", peer)])
            heartbeat["status"]["lastHeartbeat"] = f"2024-01-01T00:01:{second % 60:02}Z"
            cloud.put(key("nodes", peer), heartbeat)
    link.pump()
    assert len(link.delivered) == sent
    cloud.edit(key("nodes", "par-2"), "status.phase", "NotReady")  # the phase does travel
    link.pump()
    assert link.put_keys()[-1] == key("nodes", "par-2")


def test_updates_while_the_window_is_full_are_coalesced() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    node = EdgeNode("par-1")
    link = sync(cloud, node, window=4, max_batch_bytes=300)
    link.delivered.clear()
    for i in range(4):  # four batches in flight, none acknowledged
        cloud.edit(key("domains", "shop"), "spec.cachePolicy.defaultTtl", i)
    assert link.session.in_flight_count == 4 and len(link.down) == 4
    for i in range(100):
        cloud.edit(key("workloads", "cache"), "spec.template.args", [str(i)])
    assert link.session.pending_count == 1
    link.pump()
    puts = [k for k in link.put_keys() if k == key("workloads", "cache")]
    assert puts == [key("workloads", "cache")]
    assert node.store[key("workloads", "cache")].object["spec"]["template"]["args"] == ["99"]
    assert node.matches(cloud.view("par-1"))


def test_pending_never_exceeds_what_the_view_and_the_node_hold() -> None:
    cloud = Cloud()
    big_fleet(cloud, "par-1", 100)
    node = EdgeNode("par-1")
    link = sync(cloud, node, window=1, max_batch_bytes=400)
    cloud.edit(key("domains", "shop"), "spec.cachePolicy.defaultTtl", 1)  # fills the window
    for round_ in range(5):
        for i in range(60):
            k = key("workloads", f"w-{i}")
            if (i + round_) % 3 == 0:
                cloud.delete(k)
            else:
                cloud.put(k, workload_doc(f"w-{i}", "role=cache", args=(str(round_),)))
            bound = len(set(cloud.view("par-1")) | set(node.store))
            assert link.session.pending_count <= bound
    link.pump()
    assert node.matches(cloud.view("par-1"))


def test_status_and_logs_travel_both_ways() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    node = EdgeNode("par-1")
    link = sync(cloud, node)
    link.agent.report_status({"phase": "Ready", "lastHeartbeat": "2024-01-01T00:00:00Z"})
    link.agent.report_status({"lastHeartbeat": "2024-01-01T00:00:10Z", "agentVersion": "0.1.0"})
    request = link.session.request_logs("cache", 50)
    link.flush()
    link.pump()
    events = link.session.events()
    reports = [e.status for e in events if isinstance(e, StatusReport)]
    replies = [(e.id, e.data) for e in events if isinstance(e, LogsReply)]
    assert reports == [{"phase": "Ready", "lastHeartbeat": "2024-01-01T00:00:10Z", "agentVersion": "0.1.0"}]
    assert replies == [(request, "50 lines of cache")]


def test_a_large_resync_streams_in_batches_within_the_limit() -> None:
    cloud = Cloud()
    big_fleet(cloud, "par-1", 300)
    node = EdgeNode("par-1")
    link = sync(cloud, node, max_batch_bytes=4096)
    batches = link.messages("down", "batch")
    assert len(batches) > 5
    assert max(len(text.encode()) for way, text in link.delivered if way == "down") <= 4096
    assert node.matches(cloud.view("par-1"))


def test_a_session_for_another_node_is_refused() -> None:
    cloud = Cloud()
    small_fleet(cloud)
    link = Link(cloud, EdgeNode("par-1"))
    link.session.node_name = "par-2"  # the credential said par-2
    with pytest.raises(ProtocolError, match="not the authenticated node"):
        link.pump()
