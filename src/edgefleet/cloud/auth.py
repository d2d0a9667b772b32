"""Bearer-token authentication and role-based authorization for the API.

How: a token is ``<id>.<secret>`` (the kubeadm bootstrap-token shape). The
store keeps, under ``/system/tokens/<id>``, the token's name, role and the
SHA-256 of its secret, never the secret itself, so a copy of the store does
not leak credentials and every cloud replica sharing the store accepts the
same tokens. Operators may also give a YAML tokens file with static tokens
(kept in memory only):

.. code-block:: yaml

    tokens:
      - name: alice
        role: admin        # admin: read and write; viewer: read only; metrics-reader: fleet metrics only
        token: "abc123.0123456789abcdef0123456789abcdef"

Why two errors: a missing or unknown token is 401 (who are you?), a known
token without the role is 403 (you may not). Secrets are compared in
constant time. Lookups are cached briefly so the hot path costs no store
read; a revoked token stops working within ``cache_seconds``, or at once
when :meth:`Authenticator.forget` is told (the identity service does so on
every replica from a watch of the token keys).

A third role, ``node``, belongs to the credentials ``edgefleet edge join``
issues (see :mod:`edgefleet.cloud.identity`): the principal's name is the
node's name, and :func:`authorize_node` is the whole of what it may do on the
REST API: read its own Node (its status goes over its hub session, where the
cloud stamps times and checks votes). Node credentials never come from the
tokens file. A node credential issued with an approval token is *pending*
(:attr:`Principal.pending`) until an admin approves it: it may do nothing.

The lookup cache is bounded (:data:`CACHE_ENTRIES`, least recently used
first out), and an unknown token id is remembered for
:data:`NEGATIVE_CACHE_SECONDS` only: a client sending random token ids
cannot grow the cloud's memory, and a token created on another replica
works here within that time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
import secrets
import string
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgefleet.store.interface import AlreadyExists, Store

TOKEN_PREFIX = "/system/tokens/"
CACHE_ENTRIES = 10_000
"""Security limit: token lookups the authenticator remembers (least recently used are dropped)."""
NEGATIVE_CACHE_SECONDS = 1.0
"""How long an unknown token id is remembered as unknown."""
ADMIN_TOKEN_NAME = "admin"
_TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{32})$")
_ALPHABET = string.ascii_lowercase + string.digits


class AuthError(Exception):
    """Base of the authentication errors."""


class Unauthorized(AuthError):
    """No token, a malformed token or an unknown token (HTTP 401)."""


class Forbidden(AuthError):
    """A valid token whose role does not allow the request (HTTP 403)."""


class TokensFileError(AuthError):
    """The tokens file cannot be read or is invalid."""


class Role(enum.Enum):
    ADMIN = "admin"
    VIEWER = "viewer"
    NODE = "node"
    METRICS_READER = "metrics-reader"
    """Reads the fleet's metrics through the cloud (the relay and Prometheus discovery), nothing else."""


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    pending: bool = False
    """A node credential awaiting an admin's approval (``edgefleet node approve``): it may do nothing yet."""

    def require_write(self) -> None:
        if self.role is not Role.ADMIN:
            raise Forbidden(f"{self.name!r} has role {self.role.value}; writes need role admin")

    def require_admin(self, what: str) -> None:
        if self.role is not Role.ADMIN:
            raise Forbidden(f"{what} needs an admin token; {self.name!r} has role {self.role.value}")


# The REST operations (FastAPI operation ids, see edgefleet.cloud.server) a
# node credential may call, always on the Node named like the credential.
# Status writes are not among them: a node's status travels over its hub session only, where the
# cloud owns times and checks votes (issue 12, item 2).
NODE_OPERATIONS = frozenset({"read_node", "read_node_status"})
NODE_RULE = (
    "a node credential may only read its own Node (GET /apis/edgefleet.io/v1/nodes/<its name>[/status]) "
    "and rotate itself (POST /edge/v1/credentials/rotate); its status travels over its hub session"
)
PENDING_RULE = "node {name!r} joined with a token that needs approval: an admin runs `edgefleet node approve {name}`"


def authorize_node(principal: Principal, operation: str | None, name: str | None, request: str) -> None:
    """Forbidden unless a node principal calls an allowed operation on its own Node.

    ``operation`` is the route's operation id, ``name`` its ``{name}`` path
    parameter and ``request`` the method and path, for the message.
    """
    if principal.pending:
        raise Forbidden(PENDING_RULE.format(name=principal.name))
    if operation in NODE_OPERATIONS and name == principal.name:
        return
    raise Forbidden(f"{NODE_RULE}; node {principal.name!r} may not {request}")


METRICS_READER_RULE = (
    "a metrics-reader token may only scrape fleet metrics (GET /edge/v1/nodes/<node>/metrics and "
    "GET /edge/v1/prometheus/targets); use a viewer or admin token for anything else"
)


def authorize_metrics_reader(
    principal: Principal, operation: str | None, allowed: frozenset[str], request: str
) -> None:
    """Forbidden unless a metrics-reader principal calls one of the ``allowed`` operations (the relay's)."""
    if operation not in allowed:
        raise Forbidden(f"{METRICS_READER_RULE}; {principal.name!r} may not {request}")


def generate_token() -> str:
    token_id = "".join(secrets.choice(_ALPHABET) for _ in range(6))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(32))
    return f"{token_id}.{secret}"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str]:
    match = _TOKEN_RE.match(token)
    if not match:
        raise Unauthorized("malformed bearer token; expected <6 chars>.<32 chars>")
    return match.group(1), match.group(2)


def bearer_token(authorization: str | None) -> tuple[str, str]:
    """``Bearer <id>.<secret>`` -> (id, secret); Unauthorized when absent or malformed."""
    if not authorization:
        raise Unauthorized("missing bearer token; pass --token or set EDGEFLEET_TOKEN")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return split_token(token.strip())


def hash_secret(secret: str) -> str:
    """What the store keeps instead of a secret (SHA-256, hex)."""
    return _digest(secret)


def secret_matches(digest: str, secret: str) -> bool:
    """Whether ``secret`` hashes to the stored ``digest`` (constant-time compare)."""
    return hmac.compare_digest(digest, _digest(secret))


def token_record(name: str, role: Role, secret: str, **extra: str) -> bytes:
    """The stored form of a token: name, role, hash of the secret and ``extra`` fields."""
    record = {"name": name, "role": role.value, "sha256": _digest(secret), **extra}
    return json.dumps(record, separators=(",", ":")).encode()


def load_tokens_file(path: Path) -> dict[str, tuple[str, Principal]]:
    """Static tokens: id -> (sha256 of secret, principal)."""
    try:
        data: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TokensFileError(f"cannot read tokens file {path}: {exc}") from None
    entries = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise TokensFileError(f"{path}: expected a mapping with a 'tokens' list")
    out: dict[str, tuple[str, Principal]] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: tokens[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"name", "role", "token"}:
            raise TokensFileError(f"{where}: needs exactly name, role and token")
        try:
            token_id, secret = split_token(str(entry.get("token", "")))
            role = Role(entry.get("role"))
            if role is Role.NODE:
                raise ValueError("node credentials come from `edgefleet edge join`")
        except (Unauthorized, ValueError):
            raise TokensFileError(
                f"{where}: token must look like abc123.<32 lowercase letters/digits> "
                "and role must be admin, viewer or metrics-reader (make one with `edgefleet token generate`)"
            ) from None
        out[token_id] = (_digest(secret), Principal(str(entry.get("name", token_id)), role))
    return out


class Authenticator:
    """Maps an ``Authorization`` header to a :class:`Principal`."""

    def __init__(
        self,
        store: Store,
        *,
        static_tokens: dict[str, tuple[str, Principal]] | None = None,
        cache_seconds: float = 5.0,
        cache_entries: int = CACHE_ENTRIES,
        negative_seconds: float = NEGATIVE_CACHE_SECONDS,
    ) -> None:
        self._store = store
        self._static = static_tokens or {}
        self._cache_seconds = cache_seconds
        self._negative_seconds = min(negative_seconds, cache_seconds)
        self._cache_entries = cache_entries
        self._cache: OrderedDict[str, tuple[float, str, Principal] | tuple[float, None, None]] = OrderedDict()

    async def authenticate(self, authorization: str | None) -> Principal:
        return (await self.identify(authorization))[1]

    async def identify(self, authorization: str | None) -> tuple[str, Principal]:
        """Like :meth:`authenticate`, also returning the token's id (for rotation)."""
        token_id, secret = bearer_token(authorization)
        digest, principal = await self._lookup(token_id)
        if digest is None or principal is None or not secret_matches(digest, secret):
            raise Unauthorized("unknown or revoked token")
        return token_id, principal

    def forget(self, token_id: str | None = None) -> None:
        """Drop cached lookups (of one token, or all): the next use reads the store."""
        if token_id is None:
            self._cache.clear()
        else:
            self._cache.pop(token_id, None)

    async def _lookup(self, token_id: str) -> tuple[str | None, Principal | None]:
        if token_id in self._static:
            return self._static[token_id]
        now = time.monotonic()
        cached = self._cache.get(token_id)
        if cached is not None and now - cached[0] < (self._cache_seconds if cached[1] else self._negative_seconds):
            self._cache.move_to_end(token_id)
            return cached[1], cached[2]
        kv = await self._store.get(TOKEN_PREFIX + token_id)
        if kv is None:
            self._remember(token_id, (now, None, None))
            return None, None
        record = json.loads(kv.value)
        principal = Principal(record["name"], Role(record["role"]), pending=record.get("approval") == "pending")
        self._remember(token_id, (now, record["sha256"], principal))
        return record["sha256"], principal

    def _remember(self, token_id: str, entry: tuple[float, str, Principal] | tuple[float, None, None]) -> None:
        self._cache[token_id] = entry
        self._cache.move_to_end(token_id)
        while len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)

    def cached(self) -> int:
        """How many lookups are remembered (bounded by ``cache_entries``)."""
        return len(self._cache)


async def ensure_admin_token(store: Store) -> str | None:
    """Create the first admin token if the store has none; return it (once).

    Returns None when an admin token already exists: the secret is not kept
    anywhere and cannot be shown again.
    """
    listing = await store.list(TOKEN_PREFIX)
    for kv in listing.items:
        record = json.loads(kv.value)
        if record.get("name") == ADMIN_TOKEN_NAME and record.get("role") == Role.ADMIN.value:
            return None  # (a node may be called "admin": its credential does not count)
    token = generate_token()
    token_id, secret = split_token(token)
    try:
        await store.create(TOKEN_PREFIX + token_id, token_record(ADMIN_TOKEN_NAME, Role.ADMIN, secret))
    except AlreadyExists:  # pragma: no cover - 36^6 ids; a clash means retry on next start
        return None
    return token
