"""The agent's local view store: atomic batches, persistence, corruption recovery."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edgefleet.edge.localstore import LocalStore


def doc(name: str, value: int = 1) -> dict[str, object]:
    return {"kind": "Workload", "metadata": {"name": name}, "spec": {"v": value}}


def test_batches_apply_and_survive_reopen(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "view.db")
    assert store.snapshot().revision == 0 and store.snapshot().holdings == {}
    store.apply_batch(
        revision=5,
        epoch="e1",
        put=[("/registry/workloads/a", 3, doc("a")), ("/registry/sites/p", 4, doc("p"))],
        delete=[],
    )
    store.apply_batch(
        revision=9, epoch="e1", put=[("/registry/workloads/b", 8, doc("b", 2))], delete=["/registry/sites/p"]
    )
    store.close()
    again = LocalStore(tmp_path / "view.db")
    snap = again.snapshot()
    assert (snap.epoch, snap.revision) == ("e1", 9)
    assert snap.holdings == {"/registry/workloads/a": 3, "/registry/workloads/b": 8}
    assert [o["metadata"]["name"] for o in again.objects("workloads")] == ["a", "b"]
    assert again.objects("sites") == []
    assert again.get("/registry/workloads/b") == doc("b", 2)


def test_failed_batch_changes_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "view.db")
    store.apply_batch(revision=5, epoch="e1", put=[("/registry/workloads/a", 3, doc("a"))], delete=[])
    with pytest.raises(TypeError):
        store.apply_batch(revision=6, epoch="e1", put=[("/registry/workloads/x", 6, {"bad": object()})], delete=[])
    snap = store.snapshot()
    assert (snap.revision, snap.holdings) == (5, {"/registry/workloads/a": 3})


def test_corrupt_file_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "view.db"
    path.write_bytes(b"this is not a database" * 100)
    store = LocalStore(path)
    assert store.recovered_from is not None and store.recovered_from.exists()
    assert store.snapshot().revision == 0
    store.apply_batch(revision=1, epoch="e", put=[("/registry/workloads/a", 1, doc("a"))], delete=[])
    assert store.snapshot().holdings == {"/registry/workloads/a": 1}


def test_the_view_store_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """It holds the Secrets of the node's workloads: mode 0600 for the file, its WAL and shared memory."""
    previous = os.umask(0o022)
    try:
        store = LocalStore(tmp_path / "view.db")
        store.apply_batch(revision=1, epoch="e1", put=[("/registry/secrets/db", 1, doc("db"))], delete=[])
        paths = [p for p in tmp_path.iterdir() if p.name.startswith("view.db")]
        assert {p.name for p in paths} >= {"view.db", "view.db-wal"}
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in paths), [oct(p.stat().st_mode) for p in paths]
        store.close()
        (tmp_path / "view.db").chmod(0o644)  # an older agent's file is tightened on open
        LocalStore(tmp_path / "view.db").close()
        assert stat.S_IMODE((tmp_path / "view.db").stat().st_mode) == 0o600
    finally:
        os.umask(previous)
