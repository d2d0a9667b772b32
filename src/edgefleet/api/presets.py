"""Cache policy presets: the rules a known kind of origin needs, named once (``cachePolicy.preset``).

How: a Domain's ``cachePolicy.preset`` names a preset; the cache applies the
preset's rules *after* the Domain's own ``rules`` (the first match wins, so a
Domain can still override any path). The stored Domain keeps the name, not
the expanded rules, so an improved preset reaches every Domain using it.

``oci-registry``: the cache as a pull-through mirror of an OCI (Docker)
registry (distribution spec v2). Blobs (``/v2/<name>/blobs/sha256:<hex>``)
and manifests fetched by digest (``/v2/<name>/manifests/sha256:<hex>``)
are content-addressed: the same URL always names the same bytes, so they are
cached for a year (the cache verifies nothing; the client checks every
digest, as it does against the registry itself). Everything else under
``/v2/`` is passed to the registry: manifests by *tag* (a tag moves),
``tags/list``, ``_catalog``, the ``/v2/`` ping and uploads. Registries that
answer blob GETs with a redirect to object storage (S3, GCS) mirror only the
redirect; put the storage's host behind its own Domain for the bytes.
Requests with ``Authorization`` (private registries, Docker Hub's token
flow) are not served from the cache unless the registry marks the answer
``public`` (RFC 9111 §3.5): a mirror must not hand one client's private
layers to another.
"""

from __future__ import annotations

from edgefleet.api.domains import CacheRule

YEAR = 31_536_000
_DIGEST = r"sha256:[0-9a-f]{64}$"

PRESETS: dict[str, tuple[CacheRule, ...]] = {
    "oci-registry": (
        CacheRule(path_regex=rf"^/v2/.+/blobs/{_DIGEST}", ttl=YEAR),
        CacheRule(path_regex=rf"^/v2/.+/manifests/{_DIGEST}", ttl=YEAR),
        CacheRule(path_prefix="/v2/", bypass=True),
    ),
}
"""Preset name -> its rules, in order."""


def preset_rules(name: str | None) -> tuple[CacheRule, ...]:
    """The rules of preset ``name`` (none for None)."""
    return PRESETS[name] if name is not None else ()
