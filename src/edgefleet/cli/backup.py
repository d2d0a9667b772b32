"""``edgefleet backup`` and ``edgefleet restore``: snapshot a store to a file, and a file into a store.

How: thin typer commands over :mod:`edgefleet.store.backup` (the reading and
writing) and :mod:`edgefleet.store.backupformat` (the file format, pure).
They talk to the store directly, as ``edgefleet cloud --store`` does, not to
the API: a backup must hold what the API never shows (token hashes, node
credentials), and a restore happens before any cloud runs on the target.
A progress bar (rich, on stderr) shows keys done when stderr is a terminal;
the summary line goes to stderr, so ``-o -`` keeps stdout for the backup.
The procedure around them (moving the cloud) is docs/operations.md.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from edgefleet.cli.common import fail

StoreOpt = Annotated[
    str,
    typer.Option(
        "--store",
        help="The store, as `edgefleet cloud --store` takes it: sqlite:///PATH or etcd://HOST:PORT[,HOST:PORT...] "
        "(optionally followed by /ROOT-PREFIX)",
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``backup`` and ``restore`` to the ``edgefleet`` app."""
    app.command()(backup)
    app.command()(restore)


def backup(
    store: StoreOpt,
    output: Annotated[
        str,
        typer.Option("--output", "-o", help="The backup file to write (replaced atomically), or - for standard output"),
    ],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary")] = False,
) -> None:
    """Write a consistent snapshot of the store (one revision) to a file, while the cloud runs.

    Holds every object and the system keys (API tokens and node credentials,
    hashed as stored), the revision and the store epoch, with a SHA-256
    checksum; keys bound to a lease (hub presence, leader locks, bootstrap
    tokens, tokens with a TTL) are left out. The file is gzip'd JSON lines
    (docs/operations.md). It holds secrets: it is created with mode 0600;
    keep it as you keep the store.

    Example: edgefleet backup --store sqlite:///./edgefleet-data/store.db -o backup.jsonl.gz
    """
    from edgefleet.store import open_store
    from edgefleet.store.backup import (
        BackupSummary,
        Source,
        SqliteFileSource,
        StoreSource,
        backup_to_file,
        backup_to_stream,
        sqlite_path,
    )
    from edgefleet.store.interface import StoreError

    async def run(progress: Callable[[int, int | None], None]) -> BackupSummary:
        sqlite_file = sqlite_path(store)
        if sqlite_file is not None:
            source: Callable[[], Source] = lambda: SqliteFileSource(sqlite_file)  # noqa: E731
            opened = None
        else:
            opened = open_store(store)
            source = lambda: StoreSource(opened, "etcd")  # noqa: E731
        try:
            if output == "-":
                return await backup_to_stream(source(), sys.stdout.buffer, progress)
            return await backup_to_file(source, Path(output), progress)
        finally:
            if opened is not None:
                await opened.close()

    try:
        with progress_bar("backing up", quiet) as progress:
            summary = asyncio.run(run(progress))
    except StoreError as exc:
        fail(str(exc), "check --store (is the etcd cluster reachable? is the path the cloud's?) and -o")
    if not quiet:
        leased = f"; {summary.skipped_leased} leased keys left out" if summary.skipped_leased else ""
        typer.echo(
            f"backed up {summary.count} keys at revision {summary.revision} (epoch {summary.epoch}) "
            f"to {'standard output' if summary.path == '-' else summary.path}, {summary.size} bytes{leased}",
            err=True,
        )


def restore(
    file: Annotated[Path, typer.Argument(help="A file written by `edgefleet backup`")],
    store: StoreOpt,
    force: Annotated[
        bool, typer.Option("--force", help="Replace everything in a non-empty target store (its keys are lost)")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary")] = False,
) -> None:
    """Write a backup into a store, with a new epoch: run it before starting the cloud on that store.

    The whole file is checked first (format, checksum, completeness): a
    corrupt, truncated or altered file is refused and the target is left
    untouched. A target that holds any key is refused unless --force. The
    restored store has a new epoch, so edge agents notice the change and
    reconcile by content: unchanged objects are not sent again and their
    workloads keep running. SQLite and etcd targets take backups of either.

    Example: edgefleet restore backup.jsonl.gz --store etcd://10.0.0.5:2379
    """
    from edgefleet.store.backup import restore as restore_backup
    from edgefleet.store.interface import StoreError

    try:
        with progress_bar("restoring", quiet) as progress:
            summary = asyncio.run(restore_backup(file, store, force=force, progress=progress))
    except StoreError as exc:
        fail(str(exc))
    if not quiet:
        typer.echo(
            f"restored {summary.count} keys from revision {summary.backup_revision} "
            f"(epoch {summary.backup_epoch}) into {store}; new epoch {summary.epoch}",
            err=True,
        )


@contextmanager
def progress_bar(what: str, quiet: bool) -> Iterator[Callable[[int, int | None], None]]:
    """A progress callback: a rich bar on stderr when it is a terminal, else nothing."""
    if quiet or not sys.stderr.isatty():
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update
