"""ClusterInfo: what every edge agent should know about the cloud, starting with where to dial.

How: one object, conventionally named ``default``, whose ``spec.servers``
lists the base URLs (``http(s)://host[:port]``, the form ``edgefleet edge
join --server`` takes) of the cloud's hub replicas. The hub puts every
ClusterInfo object in every node's view (see :mod:`edgefleet.sync.views`),
so the list reaches each agent over its existing link; the agent uses
``default``'s list instead of the servers it joined with (``node.yaml``) for
its *next* connection, and keeps it in its local view store, so an agent
restarted while the cloud is unreachable still dials the last list it
received. Deleting the object (or leaving it out) makes agents fall back to
``node.yaml``.

Why a kind and not a flag of ``edgefleet cloud``: the list must be the same
for every replica and must outlive any one of them; a kind is stored,
versioned, watched and synced like everything else, and RBAC already says
who may write it (admins) and who may only read it (viewers; nodes receive
it through their view and cannot write it).

An agent connected to a replica that is not in the list stays connected
(the list changes where it dials next, not where it is); a replica removed
from the list should release its sessions (close code 4000, see
:mod:`edgefleet.sync.messages`) or be stopped.

Rules: 1 to :data:`MAX_SERVERS` URLs, each absolute http(s) without
credentials, query or fragment (a path prefix is allowed, for a cloud
behind a reverse proxy); stored normalised (lowercase scheme and host, no
trailing slash) and without duplicates. A ClusterInfo has no status.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator

from edgefleet.api.common import cell, check_unique
from edgefleet.api.domains import check_origin_url
from edgefleet.api.meta import Column, KindInfo, Model, Resource, register

DEFAULT_NAME = "default"
"""The ClusterInfo agents read."""

MAX_SERVERS = 16


def check_server_url(url: str) -> str:
    """An absolute ``http(s)://host[:port][/prefix]`` base URL, normalised; ValueError otherwise.

    Normalised: scheme and host lowercased, trailing slashes removed, so that
    one replica written two ways is one server. Used for ClusterInfo, for
    ``edge join --server``, for ``node.yaml`` and for the hub's rebalance hints.
    """
    if not isinstance(url, str):
        raise ValueError("must be a string")
    check_origin_url(url)
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    normalised = f"{scheme.lower()}://{authority.lower()}{slash}{path}".rstrip("/")
    return normalised


ServerUrl = Annotated[str, AfterValidator(check_server_url)]


class ClusterInfoSpec(Model):
    """Where agents find the cloud."""

    servers: list[ServerUrl] = Field(
        min_length=1,
        max_length=MAX_SERVERS,
        description="Base URLs (http(s)://host[:port]) of the cloud's hub replicas, which agents dial in random "
        "order; a host name with several addresses counts as several replicas. Replaces the --server list "
        "of `edgefleet edge join` for every agent's next connection.",
    )

    @field_validator("servers")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return check_unique(value, "server")


class ClusterInfo(Resource):
    """Cluster-wide settings every edge agent receives: the hub replicas' URLs."""

    KIND: ClassVar[str] = "ClusterInfo"
    kind: Literal["ClusterInfo"] = "ClusterInfo"
    spec: ClusterInfoSpec
    status: None = Field(default=None, description="A ClusterInfo has no status.")


def _servers(obj: Resource) -> str:
    assert isinstance(obj, ClusterInfo)
    return cell(obj.spec.servers)


INFO = register(
    KindInfo(
        kind="ClusterInfo",
        plural="clusterinfos",
        model=ClusterInfo,
        short_names=("ci",),
        description="Cluster-wide settings sent to every edge agent: the hub replicas' URLs "
        "(the object named default is the one agents read).",
        columns=(
            Column("SERVERS", _servers),
            Column("COUNT", lambda o: str(len(o.spec.servers)), wide=True),
        ),
    )
)


def normalise_servers(servers: Iterable[str]) -> list[str]:
    """Validated, normalised base URLs, duplicates dropped, order kept; ValueError when empty or invalid."""
    result: list[str] = []
    for server in servers:
        try:
            url = check_server_url(server)
        except ValueError as exc:
            raise ValueError(f"server {server!r}: {exc}") from None
        if url not in result:
            result.append(url)
    if not result:
        raise ValueError("at least one server URL is needed")
    return result
