"""The metrics relay's part of the sync protocol: messages, feature gating, size cuts, late replies (pure)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.sync.agent import AgentSession, LocalState, MetricsRequested
from edgefleet.sync.cloud import MAX_METRICS_REQUESTS, CloudSession, MetricsReply
from edgefleet.sync.errors import ProtocolError, SessionStateError
from edgefleet.sync.messages import (
    FEATURE_METRICS,
    MAX_AGENT_MESSAGE_BYTES,
    Hello,
    Metrics,
    MetricsRequest,
    cut_at_line,
    decode_agent_message,
    decode_cloud_message,
    encode,
)


def sessions(features: tuple[str, ...] = (FEATURE_METRICS,)) -> tuple[CloudSession, AgentSession]:
    agent = AgentSession("n1", local=LocalState("", 0, {}, "test"), features=features)
    cloud = CloudSession("n1", epoch="e", hub_id="h", heartbeat_seconds=10)
    cloud.receive(agent.hello())
    cloud.start({}, 1)
    for text in cloud.data_to_send():
        agent.receive(text)
    return cloud, agent


def relay(cloud: CloudSession, agent: AgentSession) -> list[MetricsRequested]:
    """Deliver the cloud's queued messages to the agent; the metrics requests it raised."""
    events = [event for text in cloud.data_to_send() for event in agent.receive(text)]
    return [event for event in events if isinstance(event, MetricsRequested)]


def test_messages_round_trip_and_a_hello_without_features_is_the_old_hello() -> None:
    old = Hello("n1", "e", 1, "0" * 32, 0, "v")
    assert "features" not in json.loads(encode(old))
    assert decode_agent_message(encode(old)) == old
    new = Hello("n1", "e", 1, "0" * 32, 0, "v", features=(FEATURE_METRICS,))
    assert decode_agent_message(encode(new)) == new
    request = MetricsRequest(3, "cache/edge-cache", 4096)
    assert decode_cloud_message(encode(request)) == request
    reply = Metrics(3, "a 1\n", truncated=True)
    assert decode_agent_message(encode(reply)) == reply


@pytest.mark.parametrize(
    "document",
    [
        {"type": "metrics-request", "id": 1, "target": "../etc", "maxBytes": 10},
        {"type": "metrics-request", "id": 1, "target": "agent", "maxBytes": 0},
        {"type": "metrics-request", "id": 1, "target": "agent", "maxBytes": MAX_AGENT_MESSAGE_BYTES + 1},
        {"type": "metrics-request", "id": 0, "target": "agent", "maxBytes": 10},
    ],
)
def test_a_bad_metrics_request_is_refused(document: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        decode_cloud_message(json.dumps(document))


@pytest.mark.parametrize(
    "document",
    [
        {"type": "metrics", "id": 1, "data": 7, "truncated": False, "error": None},
        {"type": "metrics", "id": 1, "data": "", "error": None},
        {
            "type": "hello",
            "protocol": 1,
            "node": "n",
            "epoch": "",
            "revision": 0,
            "digest": "0" * 32,
            "count": 0,
            "agentVersion": "v",
            "features": ["x"] * 33,
        },
    ],
)
def test_a_bad_metrics_reply_or_features_list_is_refused(document: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        decode_agent_message(json.dumps(document))


def test_a_request_goes_only_to_an_agent_that_named_the_feature() -> None:
    cloud, _ = sessions(features=())
    assert not cloud.supports_metrics
    with pytest.raises(ValueError, match="upgrade"):
        cloud.request_metrics("agent", 1000)
    cloud, agent = sessions()
    request_id = cloud.request_metrics("agent", 1000)
    assert relay(cloud, agent) == [MetricsRequested(request_id, "agent", 1000)]


def test_an_agent_without_the_feature_closes_on_a_request() -> None:
    _, agent = sessions(features=())
    with pytest.raises(ProtocolError):
        agent.receive(encode(MetricsRequest(1, "agent", 10)))


def test_a_reply_is_cut_after_its_last_whole_line_within_the_asked_size() -> None:
    cloud, agent = sessions()
    request_id = cloud.request_metrics("agent", 20)
    relay(cloud, agent)
    agent.metrics_reply(request_id, "a 1\nbb 2\nccc 3\ndddd 4\n")
    for text in agent.data_to_send():
        cloud.receive(text)
    assert cloud.events() == [MetricsReply(request_id, "a 1\nbb 2\nccc 3\n", True, None)]


def test_late_replies_are_dropped_replies_to_unsent_ids_close_and_requests_are_bounded() -> None:
    cloud, agent = sessions()
    first = cloud.request_metrics("agent", 100)
    relay(cloud, agent)
    cloud.forget_metrics(first)  # the relay timed out
    agent.metrics_reply(first, "late 1\n")
    for text in agent.data_to_send():
        cloud.receive(text)
    assert cloud.events() == []
    for _ in range(MAX_METRICS_REQUESTS):
        cloud.request_metrics("agent", 100)
    with pytest.raises(SessionStateError):
        cloud.request_metrics("agent", 100)
    with pytest.raises(ProtocolError):
        cloud.receive(encode(Metrics(999, "", False, None)))


@given(st.text(alphabet=st.sampled_from("ab\n\u00e9\u20ac"), max_size=200), st.integers(0, 300))
def test_cut_at_line_keeps_whole_lines_within_the_limit(text: str, limit: int) -> None:
    cut, truncated = cut_at_line(text, limit)
    assert len(cut.encode("utf-8")) <= limit or not truncated
    assert text.startswith(cut)
    assert truncated == (len(text.encode("utf-8")) > limit)
    if truncated:
        assert cut == "" or cut.endswith("\n")
