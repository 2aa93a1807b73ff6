"""Private, consolidated copies of SQLite databases.

Opening a WAL database in place checkpoints it and deletes its `-wal` when the last connection
closes, and even a read-only connection writes to `-shm`. So nothing here ever opens a source file:
the main file and its `-wal` (and a hot `-journal`) are copied into a private folder, and the copy is
opened instead, which replays the WAL into it. The `-shm` is deliberately not copied: it is only an
index of the WAL, and a stale one could hide WAL frames; SQLite rebuilds it from the WAL.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SIDE_FILES = ("-wal", "-journal")
SQLITE_HEADER = b"SQLite format 3\x00"


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def side_file(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def copy_database(source: Path, folder: Path) -> Path:
    """Copy `source` with its `-wal`/`-journal` into `folder`; return the copy of the main file."""
    target = folder / source.name
    shutil.copyfile(source, target)
    for suffix in SIDE_FILES:
        side = side_file(source, suffix)
        if side.exists():
            shutil.copyfile(side, side_file(target, suffix))
    return target


def fold_into_single_file(path: Path) -> None:
    """Replay the copy's WAL (or roll back its hot journal) so the copy is one self-contained file."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=DELETE").fetchone()
    finally:
        connection.close()


@dataclass(frozen=True)
class Snapshot:
    """A private single-file copy, with the checksums of the bytes it was made from."""

    path: Path
    sha256: str
    wal_sha256: str | None


@contextlib.contextmanager
def private_copy(source: Path) -> Iterator[Snapshot]:
    """A consolidated private copy of `source`, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="consolidate-") as folder:
        copy = copy_database(source, Path(folder))
        wal = side_file(copy, "-wal")
        snapshot = Snapshot(copy, sha256_of(copy), sha256_of(wal) if wal.exists() else None)
        fold_into_single_file(copy)
        yield snapshot
