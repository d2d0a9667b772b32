"""Which geo table a CLI explanation uses: the one the cloud publishes to its nodes, else a local file.

Why: ``edgefleet rules test`` (country and region conditions) and ``edgefleet route`` (where a client is
placed) explain what the caches and the GSLB do; they must place clients with the table those use, not
with whatever file happens to be in the working directory. The cloud publishes its GSLB's ``--geo`` table
as the Artifact ``gslb-geo-table-<digest>`` (:mod:`edgefleet.cloud.geotable`, :mod:`edgefleet.api.geotables`).

How (:func:`published_geo`): list the labelled Artifacts, pick the current one, and download its blob once
per digest (admin token; checked against its SHA-256; kept in ``$XDG_CACHE_HOME/edgefleet/geo/`` or
``~/.cache/edgefleet/geo/`` by digest, written through a ``.part`` file and renamed, so a second run costs
one listing). Every outcome appends one note that says which table was used or why the local one is:
none published (the GSLB runs the table packaged with edgefleet, or none), the listing or the download
refused (a viewer token may not read blobs), or a digest mismatch. The caller then falls back to its local
default and says which (:func:`local_note`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

NONE_PUBLISHED = "the cloud publishes no geo table (its GSLB has no --geo, or runs the packaged one)"


def geo_cache_dir() -> Path:
    """Where downloaded tables are kept, by digest."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgefleet" / "geo"


def published_geo(session: Any, notes: list[str]) -> Path | None:
    """The geo table the cloud publishes to its nodes (downloaded once per digest); None: use a local one.

    ``session`` is an :class:`edgefleet.cli.client.ApiClient`; ``notes`` gets one line saying what happened.
    """
    from edgefleet.api.geotables import MAX_TABLE_BYTES, SELECTOR, current_table
    from edgefleet.api.meta import kind_info
    from edgefleet.cli.client import BLOB_PATH, ClientError

    try:
        ref = current_table(session.list(kind_info("Artifact"), selector=SELECTOR)["items"])
    except ClientError as exc:
        notes.append(f"cannot list the published geo table ({exc})")
        return None
    if ref is None:
        notes.append(NONE_PUBLISHED)
        return None
    path = geo_cache_dir() / f"{ref.sha256}{ref.suffix}"
    if not path.exists():
        try:
            data = session.get_bytes(BLOB_PATH + ref.sha256, MAX_TABLE_BYTES)
        except ClientError as exc:
            notes.append(f"the nodes' geo table {ref.object_name} cannot be read ({exc})")
            return None
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            notes.append(f"the geo table {ref.object_name} did not match its digest")
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.part")
        partial.write_bytes(data)
        partial.replace(path)
    notes.append(f"geo table: {ref.object_name}, the one the cloud publishes to the nodes")
    return path


def local_note(path: Path | None) -> str:
    """The note for the local fallback: which file, or none."""
    if path is None:
        return "no geo table: every client's location is unknown (give --geo FILE)"
    return f"geo table: {path}, a local file (--geo FILE for another)"
