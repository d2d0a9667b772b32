"""Fleet metrics through the cloud: a Prometheus relay over the nodes' links, and HTTP service discovery.

How: ``GET /edge/v1/nodes/{node}/metrics?target=agent|cache|cache/<workload>``
sends a ``metrics-request`` over the node's existing hub session (edge nodes
sit behind NAT and firewalls: nothing can dial them) and answers with the
Prometheus text the agent sends back (:mod:`edgefleet.edge.metricsources`).
``GET /edge/v1/prometheus/targets`` is Prometheus' ``http_sd_configs``
format: one target group per connected node and target, labelled ``node``,
``site``, ``region`` and ``component``, whose ``__metrics_path__`` and
``__param_target`` point back at the relay on the replica Prometheus asked.
Both need an admin or ``metrics-reader`` token (viewers and nodes: 403);
docs/metrics.md has the prometheus.yml.

Bounds (:class:`RelaySettings`), because one Prometheus may scrape a
thousand nodes through one replica and a node may be hostile:

- per node and target at most one request per ``min_interval``: within it the
  last answer is served again, and concurrent scrapes of one target share
  one request (so two Prometheus replicas cost the node one scrape);
- at most ``max_in_flight`` requests wait on nodes at once (more: 503 with
  ``Retry-After``), and at most ``MAX_METRICS_REQUESTS`` per session;
- a node that does not answer within ``timeout`` gets 504, and its late reply
  is dropped;
- an answer is cut after its last whole line within ``max_bytes`` (by the
  agent, and again here whatever the node sent), counted in
  ``edgefleet_hub_metrics_relay_truncated`` and marked in the text itself by
  the gauge ``edgefleet_relay_truncated 1``, so a dashboard can show it;
- the text is passed through, never parsed: a malformed answer fails that
  target's scrape in Prometheus and costs the hub nothing. Prometheus adds
  the discovery labels to every sample, so a node cannot pass its samples
  off as another node's (a clashing label becomes ``exported_node``).

Several replicas: a replica that does not hold the node's session forwards
the request to the replica that does (the Hub objects say which, as for
logs), with the caller's credentials; a holder without an advertised URL
is named in a 409.
"""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

from edgefleet.cloud.auth import Forbidden, Principal, Role
from edgefleet.cloud.errors import Status, status_body
from edgefleet.cloud.fleetmetrics import FleetCollector
from edgefleet.sync.cloud import MetricsReply
from edgefleet.sync.errors import SessionStateError
from edgefleet.sync.messages import cut_at_line

if TYPE_CHECKING:
    from edgefleet.cloud.hub import Hub

log = logging.getLogger("edgefleet.cloud.metricsrelay")

METRICS_PATH = "/edge/v1/nodes/{node}/metrics"
TARGETS_PATH = "/edge/v1/prometheus/targets"
RELAY_OPERATIONS = frozenset({"node_metrics", "prometheus_targets"})
"""The only operations (FastAPI operation ids) a ``metrics-reader`` token may call."""
TARGET_PATTERN = r"^(agent|cache(/[a-z0-9]([-a-z0-9]*[a-z0-9])?)?)$"
TRUNCATED_MARK = (
    "# HELP edgefleet_relay_truncated 1: the cloud's relay cut this answer at its size limit; samples are missing\n"
    "# TYPE edgefleet_relay_truncated gauge\n"
    "edgefleet_relay_truncated 1\n"
)


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """The relay's bounds (see the module docstring)."""

    min_interval: float = 5.0
    """Seconds an answer is served again for the same node and target."""
    max_bytes: int = 512 * 1024
    """The largest answer relayed; longer ones are cut after a whole line."""
    timeout: float = 6.0
    """Seconds to wait for a node's answer before 504."""
    max_in_flight: int = 64
    """Requests waiting on nodes at once on this replica."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One relay answer: HTTP status and body (Prometheus text on 200, a Status document otherwise)."""

    status: int
    body: str
    retry_after: int | None = None

    def response(self) -> Response:
        if self.status == 200:
            return Response(self.body, media_type=CONTENT_TYPE_LATEST)
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after else None
        return Response(self.body, status_code=self.status, media_type="application/json", headers=headers)


def failure(status: int, reason: str, message: str, retry_after: int | None = None) -> Answer:
    return Answer(status, json.dumps(status_body(status, reason, message)), retry_after)


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.relayed = Counter(
            "edgefleet_hub_metrics_relayed",
            "Metrics relay requests by outcome (ok, cached, timeout, busy, unsupported, error, forwarded)",
            ["outcome"],
            registry=registry,
        )
        self.truncated = Counter(
            "edgefleet_hub_metrics_relay_truncated",
            "Relayed metrics answers cut at the size limit",
            registry=registry,
        )


class MetricsRelay:
    """The relay of one hub replica (see the module docstring)."""

    def __init__(self, hub: "Hub", settings: RelaySettings | None = None) -> None:
        self.hub = hub
        self.settings = settings or RelaySettings()
        self.metrics = RelayMetrics(hub.metrics.registry)
        hub.metrics.registry.register(FleetCollector(lambda: hub.index, hub.fleet_demand))
        self._recent: dict[tuple[str, str], tuple[float, Answer]] = {}
        self._flights: dict[tuple[str, str], asyncio.Future[Answer]] = {}

    async def scrape(self, node: str, target: str) -> Answer | None:
        """The node's answer for ``target``: cached, shared or asked now; None when this replica lacks the node."""
        key = (node, target)
        now = time.monotonic()
        recent = self._recent.get(key)
        if recent is not None and now - recent[0] < self.settings.min_interval:
            self.metrics.relayed.labels("cached").inc()
            return recent[1]
        flight = self._flights.get(key)
        if flight is not None:
            try:
                return await asyncio.shield(flight)
            except asyncio.CancelledError:
                if not flight.cancelled():
                    raise  # this scrape itself was cancelled
                return failure(503, "ServiceUnavailable", "the shared scrape of this target was cancelled", 1)
        connection = self.hub.connections.get(node)
        if connection is None or not connection.session.started:
            return None
        if len(self._flights) >= self.settings.max_in_flight:
            self.metrics.relayed.labels("busy").inc()
            return failure(503, "ServiceUnavailable", "the metrics relay is at its limit of scrapes in flight", 1)
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            answer = await self._ask(node, target)
            flight.set_result(answer)
        except asyncio.CancelledError:
            flight.cancel()  # the sharing scrapers answer 503
            raise
        except Exception as exc:  # a bug: the sharing scrapers get the same failure
            flight.set_exception(exc)
            flight.exception()  # retrieved: no "never retrieved" warning when nobody shared it
            raise
        finally:
            del self._flights[key]
        if answer.status in (200, 404):
            self._remember(key, answer)
        return answer

    async def _ask(self, node: str, target: str) -> Answer:
        connection = self.hub.connections[node]
        session = connection.session
        try:
            request_id = session.request_metrics(target, self.settings.max_bytes)
        except ValueError as exc:
            self.metrics.relayed.labels("unsupported").inc()
            return failure(501, "NotImplemented", str(exc))
        except SessionStateError as exc:
            self.metrics.relayed.labels("busy").inc()
            return failure(503, "ServiceUnavailable", f"node {node!r}: {exc}", 1)
        future: asyncio.Future[MetricsReply] = asyncio.get_running_loop().create_future()
        connection.metrics[request_id] = future
        connection.wake.set()
        try:
            reply = await asyncio.wait_for(future, self.settings.timeout)
        except TimeoutError:
            session.forget_metrics(request_id)
            self.metrics.relayed.labels("timeout").inc()
            return failure(504, "GatewayTimeout", f"node {node!r} did not answer within {self.settings.timeout:g} s")
        except ConnectionError:
            self.metrics.relayed.labels("error").inc()
            return failure(409, "NotConnected", f"node {node!r} disconnected before it answered")
        finally:
            connection.metrics.pop(request_id, None)
        return self._answer(node, target, reply)

    def _answer(self, node: str, target: str, reply: MetricsReply) -> Answer:
        if reply.error is not None:
            self.metrics.relayed.labels("error").inc()
            return failure(404, "NotFound", f"node {node!r}: {reply.error}")
        text, cut = cut_at_line(reply.data, self.settings.max_bytes)  # whatever the node was asked
        self.metrics.relayed.labels("ok").inc()
        if cut or reply.truncated:
            self.metrics.truncated.inc()
            log.warning("metrics of %s (%s) cut at %d bytes", node, target, self.settings.max_bytes)
            if text and not text.endswith("\n"):
                text += "\n"
            text += TRUNCATED_MARK
        return Answer(200, text)

    def _remember(self, key: tuple[str, str], answer: Answer) -> None:
        now = time.monotonic()
        self._recent[key] = (now, answer)
        if len(self._recent) > 2 * len(self.hub.connections) + 64:  # bounded: drop what is stale
            self._recent = {k: v for k, v in self._recent.items() if now - v[0] < self.settings.min_interval}

    def targets(self, host: str) -> list[dict[str, Any]]:
        """The http_sd document: a group per live node (any replica) and target, pointing at ``host``."""
        index = self.hub.index
        groups: list[dict[str, Any]] = []
        for node in sorted(self.hub.live_nodes()):
            entry = index.get(f"/registry/nodes/{node}")
            if entry is None:
                continue
            document = entry[1]
            site = str((document.get("spec") or {}).get("site") or "")
            site_entry = index.get(f"/registry/sites/{site}") if site else None
            region = str(((site_entry[1].get("spec") or {}).get("region") or "") if site_entry else "")
            components = ["agent"]
            if (document.get("status") or {}).get("cache"):
                components.append("cache")
            for component in components:
                labels = {
                    "__metrics_path__": METRICS_PATH.format(node=node),
                    "__param_target": component,
                    "node": node,
                    "site": site,
                    "region": region,
                    "component": component,
                }
                groups.append({"targets": [host], "labels": labels})
        return groups

    def router(self, reader: Callable[..., Awaitable[Any]]) -> APIRouter:
        router = APIRouter(tags=["edge"])
        denied: dict[int | str, dict[str, Any]] = {
            401: {"model": Status, "description": "Missing, malformed or unknown bearer token"},
            403: {"model": Status, "description": "Not an admin or metrics-reader token"},
        }

        @router.get(
            METRICS_PATH,
            operation_id="node_metrics",
            summary="A connected node's agent or cache metrics (Prometheus text), relayed over its link",
            response_class=Response,
            responses={
                200: {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}},
                400: {"model": Status, "description": "Invalid target"},
                **denied,
                404: {"model": Status, "description": "The node has no such target (no ready cache)"},
                409: {"model": Status, "description": "The node is not connected to any hub replica"},
                501: {"model": Status, "description": "The node's agent predates the metrics relay"},
                503: {"model": Status, "description": "Too many scrapes in flight; Retry-After says when"},
                504: {"model": Status, "description": "The node did not answer in time"},
            },
        )
        async def node_metrics(
            request: Request,
            node: str,
            principal: Annotated[Principal, Depends(reader)],
            target: Annotated[str, Query(pattern=TARGET_PATTERN, max_length=64)] = "agent",
        ) -> Response:
            require_metrics_reader(principal)
            answer = await self.scrape(node, target)
            if answer is not None:
                return answer.response()
            forwarded = await self.hub.forward_logs(request, node)  # generic: same path on the holder
            if forwarded is not None:
                self.metrics.relayed.labels("forwarded").inc()
                return forwarded
            return failure(409, "NotConnected", f"node {node!r} is not connected to any hub replica").response()

        @router.get(
            TARGETS_PATH,
            operation_id="prometheus_targets",
            summary="Prometheus HTTP service discovery: every connected node's relayed metrics targets",
            responses=denied,
        )
        async def prometheus_targets(
            request: Request, principal: Annotated[Principal, Depends(reader)]
        ) -> list[dict[str, Any]]:
            require_metrics_reader(principal)
            return self.targets(request.url.netloc)

        return router


def require_metrics_reader(principal: Principal) -> None:
    """Forbidden unless ``principal`` is an admin or a metrics-reader."""
    if principal.role not in (Role.ADMIN, Role.METRICS_READER):
        raise Forbidden(
            f"fleet metrics need an admin or metrics-reader token; {principal.name!r} has role "
            f"{principal.role.value} (make one with `edgefleet token create --role metrics-reader`)"
        )


__all__ = [
    "METRICS_PATH",
    "RELAY_OPERATIONS",
    "TARGETS_PATH",
    "MetricsRelay",
    "RelaySettings",
    "require_metrics_reader",
]
