"""Node identity: bootstrap tokens, joining, node credentials, rotation and revocation.

How a node gets an identity:

1. An admin creates a **bootstrap token** (``edgefleet token create``): a
   ``<id>.<secret>`` token kept, hashed, at ``/system/bootstrap-tokens/<id>``
   with its expiry. The key is bound to a store lease of the token's TTL, so
   it disappears by itself; the expiry is also checked on every use (a lease
   may outlive its TTL by a moment, and etcd rounds short TTLs up). It is
   good for any number of joins until it expires or is deleted, and for
   nothing else: it is not under ``/system/tokens/``, so the REST API does
   not know it (401). An admin may narrow it (:class:`BootstrapTokenRequest`,
   ``edgefleet token create --site S --name N --uses 1 --approval``): bound
   to one site and/or one node name (a join for another is 403), good for a
   number of joins (counted in the token's record with a compare-and-swap,
   so two concurrent joins with a one-use token cannot both win; a join that
   fails after taking its use gives it back), and needing approval (the node
   joins, but its credential is *pending*: refused by the hub and the API
   until ``edgefleet node approve N``, so it gets no view).
2. ``edgefleet edge join`` presents it once to ``POST /edge/v1/join`` with
   the node's name, site, labels and addresses. The cloud creates the Node
   (validated like any Node), or adopts an existing one of that name when its
   ``spec.site`` matches (one applied from a manifest: the manifest wins, so
   the join's labels and addresses are not applied to it), and issues a
   **node credential**: an ordinary token at ``/system/tokens/<id>`` with role
   ``node`` and the node's name. What that role may do is
   :func:`edgefleet.cloud.auth.authorize_node`.
3. A join never takes over a node that holds a credential (409), whatever
   its phase: a bootstrap token must not let anyone become an existing node
   that merely went quiet. An admin decides instead: ``edgefleet node revoke
   N`` first (then any join may take the name), or a token made for that node
   with ``--name N --takeover``. That is how a reinstalled machine gets its
   identity back.

API tokens for people and tools: the same ``POST /edge/v1/bootstrap-tokens``
with ``"role": "viewer"`` (read only: dashboards, monitoring), ``"admin"`` or
``"metrics-reader"`` (Prometheus through the relay only, :mod:`edgefleet.cloud.metricsrelay`)
creates an ordinary API token at ``/system/tokens/<id>`` with that role,
hashed like every other (``edgefleet token create --role viewer``). It never
expires unless ``ttlSeconds`` is given (then a store lease removes it). The
default role stays ``bootstrap``, so a body without ``role`` means what it
always meant. ``GET`` lists these tokens beside the bootstrap tokens (with
their role; node credentials are not listed) and ``DELETE`` deletes either
kind by id. Why one route for both: an operator thinks "make me a token";
the role says what it may do, and the listing shows every token an admin
handed out in one place.

Revocation (``DELETE /edge/v1/nodes/<name>/credentials``) deletes every
credential of the node and clears its peer votes; its next request or
connection is 401.

Rotation (``POST /edge/v1/credentials/rotate``, with a node credential)
issues a new credential and gives every *other* credential of the node a
grace period (a store lease, :data:`DEFAULT_ROTATION_GRACE` = 10 minutes)
instead of deleting it. Why a grace period rather than a confirmation step:
the node may crash or lose the answer before it has stored the new
credential; with the old one still valid it simply rotates again (or keeps
working) and nothing is lost, with no second round trip and no state on the
server beyond a lease. After rotation a node has exactly one credential
without an expiry, so repeated rotations never pile up live credentials.

Hooks for the hub (every cloud replica):

- :meth:`Identity.authenticate_node` turns the ``Authorization`` header of a
  WebSocket handshake into the node's name (Unauthorized: unknown, revoked,
  malformed or missing; Forbidden: a valid token that is not a node's).
- :meth:`Identity.on_credential_removed` registers a callback called with a
  node's name whenever one of its credentials is deleted or expires
  (revocation, a re-join, the end of a rotation's grace period). The hub
  should close that node's sessions; the agent reconnects with the
  credential it holds now and is refused if that one is gone. A callback
  may return an awaitable (``lambda node: hub.disconnect_node(node, ...)``):
  it is run as a task. Callbacks may be called more than once for one change
  and must be idempotent. They are driven by
  :meth:`Identity.watch_credentials`, a store watch that every replica runs,
  so a revocation made through any replica reaches the sessions on all of
  them; the same watch drops the authenticator's cached lookups of deleted
  tokens, so no replica accepts a revoked credential from its cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgefleet.api.common import format_timestamp, parse_timestamp
from edgefleet.api.documents import JSONObject, StoredDocument
from edgefleet.api.errors import ValidationFailed
from edgefleet.api.meta import API_VERSION, validation_errors
from edgefleet.api.nodes import INFO as NODES
from edgefleet.cloud.auth import (
    PENDING_RULE,
    TOKEN_PREFIX,
    Authenticator,
    Forbidden,
    Role,
    Unauthorized,
    bearer_token,
    generate_token,
    hash_secret,
    secret_matches,
    split_token,
    token_record,
)
from edgefleet.cloud.registry import Admit, ObjectExists, ObjectNotFound, Registry, RegistryError
from edgefleet.store.interface import (
    AlreadyExists,
    Compacted,
    Conflict,
    Event,
    EventType,
    KeyValue,
    LeaseNotFound,
    NotFound,
    StoreError,
    WatchTooSlow,
)

CREDENTIAL_INDEX_PREFIX = "/system/node-credentials/"
"""``<prefix><node>/<token id>`` (empty values): which credentials each node has, so that a join, a
rotation or a revocation reads that node's entries instead of every token (joining N nodes was O(N^2))."""
log = logging.getLogger("edgefleet.cloud.identity")

BOOTSTRAP_PREFIX = "/system/bootstrap-tokens/"
DEFAULT_BOOTSTRAP_TTL = 24 * 3600
MAX_BOOTSTRAP_TTL = 30 * 24 * 3600
DEFAULT_ROTATION_GRACE = 600
MAX_TOKEN_USES = 100_000
CAS_ATTEMPTS = 16
"""Compare-and-swap rounds on one token record before a join gives up (409: retry)."""
BOOTSTRAP_HINT = "create a new one with `edgefleet token create` (admin)"
NEW_ID_ATTEMPTS = 5


BodyT = TypeVar("BodyT", bound=BaseModel)


class JoinConflict(RegistryError):
    """The join names a Node that belongs to another site or to a live machine."""

    status = 409
    reason = "Conflict"


# -- request and response bodies (the /edge/v1 API schema) ----------------------


class _Body(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


TokenRole = Literal["bootstrap", "viewer", "admin", "metrics-reader"]
API_TOKEN_ROLES = {"viewer": Role.VIEWER, "admin": Role.ADMIN, "metrics-reader": Role.METRICS_READER}


class BootstrapTokenRequest(_Body):
    ttl_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_BOOTSTRAP_TTL,
        alias="ttlSeconds",
        description="Seconds the token stays valid (1 s to 30 days). Default: 24 h for a bootstrap token, "
        "no expiry for a viewer or admin token.",
    )
    description: str = Field(default="", max_length=256, description="What the token is for.")
    role: TokenRole = Field(
        default="bootstrap",
        description="bootstrap (joins nodes, nothing else), viewer (reads the API), admin (reads and writes) "
        "or metrics-reader (scrapes fleet metrics through the cloud, nothing else).",
    )
    site: str | None = Field(
        default=None, min_length=1, max_length=253, description="Bootstrap tokens only: joins must name this site."
    )
    node: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        alias="name",
        description="Bootstrap tokens only: joins must name this node.",
    )
    uses: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOKEN_USES,
        description="Bootstrap tokens only: how many joins it is good for (default: any).",
    )
    approval: bool = Field(
        default=False,
        description="Bootstrap tokens only: nodes joined with it wait for "
        "`edgefleet node approve NAME` before they may connect.",
    )
    takeover: bool = Field(
        default=False,
        description="Bootstrap tokens bound to a name only: a join may replace "
        "the credentials that node holds (a reinstalled machine).",
    )

    @model_validator(mode="after")
    def _bootstrap_only(self) -> BootstrapTokenRequest:
        narrowing = [
            name
            for name, value in (
                ("site", self.site),
                ("name", self.node),
                ("uses", self.uses),
                ("approval", self.approval),
                ("takeover", self.takeover),
            )
            if value
        ]
        if self.role != "bootstrap" and narrowing:
            raise ValueError(f"{', '.join(narrowing)}: only for bootstrap tokens (role {self.role})")
        if self.takeover and not self.node:
            raise ValueError("takeover needs name: a token may take over one named node only")
        return self


class BootstrapToken(_Body):
    id: str = Field(description="The token's id (its first 6 characters); not a secret.")
    description: str = ""
    role: TokenRole = Field(default="bootstrap", description="What the token is for (see the request).")
    expires_at: str | None = Field(alias="expiresAt", description="RFC 3339 UTC; null: never.")
    created_at: str = Field(alias="createdAt", description="RFC 3339 UTC.")
    created_by: str = Field(alias="createdBy", description="Name of the admin token that created it.")
    site: str | None = Field(default=None, description="The only site joins may name (null: any).")
    node: str | None = Field(default=None, alias="name", description="The only node joins may name (null: any).")
    uses: int | None = Field(default=None, description="Joins it is good for (null: any number).")
    used: int = Field(default=0, description="Joins made with it.")
    approval: bool = Field(default=False, description="Nodes joined with it wait for `edgefleet node approve`.")
    takeover: bool = Field(default=False, description="A join may replace the named node's credentials.")


class BootstrapTokenCreated(BootstrapToken):
    token: str = Field(description="The bootstrap token; shown only in this answer.")


class BootstrapTokenList(_Body):
    items: list[BootstrapToken]


class JoinRequest(_Body):
    name: str = Field(min_length=1, max_length=253, description="Node name (DNS-1123).")
    site: str = Field(min_length=1, max_length=253, description="Name of the node's Site.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of a new Node.")
    addresses: list[str] = Field(default_factory=list, max_length=16, description="Addresses of a new Node.")


class JoinResponse(_Body):
    node: str
    credential: str = Field(description="The node credential (a bearer token); shown only in this answer.")
    adopted: bool = Field(description="True when an existing Node was adopted instead of created.")
    pending: bool = Field(
        default=False,
        description="True when the credential waits for an admin's approval "
        "(`edgefleet node approve NAME`); until then the hub and the API refuse it.",
    )


class NodeApproved(_Body):
    node: str
    approved: int = Field(description="How many of its credentials were pending and are approved now.")


class CredentialsRevoked(_Body):
    node: str
    revoked: int = Field(description="How many credentials were deleted.")


class CredentialRotated(_Body):
    node: str
    credential: str = Field(description="The new node credential; shown only in this answer.")
    previous_expires_at: str = Field(
        alias="previousExpiresAt", description="When the credential used for this call stops working."
    )


def parse_body(model: type[BodyT], document: object) -> BodyT:
    """Validate a decoded JSON body; ValidationFailed (422) names each field path."""
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise ValidationFailed(validation_errors(exc)) from None


def dump(model: BaseModel) -> JSONObject:
    return model.model_dump(mode="json", by_alias=True)


def node_document(request: JoinRequest) -> StoredDocument:
    """The Node a join creates."""
    return {
        "apiVersion": API_VERSION,
        "kind": NODES.kind,
        "metadata": {"name": request.name, "labels": request.labels},
        "spec": {"site": request.site, "addresses": request.addresses},
    }


def expiry(now: datetime, seconds: int) -> datetime:
    """``now + seconds`` rounded *up* to a whole second (timestamps have whole seconds)."""
    moment = now + timedelta(seconds=seconds)
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    return moment


CredentialCallback = Callable[[str], object]


class Identity:
    """Bootstrap tokens, joins and node credentials over one store; see the module docstring."""

    def __init__(
        self,
        registry: Registry,
        authenticator: Authenticator,
        *,
        rotation_grace: int = DEFAULT_ROTATION_GRACE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if rotation_grace < 1:
            raise ValueError("rotation_grace must be at least 1 second")
        self._registry = registry
        self._store = registry.store
        self._auth = authenticator
        self._grace = rotation_grace
        self._clock = clock
        self._callbacks: list[CredentialCallback] = []
        self._watched = 0
        self._tasks: set[asyncio.Future[Any]] = set()

    # -- bootstrap tokens ---------------------------------------------------------

    async def create_bootstrap_token(self, request: BootstrapTokenRequest, creator: str) -> BootstrapTokenCreated:
        """A bootstrap token, or with ``request.role`` viewer or admin an API token (see the module docstring)."""
        if request.role != "bootstrap":
            return await self._create_api_token(request, creator)
        now = self._clock()
        ttl = request.ttl_seconds or DEFAULT_BOOTSTRAP_TTL
        lease = await self._store.grant_lease(ttl)
        for _ in range(NEW_ID_ATTEMPTS):
            token = generate_token()
            token_id, secret = split_token(token)
            info = BootstrapToken(
                id=token_id,
                description=request.description,
                created_by=creator,
                expires_at=format_timestamp(expiry(now, ttl)),
                created_at=format_timestamp(now),
                site=request.site,
                node=request.node,
                uses=request.uses,
                approval=request.approval,
                takeover=request.takeover,
            )
            record = {**dump(info), "sha256": hash_secret(secret)}
            try:
                await self._store.create(BOOTSTRAP_PREFIX + token_id, _encode(record), lease=lease.id)
            except AlreadyExists:  # pragma: no cover - 36^6 ids
                continue
            log.info("bootstrap token created", extra={"token_id": token_id, "by": creator})
            return BootstrapTokenCreated(**dump(info), token=token)
        raise RegistryError("could not find a free token id; retry")  # pragma: no cover

    async def _create_api_token(self, request: BootstrapTokenRequest, creator: str) -> BootstrapTokenCreated:
        """An API token of role viewer or admin, hashed at ``/system/tokens/<id>``; a lease if it expires."""
        now, ttl = self._clock(), request.ttl_seconds
        lease = (await self._store.grant_lease(ttl)).id if ttl else 0
        for _ in range(NEW_ID_ATTEMPTS):
            token = generate_token()
            token_id, secret = split_token(token)
            info = BootstrapToken(
                id=token_id,
                description=request.description,
                role=request.role,
                created_by=creator,
                expires_at=format_timestamp(expiry(now, ttl)) if ttl else None,
                created_at=format_timestamp(now),
            )
            extra = {key: value for key, value in dump(info).items() if key not in ("id", "role") and value is not None}
            record = token_record(f"{request.role}-{token_id}", API_TOKEN_ROLES[request.role], secret, **extra)
            try:
                await self._store.create(TOKEN_PREFIX + token_id, record, lease=lease)
            except AlreadyExists:  # pragma: no cover - 36^6 ids
                continue
            self._auth.forget(token_id)  # a lookup of this id may have been cached as unknown
            log.info("API token created", extra={"token_id": token_id, "role": request.role, "by": creator})
            return BootstrapTokenCreated(**dump(info), token=token)
        raise RegistryError("could not find a free token id; retry")  # pragma: no cover

    async def list_bootstrap_tokens(self) -> BootstrapTokenList:
        """Bootstrap tokens and viewer/admin API tokens that have not expired (node credentials are not listed)."""
        now = self._clock()
        bootstrap = [_bootstrap_info(kv) for kv in (await self._store.list(BOOTSTRAP_PREFIX)).items]
        api = [_api_token_info(kv) for kv in (await self._store.list(TOKEN_PREFIX)).items if _is_api_token(kv)]
        items = [i for i in bootstrap + api if i.expires_at is None or parse_timestamp(i.expires_at) > now]
        return BootstrapTokenList(items=items)

    async def delete_bootstrap_token(self, token_id: str) -> BootstrapToken:
        """Delete a bootstrap token, or a viewer/admin API token, by id."""
        try:
            kv = await self._store.delete(BOOTSTRAP_PREFIX + token_id)
        except NotFound:
            return await self._delete_api_token(token_id)
        await self._revoke_lease(kv.lease)
        log.info("bootstrap token deleted", extra={"token_id": token_id})
        return _bootstrap_info(kv)

    async def _delete_api_token(self, token_id: str) -> BootstrapToken:
        kv = await self._store.get(TOKEN_PREFIX + token_id)
        deleted = None
        if kv is not None and _is_api_token(kv):  # node credentials are revoked per node, not by id
            with contextlib.suppress(NotFound, Conflict):
                deleted = await self._store.delete(kv.key, expected_revision=kv.mod_revision)
        self._auth.forget(token_id)
        if deleted is None:
            raise ObjectNotFound(
                f'token "{token_id}" not found (expired or deleted; node credentials are revoked with '
                "`edgefleet node revoke NODE`); list them with `edgefleet token list`"
            )
        await self._revoke_lease(deleted.lease)
        log.info("API token deleted", extra={"token_id": token_id})
        return _api_token_info(deleted)

    async def check_bootstrap(self, authorization: str | None) -> str:
        """The id of the valid bootstrap token in ``authorization``; Unauthorized otherwise."""
        token_id, secret = bearer_token(authorization)
        kv = await self._store.get(BOOTSTRAP_PREFIX + token_id)
        record = json.loads(kv.value) if kv is not None else None
        if record is None or not secret_matches(record["sha256"], secret):
            raise Unauthorized(f"unknown or expired bootstrap token; {BOOTSTRAP_HINT}")
        if self._clock() >= parse_timestamp(record["expiresAt"]):
            raise Unauthorized(f"the bootstrap token expired at {record['expiresAt']}; {BOOTSTRAP_HINT}")
        _check_uses(token_id, record)
        return token_id

    # -- join -----------------------------------------------------------------------

    async def join(self, request: JoinRequest, *, via: str, admit: Admit | None = None) -> JoinResponse:
        """Create or adopt the Node, then give it a fresh credential.

        ``via`` is the id of the bootstrap token the caller checked with
        :meth:`check_bootstrap` (it is recorded with the credential);
        ``admit`` admits the Node it creates (the API server passes one:
        its site must exist), see :mod:`edgefleet.cloud.admission`.
        """
        record = await self._bootstrap_record(via)
        _check_binding(via, record, request)
        await self._count_use(via, +1)
        try:
            adopted = await self._create_or_adopt(request, admit, takeover=bool(record.get("takeover")))
            replaced = await self._delete_credentials(request.name)
            pending = {"approval": "pending"} if record.get("approval") else {}
            credential = await self._issue_credential(request.name, joinedWith=via, **pending)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._count_use(via, -1)  # the join failed: its use is given back
            raise
        log.info(
            "node joined",
            extra={
                "node": request.name,
                "site": request.site,
                "adopted": adopted,
                "replaced_credentials": replaced,
                "bootstrap_token": via,
                "pending": bool(pending),
            },
        )
        return JoinResponse(node=request.name, credential=credential, adopted=adopted, pending=bool(pending))

    async def _bootstrap_record(self, token_id: str) -> JSONObject:
        kv = await self._store.get(BOOTSTRAP_PREFIX + token_id)
        if kv is None:
            raise Unauthorized(f"unknown or expired bootstrap token; {BOOTSTRAP_HINT}")
        return _record(kv)

    async def _count_use(self, token_id: str, step: int) -> None:
        """Add ``step`` to the token's ``used`` count (compare-and-swap); Unauthorized when it is used up.

        Tokens without ``uses`` are not counted (no write per join)."""
        for _ in range(CAS_ATTEMPTS):
            kv = await self._store.get(BOOTSTRAP_PREFIX + token_id)
            if kv is None:
                raise Unauthorized(f"unknown or expired bootstrap token; {BOOTSTRAP_HINT}")
            record = _record(kv)
            if record.get("uses") is None:
                return
            if step > 0:
                _check_uses(token_id, record)
            record["used"] = max(0, int(record.get("used") or 0) + step)
            try:
                await self._store.update(kv.key, _encode(record), expected_revision=kv.mod_revision, lease=kv.lease)
                return
            except Conflict:
                continue  # another join took a use meanwhile: count again
            except NotFound:
                raise Unauthorized(f"unknown or expired bootstrap token; {BOOTSTRAP_HINT}") from None
        raise JoinConflict(f"bootstrap token {token_id} is being used by many joins at once; retry")

    async def approve_node(self, name: str) -> NodeApproved:
        """Approve the pending credentials of node ``name`` (joined with an approval token)."""
        approved = 0
        for kv in await self._credentials_of(name):
            record = _record(kv)
            if record.get("approval") != "pending":
                continue
            record.pop("approval")
            with contextlib.suppress(NotFound, Conflict):  # revoked or rotated meanwhile
                await self._store.update(kv.key, _encode(record), expected_revision=kv.mod_revision, lease=kv.lease)
                approved += 1
            self._auth.forget(kv.key.removeprefix(TOKEN_PREFIX))
        log.info("node approved", extra={"node": name, "approved": approved})
        return NodeApproved(node=name, approved=approved)

    async def _create_or_adopt(self, request: JoinRequest, admit: Admit | None, *, takeover: bool) -> bool:
        try:
            await self._registry.create(NODES, node_document(request), admit=admit)
            return False
        except ObjectExists:
            existing = await self._registry.get(NODES, request.name)
        site = existing["spec"]["site"]
        if site != request.site:
            raise JoinConflict(
                f'node "{request.name}" already exists in site "{site}", not "{request.site}"; '
                f"join with --site {site}, or pick another --name"
            )
        if not takeover and await self._credentials_of(request.name):
            raise JoinConflict(
                f'node "{request.name}" holds a credential: a join cannot take it over. Pick another --name, or, '
                f"if this machine replaces it, an admin revokes the old one first (`edgefleet node revoke "
                f"{request.name}`) or makes a token for it: `edgefleet token create --name {request.name} --takeover`"
            )
        return True

    # -- node credentials -----------------------------------------------------------

    async def revoke_node(self, name: str) -> CredentialsRevoked:
        """Delete every credential of node ``name`` (none is fine: revoked 0)."""
        revoked = await self._delete_credentials(name)
        with contextlib.suppress(RegistryError, StoreError):  # no Node (404) or a busy store: nothing to clear
            # Its votes stop counting at once, on every replica (the hub also clears them when it closes the
            # session, but only for a session it holds).
            await self._registry.patch(NODES, name, {"status": {"peerVotes": None}}, status=True)
        log.info("node credentials revoked", extra={"node": name, "revoked": revoked})
        return CredentialsRevoked(node=name, revoked=revoked)

    async def rotate(self, authorization: str | None) -> CredentialRotated:
        """A new credential for the calling node; its other credentials expire after the grace period."""
        token_id, principal = await self._auth.identify(authorization)
        if principal.role is not Role.NODE:
            raise Forbidden(
                f"only a node credential can be rotated ({principal.name!r} has role {principal.role.value}); "
                "run `edgefleet edge rotate-credential` on the node"
            )
        if principal.pending:
            raise Forbidden(PENDING_RULE.format(name=principal.name))
        credential = await self._issue_credential(principal.name, rotatedFrom=token_id)
        await self._retire_others(principal.name, keep=split_token(credential)[0])
        kv = await self._store.get(TOKEN_PREFIX + token_id)
        previous = json.loads(kv.value).get("expiresAt", "") if kv is not None else format_timestamp(self._clock())
        log.info("node credential rotated", extra={"node": principal.name, "previous_expires_at": previous})
        return CredentialRotated(node=principal.name, credential=credential, previous_expires_at=previous)

    async def authenticate_node(self, authorization: str | None) -> str:
        """The node name of the node credential in ``authorization`` (e.g. a WebSocket handshake).

        Raises Unauthorized (missing, malformed, unknown or revoked: HTTP 401 /
        close the handshake) or Forbidden (a valid admin or viewer token: 403).
        """
        principal = await self._auth.authenticate(authorization)
        if principal.role is not Role.NODE:
            raise Forbidden(
                f"this endpoint takes a node credential (written by `edgefleet edge join` to "
                f"<data-dir>/credential), not a {principal.role.value} token"
            )
        if principal.pending:
            raise Forbidden(PENDING_RULE.format(name=principal.name))
        return principal.name

    async def _issue_credential(self, node: str, **extra: str) -> str:
        issued = format_timestamp(self._clock())
        for _ in range(NEW_ID_ATTEMPTS):
            token = generate_token()
            token_id, secret = split_token(token)
            record = token_record(node, Role.NODE, secret, issuedAt=issued, **extra)
            # The index entry first: a crash in between leaves an entry without a credential (dropped when
            # next read), never a credential a re-join or a revocation could not find.
            with contextlib.suppress(AlreadyExists):
                await self._store.create(_index_key(node, token_id), b"")
            try:
                await self._store.create(TOKEN_PREFIX + token_id, record)
            except AlreadyExists:  # pragma: no cover - 36^6 ids
                continue
            self._auth.forget(token_id)  # a lookup of this id may have been cached as unknown
            return token
        raise RegistryError("could not find a free token id; retry")  # pragma: no cover

    async def _credentials_of(self, node: str) -> list[KeyValue]:
        """The node's credentials, through its index entries (a join reads its own node's, not every token)."""
        credentials = []
        for entry in (await self._store.list(f"{CREDENTIAL_INDEX_PREFIX}{node}/")).items:
            kv = await self._store.get(TOKEN_PREFIX + entry.key.rsplit("/", 1)[1])
            if kv is not None and _is_credential_of(kv, node):
                credentials.append(kv)
            elif kv is None:  # expired (its lease ended) or deleted: the entry goes too
                with contextlib.suppress(NotFound, Conflict):
                    await self._store.delete(entry.key, expected_revision=entry.mod_revision)
        return credentials

    async def index_credentials(self) -> int:
        """Index node credentials written before the per-node index existed; returns how many were added.

        Called once when the cloud starts (one list of the tokens); cheap when all are indexed already.
        """
        indexed = {
            kv.key.removeprefix(CREDENTIAL_INDEX_PREFIX)
            for kv in (await self._store.list(CREDENTIAL_INDEX_PREFIX)).items
        }
        added = 0
        for kv in (await self._store.list(TOKEN_PREFIX)).items:
            record = _record(kv)
            token_id = kv.key.removeprefix(TOKEN_PREFIX)
            if record.get("role") != Role.NODE.value or f"{record.get('name')}/{token_id}" in indexed:
                continue
            with contextlib.suppress(AlreadyExists):
                await self._store.create(_index_key(str(record.get("name")), token_id), b"")
                added += 1
        return added

    async def _delete_credentials(self, node: str) -> int:
        deleted = 0
        for kv in await self._credentials_of(node):
            try:
                await self._store.delete(kv.key, expected_revision=kv.mod_revision)
                deleted += 1
            except (NotFound, Conflict):
                continue  # gone or rotated meanwhile
            finally:
                self._auth.forget(kv.key.removeprefix(TOKEN_PREFIX))
            await self._revoke_lease(kv.lease)
        return deleted

    async def _retire_others(self, node: str, *, keep: str) -> None:
        """Bind every other credential of ``node`` that has no expiry yet to one grace lease."""
        expires = format_timestamp(expiry(self._clock(), self._grace))
        lease = 0
        for kv in await self._credentials_of(node):
            if kv.key == TOKEN_PREFIX + keep or kv.lease:
                continue
            lease = lease or (await self._store.grant_lease(self._grace)).id
            record = {**json.loads(kv.value), "expiresAt": expires}
            try:
                await self._store.update(kv.key, _encode(record), expected_revision=kv.mod_revision, lease=lease)
            except (NotFound, Conflict):
                continue

    async def _revoke_lease(self, lease: int) -> None:
        if lease:
            with contextlib.suppress(LeaseNotFound):
                await self._store.revoke_lease(lease)

    # -- removal notifications --------------------------------------------------------

    def on_credential_removed(self, callback: CredentialCallback) -> Callable[[], None]:
        """Call ``callback(node_name)`` when a credential of that node is deleted or expires.

        A returned awaitable is run as a task.

        Returns a function that unsubscribes. See the module docstring.
        """
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    async def watch_credentials(self) -> None:
        """Follow deletions of tokens: forget cached lookups, notify subscribers.

        Runs until cancelled or until the store closes; start it on every replica.
        """
        self._watched = await self._current_revision()
        while True:
            try:
                await self._follow_tokens()
                return  # the store closed
            except Compacted as exc:
                log.warning("token watch restarted; deletions before it may have been missed: %s", exc)
                self._auth.forget()
                self._watched = await self._current_revision()
            except WatchTooSlow:
                continue  # every change up to self._watched was seen: resume after it
            except StoreError as exc:
                log.warning("token watch failed, retrying in 1s: %s", exc)
                await asyncio.sleep(1.0)

    async def _current_revision(self) -> int:
        while True:
            try:
                return await self._store.current_revision()
            except StoreError as exc:
                log.warning("token watch cannot read the store, retrying in 1s: %s", exc)
                await asyncio.sleep(1.0)

    async def _follow_tokens(self) -> None:
        stream = self._store.watch(TOKEN_PREFIX, self._watched)
        try:
            async for item in stream:
                if isinstance(item, Event) and item.type is EventType.DELETE:
                    self._token_removed(item.kv)
                self._watched = item.revision
        finally:
            await stream.aclose()

    def _token_removed(self, kv: KeyValue) -> None:
        self._auth.forget(kv.key.removeprefix(TOKEN_PREFIX))
        record = _record(kv)
        if record.get("role") != Role.NODE.value:
            return
        node = str(record.get("name"))
        for callback in list(self._callbacks):
            try:
                result = callback(node)
            except Exception:  # a subscriber's bug must not stop the watch
                log.exception("credential-removed callback failed", extra={"node": node})
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("credential-removed callback failed", exc_info=task.exception())


def _check_uses(token_id: str, record: JSONObject) -> None:
    uses, used = record.get("uses"), int(record.get("used") or 0)
    if uses is not None and used >= uses:
        raise Unauthorized(f"bootstrap token {token_id} is used up ({used} of {uses} joins); {BOOTSTRAP_HINT}")


def _check_binding(token_id: str, record: JSONObject, request: JoinRequest) -> None:
    """Forbidden when the token is bound to another site or node name than the join names."""
    for field, wanted, flag in (("site", request.site, "--site"), ("name", request.name, "--name")):
        bound = record.get(field)
        if bound is not None and bound != wanted:
            raise Forbidden(
                f"bootstrap token {token_id} is bound to {field} {bound!r}, not {wanted!r}: join with "
                f"{flag} {bound}, or ask an admin for a token for {wanted!r}"
            )


def _encode(record: JSONObject) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def _record(kv: KeyValue) -> JSONObject:
    try:
        record = json.loads(kv.value)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _index_key(node: str, token_id: str) -> str:
    return f"{CREDENTIAL_INDEX_PREFIX}{node}/{token_id}"


def _is_credential_of(kv: KeyValue, node: str) -> bool:
    record = _record(kv)
    return record.get("role") == Role.NODE.value and record.get("name") == node


def _is_api_token(kv: KeyValue) -> bool:
    return _record(kv).get("role") in API_TOKEN_ROLES


def _api_token_info(kv: KeyValue) -> BootstrapToken:
    """What the listing shows of a viewer or admin token (the first admin token has no creation fields)."""
    record = _record(kv)
    return BootstrapToken(
        id=kv.key.removeprefix(TOKEN_PREFIX),
        description=str(record.get("description", "")),
        role=record["role"],
        expires_at=record.get("expiresAt"),
        created_at=str(record.get("createdAt", "")),
        created_by=str(record.get("createdBy", "")),
    )


def _bootstrap_info(kv: KeyValue) -> BootstrapToken:
    record = _record(kv)
    record.pop("sha256", None)
    return BootstrapToken.model_validate(record)
