"""Revisioned key-value stores: SQLite (embedded default) and etcd v3.

``open_store(url)`` picks the backend from a URL:
``sqlite:///path/to/store.db`` or ``etcd://host:port[,host:port...]``.
"""
