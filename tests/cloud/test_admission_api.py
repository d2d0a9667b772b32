"""Admission through the real API app (SQLite store), with a real local HTTP webhook server.

Each built-in check is exercised over HTTP (status code, Status body, field
path, ``Warning`` headers), and the webhooks against a server that answers
as told: allowed with warnings, denied with a message, too slowly, byte by
byte, with garbage, with too much, or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import httpx
import pytest

from edgefleet.api.workloads import WorkloadTemplate, template_revision
from edgefleet.cli.client import parse_warning
from edgefleet.cloud.admission import MAX_RESPONSE_BYTES
from edgefleet.cloud.auth import Authenticator
from edgefleet.cloud.hub import Hub
from edgefleet.cloud.registry import Registry
from edgefleet.cloud.server import create_app
from edgefleet.store.interface import Store
from tests.waiting import eventually

from .conftest import ADMIN, API, site, static_tokens

Document = dict[str, Any]
MERGE = {"Content-Type": "application/merge-patch+json"}
TEMPLATE: Document = {"command": ["sleep", "1000"]}


def node(name: str, site_name: str = "paris", **labels: str) -> Document:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"site": site_name},
    }


def workload(name: str = "web", selector: str = "", pins: list[Document] | None = None) -> Document:
    spec: Document = {"nodeSelector": selector, "template": TEMPLATE}
    if pins is not None:
        spec["pins"] = pins
    return {"apiVersion": "edgefleet.io/v1", "kind": "Workload", "metadata": {"name": name}, "spec": spec}


def warnings_of(response: httpx.Response) -> list[str]:
    return [parse_warning(value) for value in response.headers.get_list("warning")]


def causes_of(response: httpx.Response) -> dict[str, str]:
    return {cause["field"]: cause["message"] for cause in response.json()["details"]["causes"]}


async def created(api: httpx.AsyncClient, plural: str, document: Mapping[str, Any]) -> httpx.Response:
    response = await api.post(f"{API}/{plural}", json=document)
    assert response.status_code == 201, response.text
    return response


# -- 1. a Node's site exists ------------------------------------------------------------------------


async def test_a_node_needs_its_site(api: httpx.AsyncClient) -> None:
    refused = await api.post(f"{API}/nodes", json=node("n1", "lyon"))
    assert refused.status_code == 422 and refused.json()["reason"] == "Invalid"
    assert '"lyon" does not exist' in causes_of(refused)["spec.site"]
    assert (await api.get(f"{API}/nodes/n1")).status_code == 404
    await created(api, "sites", site("lyon"))
    await created(api, "nodes", node("n1", "lyon"))


async def test_moving_a_node_to_a_missing_site_is_refused_by_put_and_patch(api: httpx.AsyncClient) -> None:
    await created(api, "sites", site("paris"))
    await created(api, "nodes", node("n1"))
    put = await api.put(f"{API}/nodes/n1", json=node("n1", "nowhere"))
    patch = await api.patch(f"{API}/nodes/n1", json={"spec": {"site": "nowhere"}}, headers=MERGE)
    for response in (put, patch):
        assert response.status_code == 422 and list(causes_of(response)) == ["spec.site"], response.text
    relabel = await api.patch(f"{API}/nodes/n1", json={"metadata": {"labels": {"tier": "edge"}}}, headers=MERGE)
    assert relabel.status_code == 200


async def test_a_join_into_a_missing_site_is_refused(api: httpx.AsyncClient) -> None:
    token = (await api.post("/edge/v1/bootstrap-tokens", json={"ttlSeconds": 600})).json()["token"]
    joining = {"Authorization": f"Bearer {token}"}
    refused = await api.post("/edge/v1/join", json={"name": "n1", "site": "lyon"}, headers=joining)
    assert refused.status_code == 422 and "spec.site" in causes_of(refused)
    await created(api, "sites", site("lyon"))
    assert (await api.post("/edge/v1/join", json={"name": "n1", "site": "lyon"}, headers=joining)).status_code == 201


# -- 2. a Site with Nodes is not deleted without force --------------------------------------------------


async def test_deleting_a_site_with_nodes_is_409_unless_forced(api: httpx.AsyncClient) -> None:
    await created(api, "sites", site("paris"))
    for name in ("par-1", "par-2"):
        await created(api, "nodes", node(name))
    refused = await api.delete(f"{API}/sites/paris")
    body = refused.json()
    assert refused.status_code == 409 and body["reason"] == "Conflict"
    assert "par-1, par-2" in body["message"] and "--force" in body["message"]
    assert (await api.get(f"{API}/sites/paris")).status_code == 200
    forced = await api.delete(f"{API}/sites/paris", params={"force": "true"})
    assert forced.status_code == 200
    assert (await api.get(f"{API}/nodes/par-1")).status_code == 200, "force leaves the nodes"


async def test_a_site_without_nodes_is_deleted_and_a_precondition_still_holds(api: httpx.AsyncClient) -> None:
    stored = (await created(api, "sites", site("lyon"))).json()
    other = str(int(stored["metadata"]["resourceVersion"]) + 100)
    stale = await api.delete(f"{API}/sites/lyon", params={"resourceVersion": other})
    assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"
    current = {"resourceVersion": stored["metadata"]["resourceVersion"]}
    assert (await api.delete(f"{API}/sites/lyon", params=current)).status_code == 200
    assert (await api.delete(f"{API}/sites/lyon")).status_code == 404


# -- 3. pins name kept revisions --------------------------------------------------------------------------


async def keep_revision(api: httpx.AsyncClient, workload_doc: Document, number: int) -> None:
    template = WorkloadTemplate.model_validate(TEMPLATE)
    await created(
        api,
        "workloadrevisions",
        {
            "apiVersion": "edgefleet.io/v1",
            "kind": "WorkloadRevision",
            "metadata": {"name": f"{workload_doc['metadata']['name']}-{number}"},
            "spec": {
                "workload": workload_doc["metadata"]["name"],
                "workloadUid": workload_doc["metadata"]["uid"],
                "number": number,
                "revision": template_revision(template),
                "template": TEMPLATE,
            },
        },
    )


async def test_a_pin_must_name_a_kept_revision(api: httpx.AsyncClient) -> None:
    await created(api, "sites", site("paris"))
    await created(api, "nodes", node("n1"))
    stored = (await created(api, "workloads", workload())).json()
    await keep_revision(api, stored, 1)
    pins = [{"selector": "edgefleet.io/node=n1", "revision": 1}, {"selector": "edgefleet.io/site=paris", "revision": 2}]
    refused = await api.patch(f"{API}/workloads/web", json={"spec": {"pins": pins}}, headers=MERGE)
    assert refused.status_code == 422, refused.text
    causes = causes_of(refused)
    assert (
        list(causes) == ["spec.pins[1].revision"]
        and "`edgefleet rollout history web`" in causes["spec.pins[1].revision"]
    )
    accepted = await api.patch(f"{API}/workloads/web", json={"spec": {"pins": pins[:1]}}, headers=MERGE)
    assert accepted.status_code == 200 and warnings_of(accepted) == []


async def test_a_new_workload_cannot_pin_its_namesakes_revisions(api: httpx.AsyncClient) -> None:
    first = (await created(api, "workloads", workload())).json()
    await keep_revision(api, first, 1)
    assert (await api.delete(f"{API}/workloads/web")).status_code == 200
    again = await api.post(f"{API}/workloads", json=workload(pins=[{"selector": "a=b", "revision": 1}]))
    assert again.status_code == 422 and "spec.pins[0].revision" in causes_of(again)


# -- 4. selectors that match no node: accepted, with a warning ---------------------------------------------


async def test_a_selector_matching_no_node_is_a_warning_header(api: httpx.AsyncClient) -> None:
    await created(api, "sites", site("paris"))
    await created(api, "nodes", node("n1", role="cache"))
    lonely = await created(api, "workloads", workload("web", "role=web"))
    raw = lonely.headers.get_list("warning")
    assert len(raw) == 1 and re.fullmatch(r'299 - ".*"', raw[0])
    assert warnings_of(lonely)[0].startswith("spec.nodeSelector: no Node matches 'role=web'")
    for selector in ("role=cache", "edgefleet.io/site=paris", "edgefleet.io/node=n1", ""):
        matched = await api.put(f"{API}/workloads/web", json=workload("web", selector))
        assert matched.status_code == 200 and warnings_of(matched) == [], selector


async def test_pin_selectors_warn_too(api: httpx.AsyncClient) -> None:
    await created(api, "sites", site("paris"))
    await created(api, "nodes", node("n1"))
    stored = (await created(api, "workloads", workload())).json()
    await keep_revision(api, stored, 1)
    pins = [{"selector": "edgefleet.io/node=ghost", "revision": 1}]
    response = await api.patch(f"{API}/workloads/web", json={"spec": {"pins": pins}}, headers=MERGE)
    assert response.status_code == 200
    assert [w.split(":")[0] for w in warnings_of(response)] == ["spec.pins[0].selector"]


# -- 5. webhooks -----------------------------------------------------------------------------------------------

Reply = Callable[[Document], Awaitable[bytes]]


def http_reply(body: bytes, status: str = "200 OK", headers: str = "Content-Type: application/json\r\n") -> bytes:
    return (f"HTTP/1.1 {status}\r\n{headers}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def answer(**body: Any) -> Reply:
    async def reply(_: Document) -> bytes:
        return http_reply(json.dumps(body).encode())

    return reply


class WebhookServer:
    """A tiny HTTP/1.1 server on 127.0.0.1: records each review and answers with ``reply``."""

    def __init__(self) -> None:
        self.reviews: list[Document] = []
        self.reply: Reply = answer(allowed=True)
        self.drip: bytes | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/review"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # stop() cancels the handlers still sleeping or dripping
        task.add_done_callback(self._tasks.discard)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE)
            body = await reader.readexactly(int(match[1])) if match else b""
            review = json.loads(body)
            self.reviews.append(review)
            writer.write(await self.reply(review))
            await writer.drain()
            while self.drip:  # a body that never ends, a byte at a time
                writer.write(self.drip)
                await writer.drain()
                await asyncio.sleep(0.05)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookServer]:
    server = WebhookServer()
    await server.start()
    yield server
    await server.stop()


def webhook_config(
    url: str, *, name: str = "policy", kinds: list[str] | None = None, operations: list[str] | None = None, **spec: Any
) -> Document:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "AdmissionWebhook",
        "metadata": {"name": name},
        "spec": {"url": url, "rules": [{"kinds": kinds or ["Site"], "operations": operations or ["*"]}], **spec},
    }


async def test_an_allowing_webhook_gets_the_review_and_its_warnings_reach_the_client(
    api: httpx.AsyncClient, webhook: WebhookServer
) -> None:
    await created(api, "admissionwebhooks", webhook_config(webhook.url))
    webhook.reply = answer(allowed=True, warnings=["paris is full \x1b[31msoon"])
    response = await created(api, "sites", site("paris"))
    assert warnings_of(response) == ['admission webhook "policy": paris is full  [31msoon']
    (review,) = webhook.reviews
    assert {k: review[k] for k in ("operation", "kind", "name", "oldObject")} == {
        "operation": "CREATE",
        "kind": "Site",
        "name": "paris",
        "oldObject": None,
    }
    assert review["object"]["metadata"]["uid"] == response.json()["metadata"]["uid"] and review["uid"]
    changed = await api.patch(f"{API}/sites/paris", json={"spec": {"capacityGbps": 80}}, headers=MERGE)
    assert changed.status_code == 200
    update = webhook.reviews[-1]
    assert update["operation"] == "UPDATE" and update["oldObject"]["spec"]["capacityGbps"] == 40
    assert update["object"]["spec"]["capacityGbps"] == 80 and update["uid"] != review["uid"]
    assert (await api.delete(f"{API}/sites/paris")).status_code == 200
    assert webhook.reviews[-1]["operation"] == "DELETE" and webhook.reviews[-1]["object"] is None


async def test_a_denial_is_403_with_the_webhooks_name_and_message(
    api: httpx.AsyncClient, webhook: WebhookServer
) -> None:
    await created(api, "admissionwebhooks", webhook_config(webhook.url, name="capacity-policy"))
    webhook.reply = answer(allowed=False, message="sites need at least 50 Gbps")
    refused = await api.post(f"{API}/sites", json=site("paris"))
    body = refused.json()
    assert refused.status_code == 403 and body["reason"] == "Forbidden"
    assert body["message"].startswith('admission webhook "capacity-policy" denied the request: sites need at least')
    assert (await api.get(f"{API}/sites/paris")).status_code == 404


async def test_force_does_not_skip_webhooks(api: httpx.AsyncClient, webhook: WebhookServer) -> None:
    await created(api, "sites", site("paris"))
    await created(api, "admissionwebhooks", webhook_config(webhook.url, operations=["DELETE"]))
    webhook.reply = answer(allowed=False, message="paris stays")
    assert (await api.delete(f"{API}/sites/paris", params={"force": "true"})).status_code == 403


async def slow(_: Document) -> bytes:
    await asyncio.sleep(30)
    return http_reply(b'{"allowed": true}')


@pytest.mark.parametrize(("policy", "status"), [("Fail", 503), ("Ignore", 201)])
async def test_a_slow_webhook_times_out_under_its_failure_policy(
    api: httpx.AsyncClient, webhook: WebhookServer, policy: str, status: int
) -> None:
    await created(api, "admissionwebhooks", webhook_config(webhook.url, timeoutSeconds=1, failurePolicy=policy))
    webhook.reply = slow
    started = time.monotonic()
    response = await api.post(f"{API}/sites", json=site("paris"))
    assert 0.9 < time.monotonic() - started < 29  # waited for the timeout, not for the answer (at 30 s)
    assert response.status_code == status, response.text
    if policy == "Fail":
        assert response.json()["reason"] == "ServiceUnavailable"
        assert 'admission webhook "policy" failed: no answer within 1s' in response.json()["message"]
    else:
        assert "no answer within 1s" in warnings_of(response)[0] and "failurePolicy Ignore" in warnings_of(response)[0]


async def test_a_webhook_dripping_its_answer_cannot_stretch_the_deadline(
    api: httpx.AsyncClient, webhook: WebhookServer
) -> None:
    await created(api, "admissionwebhooks", webhook_config(webhook.url, timeoutSeconds=1))

    async def endless(_: Document) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"

    webhook.reply, webhook.drip = endless, b" "
    started = time.monotonic()
    response = await api.post(f"{API}/sites", json=site("paris"))
    assert response.status_code == 503 and time.monotonic() - started < 60  # the drip would last 5000 s


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (http_reply(b"<html>I am a teapot</html>", headers="Content-Type: text/html\r\n"), "not JSON"),
        (http_reply(b'{"allowed": "sure"}'), 'boolean "allowed"'),
        (http_reply(b'{"allowed": true}', status="500 Internal Server Error"), "HTTP 500"),
        (http_reply(b"x" * (MAX_RESPONSE_BYTES + 1)), "the limit is"),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"[" * (MAX_RESPONSE_BYTES + 10), "more than"),
        (b"garbage, not HTTP at all\r\n\r\n", "broke the HTTP exchange"),
    ],
    ids=["html", "not-a-bool", "http-500", "declared-too-big", "too-big", "not-http"],
)
async def test_a_garbage_answer_is_a_failure_not_a_crash(
    api: httpx.AsyncClient, webhook: WebhookServer, reply: bytes, reason: str
) -> None:
    await created(api, "admissionwebhooks", webhook_config(webhook.url))

    async def garbage(_: Document) -> bytes:
        return reply

    webhook.reply = garbage
    response = await api.post(f"{API}/sites", json=site("paris"))
    assert response.status_code == 503, response.text
    assert reason in response.json()["message"]


async def test_an_unreachable_webhook_follows_its_policy(api: httpx.AsyncClient, webhook: WebhookServer) -> None:
    await webhook.stop()  # nothing listens on its port any more
    await created(api, "admissionwebhooks", webhook_config(webhook.url, failurePolicy="Ignore"))
    response = await created(api, "sites", site("paris"))
    assert "cannot be reached" in warnings_of(response)[0]


async def test_what_is_never_sent_to_webhooks(api: httpx.AsyncClient, webhook: WebhookServer) -> None:
    await created(api, "sites", site("paris"))
    await created(api, "admissionwebhooks", webhook_config(webhook.url, kinds=["*"]))
    webhook.reply = answer(allowed=False, message="no")
    status = await api.patch(f"{API}/sites/paris/status", json={"status": {"active": True}}, headers=MERGE)
    assert status.status_code == 200, "status writes are not admitted"
    event = {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Event",
        "metadata": {"name": "paris.1"},
        "spec": {
            "involvedObject": {"kind": "Site", "name": "paris"},
            "reason": "Tested",
            "firstTimestamp": "2026-01-01T00:00:00Z",
            "lastTimestamp": "2026-01-01T00:00:00Z",
        },
    }
    await created(api, "events", event)
    fixed = await api.put(f"{API}/admissionwebhooks/policy", json=webhook_config(webhook.url, kinds=["Node"]))
    assert fixed.status_code == 200, "a webhook never guards its own configuration"
    assert webhook.reviews == []
    assert (await api.delete(f"{API}/sites/paris")).status_code == 200, "rules pick kinds"


async def test_a_rule_cannot_name_an_exempt_kind(api: httpx.AsyncClient) -> None:
    refused = await api.post(f"{API}/admissionwebhooks", json=webhook_config("http://x", kinds=["Event", "Gadget"]))
    assert refused.status_code == 422
    assert set(causes_of(refused)) == {"spec.rules[0].kinds[0]", "spec.rules[0].kinds[1]"}
    too_slow = await api.post(f"{API}/admissionwebhooks", json=webhook_config("ftp://x", timeoutSeconds=31))
    assert set(causes_of(too_slow)) == {"spec.url", "spec.timeoutSeconds"}


# -- with a hub: the same checks read its in-memory index ---------------------------------------------------


async def never_authenticated(_: str | None) -> str:
    raise AssertionError("no agent connects in this test")


class ListSpy(Registry):
    """A registry that records which kinds are listed."""

    listed: list[str]

    async def list(self, info: Any, **kwargs: Any) -> Any:
        self.listed.append(info.plural)
        return await super().list(info, **kwargs)


@pytest.fixture
async def spy(store: Store) -> ListSpy:
    registry = ListSpy(store)
    registry.listed = []
    return registry


@pytest.fixture
async def hub_api(store: Store, spy: ListSpy) -> AsyncIterator[httpx.AsyncClient]:
    hub = Hub(spy, hub_id="test", authenticate=never_authenticated)
    await hub.start()
    app = create_app(spy, Authenticator(store, static_tokens=static_tokens()), hub=hub)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers
        ) as client:
            yield client
    finally:
        await hub.close()


async def test_with_a_hub_writes_right_after_their_dependencies_are_admitted(hub_api: httpx.AsyncClient) -> None:
    """The index lags the store by a watch event: a miss is confirmed with the store, never refused blindly."""
    for round_ in range(5):
        site_name, node_name = f"site-{round_}", f"node-{round_}"
        await created(hub_api, "sites", site(site_name))
        await created(hub_api, "nodes", node(node_name, site_name, role="web"))
        refused = await hub_api.delete(f"{API}/sites/{site_name}")
        assert refused.status_code == 409 and node_name in refused.json()["message"]
    assert (await hub_api.post(f"{API}/nodes", json=node("n9", "nowhere"))).status_code == 422


async def test_with_a_hub_selector_warnings_come_from_the_index(hub_api: httpx.AsyncClient, spy: ListSpy) -> None:
    await created(hub_api, "sites", site("paris"))
    await created(hub_api, "nodes", node("n1", role="web"))

    async def written_without_warnings() -> bool:  # once the index has caught up (within a watch event)
        response = await hub_api.put(f"{API}/workloads/web", json=workload("web", "role=web"))
        if response.status_code == 404:
            response = await created(hub_api, "workloads", workload("web", "role=web"))
        return warnings_of(response) == []

    await eventually(written_without_warnings, within=5.0, interval=0.05)
    spy.listed.clear()
    lonely = await hub_api.put(f"{API}/workloads/web", json=workload("web", "role=db"))
    assert [w.split(":")[0] for w in warnings_of(lonely)] == ["spec.nodeSelector"]
    await created(hub_api, "nodes", node("n2"))
    assert spy.listed == ["admissionwebhooks", "admissionwebhooks"], "nodes are never listed from the store"
