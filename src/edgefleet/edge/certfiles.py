"""The certificate files the agent writes for the built-in cache's TLS listener.

How: the cache config names each certificate by file
(``certificates: [{name, certFile, keyFile, fingerprint}]``, rendered by
:mod:`edgefleet.edge.cacheconfig`). The files live in ``certs/`` of the
cache workload's working directory (mode 0700), one pair per certificate
*content*: ``<name>.<fingerprint prefix>.crt`` (0644) and ``.key`` (0600),
each written atomically (a temporary file created with its final mode, then
renamed: a key is never readable by others, even for a moment). Because a
rotated certificate gets new file names, the cache can never read the new
chain with the old key (or the reverse): the config names both new files at
once, its text changes, and the agent's SIGHUP makes the cache reload it.
:func:`remove_stale` deletes the pairs the current config no longer names,
after that config is written, but keeps the newest earlier pair of each
certificate: a cache whose reload failed keeps running with the config
that names it.

Why the working directory: it belongs to the workload (its user owns it,
like ``admin.token``), and removing the workload removes its keys.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from edgefleet.cache.config import CertificateFiles
from edgefleet.edge.workdirs import write_atomic

log = logging.getLogger("edgefleet.edge.cache")

CERTS_DIR = "certs"
SUFFIXES = (".crt", ".key")


def fingerprint(chain: str, key: str) -> str:
    """``sha256:<hex>`` of the chain and the key together (what the config's ``fingerprint`` says)."""
    return "sha256:" + hashlib.sha256(f"{chain}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()


def paths(directory: Path, name: str, digest: str) -> tuple[Path, Path]:
    """The certificate and key files of one certificate content."""
    stem = f"{name}.{digest.removeprefix('sha256:')[:16]}"
    return directory / f"{stem}.crt", directory / f"{stem}.key"


def write_certificates(entries: Iterable[CertificateFiles], pems: Mapping[str, tuple[str, str]]) -> int:
    """Write the files of ``entries`` that are missing (content from ``pems``: name -> (chain, key)); how many."""
    written = 0
    for entry in entries:
        if entry.name not in pems:
            continue  # a config kept from before (no view yet): its files were written with it
        chain, key = pems[entry.name]
        for path, content, mode in ((entry.key_file, key, 0o600), (entry.cert_file, chain, 0o644)):
            if _holds(path, content):
                continue
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(path, content.encode(), mode=mode)
            written += 1
    return written


def _holds(path: Path, content: str) -> bool:
    try:
        return path.read_text() == content
    except (FileNotFoundError, UnicodeDecodeError):
        return False


def remove_stale(directory: Path, keep: Iterable[CertificateFiles]) -> list[Path]:
    """Delete the certificate files of ``directory`` that no entry of ``keep`` names, but the newest earlier
    pair of each certificate in ``keep`` (a cache whose reload failed still runs with it); the paths deleted."""
    entries = list(keep)
    wanted = {path for entry in entries for path in (entry.cert_file, entry.key_file)}
    files = [p for p in directory.glob("*") if p.suffix in SUFFIXES] if directory.is_dir() else []
    for entry in entries:
        earlier = [p for p in files if p not in wanted and _certificate_name(p) == entry.name]
        newest = max(earlier, key=lambda p: (p.stat().st_mtime_ns, p.name), default=None)
        if newest is not None:
            wanted |= {newest.with_suffix(suffix) for suffix in SUFFIXES}
    removed = []
    for path in sorted(files):
        if path not in wanted:
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.info("removed %d certificate file(s) no longer in the cache config", len(removed))
    return removed


def _certificate_name(path: Path) -> str:
    """``shop.example.0123456789abcdef.crt`` -> ``shop.example`` (names may hold dots; the digest does not)."""
    return path.stem.rpartition(".")[0]
