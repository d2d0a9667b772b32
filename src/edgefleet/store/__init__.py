"""Revisioned key-value stores: SQLite (embedded default) and etcd v3.

``open_store(url)`` picks the backend from a URL:

* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: a
  :class:`~edgefleet.store.sqlite.SqliteStore` (parent directories created);
* ``etcd://host:port[,host:port...][/root]``: an
  :class:`~edgefleet.store.etcd.EtcdStore` on those members, keys under
  ``/root`` (default ``/edgefleet``).

Keyword options go to the backend's constructor (``progress_interval=`` for
SQLite, ``timeout=`` for etcd...). Both backends are imported lazily, so that
using one does not load the other's dependencies.
"""

from __future__ import annotations

from typing import Any

from edgefleet.store.interface import InvalidStoreURL, Store

ACCEPTED_URLS = "sqlite:///relative/path.db, sqlite:////absolute/path.db, etcd://host:port[,host:port...][/root-prefix]"


def open_store(url: str, **options: Any) -> Store:
    """The store named by ``url``; InvalidStoreURL (listing the accepted forms) if unknown."""
    if url.startswith("sqlite:///"):
        return _open_sqlite(url.removeprefix("sqlite:///"), options)
    if url.startswith("etcd://"):
        return _open_etcd(url.removeprefix("etcd://"), options)
    raise InvalidStoreURL(f"unsupported store URL {url!r}; accepted forms: {ACCEPTED_URLS}")


def _open_sqlite(path: str, options: dict[str, Any]) -> Store:
    if not path or path.endswith("/"):
        raise InvalidStoreURL(f"sqlite URL needs a file path; accepted forms: {ACCEPTED_URLS}")
    from edgefleet.store.sqlite import SqliteStore

    return SqliteStore(path, **options)


def _open_etcd(rest: str, options: dict[str, Any]) -> Store:
    endpoints, slash, root = rest.partition("/")
    if not endpoints:
        raise InvalidStoreURL(f"etcd URL needs host:port; accepted forms: {ACCEPTED_URLS}")
    from edgefleet.store.etcd import EtcdStore

    if slash and root.strip("/"):
        options.setdefault("root", "/" + root.strip("/"))
    return EtcdStore(endpoints, **options)


__all__ = ["open_store"]
