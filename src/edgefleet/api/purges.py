"""Purge and Prefetch: one-shot cache operations on every node serving a Domain.

How: a Purge names a Domain and what to remove from its cache: exact
``urls``, path ``prefixes`` and/or ``tags`` (the values origins send in
``Cache-Tag`` or ``Surrogate-Key``). ``mode: hard`` removes the objects;
``mode: soft`` marks them stale, so the next request revalidates with the
origin (cheap for objects that did not change, and a failing origin can
still be served stale). A Prefetch names a Domain and URLs to fetch into the
cache before users ask for them (a release, a live event).

Every node whose site serves the Domain gets the object in its view while
it is *open* (no ``status.completedAt``), does it once (by ``metadata.uid``,
remembered in its local state across agent restarts and cloud outages) by
calling its cache's admin endpoint, and reports how it went in
``Node.status.purges`` / ``Node.status.prefetches``. The purge controller
(:mod:`edgefleet.cloud.controllers.purges`) counts those reports into
``status``: ``targetNodes`` (nodes serving the Domain), ``completedNodes``,
``failedNodes``, and ``completedAt`` once every target node is done.

URLs are paths with an optional query (``/a/b.js?v=1``) or absolute http(s)
URLs on one of the Domain's hostnames (``https://www.shop.example/a.js``);
whether the host is the Domain's is for the cache to judge, which sees the
Domain. The spec is meant to be written once: a node does a Purge once per
uid, so an edited spec is not done again (create a new Purge instead;
``edgefleet purge`` names them ``purge-<time>-<random>``).

Limits (security limits: an object travels to every node of the sites that
serve the Domain): at most :data:`MAX_URLS` URLs of :data:`MAX_URL_LENGTH`
characters, :data:`MAX_PREFIXES` prefixes and :data:`MAX_TAGS` tags of
:data:`MAX_TAG_LENGTH` characters.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from edgefleet.api.common import Count, Name, Timestamp, cell, check_unique
from edgefleet.api.domains import check_hostname
from edgefleet.api.meta import Column, KindInfo, Model, Resource, register

MAX_URLS = 1000
MAX_URL_LENGTH = 8192
MAX_PREFIXES = 100
MAX_TAGS = 100
MAX_TAG_LENGTH = 256

_ABSOLUTE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<target>.*)$")
_PORT = re.compile(r"^[0-9]{1,5}$")


def _check_printable(text: str) -> None:
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ValueError(f"{text[:80]!r} must not contain spaces or control characters")


def check_cache_url(url: str) -> str:
    """A path (``/a?b``) or an absolute http(s) URL without credentials or fragment."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"at most {MAX_URL_LENGTH} characters (got {len(url)})")
    _check_printable(url)
    if "#" in url:
        raise ValueError(f"{url[:80]!r} must not hold a '#fragment' (it never reaches a server)")
    if url.startswith("/"):
        if url.startswith("//"):
            raise ValueError(f"{url[:80]!r}: a path must not start with '//'")
        return url
    match = _ABSOLUTE.match(url)
    if not match or match["scheme"].lower() not in ("http", "https"):
        raise ValueError(f"{url[:80]!r} is neither a path starting with '/' nor an http(s) URL")
    host, colon, port = match["authority"].partition(":")
    if "@" in host or "@" in port:
        raise ValueError(f"{url[:80]!r} must not contain user:password@ credentials")
    if colon and not (_PORT.match(port) and 0 < int(port) < 65536):
        raise ValueError(f"{url[:80]!r}: invalid port")
    if "*" in host:
        raise ValueError(f"{url[:80]!r}: a URL names one host, not a wildcard")
    check_hostname(host)
    return url


def check_path_prefix(prefix: str) -> str:
    _check_printable(prefix)
    if not prefix.startswith("/") or len(prefix) > MAX_URL_LENGTH:
        raise ValueError(f"{prefix[:80]!r} must be a path starting with '/', at most {MAX_URL_LENGTH} characters")
    return prefix


def check_tag(tag: str) -> str:
    """One Cache-Tag / Surrogate-Key value: no spaces or commas (they separate values in those headers)."""
    _check_printable(tag)
    if "," in tag:
        raise ValueError(f"{tag[:80]!r} must not contain ',' (it separates Cache-Tag values)")
    return tag


CacheUrl = Annotated[str, AfterValidator(check_cache_url)]
PathPrefix = Annotated[str, AfterValidator(check_path_prefix)]
Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_LENGTH), AfterValidator(check_tag)]


class PurgeSpec(Model):
    """What to remove from the caches of one Domain; at least one of urls, prefixes or tags."""

    domain: Name = Field(description="Name of the Domain whose cached objects are purged.")
    urls: list[CacheUrl] = Field(
        default_factory=list,
        max_length=MAX_URLS,
        description="Exact URLs: paths with an optional query (/a/b.js?v=1) or absolute http(s) URLs on the "
        "Domain's hostnames.",
    )
    prefixes: list[PathPrefix] = Field(
        default_factory=list, max_length=MAX_PREFIXES, description="Path prefixes: every URL whose path starts so."
    )
    tags: list[Tag] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description="Objects whose response carried one of these Cache-Tag or Surrogate-Key values.",
    )
    mode: Literal["hard", "soft"] = Field(
        default="hard",
        description="hard: remove the objects; soft: mark them stale so the next request revalidates with the origin.",
    )

    @field_validator("urls", "prefixes", "tags")
    @classmethod
    def _unique(cls, items: list[str]) -> list[str]:
        return check_unique(items, "entry")

    @model_validator(mode="after")
    def _something_to_purge(self) -> PurgeSpec:
        if not (self.urls or self.prefixes or self.tags):
            raise ValueError("set at least one of urls, prefixes or tags")
        return self


class PrefetchSpec(Model):
    """URLs to fetch into the caches of one Domain before users ask for them."""

    domain: Name = Field(description="Name of the Domain the URLs belong to.")
    urls: list[CacheUrl] = Field(
        min_length=1,
        max_length=MAX_URLS,
        description="Paths with an optional query, or absolute http(s) URLs on the Domain's hostnames.",
    )

    @field_validator("urls")
    @classmethod
    def _unique(cls, items: list[str]) -> list[str]:
        return check_unique(items, "url")


class CacheTaskStatus(Model):
    """Progress over the nodes that serve the Domain, counted by the purge controller."""

    target_nodes: Count | None = Field(default=None, description="Nodes whose site serves the Domain.")
    completed_nodes: Count | None = Field(default=None, description="Target nodes that reported it Done.")
    failed_nodes: Count | None = Field(default=None, description="Target nodes that reported it Failed.")
    completed_at: Timestamp | None = Field(
        default=None,
        description="When every target node had reported (Done or Failed); from then on it is in no node's view.",
    )
    message: str | None = Field(default=None, description="What is left, or what failed.")


class Purge(Resource):
    """Remove (or mark stale) cached objects of a Domain on every node serving it."""

    KIND: ClassVar[str] = "Purge"
    kind: Literal["Purge"] = "Purge"
    spec: PurgeSpec
    status: CacheTaskStatus = Field(default_factory=CacheTaskStatus)


class Prefetch(Resource):
    """Fetch URLs of a Domain into the cache of every node serving it."""

    KIND: ClassVar[str] = "Prefetch"
    kind: Literal["Prefetch"] = "Prefetch"
    spec: PrefetchSpec
    status: CacheTaskStatus = Field(default_factory=CacheTaskStatus)


def _status(obj: Resource) -> CacheTaskStatus:
    assert isinstance(obj, Purge | Prefetch)
    return obj.status


def _progress(obj: Resource) -> str:
    status = _status(obj)
    if status.target_nodes is None:
        return "<none>"
    return f"{cell(status.completed_nodes or 0)}/{status.target_nodes}"


def _purge_what(obj: Resource) -> str:
    """``2 urls,1 prefix``: how many of each the spec names."""
    assert isinstance(obj, Purge)
    spec = obj.spec
    counts = (
        (len(spec.urls), "url", "urls"),
        (len(spec.prefixes), "prefix", "prefixes"),
        (len(spec.tags), "tag", "tags"),
    )
    return ",".join(f"{n} {one if n == 1 else many}" for n, one, many in counts if n)


def _prefetch_urls(obj: Resource) -> str:
    assert isinstance(obj, Prefetch)
    return str(len(obj.spec.urls))


def _common_columns() -> tuple[Column, ...]:
    return (
        Column("COMPLETED", _progress),
        Column("FAILED", lambda o: cell(_status(o).failed_nodes)),
        Column("COMPLETED-AT", lambda o: cell(_status(o).completed_at), wide=True),
        Column("MESSAGE", lambda o: cell(_status(o).message), wide=True),
    )


PURGES = register(
    KindInfo(
        kind="Purge",
        plural="purges",
        model=Purge,
        short_names=("pg",),
        description="Remove (or mark stale) cached URLs, prefixes or tags of a Domain on every node serving it.",
        columns=(
            Column("DOMAIN", lambda o: o.spec.domain),
            Column("MODE", lambda o: o.spec.mode),
            Column("WHAT", _purge_what),
            *_common_columns(),
        ),
    )
)

PREFETCHES = register(
    KindInfo(
        kind="Prefetch",
        plural="prefetches",
        model=Prefetch,
        short_names=("pf",),
        description="Fetch URLs of a Domain into the cache of every node serving it.",
        columns=(
            Column("DOMAIN", lambda o: o.spec.domain),
            Column("URLS", _prefetch_urls),
            *_common_columns(),
        ),
    )
)
