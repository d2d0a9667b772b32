"""``edgefleet backup`` and ``restore`` as operators run them: the console script, real store files."""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
from pathlib import Path

from edgefleet.store.sqlite import SqliteStore
from tests.cloudproc import EDGEFLEET

SITE = b'{"apiVersion":"edgefleet.io/v1","kind":"Site","metadata":{"name":"par"},"spec":{}}'


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([EDGEFLEET, *args], capture_output=True, timeout=60, check=False)


def make_store(path: Path) -> None:
    async def fill() -> None:
        store = SqliteStore(path)
        try:
            await store.create("/registry/sites/par", SITE)
        finally:
            await store.close()

    asyncio.run(fill())


def test_backup_to_stdout_then_restore_and_a_damaged_file_refused(tmp_path: Path) -> None:
    make_store(tmp_path / "store.db")
    backup = run("backup", "--store", f"sqlite:///{tmp_path}/store.db", "-o", "-")
    assert backup.returncode == 0, backup.stderr
    assert b"backed up 1 keys" in backup.stderr and b"standard output" in backup.stderr
    (tmp_path / "b.gz").write_bytes(backup.stdout)
    lines = gzip.decompress(backup.stdout).splitlines(keepends=True)
    (tmp_path / "cut.gz").write_bytes(gzip.compress(b"".join(lines[:-1])))

    refused = run("restore", str(tmp_path / "cut.gz"), "--store", f"sqlite:///{tmp_path}/new.db")
    assert refused.returncode == 1 and refused.stderr.startswith(b"error:"), refused.stderr
    assert b"truncated" in refused.stderr and not (tmp_path / "new.db").exists()

    restored = run("restore", str(tmp_path / "b.gz"), "--store", f"sqlite:///{tmp_path}/new.db")
    assert restored.returncode == 0 and b"restored 1 keys" in restored.stderr, restored.stderr
    again = run("restore", str(tmp_path / "b.gz"), "--store", f"sqlite:///{tmp_path}/new.db")
    assert again.returncode == 1 and b"--force" in again.stderr, again.stderr


def test_a_backup_file_is_private_and_a_missing_store_is_an_error(tmp_path: Path) -> None:
    make_store(tmp_path / "store.db")
    assert run("backup", "--store", f"sqlite:///{tmp_path}/store.db", "-o", str(tmp_path / "b.gz")).returncode == 0
    assert os.stat(tmp_path / "b.gz").st_mode & 0o777 == 0o600
    missing = run("backup", "--store", f"sqlite:///{tmp_path}/nope.db", "-o", str(tmp_path / "c.gz"))
    assert missing.returncode == 1 and b"no such SQLite store file" in missing.stderr
    assert not (tmp_path / "c.gz").exists()
