"""The REST API: ``/apis/edgefleet.io/v1/<plural>[/<name>][/status]``.

How: one set of routes per registered kind, generated from the kind
registry, so a new kind is served (and documented in ``/openapi.json``) as
soon as it is registered. Handlers are thin: authenticate, read the body,
call the :class:`~edgefleet.cloud.registry.Registry`, return JSON bytes.
Every failure is a ``Status`` body produced by :mod:`edgefleet.cloud.errors`.

Bodies are parsed by the registry (not by FastAPI) so that every validation
error names its field path the way the CLI and the docs do; the OpenAPI
document still declares the kind's schema for each body.

Writes (create, replace, patch, delete, and the Node a join creates) pass
admission (:mod:`edgefleet.cloud.admission`): the registry calls a
per-request :class:`~edgefleet.cloud.admission.Review` before it stores,
which may refuse the write (422, 409, 403, 503) or return warnings, sent as
``Warning: 299 - "..."`` headers. ``DELETE ...?force=true`` overrides the
reference checks (a Site that still has Nodes), never the webhooks. Status
writes are not admitted.

Node credentials (role ``node``) pass the same dependencies, which apply
:func:`~edgefleet.cloud.auth.authorize_node` to the route's operation id and
``{name}``: a node reads its own Node and writes its status, nothing else.
The ``/edge/v1`` routes (bootstrap tokens, join, credential revocation and
rotation) are thin adapters over :class:`~edgefleet.cloud.identity.Identity`.

Watch (``?watch=true``) streams newline-delimited JSON events
``{"type": "ADDED|MODIFIED|DELETED|BOOKMARK|ERROR", "object": {...}}``.
Without ``resourceVersion`` it first sends the current objects as ADDED,
then the changes after the revision they were read at (no gap between the
two). An expired revision is 410 before the stream starts, or an ERROR
event carrying a 410 Status once it has started. ``GET .../v1/watch?kinds=``
streams several kinds' watches on one connection, each line tagged with its
kind's plural (:mod:`edgefleet.cloud.multiwatch`; the same per-kind watch,
authorization and encoding as here).
"""

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

import edgefleet
from edgefleet.api import kinds as _kinds  # noqa: F401  (the cloud serves every kind: load them all at start)
from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.api.errors import ApiError, SelectorError
from edgefleet.api.meta import API_VERSION, KindInfo, all_kinds
from edgefleet.api.nodes import INFO as NODES
from edgefleet.api.selectors import Selector
from edgefleet.cloud import multiwatch
from edgefleet.cloud import ui as dashboard
from edgefleet.cloud.admission import Admission, IndexLookup, RegistryLookup, Review, warning_headers
from edgefleet.cloud.agentsocket import SyncEndpoint
from edgefleet.cloud.auth import Authenticator, AuthError, Principal, Role, authorize_metrics_reader, authorize_node
from edgefleet.cloud.blobs import DEFAULT_MAX_BLOB_BYTES, BlobEndpoint, BlobStore
from edgefleet.cloud.draining import watch_deadline
from edgefleet.cloud.errors import Status, StatusCause, from_exception, status_body
from edgefleet.cloud.hub import Hub
from edgefleet.cloud.identity import (
    BootstrapToken,
    BootstrapTokenCreated,
    BootstrapTokenList,
    BootstrapTokenRequest,
    CredentialRotated,
    CredentialsRevoked,
    Identity,
    JoinRequest,
    JoinResponse,
    NodeApproved,
    dump,
    parse_body,
)
from edgefleet.cloud.limits import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_WATCHES_PER_PRINCIPAL,
    BodyLimitMiddleware,
    BodyTooLarge,
    TooManyWatches,
    WatchSlots,
)
from edgefleet.cloud.metrics import ApiMetrics, MetricsMiddleware
from edgefleet.cloud.metricsrelay import RELAY_OPERATIONS
from edgefleet.cloud.registry import (
    BadRequest,
    Bookmark,
    Gone,
    Registry,
    RegistryError,
    WatchEvent,
    bookmark_document,
    parse_resource_version,
)
from edgefleet.store.interface import StoreError, Watch
from edgefleet.tls import CA_PATH

API_ROOT = f"/apis/{API_VERSION}"
EDGE_ROOT = "/edge/v1"
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
NDJSON = "application/x-ndjson"
PEM = "application/x-pem-file"
MAX_LIST_LIMIT = 10_000
MAX_WATCH_SECONDS = 3600
NOT_READY_MESSAGE = "store not ready; see the server log"
"""/readyz's 503 message: fixed, the detail (a store address, a path) goes to the log only."""
log = logging.getLogger("edgefleet.cloud.server")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    default_watch_seconds: int = 1800
    ca_pem: bytes | None = None
    """The CA served (public) at /edge/v1/ca for joins that pin it by hash; None: 404."""
    max_watches_per_principal: int = DEFAULT_WATCHES_PER_PRINCIPAL
    """Watches one token may hold open at once (0: no limit); one more is 429 (limits.WatchSlots)."""
    blob_dir: Path | None = None
    """Where artifact blobs are kept (edgefleet.cloud.blobs); None: no blob routes."""
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES


def json_response(document: Any, status: int = 200, *, warnings: Iterable[str] = ()) -> Response:
    body = json.dumps(document, separators=(",", ":")).encode()
    response = Response(body, status_code=status, media_type=JSON)
    for value in warning_headers(warnings):  # UTF-8 bytes: a webhook's warning may not be Latin-1
        response.raw_headers.append((b"warning", value.encode()))
    return response


def admitted(document: Any, review: Review, status: int = 200) -> Response:
    """The response to an admitted write, with the warnings admission gathered."""
    return json_response(document, status, warnings=review.warnings)


def error_response(exc: Exception) -> Response:
    body = from_exception(exc)
    if body is None:
        body = status_body(500, "InternalError", "internal error; see the server log")
    return json_response(body, body["code"])


_STATUS_BY_REFERENCE = {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}
"""An error body in the OpenAPI document. Not ``"model": Status``: FastAPI builds a pydantic TypeAdapter
for each route's each model response (some 1,500 here, most of ``create_app``'s time); a reference costs
nothing and documents the same. ``/readyz``'s 503 keeps the model, which puts Status in the components."""

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": _STATUS_BY_REFERENCE}
    for code, text in {
        400: "Bad request (malformed JSON, selector, continue token)",
        401: "Missing, malformed or unknown bearer token",
        403: "The token's role does not allow this request, or an admission webhook denied it",
        404: "No such object",
        409: "Already exists, resourceVersion conflict, or still in use (a Site with Nodes; see ?force)",
        410: "The requested resourceVersion was compacted",
        413: "Request body over the limit",
        415: "Unsupported Content-Type",
        422: "Invalid object, or it names objects that do not exist; details.causes name each field path",
        503: "The store is unavailable, or an admission webhook with failurePolicy Fail could not answer",
    }.items()
}


def create_app(
    registry: Registry,
    authenticator: Authenticator,
    settings: ServerSettings | None = None,
    *,
    ready_check: Callable[[], Awaitable[None]] | None = None,
    identity: Identity | None = None,
    hub: Hub | None = None,
) -> Any:
    """Build the ASGI application (FastAPI app wrapped in metrics and body-limit middleware).

    ``identity`` serves the ``/edge/v1`` routes; one over ``registry`` and
    ``authenticator`` is made when not given. It is ``app.state.identity``.
    ``hub``, when given, adds the agents' WebSocket and the logs route,
    and admission reads other objects from its in-memory index (else from
    the store). The :class:`~edgefleet.cloud.admission.Admission` is
    ``app.state.admission``.
    """
    settings = settings or ServerSettings()
    identity = identity or Identity(registry, authenticator)
    metrics = ApiMetrics()
    app = FastAPI(
        title="edgefleet API",
        version=edgefleet.__version__,
        description="Resources of the edgefleet CDN control plane (edgefleet.io/v1).",
        separate_input_output_schemas=False,
    )
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.identity = identity
    app.state.watch_slots = WatchSlots(settings.max_watches_per_principal)
    lookup = IndexLookup(lambda: hub.index, registry) if hub is not None else RegistryLookup(registry)
    admission = app.state.admission = Admission(lookup)
    _install_error_handlers(app)
    bearer = HTTPBearer(auto_error=False, description="admin, viewer or node token (bootstrap token for join)")

    async def authorization(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str | None:
        return f"{credentials.scheme} {credentials.credentials}" if credentials else None

    async def reader(request: Request, header: Annotated[str | None, Depends(authorization)]) -> Principal:
        principal = await authenticator.authenticate(header)
        request_line = f"{request.method} {request.url.path}"
        _authorize(principal, _operation_id(request), request.path_params.get("name"), request_line)
        return principal

    async def authenticated(header: Annotated[str | None, Depends(authorization)]) -> Principal:
        return await authenticator.authenticate(header)  # the multiplexed watch authorizes each kind itself

    async def writer(principal: Annotated[Principal, Depends(reader)]) -> Principal:
        if principal.role is not Role.NODE:  # a node's requests were checked by reader
            principal.require_write()
        return principal

    more_metrics = [hub.metrics.registry] if hub is not None else []
    _add_system_routes(app, registry, metrics, reader, ready_check, more_metrics)
    for info in all_kinds():
        _add_kind_routes(app, info, registry, admission, metrics, settings, reader, writer)
    _add_multiwatch_route(app, registry, metrics, settings, authenticated)
    _add_edge_routes(app, identity, admission, reader, authorization)
    _add_ca_route(app, settings.ca_pem)
    app.include_router(dashboard.router())  # /ui: static pages, no data, no token needed
    if hub is not None:
        app.include_router(hub.router(reader))
    limited: Any = BodyLimitMiddleware(app, settings.max_body_bytes)
    if settings.blob_dir is not None:  # uploads stream past the API's body limit, to disk
        blobs = BlobStore(settings.blob_dir, settings.max_blob_bytes)
        limited = BlobEndpoint(limited, blobs, authenticator.authenticate, metrics.registry)
    wrapped = MetricsMiddleware(limited, metrics)
    return wrapped if hub is None else SyncEndpoint(wrapped, hub.serve)


def _authorize(principal: Principal, operation: str | None, name: str | None, request_line: str) -> None:
    """Forbidden unless ``principal`` may call ``operation`` (admins and viewers may read everything)."""
    if principal.role is Role.NODE:
        authorize_node(principal, operation, name, request_line)
    elif principal.role is Role.METRICS_READER:  # Prometheus' token: the metrics relay, nothing else
        authorize_metrics_reader(principal, operation, RELAY_OPERATIONS, request_line)


def _operation_id(request: Request) -> str | None:
    route = request.scope.get("route")  # set by FastAPI's router before dependencies run
    operation: str | None = getattr(route, "operation_id", None)
    return operation


def _install_error_handlers(app: FastAPI) -> None:
    async def known(_: Request, exc: Exception) -> Response:
        return error_response(exc)

    for cls in (ApiError, RegistryError, AuthError, StoreError):
        app.add_exception_handler(cls, known)

    async def too_large(_: Request, __: Exception) -> Response:
        return json_response(status_body(413, "RequestEntityTooLarge", "request body over the limit"), 413)

    async def invalid_request(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        causes = [StatusCause(field=".".join(str(p) for p in e["loc"]), message=str(e["msg"])) for e in exc.errors()]
        return json_response(status_body(400, "BadRequest", "invalid request parameters", causes), 400)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        reasons = {404: "NotFound", 405: "MethodNotAllowed"}
        reason = reasons.get(exc.status_code, "BadRequest")
        message = "no such API path; see /openapi.json" if exc.status_code == 404 else str(exc.detail)
        return json_response(status_body(exc.status_code, reason, message), exc.status_code)

    app.add_exception_handler(BodyTooLarge, too_large)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)


async def read_json(request: Request, *, allowed: tuple[str, ...] = (JSON,)) -> object:
    content_type = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
    if content_type not in allowed:
        raise UnsupportedMediaType(f"Content-Type {content_type!r} is not supported here; use {' or '.join(allowed)}")
    body = await request.body()
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None


class UnsupportedMediaType(RegistryError):
    status = 415
    reason = "UnsupportedMediaType"


def parse_selector(text: str | None) -> Selector | None:
    if not text:
        return None
    try:
        return Selector.parse(text)
    except SelectorError as exc:
        raise BadRequest(f"labelSelector: {exc}") from None


def _body_schema(info: KindInfo, content_type: str = JSON) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {content_type: {"schema": {"$ref": f"#/components/schemas/{info.kind}"}}},
        }
    }


def _add_system_routes(
    app: FastAPI,
    registry: Registry,
    metrics: ApiMetrics,
    reader: Callable[..., Awaitable[Principal]],
    ready_check: Callable[[], Awaitable[None]] | None,
    more_metrics: list[CollectorRegistry],
) -> None:
    @app.get(
        "/healthz", tags=["system"], summary="Liveness: the process serves requests", response_class=PlainTextResponse
    )
    async def healthz() -> Response:
        return PlainTextResponse("ok")

    @app.get(
        "/readyz",
        tags=["system"],
        summary="Readiness: the store answers",
        response_class=PlainTextResponse,
        responses={503: {"model": Status, "description": "The store is unavailable"}},
    )
    async def readyz() -> Response:
        try:
            await asyncio.wait_for(registry.store.current_revision(), timeout=2.0)
            if ready_check is not None:
                await ready_check()
        except (StoreError, TimeoutError) as exc:
            log.warning("readyz: store not ready: %r", exc)
            return json_response(status_body(503, "ServiceUnavailable", NOT_READY_MESSAGE), 503)
        return PlainTextResponse("ok")

    @app.get("/metrics", tags=["system"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:
        try:
            metrics.store_revision.set(await registry.store.current_revision())
            metrics.store_compacted_revision.set(await registry.store.compacted_revision())
        except StoreError:
            pass  # the scrape still returns the request metrics
        text = b"".join(generate_latest(source) for source in [metrics.registry, *more_metrics])
        return PlainTextResponse(text, media_type=CONTENT_TYPE_LATEST)

    @app.get("/version", tags=["system"], summary="Server version")
    async def version() -> Response:
        return json_response({"version": edgefleet.__version__, "apiVersion": API_VERSION})

    @app.get(
        API_ROOT,
        tags=["system"],
        summary="The resource kinds this server serves",
        responses={401: _ERROR_RESPONSES[401], 403: _ERROR_RESPONSES[403]},
    )
    async def discovery(_: Annotated[Principal, Depends(reader)]) -> Response:
        resources = [
            {"kind": i.kind, "name": i.plural, "singularName": i.singular, "shortNames": list(i.short_names)}
            for i in all_kinds()
        ]
        return json_response({"apiVersion": API_VERSION, "kind": "APIResourceList", "resources": resources})


def _add_kind_routes(
    app: FastAPI,
    info: KindInfo,
    registry: Registry,
    admission: Admission,
    metrics: ApiMetrics,
    settings: ServerSettings,
    reader: Callable[..., Awaitable[Principal]],
    writer: Callable[..., Awaitable[Principal]],
) -> None:
    collection = f"{API_ROOT}/{info.plural}"
    item = collection + "/{name}"
    tags: list[str | Enum] = [info.kind]
    Reader = Annotated[Principal, Depends(reader)]
    Writer = Annotated[Principal, Depends(writer)]
    list_responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": f"A {info.kind}List, or with watch=true a stream of watch events",
            "content": {JSON: {"schema": {"type": "object"}}, NDJSON: {"schema": {"type": "object"}}},
        },
        **_ERROR_RESPONSES,
    }

    @app.get(
        collection,
        tags=tags,
        summary=f"List or watch {info.plural}",
        responses=list_responses,
        response_class=Response,
        operation_id=f"list_{info.plural}",
    )
    async def list_objects(
        request: Request,
        principal: Reader,
        label_selector: Annotated[str | None, Query(alias="labelSelector", max_length=1024)] = None,
        limit: Annotated[int, Query(ge=0, le=MAX_LIST_LIMIT)] = 0,
        continue_: Annotated[str | None, Query(alias="continue", max_length=1024)] = None,
        watch: bool = False,
        resource_version: Annotated[str | None, Query(alias="resourceVersion", max_length=32)] = None,
        timeout_seconds: Annotated[int | None, Query(alias="timeoutSeconds", ge=1, le=MAX_WATCH_SECONDS)] = None,
        allow_watch_bookmarks: Annotated[bool, Query(alias="allowWatchBookmarks")] = True,
    ) -> Response:
        selector = parse_selector(label_selector)
        if watch:
            after = parse_resource_version(resource_version, field="resourceVersion")
            timeout = timeout_seconds or settings.default_watch_seconds
            slots: WatchSlots = request.app.state.watch_slots
            try:
                slots.acquire(principal.name)
            except TooManyWatches as exc:
                return json_response(status_body(429, "TooManyRequests", str(exc)), 429)
            try:
                response = await _start_watch(
                    registry,
                    metrics,
                    info,
                    selector,
                    after,
                    timeout,
                    allow_watch_bookmarks,
                    redact=_redaction(info, principal),
                )
            except BaseException:
                slots.release(principal.name)
                raise
            assert isinstance(response, StreamingResponse)
            response.body_iterator = _holding_slot(response.body_iterator, slots, principal.name)
            return response
        page = await registry.list(info, selector=selector, limit=limit, continue_token=continue_ or "")
        meta: dict[str, str] = {"resourceVersion": str(page.revision)}
        if page.continue_token:
            meta["continue"] = page.continue_token
        items = _shown(info, principal, page.items)
        listing = {"apiVersion": API_VERSION, "kind": f"{info.kind}List", "metadata": meta, "items": items}
        return json_response(listing)

    @app.post(
        collection,
        tags=tags,
        summary=f"Create a {info.kind}",
        status_code=201,
        responses={201: {"model": info.model}, **_ERROR_RESPONSES},
        openapi_extra=_body_schema(info),
        response_class=Response,
        operation_id=f"create_{info.singular}",
    )
    async def create_object(request: Request, _: Writer) -> Response:
        review = admission.review(info)
        return admitted(await registry.create(info, await read_json(request), admit=review), review, 201)

    @app.get(
        item,
        tags=tags,
        summary=f"Read a {info.kind}",
        responses={200: {"model": info.model}, **_ERROR_RESPONSES},
        response_class=Response,
        operation_id=f"read_{info.singular}",
    )
    async def read_object(name: Annotated[str, _name_param()], principal: Reader) -> Response:
        return json_response(_shown(info, principal, [await registry.get(info, name)])[0])

    @app.put(
        item,
        tags=tags,
        summary=f"Replace a {info.kind} (metadata.resourceVersion is a precondition)",
        responses={200: {"model": info.model}, **_ERROR_RESPONSES},
        openapi_extra=_body_schema(info),
        response_class=Response,
        operation_id=f"replace_{info.singular}",
    )
    async def replace_object(name: Annotated[str, _name_param()], request: Request, _: Writer) -> Response:
        review = admission.review(info)
        return admitted(await registry.replace(info, name, await read_json(request), admit=review), review)

    @app.patch(
        item,
        tags=tags,
        summary=f"JSON merge patch (RFC 7386) of a {info.kind}",
        responses={200: {"model": info.model}, **_ERROR_RESPONSES},
        openapi_extra=_patch_schema(),
        response_class=Response,
        operation_id=f"patch_{info.singular}",
    )
    async def patch_object(name: Annotated[str, _name_param()], request: Request, _: Writer) -> Response:
        patch = await read_json(request, allowed=(MERGE_PATCH, JSON))
        review = admission.review(info)
        return admitted(await registry.patch(info, name, patch, admit=review), review)

    @app.delete(
        item,
        tags=tags,
        summary=f"Delete a {info.kind}",
        responses={200: {"model": info.model}, **_ERROR_RESPONSES},
        response_class=Response,
        operation_id=f"delete_{info.singular}",
    )
    async def delete_object(
        name: Annotated[str, _name_param()],
        _: Writer,
        resource_version: Annotated[
            str | None, Query(alias="resourceVersion", max_length=32, description="delete only at this revision")
        ] = None,
        force: Annotated[
            bool,
            Query(
                description="delete even though other objects still name it (a Site "
                "with Nodes); admission webhooks are still asked"
            ),
        ] = False,
    ) -> Response:
        expected = parse_resource_version(resource_version, field="resourceVersion")
        review = admission.review(info, force=force)
        return admitted(await registry.delete(info, name, resource_version=expected, admit=review), review)

    _add_status_routes(app, info, registry, reader, writer)


def _add_status_routes(
    app: FastAPI,
    info: KindInfo,
    registry: Registry,
    reader: Callable[..., Awaitable[Principal]],
    writer: Callable[..., Awaitable[Principal]],
) -> None:
    path = f"{API_ROOT}/{info.plural}" + "/{name}/status"
    tags: list[str | Enum] = [info.kind]
    Reader = Annotated[Principal, Depends(reader)]
    Writer = Annotated[Principal, Depends(writer)]
    responses: dict[int | str, dict[str, Any]] = {200: {"model": info.model}, **_ERROR_RESPONSES}

    @app.get(
        path,
        tags=tags,
        summary=f"Read a {info.kind} with its status",
        responses=responses,
        response_class=Response,
        operation_id=f"read_{info.singular}_status",
    )
    async def read_status(name: Annotated[str, _name_param()], principal: Reader) -> Response:
        return json_response(_shown(info, principal, [await registry.get(info, name)])[0])

    @app.put(
        path,
        tags=tags,
        summary=f"Replace the status of a {info.kind}",
        responses=responses,
        openapi_extra=_body_schema(info),
        response_class=Response,
        operation_id=f"replace_{info.singular}_status",
    )
    async def replace_status(name: Annotated[str, _name_param()], request: Request, _: Writer) -> Response:
        return json_response(await registry.replace(info, name, await read_json(request), status=True))

    @app.patch(
        path,
        tags=tags,
        summary=f"Merge-patch the status of a {info.kind}",
        responses=responses,
        openapi_extra=_patch_schema(),
        response_class=Response,
        operation_id=f"patch_{info.singular}_status",
    )
    async def patch_status(name: Annotated[str, _name_param()], request: Request, _: Writer) -> Response:
        patch = await read_json(request, allowed=(MERGE_PATCH, JSON))
        return json_response(await registry.patch(info, name, patch, status=True))


def _edge_body(model: type[Any]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True, "content": {JSON: {"schema": schema}}}}


def _edge_responses(code: int, model: type[Any]) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": model}, **_ERROR_RESPONSES}


def _add_edge_routes(
    app: FastAPI,
    identity: Identity,
    admission: Admission,
    reader: Callable[..., Awaitable[Principal]],
    authorization: Callable[..., Awaitable[str | None]],
) -> None:
    """``/edge/v1``: bootstrap tokens (admin), join (bootstrap token), revoke (admin), rotate (node)."""
    tags: list[str | Enum] = ["edge"]
    Header = Annotated[str | None, Depends(authorization)]

    async def admin(principal: Annotated[Principal, Depends(reader)], request: Request) -> Principal:
        if principal.role is Role.NODE:
            authorize_node(principal, None, None, f"{request.method} {request.url.path}")
        principal.require_admin(f"{request.method} {request.url.path}")
        return principal

    Admin = Annotated[Principal, Depends(admin)]

    @app.post(
        f"{EDGE_ROOT}/bootstrap-tokens",
        tags=tags,
        status_code=201,
        response_class=Response,
        summary="Create a bootstrap token for `edgefleet edge join` (admin)",
        responses=_edge_responses(201, BootstrapTokenCreated),
        openapi_extra=_edge_body(BootstrapTokenRequest),
        operation_id="create_bootstrap_token",
    )
    async def create_bootstrap_token(request: Request, principal: Admin) -> Response:
        body = parse_body(BootstrapTokenRequest, await read_json(request))
        return json_response(dump(await identity.create_bootstrap_token(body, principal.name)), 201)

    @app.get(
        f"{EDGE_ROOT}/bootstrap-tokens",
        tags=tags,
        response_class=Response,
        summary="List the bootstrap tokens that have not expired (admin; secrets are not shown)",
        responses=_edge_responses(200, BootstrapTokenList),
        operation_id="list_bootstrap_tokens",
    )
    async def list_bootstrap_tokens(_: Admin) -> Response:
        return json_response(dump(await identity.list_bootstrap_tokens()))

    @app.delete(
        f"{EDGE_ROOT}/bootstrap-tokens/{{token_id}}",
        tags=tags,
        response_class=Response,
        summary="Delete a bootstrap token before it expires (admin)",
        responses=_edge_responses(200, BootstrapToken),
        operation_id="delete_bootstrap_token",
    )
    async def delete_bootstrap_token(
        token_id: Annotated[str, PathParam(pattern="^[a-z0-9]{6}$", description="token id")],
        _: Admin,
    ) -> Response:
        return json_response(dump(await identity.delete_bootstrap_token(token_id)))

    @app.post(
        f"{EDGE_ROOT}/join",
        tags=tags,
        status_code=201,
        response_class=Response,
        summary="Join a node: create or adopt its Node and issue its credential (bootstrap token)",
        responses=_edge_responses(201, JoinResponse),
        openapi_extra=_edge_body(JoinRequest),
        operation_id="join_node",
    )
    async def join(request: Request, header: Header) -> Response:
        via = await identity.check_bootstrap(header)
        body = parse_body(JoinRequest, await read_json(request))
        review = admission.review(NODES)
        return admitted(dump(await identity.join(body, via=via, admit=review)), review, 201)

    @app.delete(
        f"{EDGE_ROOT}/nodes/{{name}}/credentials",
        tags=tags,
        response_class=Response,
        summary="Revoke every credential of a node (admin); it is refused (401) until it joins again",
        responses=_edge_responses(200, CredentialsRevoked),
        operation_id="revoke_node_credentials",
    )
    async def revoke(name: Annotated[str, _name_param()], _: Admin) -> Response:
        return json_response(dump(await identity.revoke_node(name)))

    @app.post(
        f"{EDGE_ROOT}/nodes/{{name}}/approve",
        tags=tags,
        response_class=Response,
        summary="Approve a node that joined with an approval token (admin); its agent may connect then",
        responses=_edge_responses(200, NodeApproved),
        operation_id="approve_node",
    )
    async def approve(name: Annotated[str, _name_param()], _: Admin) -> Response:
        return json_response(dump(await identity.approve_node(name)))

    @app.post(
        f"{EDGE_ROOT}/credentials/rotate",
        tags=tags,
        response_class=Response,
        summary="Issue a new credential to the calling node; the old one expires after a grace period",
        responses=_edge_responses(200, CredentialRotated),
        operation_id="rotate_node_credential",
    )
    async def rotate(header: Header) -> Response:
        return json_response(dump(await identity.rotate(header)))


def _add_ca_route(app: FastAPI, ca_pem: bytes | None) -> None:
    """``/edge/v1/ca``: the CA certificate, public (a join checks it against its --ca-hash before trusting it)."""

    @app.get(
        CA_PATH,
        tags=["edge"],
        response_class=Response,
        operation_id="read_cluster_ca",
        summary="The CA certificate of the cloud's TLS (PEM; no token needed: joins pin it by hash)",
        responses={
            200: {"description": "PEM", "content": {PEM: {"schema": {"type": "string"}}}},
            404: _ERROR_RESPONSES[404],
        },
    )
    async def cluster_ca() -> Response:
        if ca_pem is None:
            return json_response(
                status_body(
                    404,
                    "NotFound",
                    "this cloud publishes no CA (it serves cleartext, or "
                    "--tls-cert has no CA and no --tls-ca was given); give nodes the CA "
                    "file: edgefleet edge join --ca-file",
                ),
                404,
            )
        return Response(ca_pem, media_type=PEM)


def _name_param() -> Any:
    from fastapi import Path

    return Path(min_length=1, max_length=253, description="object name (DNS-1123)")


def _patch_schema() -> dict[str, Any]:
    schema = {"schema": {"type": "object", "description": "RFC 7386 JSON merge patch"}}
    return {"requestBody": {"required": True, "content": {MERGE_PATCH: schema, JSON: schema}}}


def _add_multiwatch_route(
    app: FastAPI,
    registry: Registry,
    metrics: ApiMetrics,
    settings: ServerSettings,
    authenticated: Callable[..., Awaitable[Principal]],
) -> None:
    """``GET /apis/edgefleet.io/v1/watch?kinds=...``: several kinds on one stream (cloud/multiwatch.py)."""
    by_plural = {info.plural: info for info in all_kinds()}
    ok = {"description": "A stream of watch events, each tagged with its kind's plural", "content": {NDJSON: {}}}
    codes = (400, 401, 403, 503)
    responses: dict[int | str, dict[str, Any]] = {200: ok, **{code: _ERROR_RESPONSES[code] for code in codes}}
    responses[429] = {"description": "The token holds too many watches (one per kind)", "content": _STATUS_BY_REFERENCE}

    @app.get(
        multiwatch.WATCH_PATH,
        tags=["watch"],
        summary="Watch several kinds on one stream",
        description=multiwatch.DESCRIPTION,
        responses=responses,
        response_class=Response,
        operation_id="watch_kinds",
    )
    async def watch_kinds(
        request: Request,
        principal: Annotated[Principal, Depends(authenticated)],
        kinds: Annotated[str, Query(max_length=1024, description=multiwatch.KINDS_HELP)],
        timeout_seconds: Annotated[int | None, Query(alias="timeoutSeconds", ge=1, le=MAX_WATCH_SECONDS)] = None,
        allow_watch_bookmarks: Annotated[bool, Query(alias="allowWatchBookmarks")] = True,
    ) -> Response:
        starts = multiwatch.parse_kinds(kinds, by_plural)
        for start in starts:  # the same check as GET /apis/edgefleet.io/v1/<plural>?watch=true
            _authorize(principal, f"list_{start.info.plural}", None, f"GET {API_ROOT}/{start.info.plural}?watch=true")
        slots: WatchSlots = request.app.state.watch_slots
        try:
            multiwatch.acquire_slots(slots, principal.name, len(starts))
        except TooManyWatches as exc:
            return json_response(status_body(429, "TooManyRequests", f"{exc} (each kind of a watch counts)"), 429)
        timeout = timeout_seconds or settings.default_watch_seconds
        try:
            streams = [
                await _kind_stream(
                    registry, metrics, s.info, s.after, timeout, allow_watch_bookmarks, _redaction(s.info, principal)
                )
                for s in starts
            ]
        except BaseException:
            multiwatch.release_slots(slots, principal.name, len(starts))
            raise
        lines = multiwatch.merged(streams)
        held = multiwatch.holding(lines, slots, principal.name, len(starts), metrics.multiplexed_watches)
        return multiwatch.ClosingStream(held, NDJSON)


async def _kind_stream(
    registry: Registry,
    metrics: ApiMetrics,
    info: KindInfo,
    after: int,
    watch_seconds: int,
    bookmarks: bool,
    redact: Callable[[StoredDocument], StoredDocument] | None,
) -> AsyncGenerator[bytes, None]:
    """One kind of a multiplexed watch: its lines tagged with its plural; one ERROR 410 line when gone."""
    try:
        return await _open_watch(registry, metrics, info, None, after, watch_seconds, bookmarks, redact, info.plural)
    except Gone as exc:
        return _gone_line(info, exc)


async def _gone_line(info: KindInfo, exc: Gone) -> AsyncGenerator[bytes, None]:
    yield _line("ERROR", status_body(410, "Expired", str(exc)), info.plural)


async def _start_watch(
    registry: Registry,
    metrics: ApiMetrics,
    info: KindInfo,
    selector: Selector | None,
    after: int,
    watch_seconds: int,
    bookmarks: bool,
    *,
    redact: Callable[[StoredDocument], StoredDocument] | None = None,
) -> Response:
    stream = await _open_watch(registry, metrics, info, selector, after, watch_seconds, bookmarks, redact)
    return multiwatch.ClosingStream(stream, NDJSON)  # a client gone mid-stream frees its slot at once, not at GC


async def _open_watch(
    registry: Registry,
    metrics: ApiMetrics,
    info: KindInfo,
    selector: Selector | None,
    after: int,
    watch_seconds: int,
    bookmarks: bool,
    redact: Callable[[StoredDocument], StoredDocument] | None,
    resource: str | None = None,
) -> AsyncGenerator[bytes, None]:
    """The watch's lines (a list first when ``after`` is 0); Gone before anything streams when compacted.

    ``resource`` (the multiplexed watch) tags every line with the kind's plural and marks the end of
    the listed objects with an annotated BOOKMARK.
    """
    initial: list[StoredDocument] = []
    listed_at: int | None = None
    if after == 0:
        page = await registry.list(info, selector=selector)
        initial, after = page.items, page.revision
        listed_at = after if resource is not None else None
    await registry.ensure_watchable(after)
    events = registry.watch(info, after_revision=after, selector=selector)
    shown = redact or _as_is
    return _watch_lines(metrics, info, initial, events, watch_seconds, bookmarks, shown, resource, listed_at)


async def _holding_slot(stream: AsyncIterable[Any], slots: WatchSlots, principal: str) -> AsyncIterator[Any]:
    """``stream``, releasing the principal's watch slot however it ends (done, timed out, client gone)."""
    try:
        async for chunk in stream:
            yield chunk
    finally:
        slots.release(principal)


def _redaction(info: KindInfo, principal: Principal) -> Callable[[StoredDocument], StoredDocument] | None:
    """The kind's ``redactForViewers`` hook (Secrets: values hidden) for anyone but an admin, else None."""
    redact: Callable[[StoredDocument], StoredDocument] | None = info.extra.get("redactForViewers")
    return redact if principal.role is not Role.ADMIN else None


def _shown(info: KindInfo, principal: Principal, documents: list[StoredDocument]) -> list[StoredDocument]:
    """``documents`` as ``principal`` may see them (see :func:`_redaction`)."""
    redact = _redaction(info, principal)
    return documents if redact is None else [redact(doc) for doc in documents]


def _as_is(document: StoredDocument) -> StoredDocument:
    return document


def _line(event_type: str, obj: Mapping[str, Any], resource: str | None = None) -> bytes:
    event: dict[str, Any] = {"type": event_type}
    if resource is not None:
        event["resource"] = resource
    event["object"] = obj
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def _initial_end(info: KindInfo, revision: int) -> JSONObject:
    """A BOOKMARK object saying every object of the kind at ``revision`` was sent (multiplexed watch)."""
    document = bookmark_document(info, revision)
    document["metadata"]["annotations"] = {multiwatch.INITIAL_EVENTS_END: "true"}
    return document


async def _watch_lines(
    metrics: ApiMetrics,
    info: KindInfo,
    initial: list[StoredDocument],
    events: Watch[WatchEvent | Bookmark],
    watch_seconds: int,
    bookmarks: bool,
    shown: Callable[[StoredDocument], StoredDocument],
    resource: str | None = None,
    listed_at: int | None = None,
) -> AsyncGenerator[bytes, None]:
    gauge = metrics.watchers.labels(info.kind)
    gauge.inc()
    try:
        for doc in initial:
            yield _line("ADDED", shown(doc), resource)
        if listed_at is not None:
            yield _line("BOOKMARK", _initial_end(info, listed_at), resource)
        try:
            async with watch_deadline(watch_seconds):  # brought forward when the cloud stops
                async for event in events:
                    if isinstance(event, WatchEvent):
                        yield _line(event.type, shown(event.obj), resource)
                    elif bookmarks:
                        yield _line("BOOKMARK", bookmark_document(info, event.revision), resource)
        except TimeoutError:
            return
        except Gone as exc:
            yield _line("ERROR", status_body(410, "Expired", str(exc)), resource)
    finally:
        gauge.dec()
        await events.aclose()
