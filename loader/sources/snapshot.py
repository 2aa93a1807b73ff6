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
import sqlite3
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# A database's side files that hold its content (its WAL, a hot rollback journal), and all of them (with the
# WAL's shared-memory index, -shm, which holds none).
SIDE_FILES = ("-wal", "-journal")
EVERY_SIDE_FILE = ("-wal", "-shm", "-journal")
SQLITE_HEADER = b"SQLite format 3\x00"
CHUNK_BYTES = 1 << 20  # read and hashed a MiB at a time


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def side_file(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def copy_file(source: Path, target: Path, hashing: bool = True) -> str | None:
    """Copy `source` to `target`; with `hashing`, return the sha256 of the bytes copied (one read for both)."""
    with open(source, "rb") as reading:
        return copy_stream(reading, target, hashing)


def copy_stream(reading: BinaryIO, target: Path, hashing: bool = True) -> str | None:
    digest = hashlib.sha256() if hashing else None
    with open(target, "wb") as writing:
        while chunk := reading.read(CHUNK_BYTES):
            if digest is not None:
                digest.update(chunk)
            writing.write(chunk)
    return digest.hexdigest() if digest is not None else None


def copy_database(source: Path, folder: Path, hashing: bool = True) -> tuple[Path, tuple[str | None, ...]]:
    """Copy `source` with its `-wal`/`-journal` into `folder`; return the copy of the main file and the
    sha256 of what was copied, in the shape of `file_set_state` (None: that file does not exist, or
    not `hashing`)."""
    target = folder / source.name
    state = [copy_file(source, target, hashing)]
    for suffix in SIDE_FILES:
        side = side_file(source, suffix)
        state.append(copy_file(side, side_file(target, suffix), hashing) if side.exists() else None)
    return target, tuple(state)


def same_bytes(path: Path, other: Path) -> bool:
    """Whether both files exist and hold the same bytes (a comparison: several times faster than sha256)."""
    try:
        with open(path, "rb") as one, open(other, "rb") as two:
            while True:
                chunk = one.read(CHUNK_BYTES)
                if chunk != two.read(CHUNK_BYTES):
                    return False
                if not chunk:
                    return True
    except FileNotFoundError:
        return False


def source_matches_copy(source: Path, copy: Path) -> bool:
    """Whether the source's main file, `-wal` and `-journal` are byte for byte the copy's, with none
    appeared or gone."""
    for suffix in CHANGE_DETECTING_SUFFIXES:
        original, copied = side_file(source, suffix), side_file(copy, suffix)
        if copied.exists():
            if not same_bytes(original, copied):
                return False
        elif original.exists():
            return False
    return True


def fold_into_single_file(path: Path) -> None:
    """Replay the copy's WAL (or roll back its hot journal) so the copy is one self-contained file."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=DELETE").fetchone()
    finally:
        connection.close()


COPY_ATTEMPTS = 5
RETRY_PAUSE_SECONDS = 0.1
CHANGE_DETECTING_SUFFIXES = ("", *SIDE_FILES)


class SourceKeptChanging(Exception):
    """The source changed during every copy attempt: an application is writing to it."""


@dataclass(frozen=True)
class Snapshot:
    """A private copy, with the checksums of the source bytes it was made from."""

    path: Path
    sha256: str | None  # None when taken without hashing
    wal_sha256: str | None
    attempts: int = 1

    @property
    def identity(self) -> tuple[str | None, str | None]:
        """The bytes it is, as the ledger compares them: (sha256 of the main file, of the -wal)."""
        return (self.sha256, self.wal_sha256)


def sha256_or_none(path: Path) -> str | None:
    try:
        return sha256_of(path)
    except FileNotFoundError:
        return None


def file_set_state(path: Path) -> tuple[str | None, ...]:
    """sha256 of the main file, its `-wal` and its `-journal` (None for one that does not exist)."""
    return tuple(sha256_or_none(side_file(path, suffix)) for suffix in CHANGE_DETECTING_SUFFIXES)


def empty_folder(folder: Path) -> None:
    for child in folder.iterdir():
        child.unlink()


def consistent_copy(source: Path, folder: Path, attempts: int = COPY_ATTEMPTS,
                    hashing: bool = True) -> Snapshot:
    """Copy `source` with its `-wal`/`-journal` into `folder` (hashing what is read, unless not
    `hashing`: then the snapshot's checksums are None), and accept the copy only when the source still
    holds exactly the copied bytes afterwards: a byte changed after it was copied would show there, and
    one changed before it was read is simply part of the copy, so the copy is one state the files were
    in — a consistent snapshot even while an application writes. Never opens the source."""
    for attempt in range(1, attempts + 1):
        if not source.exists():
            raise FileNotFoundError(f"{source} no longer exists")
        try:
            copy, copied = copy_database(source, folder, hashing)
        except FileNotFoundError:  # a -wal or -journal disappeared between listing and copying
            copy, copied = None, None
        if copy is not None and source_matches_copy(source, copy):
            return Snapshot(path=copy, sha256=copied[0], wal_sha256=copied[1], attempts=attempt)
        empty_folder(folder)
        if attempt < attempts:
            time.sleep(RETRY_PAUSE_SECONDS * attempt)
    raise SourceKeptChanging(
        f"changed while being copied, {attempts} times in a row: an application is writing to it; "
        "try again when it is idle")


def consolidated_copy(source: Path, folder: Path, hashing: bool = True) -> Snapshot:
    """A consistent copy of `source` in `folder`, its WAL replayed into one self-contained file."""
    snapshot = consistent_copy(source, folder, hashing=hashing)
    fold_into_single_file(snapshot.path)
    return snapshot


@contextlib.contextmanager
def private_copy(source: Path, hashing: bool = True) -> Iterator[Snapshot]:
    """A consolidated_copy of `source` in a private folder, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="consolidate-") as folder:
        yield consolidated_copy(source, Path(folder), hashing)


# ----------------------------------------------------------------------------- archived sources

class ArchiveUnreadable(Exception):
    """An archive that should hold a source's bytes cannot be read (gone, damaged, lacking the member) or
    holds other bytes."""


# What reading a member of a zip raises when the zip is gone or damaged: a bad CRC (BadZipFile), a
# broken deflate stream (zlib.error), a truncated file (EOFError).
ZIP_READ_ERRORS = (OSError, zipfile.BadZipFile, zlib.error, EOFError)


def archived_copy(archive: Path, members: dict[str, str], folder: Path, name: str,
                  identity: tuple[str, str | None]) -> Snapshot:
    """Extract a source whose original was removed after archiving: its parts (by suffix: "", "-wal",
    "-journal") are `members` of the zip `archive`. Written to `folder/name` and its side files, hashed
    as extracted, and accepted only when they are `identity` (sha256 of the main file and of the -wal),
    like a `consistent_copy` of the original. Raises ArchiveUnreadable."""
    target = folder / name
    state: dict[str, str | None] = {}
    try:
        bundle = zipfile.ZipFile(archive)
    except ZIP_READ_ERRORS as error:
        raise ArchiveUnreadable(f"{archive}: {error}") from error
    with bundle:
        for suffix, member in members.items():
            try:
                with bundle.open(member) as reading:
                    state[suffix] = copy_stream(reading, side_file(target, suffix))
            except KeyError as error:
                raise ArchiveUnreadable(f"{archive}: no member {member}") from error
            except ZIP_READ_ERRORS as error:  # OSError: also a full disk under the private folder, named
                raise ArchiveUnreadable(f"{archive}: {member}: {error}") from error
    if (state.get(""), state.get("-wal")) != identity:
        raise ArchiveUnreadable(f"{archive} holds other bytes of {name} than its current load")
    return Snapshot(path=target, sha256=state[""], wal_sha256=state.get("-wal"))


@contextlib.contextmanager
def archived_private_copy(archive: Path, members: dict[str, str], name: str,
                          identity: tuple[str, str | None]) -> Iterator[Snapshot]:
    """An `archived_copy` in a private folder, its WAL replayed into one file, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="consolidate-") as folder:
        snapshot = archived_copy(archive, members, Path(folder), name, identity)
        fold_into_single_file(snapshot.path)
        yield snapshot
