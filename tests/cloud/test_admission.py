"""The admission core without a server: built-in checks over a dict lookup, webhook answers, warnings.

tests/cloud/test_admission_api.py runs the same rules through the real API
app and a real webhook server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.api.meta import lookup as kind_lookup
from edgefleet.cloud.admission import (
    MAX_RESPONSE_WARNINGS,
    AdmissionRequest,
    Answer,
    IndexLookup,
    Operation,
    Outcome,
    ResourceInUse,
    Verdict,
    Webhook,
    WebhookDenied,
    WebhookFailed,
    check,
    decide,
    parse_answer,
    review_body,
    warning_headers,
    webhooks_for,
)
from edgefleet.cloud.registry import Registry
from edgefleet.cloud.webhooks import clean_text
from edgefleet.store import open_store
from edgefleet.sync.views import FleetIndex

from .conftest import site

Document = StoredDocument


class FakeLookup:
    """Objects by plural; ``fresh`` is what the store holds when it differs from the (lagging) index."""

    def __init__(self, objects: dict[str, list[Document]], *, fresh: dict[str, list[Document]] | None = None) -> None:
        self.may_lag = fresh is not None
        self.objects = objects
        self.fresh = fresh if fresh is not None else objects
        self.reads: list[tuple[str, str]] = []

    async def get(self, plural: str, name: str) -> Document | None:
        self.reads.append(("get", f"{plural}/{name}"))
        return next((doc for doc in self.fresh.get(plural, []) if doc["metadata"]["name"] == name), None)

    async def documents(self, plural: str, *, fresh: bool = False) -> Sequence[Document]:
        self.reads.append(("documents", plural + (" fresh" if fresh else "")))
        return (self.fresh if fresh else self.objects).get(plural, [])


def node(name: str, site_name: str = "paris", **labels: str) -> Document:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"site": site_name},
    }


def workload(name: str = "web", selector: str = "", pins: list[JSONObject] | None = None, uid: str = "u1") -> Document:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "Workload",
        "metadata": {"name": name, "uid": uid},
        "spec": {"nodeSelector": selector, "template": {"command": ["sleep", "1"]}, "pins": pins or []},
    }


def revision(workload_name: str, number: int, uid: str = "u1") -> Document:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "WorkloadRevision",
        "metadata": {"name": f"{workload_name}-{number}"},
        "spec": {
            "workload": workload_name,
            "workloadUid": uid,
            "number": number,
            "revision": f"r{number}",
            "template": {"command": ["sleep", "1"]},
        },
    }


def create(kind: str, document: Document, *, force: bool = False) -> AdmissionRequest:
    return AdmissionRequest.of(kind, document, None, force=force)


# -- the request ---------------------------------------------------------------------------


def test_the_operation_follows_from_which_documents_are_given() -> None:
    doc = node("n1")
    assert AdmissionRequest.of("Node", doc, None).operation is Operation.CREATE
    assert AdmissionRequest.of("Node", doc, doc).operation is Operation.UPDATE
    deleting = AdmissionRequest.of("Node", None, doc)
    assert deleting.operation is Operation.DELETE and deleting.name == "n1"


# -- Node: its site exists ---------------------------------------------------------------------


async def test_a_node_in_a_missing_site_is_a_field_error() -> None:
    verdict = await check(create("Node", node("n1", "lyon")), FakeLookup({"sites": [site("paris")]}))
    (error,) = verdict.errors
    assert error.path == "spec.site"
    assert '"lyon" does not exist' in error.message and "edgefleet get sites" in error.message


async def test_a_node_in_an_existing_site_passes() -> None:
    assert await check(create("Node", node("n1")), FakeLookup({"sites": [site("paris")]})) == Verdict()


async def test_an_update_that_keeps_the_site_is_not_checked_again() -> None:
    lookup = FakeLookup({})  # the site was force-deleted meanwhile
    relabelled = node("n1", "gone", tier="edge")
    verdict = await check(AdmissionRequest.of("Node", relabelled, node("n1", "gone")), lookup)
    assert not verdict.errors and lookup.reads == []


async def test_an_update_that_moves_the_node_checks_the_new_site() -> None:
    lookup = FakeLookup({"sites": [site("paris")]})
    moved = await check(AdmissionRequest.of("Node", node("n1", "lyon"), node("n1", "paris")), lookup)
    assert [e.path for e in moved.errors] == ["spec.site"]
    back = await check(AdmissionRequest.of("Node", node("n1", "paris"), node("n1", "lyon")), lookup)
    assert not back.errors


async def test_deleting_a_node_checks_nothing() -> None:
    lookup = FakeLookup({})
    assert not (await check(AdmissionRequest.of("Node", None, node("n1", "gone")), lookup)).errors


# -- Site delete: no nodes left -------------------------------------------------------------------


async def test_deleting_a_site_with_nodes_is_refused_naming_a_few() -> None:
    nodes = [node(f"n{i}") for i in range(7)] + [node("lyon-1", "lyon")]
    verdict = await check(AdmissionRequest.of("Site", None, site("paris")), FakeLookup({"nodes": nodes}))
    assert isinstance(verdict.refusal(), ResourceInUse)
    message = verdict.conflict
    assert 'site "paris" still has 7 nodes (n0, n1, n2, n3, n4 and 2 more)' in message
    assert "lyon-1" not in message and "edgefleet delete site paris --force" in message and "?force=true" in message


async def test_force_or_no_nodes_lets_a_site_go() -> None:
    nodes = [node("n1")]
    forced = AdmissionRequest.of("Site", None, site("paris"), force=True)
    assert (await check(forced, FakeLookup({"nodes": nodes}))).refusal() is None
    empty = AdmissionRequest.of("Site", None, site("lyon"))
    assert (await check(empty, FakeLookup({"nodes": nodes}))).refusal() is None


async def test_a_lagging_index_that_sees_no_nodes_is_confirmed_with_the_store() -> None:
    lookup = FakeLookup({"nodes": []}, fresh={"nodes": [node("just-created")]})
    verdict = await check(AdmissionRequest.of("Site", None, site("paris")), lookup)
    assert "just-created" in verdict.conflict
    assert lookup.reads == [("documents", "nodes"), ("documents", "nodes fresh")]


# -- Workload: pins name kept revisions ---------------------------------------------------------------


async def test_a_pin_to_a_missing_revision_is_a_field_error_pointing_at_history() -> None:
    pins = [{"selector": "edgefleet.io/node=n1", "revision": 1}, {"selector": "tier=b", "revision": 4}]
    lookup = FakeLookup({"workloadrevisions": [revision("web", 1)], "nodes": [node("n1", tier="b")]})
    verdict = await check(AdmissionRequest.of("Workload", workload(pins=pins), workload()), lookup)
    (error,) = verdict.errors
    assert error.path == "spec.pins[1].revision"
    assert "no revision 4" in error.message and "`edgefleet rollout history web`" in error.message


async def test_a_revision_of_another_incarnation_or_workload_does_not_count() -> None:
    pins = [{"selector": "a=b", "revision": 1}, {"selector": "c=d", "revision": 2}]
    kept: list[Document] = [
        revision("web", 1, uid="old-uid"),
        {**revision("web", 2), "spec": {**revision("api", 2)["spec"]}},
    ]
    verdict = await check(
        AdmissionRequest.of("Workload", workload(pins=pins), workload()), FakeLookup({"workloadrevisions": kept})
    )
    assert [e.path for e in verdict.errors] == ["spec.pins[0].revision", "spec.pins[1].revision"]


async def test_unchanged_pins_are_not_checked_again() -> None:
    pins = [{"selector": "edgefleet.io/node=n1", "revision": 3}]
    lookup = FakeLookup({"nodes": [node("n1")]})
    verdict = await check(AdmissionRequest.of("Workload", workload(pins=pins), workload(pins=pins)), lookup)
    assert not verdict.errors and ("get", "workloadrevisions/web-3") not in lookup.reads


async def test_a_new_workload_with_pins_is_told_to_pin_later() -> None:
    pins = [{"selector": "a=b", "revision": 1}]
    verdict = await check(create("Workload", workload(pins=pins)), FakeLookup({}))
    assert "create it without pins" in verdict.errors[0].message


# -- Workload: selectors that match no node are warnings ------------------------------------------------


async def test_a_selector_that_matches_no_node_is_a_warning() -> None:
    verdict = await check(create("Workload", workload(selector="role=web")), FakeLookup({"nodes": [node("n1")]}))
    assert verdict.refusal() is None
    (warning,) = verdict.warnings
    assert warning.startswith("spec.nodeSelector: no Node matches 'role=web'") and "edgefleet.io/site" in warning


async def test_implicit_labels_match() -> None:
    lookup = FakeLookup({"nodes": [node("n1", "paris"), node("n2", "lyon", role="web")]})
    for selector in ("edgefleet.io/site=paris", "edgefleet.io/node=n2", "role=web,edgefleet.io/site=lyon"):
        assert (await check(create("Workload", workload(selector=selector)), lookup)).warnings == (), selector


async def test_an_empty_selector_never_warns_even_without_nodes() -> None:
    assert (await check(create("Workload", workload(selector="")), FakeLookup({}))).warnings == ()


async def test_pin_selectors_warn_by_path_and_named_nodes_are_looked_up_not_scanned() -> None:
    pins = [{"selector": "edgefleet.io/node=n1", "revision": 1}, {"selector": "edgefleet.io/node=ghost", "revision": 1}]
    lookup = FakeLookup({"nodes": [node("n1")], "workloadrevisions": [revision("web", 1)]})
    verdict = await check(AdmissionRequest.of("Workload", workload(pins=pins), workload(pins=pins)), lookup)
    assert [w.split(":")[0] for w in verdict.warnings] == ["spec.pins[1].selector"]
    assert ("documents", "nodes") not in lookup.reads, "node names are looked up one by one"


async def test_one_pass_over_the_nodes_serves_every_selector() -> None:
    pins = [{"selector": "tier=a", "revision": 1}, {"selector": "tier=b", "revision": 1}]
    lookup = FakeLookup({"nodes": [node("n1", tier="a"), node("n2", tier="b")]})
    verdict = await check(
        AdmissionRequest.of("Workload", workload(selector="tier", pins=pins), workload(pins=pins)), lookup
    )
    assert verdict.warnings == () and lookup.reads.count(("documents", "nodes")) == 1


async def test_deleting_a_workload_checks_nothing() -> None:
    lookup = FakeLookup({})
    assert await check(AdmissionRequest.of("Workload", None, workload(selector="x=y")), lookup) == Verdict()
    assert lookup.reads == []


# -- IndexLookup: the hub's index first, the store when it misses -------------------------------------


@pytest.fixture
async def registry(tmp_path: Path) -> Any:
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    yield Registry(store)
    await store.close()


def loaded(documents: list[tuple[str, Document]]) -> FleetIndex:
    index = FleetIndex()
    index.load([(f"/registry/{plural}/{doc['metadata']['name']}", 1, doc) for plural, doc in documents], 10)
    return index


async def test_index_lookup_reads_the_index_and_confirms_misses_with_the_store(registry: Registry) -> None:
    index = loaded([("sites", site("paris")), ("nodes", node("n1"))])
    lookup = IndexLookup(lambda: index, registry)
    assert (await lookup.get("sites", "paris")) is not None, "from the index (the store is empty)"
    assert (await lookup.get("sites", "lyon")) is None
    await registry.create(kind_lookup("sites"), site("lyon"))  # stored, not yet seen by the index
    assert (await lookup.get("sites", "lyon")) is not None
    assert [d["metadata"]["name"] for d in await lookup.documents("nodes")] == ["n1"]
    assert await lookup.documents("nodes", fresh=True) == []


async def test_index_lookup_reads_the_store_until_the_index_is_loaded(registry: Registry) -> None:
    await registry.create(kind_lookup("sites"), site("paris"))
    lookup = IndexLookup(FleetIndex, registry)  # revision 0: never loaded
    assert [d["metadata"]["name"] for d in await lookup.documents("sites")] == ["paris"]


class RecordingRegistry(Registry):
    """Records every read (kind plural), to show which checks reach the store."""

    reads: list[str]

    async def get(self, info: Any, name: str) -> Document:
        self.reads.append(f"get {info.plural}/{name}")
        return await super().get(info, name)

    async def list(self, info: Any, **kwargs: Any) -> Any:
        self.reads.append(f"list {info.plural}")
        return await super().list(info, **kwargs)


class ScanCountingLookup(IndexLookup):
    """The index lookup, noting every kind whose documents it hands out (each is one pass over them)."""

    def __init__(self, index: Callable[[], FleetIndex], registry: Registry) -> None:
        super().__init__(index, registry)
        self.scans: list[str] = []

    async def documents(self, plural: str, *, fresh: bool = False) -> Sequence[Document]:
        self.scans.append(plural)
        return await super().documents(plural, fresh=fresh)


async def test_a_workload_write_in_a_large_fleet_reads_no_store(registry: Registry) -> None:
    """10,000 nodes: the selector checks run on the index in memory, without a store read."""
    nodes = [("nodes", node(f"n{i}", f"s{i % 100}", tier="edge", zone=f"z{i % 10}")) for i in range(10_000)]
    index = loaded([*nodes, ("sites", site("s1"))])
    recording = RecordingRegistry(registry.store)
    calls = recording.reads = []
    spied = ScanCountingLookup(lambda: index, recording)
    pins = [{"selector": f"edgefleet.io/node=n{i}", "revision": 1} for i in range(3)]
    request = AdmissionRequest.of("Workload", workload(selector="tier=nowhere", pins=pins), workload(pins=pins))
    verdict = await check(request, spied)
    assert len(verdict.warnings) == 1 and calls == []
    assert spied.scans == ["nodes"], "one pass over the nodes for the selector and every pin, not one each"
    assert not (await check(create("Node", node("new", "s1")), spied)).errors and calls == []


# -- webhooks: which, what they get, what their answers mean --------------------------------------------


def webhook_doc(name: str, rules: list[JSONObject], **spec: Any) -> Document:
    return {
        "apiVersion": "edgefleet.io/v1",
        "kind": "AdmissionWebhook",
        "metadata": {"name": name},
        "spec": {"url": "http://127.0.0.1:9/review", "rules": rules, **spec},
    }


def test_webhooks_for_matches_kinds_and_operations() -> None:
    docs = [
        webhook_doc("b-all", [{"kinds": ["*"], "operations": ["*"]}], failurePolicy="Ignore", timeoutSeconds=3),
        webhook_doc("a-workloads", [{"kinds": ["Workload"], "operations": ["CREATE", "UPDATE"]}]),
        webhook_doc("sites-delete", [{"kinds": ["Site"], "operations": ["DELETE"]}]),
    ]
    assert [w.name for w in webhooks_for(docs, "Workload", Operation.CREATE)] == ["a-workloads", "b-all"]
    assert [w.name for w in webhooks_for(docs, "Workload", Operation.DELETE)] == ["b-all"]
    assert [w.name for w in webhooks_for(docs, "Site", Operation.DELETE)] == ["b-all", "sites-delete"]
    assert webhooks_for(docs, "Event", Operation.CREATE) == []
    assert webhooks_for(docs, "AdmissionWebhook", Operation.DELETE) == []
    everything = webhooks_for(docs, "Node", Operation.UPDATE)[0]
    assert (everything.timeout, everything.fail_closed) == (3.0, False)


def test_a_stored_webhook_that_no_longer_validates_fails_closed_unless_it_says_ignore() -> None:
    broken = webhook_doc("broken", [{"kinds": ["Workload"], "operations": ["CREATE"]}], futureField=True)
    tolerant = webhook_doc("tolerant", [], failurePolicy="Ignore")
    found = webhooks_for([broken, tolerant], "Node", Operation.CREATE)
    assert [(w.name, w.fail_closed, bool(w.problem)) for w in found] == [
        ("broken", True, True),
        ("tolerant", False, True),
    ]


def test_the_review_body() -> None:
    request = AdmissionRequest.of("Node", node("n1"), node("n1", "lyon"))
    assert review_body(request, "u-1") == {
        "uid": "u-1",
        "operation": "UPDATE",
        "kind": "Node",
        "name": "n1",
        "object": node("n1"),
        "oldObject": node("n1", "lyon"),
    }


def test_parse_answer_accepts_the_contract_and_cleans_it() -> None:
    answer = parse_answer(200, "", b'{"allowed": false, "message": "no\\u001b[31m red", "warnings": ["w1", ""]}')
    assert answer == Answer(False, "no [31m red", ("w1",))
    assert parse_answer(200, "identity", b'{"allowed": true, "extra": 1}') == Answer(True)
    long = parse_answer(200, "", b'{"allowed": true, "warnings": ["' + b"x" * 5000 + b'"' + b', "y"' * 20 + b"]}")
    assert len(long.warnings) == 8 and len(long.warnings[0]) == 512 and long.warnings[0].endswith("...")


@pytest.mark.parametrize(
    ("status", "encoding", "body", "reason"),
    [
        (500, "", b'{"allowed": true}', "HTTP 500"),
        (302, "", b"", "HTTP 302"),
        (200, "gzip", b'{"allowed": true}', "Content-Encoding"),
        (200, "", b"<html>hello</html>", "not JSON"),
        (200, "", b"\xff\xfe\x00", "not JSON"),
        (200, "", b"[" * 60_000 + b"]" * 60_000, "not JSON"),
        (200, "", b"1" * 60_000, "not JSON"),
        (200, "", b'["allowed", true]', 'boolean "allowed"'),
        (200, "", b'{"allowed": "yes"}', 'boolean "allowed"'),
        (200, "", b'{"allowed": false, "message": {"a": 1}}', '"message"'),
        (200, "", b'{"allowed": true, "warnings": "careful"}', '"warnings"'),
        (200, "", b'{"allowed": true, "warnings": [1]}', '"warnings"'),
    ],
)
def test_parse_answer_refuses_what_is_not_an_answer(status: int, encoding: str, body: bytes, reason: str) -> None:
    with pytest.raises(WebhookFailed, match=reason):
        parse_answer(status, encoding, body)


def hook(name: str, *, fail_closed: bool = True) -> Webhook:
    return Webhook(name, "http://x", 1.0, fail_closed)


def test_decide_a_denial_wins_over_failures_and_names_the_webhook() -> None:
    outcomes = [
        Outcome(hook("a"), failure="no answer within 1s"),
        Outcome(hook("b"), Answer(False, "not on Fridays")),
        Outcome(hook("c"), Answer(False, "also no")),
    ]
    with pytest.raises(WebhookDenied) as denied:
        decide(outcomes)
    assert denied.value.status == 403
    assert str(denied.value).startswith('admission webhook "b" denied the request: not on Fridays')


def test_decide_failures_follow_the_failure_policy() -> None:
    with pytest.raises(WebhookFailed) as failed:
        decide([Outcome(hook("strict"), failure="no answer within 2s")])
    assert failed.value.status == 503 and '"strict" failed: no answer within 2s' in str(failed.value)
    assert "failurePolicy: Ignore" in str(failed.value)
    warnings = decide(
        [
            Outcome(hook("lax", fail_closed=False), failure="answered HTTP 500"),
            Outcome(hook("ok"), Answer(True, "", ("mind the cache",))),
        ]
    )
    assert warnings == [
        'admission webhook "lax" failed (answered HTTP 500); the write was admitted without it (failurePolicy Ignore)',
        'admission webhook "ok": mind the cache',
    ]


def test_warning_headers_are_quoted_cleaned_and_bounded() -> None:
    (header,) = warning_headers(['a "quoted" \\ back\nslash', "", 'a "quoted" \\ back\nslash'])
    assert header == '299 - "a \\"quoted\\" \\\\ back slash"'
    many = warning_headers(f"w{i}" for i in range(50))
    assert len(many) == MAX_RESPONSE_WARNINGS and many[-1] == '299 - "... and 31 more warnings"'
    assert clean_text("\x1b]0;owned\x07 hi  ", 100) == "]0;owned  hi"
