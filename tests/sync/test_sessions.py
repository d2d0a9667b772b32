"""Each session alone: messages in, events and messages out, and the state rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgefleet.sync import agent as agent_module
from edgefleet.sync.agent import AgentSession, ApplyBatch, LocalState, LogsRequested, Welcomed
from edgefleet.sync.cloud import Acked, CloudSession, CloudState
from edgefleet.sync.errors import ProtocolError, SessionStateError
from edgefleet.sync.messages import (
    MAX_AGENT_MESSAGE_BYTES,
    Ack,
    Batch,
    Hello,
    Inventory,
    Logs,
    LogsRequest,
    NeedInventory,
    Status,
    ViewObject,
    Welcome,
    encode,
)
from edgefleet.sync.views import digest

EMPTY = digest([])


def obj(name: str, value: int = 0, since: int = 1) -> ViewObject:
    return ViewObject.of(f"/registry/workloads/{name}", {"kind": "Workload", "spec": {"v": value}}, since)


def hello(count: int = 0, digest_: str = EMPTY, epoch: str = "e1", revision: int = 0) -> str:
    return encode(Hello("par-1", epoch, revision, digest_, count, "0.1.0"))


def cloud_session(**options: Any) -> CloudSession:
    return CloudSession("par-1", epoch="e1", hub_id="hub-a", heartbeat_seconds=10, **options)


def started(view: dict[str, ViewObject], **options: Any) -> tuple[CloudSession, list[dict[str, Any]]]:
    session = cloud_session(**options)
    session.receive(hello())
    session.start(view, 10)
    return session, [json.loads(text) for text in session.data_to_send()]


# --- CloudSession -------------------------------------------------------------------


def test_the_cloud_answers_a_fresh_node_with_its_whole_view() -> None:
    view = {o.key: o for o in (obj("a"), obj("b"))}
    session = cloud_session()
    assert session.state is CloudState.AWAIT_HELLO and not session.needs_view
    session.receive(hello())
    assert session.needs_view and session.hello is not None and session.hello.agent_version == "0.1.0"
    session.start(view, 10)
    sent = [json.loads(text) for text in session.data_to_send()]
    assert sent[0] == {"type": "welcome", "protocol": 1, "hub": "hub-a", "epoch": "e1", "heartbeatSeconds": 10}
    assert sent[1]["type"] == "batch" and sent[1]["revision"] == 10
    assert {item["key"] for item in sent[1]["put"]} == set(view)
    session.receive(encode(Ack(1)))
    assert session.events() == [Acked(1, 10)]
    assert session.data_to_send() == []


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([encode(Ack(1))], "ack is not allowed in state await-hello"),
        ([hello(), hello()], "hello is not allowed in state need-view"),
        ([hello(), encode(Inventory(()))], "inventory is not allowed in state need-view"),
        ([hello(), encode(Ack(1))], "ack for batch 1, which was never sent"),
        ([hello(), encode(Logs(7, "x"))], "logs reply 7 answers no pending request"),
        (["not json"], "not valid JSON"),
    ],
)
def test_the_cloud_refuses_messages_out_of_place(messages: list[str], reason: str) -> None:
    session = cloud_session()
    with pytest.raises(ProtocolError, match=reason):
        for text in messages:
            session.receive(text)
    assert session.state is CloudState.CLOSED
    with pytest.raises(SessionStateError):
        session.receive(hello())
    session.update({"/registry/workloads/a": obj("a")}, 11)  # ignored, not an error: the shell may race


def test_acks_are_cumulative_and_repeats_are_ignored() -> None:
    session, _ = started({}, max_batch_bytes=200)  # batch 1: the empty handshake batch
    session.update({"/registry/workloads/a": obj("a", 1, 11), "/registry/workloads/b": obj("b", 1, 11)}, 11)
    assert len(session.data_to_send()) == 2 and session.in_flight_count == 3  # one object per batch
    session.receive(encode(Ack(3)))
    assert [e.seq for e in session.events() if isinstance(e, Acked)] == [1, 2, 3]
    session.receive(encode(Ack(1)))  # a repeat: harmless
    assert session.events() == [] and session.in_flight_count == 0
    with pytest.raises(ProtocolError, match="never sent"):
        session.receive(encode(Ack(4)))


def test_the_window_limits_unacknowledged_batches() -> None:
    session, _ = started({}, window=2, max_batch_bytes=200)
    session.receive(encode(Ack(1)))
    for i in range(5):
        session.update({f"/registry/workloads/w{i}": obj(f"w{i}", since=11 + i)}, 11 + i)
    assert len(session.data_to_send()) == 2 and session.in_flight_count == 2
    session.receive(encode(Ack(3)))
    assert len(session.data_to_send()) == 2


def test_a_check_batch_settles_the_handshake_or_asks_for_the_inventory() -> None:
    view = {o.key: o for o in (obj("a", since=5), obj("b", since=20))}
    session = cloud_session()
    # The node claims revision 10 but holds "a" at another version: not the state V_old predicts.
    session.receive(hello(count=1, digest_=digest([("/registry/workloads/a", 1)]), revision=10))
    session.start(view, 30)
    sent = [json.loads(text) for text in session.data_to_send()]
    assert [m["type"] for m in sent] == ["welcome", "batch"]
    assert sent[1]["check"] is True and [i["key"] for i in sent[1]["put"]] == ["/registry/workloads/b"]
    session.update({"/registry/workloads/c": obj("c", since=31)}, 31)
    assert session.data_to_send() == []  # nothing is cut while the check is out
    session.receive(encode(Ack(1, digest([("/registry/workloads/a", 1), ("/registry/workloads/b", 7)]))))
    assert [json.loads(t)["type"] for t in session.data_to_send()] == ["need-inventory"]
    assert session.state is CloudState.AWAIT_INVENTORY
    session.receive(encode(Inventory((("/registry/workloads/a", 1),), more=True)))
    session.receive(encode(Inventory((("/registry/workloads/b", view["/registry/workloads/b"].rev),))))
    batch = json.loads(session.data_to_send()[0])
    assert sorted(i["key"] for i in batch["put"]) == ["/registry/workloads/a", "/registry/workloads/c"]
    assert batch["delete"] == [] and "check" not in batch


@pytest.mark.parametrize(
    ("node_holds", "ack", "reason"), [(1, Ack(1), "needs a digest"), (0, Ack(1, EMPTY), "must not")]
)
def test_an_ack_has_a_digest_exactly_when_the_batch_asked(node_holds: int, ack: Ack, reason: str) -> None:
    session = cloud_session()
    session.receive(hello(count=node_holds))  # holding 1 object with the empty digest: not exact
    session.start({}, 30)
    session.data_to_send()
    with pytest.raises(ProtocolError, match=reason):
        session.receive(encode(ack))


def test_an_inventory_listing_a_key_twice_is_refused() -> None:
    session = cloud_session()
    session.receive(hello(count=3, epoch="old"))  # another epoch: straight to need-inventory
    session.start({}, 5)
    assert [json.loads(t)["type"] for t in session.data_to_send()] == ["welcome", "need-inventory"]
    session.receive(encode(Inventory((("/registry/a", 1),), more=True)))
    with pytest.raises(ProtocolError, match="listed twice"):
        session.receive(encode(Inventory((("/registry/a", 1),))))


def test_a_repeated_status_is_skipped_and_a_changed_one_is_not() -> None:
    session, _ = started({})
    idle = encode(Status({"agentVersion": "1", "workloads": {}}))
    session.receive(idle)
    session.receive(idle)
    session.receive(idle)
    assert [type(event).__name__ for event in session.events()] == ["StatusReport"], "repeats cost nothing"
    session.receive(encode(Status({"agentVersion": "2"})))
    session.receive(idle)
    assert [event.status["agentVersion"] for event in session.events()] == ["2", "1"]  # type: ignore[union-attr]


def test_logs_requests_wait_for_the_welcome() -> None:
    session = cloud_session()
    request = session.request_logs("cache", 10)
    session.receive(hello())
    assert session.data_to_send() == []
    session.start({}, 1)
    assert [json.loads(t)["type"] for t in session.data_to_send()] == ["welcome", "logs-request", "batch"]
    with pytest.raises(SessionStateError):
        session.start({}, 1)
    session.receive(encode(Logs(request, "", "no such workload")))
    assert [getattr(e, "error", None) for e in session.events()] == ["no such workload"]


# --- AgentSession ---------------------------------------------------------------------


def agent_session(holdings: dict[str, int] | None = None) -> AgentSession:
    return AgentSession("par-1", local=LocalState("e1", 4, holdings or {}, "0.1.0"))


def welcomed(holdings: dict[str, int] | None = None) -> AgentSession:
    session = agent_session(holdings)
    session.hello()
    assert session.receive(encode(Welcome("hub-a", "e2", 10))) == [Welcomed("hub-a", "e2", 10)]
    return session


def test_the_agent_says_hello_with_its_holdings() -> None:
    session = agent_session({"/registry/a": 3})
    assert session.data_to_send() == []
    sent = json.loads(session.hello())
    assert sent == {
        "type": "hello",
        "protocol": 1,
        "node": "par-1",
        "epoch": "e1",
        "revision": 4,
        "digest": digest([("/registry/a", 3)]),
        "count": 1,
        "agentVersion": "0.1.0",
    }
    with pytest.raises(SessionStateError):
        session.hello()


def test_the_agent_hands_out_batches_and_acks_once_applied() -> None:
    session = welcomed({"/registry/old": 1})
    a = obj("a")
    events = session.receive(encode(Batch(1, 20, (a,), ("/registry/old",), check=True)))
    assert events == [ApplyBatch(1, 20, (a,), ("/registry/old",), "e2")]
    assert session.data_to_send() == []  # not committed yet
    session.applied(1)
    assert json.loads(session.data_to_send()[0]) == {"type": "ack", "seq": 1, "digest": digest([(a.key, a.rev)])}
    assert dict(session.holdings) == {a.key: a.rev}
    assert (session.epoch, session.revision) == ("e2", 20)
    assert session.receive(encode(Batch(1, 20, (a,)))) == []  # a duplicate: acked again, not handed out
    assert json.loads(session.data_to_send()[0]) == {"type": "ack", "seq": 1}
    with pytest.raises(SessionStateError):
        session.applied(2)


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([encode(Batch(1, 1))], "batch before welcome"),
        ([encode(Welcome("h", "e", 1)), encode(Welcome("h", "e", 1))], "a second welcome"),
        ([encode(Welcome("h", "e", 1)), encode(Batch(2, 1))], "batch 2 arrived but 1 was expected"),
    ],
)
def test_the_agent_refuses_messages_out_of_place(messages: list[str], reason: str) -> None:
    session = agent_session()
    session.hello()
    with pytest.raises(ProtocolError, match=reason):
        for text in messages:
            session.receive(text)
    with pytest.raises(SessionStateError):
        session.receive(messages[0])


def test_receive_before_hello_is_a_local_bug() -> None:
    with pytest.raises(SessionStateError):
        agent_session().receive(encode(Welcome("h", "e", 1)))


def test_an_inventory_waits_for_the_batch_being_applied() -> None:
    session = welcomed({"/registry/x": 9})
    session.receive(encode(Batch(1, 5, (obj("a"),))))
    assert session.receive(encode(NeedInventory())) == []
    assert session.data_to_send() == []
    session.applied(1)
    sent = [json.loads(t) for t in session.data_to_send()]
    assert [m["type"] for m in sent] == ["ack", "inventory"]
    assert sent[1]["items"] == [["/registry/workloads/a", obj("a").rev], ["/registry/x", 9]]


def test_a_large_inventory_is_sent_in_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_module, "INVENTORY_PART_BYTES", 1000)
    holdings = {f"/registry/domains/d{i:04}": i for i in range(200)}
    session = welcomed(holdings)
    session.receive(encode(NeedInventory()))
    parts = [json.loads(t) for t in session.data_to_send()]
    assert len(parts) > 5 and all(len(json.dumps(p)) < 1200 for p in parts)
    assert [p["more"] for p in parts] == [True] * (len(parts) - 1) + [False]
    assert dict(tuple(i) for p in parts for i in p["items"]) == holdings


def test_status_is_coalesced_and_checked() -> None:
    session = welcomed()
    session.report_status({"phase": "Ready", "message": "a"})
    session.report_status({"message": "b"})
    assert [json.loads(t) for t in session.data_to_send()] == [
        {"type": "status", "status": {"phase": "Ready", "message": "b"}}
    ]
    assert session.data_to_send() == []
    with pytest.raises(ValueError, match=r"status\.phase"):
        session.report_status({"phase": "Happy"})


def test_logs_replies_keep_the_tail_within_the_limit() -> None:
    session = welcomed()
    assert session.receive(encode(LogsRequest(3, "cache", 10))) == [LogsRequested(3, "cache", 10)]
    data = "".join(f"line {i}\n" for i in range(200_000)) + "é\x01" * 100_000
    session.logs_reply(3, data, "x" * 10_000)
    (text,) = session.data_to_send()
    assert len(text.encode()) <= MAX_AGENT_MESSAGE_BYTES
    reply = json.loads(text)
    assert data.endswith(reply["data"]) and len(reply["data"]) > 100_000 and len(reply["error"]) == 4096
    with pytest.raises(SessionStateError):
        session.logs_reply(3, "again")


def test_a_bad_logs_request_is_a_local_error_not_a_message() -> None:
    session = cloud_session()
    with pytest.raises(ValueError, match=r"logs-request\.workload"):
        session.request_logs("Not/A/Name", 10)
    with pytest.raises(ValueError, match=r"logs-request\.tail"):
        session.request_logs("cache", 0)
    assert session.request_logs("cache", 1) == 1


def test_started_says_when_updates_and_logs_requests_are_taken() -> None:
    session = cloud_session()
    session.receive(hello())
    assert not session.started
    session.start({}, 1)
    assert session.started
    assert ProtocolError("too big", close_code=1009).close_code == 1009
