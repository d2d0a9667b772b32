"""Site: a point of presence, a small edge datacenter of a few servers.

How: a Site says where it is (region, coordinates, country: the GSLB's geo
policy measures distance from users to ``location``), which tier it is in
(``edge`` sites face users, ``parent`` sites shield origins), which parent
sites its cache misses go to, in order of preference, and how much traffic
it can take (``capacityGbps``: the GSLB weighs load against it). Nodes point
at their Site by name (``Node.spec.site``).

``alwaysOn: false`` lets the site activation controller switch the site off
when demand is low and back on when it rises (kubeCDN's on-demand regions),
with the thresholds of ``activation`` (defaults when it is left out): the
site is activated when the DNS demand from its region stays above
``activateAbove`` queries per second for ``forSeconds``, starts draining when
it stays below ``deactivateBelow`` for ``forSeconds``, and is deactivated
after ``drainSeconds`` of draining (time for resolvers' cached answers to
expire; keep it at least the DNS TTL of the Domains the site serves). Two
thresholds and a period make a hysteresis, so demand hovering around one
value does not flap the site. ``status.phase`` says what it decided and
``status.active`` is true only while Active: a draining site gets no new
users. ``activation`` is ignored while ``alwaysOn`` is true.

The cycle is real, not only a routing switch: Active -> Draining (DNS stops
answering with the site; its caches keep serving the resolvers' cached
answers) -> Inactive (the agents of its nodes scale their ``builtin: cache``
workloads to zero: a graceful stop that keeps the disk tier, reported as
instance state ``ScaledDown``) -> Activating (demand is back: the caches
start on their warm disk tier, the site still gets no users) -> Active once
``minReadyNodes`` of its nodes report their caches ready (a Warning Event
``SiteActivationSlow`` every ``readySeconds`` while they do not). A site
whose nodes run no cache workload has nothing to start and goes from
Inactive to Active at once.

Checks that need other objects (parents exist and are ``parent`` tier, no
cycles) belong to the controllers; here only the object itself is checked.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from edgefleet.api.common import (
    Count,
    CountryCode,
    Name,
    PositiveSeconds,
    Seconds,
    Timestamp,
    cell,
    check_unique,
    percent,
)
from edgefleet.api.errors import FieldValueError
from edgefleet.api.latency import MAX_LATENCY_ENTRIES, LatencyKey, Milliseconds
from edgefleet.api.meta import (
    Column,
    KindInfo,
    Model,
    Resource,
    check_dns1123_label,
    register,
)

Region = Annotated[str, AfterValidator(check_dns1123_label)]


class Location(Model):
    """Where the site is, for geo routing and for people reading maps."""

    lat: float = Field(ge=-90.0, le=90.0, description="Latitude in degrees, -90 to 90.")
    lon: float = Field(ge=-180.0, le=180.0, description="Longitude in degrees, -180 to 180.")
    country: CountryCode = Field(description="ISO 3166-1 alpha-2 country code, e.g. DE (stored uppercase).")


MAX_QPS = 1e9
"""Upper bound of the activation thresholds, in queries per second."""


class Activation(Model):
    """When a site with ``alwaysOn: false`` is switched on and off, from the DNS demand of its region."""

    activate_above: float = Field(
        default=50.0,
        gt=0,
        le=MAX_QPS,
        description="Activate an inactive site when the DNS queries per second from its region stay above this "
        "for forSeconds.",
    )
    deactivate_below: float = Field(
        default=10.0,
        ge=0,
        le=MAX_QPS,
        description="Start draining an active site when the queries per second from its region stay below this "
        "for forSeconds (0: never); must be less than activateAbove.",
    )
    for_seconds: PositiveSeconds = Field(
        default=60, description="How long demand must stay past a threshold before the site changes phase."
    )
    drain_seconds: Seconds = Field(
        default=300,
        description="How long a draining site keeps serving the users it has (resolvers cache answers for their "
        "TTL: keep it at least the DNS TTL) before it is deactivated and its caches scale to zero; rising demand "
        "meanwhile makes it active again.",
    )
    min_ready_nodes: int = Field(
        default=1,
        ge=1,
        le=10_000,
        description="An Activating site becomes Active (gets users again) once this many of its nodes report their "
        "cache workload ready (capped at the number of nodes that run one).",
    )
    ready_seconds: PositiveSeconds = Field(
        default=120,
        description="How long an Activating site may wait for ready caches before each Warning Event "
        "(SiteActivationSlow); it stays Activating, with the count in its message, until they are ready.",
    )

    @model_validator(mode="after")
    def _thresholds_apart(self) -> Activation:
        if self.deactivate_below >= self.activate_above:
            raise FieldValueError(
                ("deactivateBelow",),
                f"must be less than activateAbove ({self.activate_above:g}), or the site would flap",
            )
        return self


class SiteSpec(Model):
    """Desired state of a Site."""

    region: Region = Field(
        description="Region the site belongs to (a DNS label such as eu-west); used in selectors and reports."
    )
    location: Location = Field(description="Coordinates and country of the site.")
    tier: Literal["edge", "parent"] = Field(
        default="edge",
        description="edge: serves users directly; parent: a mid-tier cache that edge sites fetch misses from.",
    )
    parents: list[Name] = Field(
        default_factory=list,
        max_length=8,
        description="Names of the sites this site sends cache misses to, most preferred "
        "first; empty means fetch from the origin.",
    )
    capacity_gbps: float = Field(
        gt=0,
        le=1_000_000,
        description="Usable egress bandwidth in Gbit/s; the GSLB balances load against it.",
    )
    always_on: bool = Field(
        default=True,
        description="Keep the site active whatever the demand; false lets the site "
        "activation controller turn it off and on with demand.",
    )
    activation: Activation | None = Field(
        default=None,
        description="Demand thresholds for switching the site on and off; used only when alwaysOn is false "
        "(left out: the defaults shown here).",
    )

    @field_validator("parents")
    @classmethod
    def _unique_parents(cls, parents: list[str]) -> list[str]:
        return check_unique(parents, "parent")


class SiteStatus(Model):
    """Observed state of a Site: its phase by the site activation controller, nodes and load by the site status
    controller."""

    observed_generation: int | None = Field(default=None, description="The metadata.generation this status describes.")
    active: bool | None = Field(
        default=None, description="Whether the GSLB sends users to this site: true only in phase Active."
    )
    phase: Literal["Active", "Draining", "Inactive", "Activating"] | None = Field(
        default=None,
        description="Active: serves new users; Draining: gets no new users and is deactivated after drainSeconds; "
        "Inactive: switched off for lack of demand, its caches scaled to zero (disk tier kept); Activating: demand "
        "is back, its caches start, and it gets users once minReadyNodes of them are ready.",
    )
    last_transition_time: Timestamp | None = Field(
        default=None, description="When the site entered its phase (RFC 3339)."
    )
    healthy_nodes: Count | None = Field(
        default=None, description="Nodes that are Ready and pass their peers' health votes."
    )
    total_nodes: Count | None = Field(default=None, description="Nodes assigned to the site.")
    load_gbps: float | None = Field(
        default=None,
        ge=0,
        description="Traffic the site sends, in Gbit/s, over about a minute: to clients from an edge site, to "
        "clients and child sites from a parent site; summed over its Ready, healthy nodes' caches.",
    )
    load: float | None = Field(default=None, ge=0, description="loadGbps / capacityGbps; above 1 means overloaded.")
    latency: dict[LatencyKey, Milliseconds] | None = Field(
        default=None,
        max_length=MAX_LATENCY_ENTRIES,
        description="Measured round-trip times from this site, in ms, by client network (CIDR) or site/<name>: "
        "the median over its Ready, healthy nodes' reports (the GSLB's latency policy reads them).",
    )
    message: str | None = Field(default=None, description="Why the site is in this state.")


class Site(Resource):
    """A point of presence (edge datacenter) and its caching tier."""

    KIND: ClassVar[str] = "Site"
    kind: Literal["Site"] = "Site"
    spec: SiteSpec
    status: SiteStatus = Field(default_factory=SiteStatus)

    @model_validator(mode="after")
    def _not_own_parent(self) -> Site:
        if self.metadata.name in self.spec.parents:
            index = self.spec.parents.index(self.metadata.name)
            raise FieldValueError(("spec", "parents", index), "a site cannot be its own parent")
        return self


def _site(obj: Resource) -> Site:
    assert isinstance(obj, Site)
    return obj


def _healthy(obj: Resource) -> str:
    status = _site(obj).status
    if status.healthy_nodes is None:
        return "<none>"
    return f"{status.healthy_nodes}/{cell(status.total_nodes)}"


def bandwidth(gbps: float) -> str:
    """A rate in Gbit/s for people: ``1.5Gbps``, ``820Mbps``, ``95kbps``, ``0bps``."""
    for unit, scale in (("Gbps", 1.0), ("Mbps", 1e-3), ("kbps", 1e-6)):
        if gbps >= scale:
            return f"{gbps / scale:.3g}{unit}"
    return f"{gbps * 1e9:.3g}bps"


def _load(obj: Resource) -> str:
    """``LOAD``: the share of capacity and the rate, e.g. ``42.0% (4.2Gbps)``; ``-``: no cache reported yet."""
    status = _site(obj).status
    if status.load_gbps is None:
        return "-" if status.total_nodes is not None and status.load is None else percent(status.load)
    return f"{percent(status.load)} ({bandwidth(status.load_gbps)})"


INFO = register(
    KindInfo(
        kind="Site",
        plural="sites",
        model=Site,
        short_names=("pop",),
        description="A point of presence: location, caching tier, parents and capacity.",
        columns=(
            Column("REGION", lambda o: _site(o).spec.region),
            Column("TIER", lambda o: _site(o).spec.tier),
            Column("COUNTRY", lambda o: _site(o).spec.location.country),
            Column("CAPACITY", lambda o: f"{_site(o).spec.capacity_gbps:g}Gbps"),
            Column("ACTIVE", lambda o: cell(_site(o).status.active)),
            Column("PHASE", lambda o: cell(_site(o).status.phase)),
            Column("HEALTHY", _healthy),
            Column("LOAD", _load),
            Column("PARENTS", lambda o: cell(_site(o).spec.parents), wide=True),
            Column("ALWAYS-ON", lambda o: cell(_site(o).spec.always_on), wide=True),
        ),
    )
)
