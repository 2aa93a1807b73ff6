"""Backups: one consistent, self-contained SQLite file per discovered database, and a manifest to verify.

How a source is read
--------------------
SQLite's online backup API needs a connection to the source. Opening the source itself, even
read-only, is not harmless. Measured with SQLite 3.40.1 on /tmp copies of the real WAL databases
(ChrisRoyse__myclaudeflowsetup, whose newest rows live only in `memory.db-wal`, and the others), with
the sha256 and mtime of the main file, `-wal` and `-shm` taken before and after:

- `sqlite3.connect(path)` (read-write): checkpoints the WAL into the main file and deletes `-wal` and
  `-shm` on close. Every file changes.
- `file:...?mode=ro`: main file and `-wal` unchanged, but the `-shm` is opened read-write and written
  to. Its mtime changed every time, on all five real WAL databases. Its bytes stayed the same for
  ChrisRoyse, whose committed `-shm` happens to be current. They changed for DrBalls__..., whose
  committed `-shm` is stale. They also changed when the `-shm` was zeroed or came from another
  database (it was rebuilt), and while a writer in another process had the database open (read
  marks). A missing `-shm` was created. So read-only opening in place is rejected.
- `file:...?mode=ro&immutable=1`: nothing written, but the WAL is ignored. ChrisRoyse came out with
  30 memory rows instead of 39. Also unsafe while an application writes.
- `file:...?mode=ro&readonly_shm=1`: nothing written, even with a writer in another process, but it
  fails ("unable to open database file") when the `-shm` is missing, it still takes locks on the
  source, and the option is barely documented.

Chosen: no source is ever opened. `snapshot.consistent_copy` copies the main file, `-wal` and `-journal`
into a private temporary folder (`snapshot.copy_database`), hashing the bytes as it copies them, then
compares the source with the copy byte for byte. The copy is accepted only when they are equal, which
means nothing wrote to a part of the files after it was copied: the copy is one state the files were in. Otherwise it waits and tries again (`attempts` times, `copy_attempts` in the
manifest). A file that keeps changing is recorded as `failed` with that reason instead of being
backed up inconsistently. This approach has a limit: a database that commits more often than it takes
to hash and copy it stays `failed` until its application pauses.

In the accepted copy, SQLite's own recovery gives every committed transaction in the WAL in full, and
none of an uncommitted one. A hot `-journal` is rolled back. The online backup API then runs from the
private copy (which replays the WAL) into the backup file. That file is switched to
`journal_mode=DELETE`, because the backup API copies the WAL flag in the header, so it is one
self-contained file with no `-wal`. The `-shm` is never copied, since SQLite rebuilds it from the WAL.
The row counts of the private copy and of the backup must agree, or the file is `failed`.

Layout and manifest
-------------------
With one root, each backup goes to `destination/<source_db>`: the tree under the root, kept. With
several roots, each goes to `destination/<n>-<root folder name>/<source_db>`, where n is the root's
1-based position in `roots`. That is deterministic, and files from different roots never collide.
`destination/manifest.json` (see `BackupManifest.to_json`) records every discovered database: `backed-up`
(with the backup's path, sha256 and per-table row counts read from the backup), `copy` (a byte-identical
copy of another discovered file, not stored twice) or `failed` (unreadable, or kept changing), with
the reason. Discovery warnings (not-SQLite files named like databases, orphan WALs) are recorded too.

Destination rules
-----------------
- A missing or empty folder is written to.
- A non-empty folder without a consolidate `manifest.json` is refused (`BackupError`).
- A folder holding an earlier backup is refused unless `overwrite=True`. It is also refused if it holds
  files that its manifest does not list, because they are not ours to delete.
- A folder inside a root, or one that contains a root, is refused: a later run would back up the backups.
Every backup is first written into a hidden sibling folder (`.<name>.partial-*`, mode 0700, since
backups hold credentials). It replaces the destination only when complete, so an interrupted run or a
failed overwrite leaves the earlier backup untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from loader import __version__
from loader.backup.destination import (
    Problem,
    destination_refusal,
    flush_to_disk,
    is_new_or_empty,
    make_staging_folder,
    publish_folder,
)
from loader.exit_codes import ExitCode
from loader.parallel import run_in_order
from loader.sources.discover import Discovery, SourceFile, discover
from loader.sources.snapshot import (
    COPY_ATTEMPTS,
    Snapshot,
    SourceKeptChanging,
    consistent_copy,
    private_copy,
    sha256_of,
)
from loader.sources.sqlite_reader import list_tables

MANIFEST_NAME = "manifest.json"
# Two files at a time: copying, hashing and SQLite's backup API leave the GIL while they work.
BACKUP_JOBS = 2
MANIFEST_FORMAT = "consolidate-backup/1"
BACKED_UP, COPY, FAILED = "backed-up", "copy", "failed"


class BackupError(Exception):
    """The destination cannot take this backup. The message says why and what to do."""


class BackupExists(BackupError):
    """The destination holds an earlier backup, which is replaced only when asked to (overwrite)."""


@dataclass
class BackupEntry:
    """One discovered database and what the backup did with it."""

    path: Path
    root: Path
    source_db: str
    kind: str
    status: str
    sha256: str
    wal_sha256: str | None
    reason: str | None = None
    copy_of: Path | None = None
    backup: str | None = None
    backup_sha256: str | None = None
    tables: dict[str, int] = field(default_factory=dict)
    copy_attempts: int = 0

    @property
    def identity(self) -> tuple[str | None, str | None]:
        """The bytes it is, as the ledger compares them: (sha256 of the main file, of the -wal)."""
        return (self.sha256, self.wal_sha256)

    def to_json(self) -> dict:
        return {"path": str(self.path), "root": str(self.root), "source_db": self.source_db,
                "kind": self.kind, "status": self.status, "reason": self.reason,
                "sha256": self.sha256, "wal_sha256": self.wal_sha256,
                "copy_of": str(self.copy_of) if self.copy_of else None,
                "backup": self.backup, "backup_sha256": self.backup_sha256,
                "tables": self.tables, "copy_attempts": self.copy_attempts}

    @classmethod
    def from_json(cls, data: dict) -> BackupEntry:
        return cls(path=Path(data["path"]), root=Path(data["root"]), source_db=data["source_db"],
                   kind=data["kind"], status=data["status"], reason=data.get("reason"),
                   sha256=data["sha256"], wal_sha256=data.get("wal_sha256"),
                   copy_of=Path(data["copy_of"]) if data.get("copy_of") else None,
                   backup=data.get("backup"), backup_sha256=data.get("backup_sha256"),
                   tables=dict(data.get("tables") or {}), copy_attempts=data.get("copy_attempts", 0))


@dataclass
class BackupManifest:
    created_at: str
    version: str
    roots: list[str]
    files: list[BackupEntry]
    warnings: list[dict] = field(default_factory=list)

    def with_status(self, status: str) -> list[BackupEntry]:
        return [entry for entry in self.files if entry.status == status]

    @property
    def backed_up(self) -> list[BackupEntry]:
        return self.with_status(BACKED_UP)

    @property
    def failed(self) -> list[BackupEntry]:
        return self.with_status(FAILED)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.SOURCE_UNREADABLE if self.failed else ExitCode.OK

    def to_json(self) -> dict:
        return {"format": MANIFEST_FORMAT, "created_at": self.created_at, "tool": "consolidate",
                "version": self.version, "roots": self.roots,
                "summary": {status: len(self.with_status(status)) for status in (BACKED_UP, COPY, FAILED)},
                "files": [entry.to_json() for entry in self.files], "warnings": self.warnings}

    @classmethod
    def from_json(cls, data: dict) -> BackupManifest:
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a {MANIFEST_FORMAT} manifest")
        return cls(created_at=data["created_at"], version=data["version"], roots=list(data["roots"]),
                   files=[BackupEntry.from_json(entry) for entry in data["files"]],
                   warnings=list(data.get("warnings") or []))


# ---------------------------------------------------------------------------------------- backing up

def backup(roots: list[Path], destination: Path, on_file: Callable[[BackupEntry], None] | None = None,
           overwrite: bool = False, attempts: int = COPY_ATTEMPTS, exclude: list[Path] = (),
           found: Discovery | None = None) -> BackupManifest:
    """Back up every database discovered under `roots` (or listed in `found`, a discovery of them the
    caller already made) into `destination`. Raise `BackupError` if the destination may not be written
    (see the module docstring). Call `on_file` with each entry as it is done."""
    roots = [root.absolute() for root in roots]
    destination = destination.absolute()
    check_destination(destination, roots, overwrite, exclude)
    found = found if found is not None else discover(roots, exclude)
    try:
        staging = make_staging_folder(destination)
    except OSError as error:
        raise BackupError(f"{destination} cannot be created or written: {error.strerror or error}") from None
    try:
        entries = run_in_order(lambda source: back_up_file(source, staging, backup_relative_path(source, roots), attempts),
                               found.files, BACKUP_JOBS, on_file or (lambda entry: None))
        manifest = new_manifest(roots, entries, found)
        write_manifest(staging, manifest)
        publish_folder(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def new_manifest(roots: list[Path], entries: list[BackupEntry], found: Discovery) -> BackupManifest:
    return BackupManifest(created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          version=__version__, roots=[str(root) for root in roots], files=entries,
                          warnings=[warning.to_json() for warning in found.warnings])


def back_up_file(source: SourceFile, staging: Path, relative: str, attempts: int) -> BackupEntry:
    entry = BackupEntry(path=source.path, root=source.root, source_db=source.source_db, kind=source.kind,
                        status=FAILED, sha256=source.sha256, wal_sha256=source.wal_sha256,
                        copy_of=source.copy_of)
    if source.copy_of is not None:
        entry.status, entry.tables = COPY, dict(source.tables)
        entry.reason = f"byte-identical copy (main file and WAL) of {source.copy_of}; only that file is backed up"
        return entry
    if source.error is not None:
        entry.reason = source.error
        return entry
    target = staging / relative
    try:
        copied, tables = write_backup(source.path, target, attempts)
        record_backup(entry, source, copied, tables, target, relative)
    except SourceKeptChanging as error:
        entry.reason, entry.copy_attempts = str(error), attempts
    except (sqlite3.Error, OSError) as error:
        entry.reason = f"backup failed: {error}"
    if entry.status != BACKED_UP:
        target.unlink(missing_ok=True)
        entry.backup = entry.backup_sha256 = None
    return entry


def write_backup(source: Path, target: Path, attempts: int) -> tuple[Snapshot, dict[str, int]]:
    """Write a single-file backup of `source` to `target`, from a private copy taken while nothing
    wrote; return that copy's checksums and row counts."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="consolidate-backup-") as folder:
        copied = consistent_copy(source, Path(folder), attempts)
        tables = count_rows(copied.path)
        backup_into_single_file(copied.path, target)
    return copied, tables


def record_backup(entry: BackupEntry, source: SourceFile, copied: Snapshot, tables: dict[str, int],
                  target: Path, relative: str) -> None:
    """Fill in the entry from the backup file itself: what it holds, and which source bytes it came from."""
    entry.sha256, entry.wal_sha256 = copied.sha256, copied.wal_sha256
    entry.copy_attempts = copied.attempts
    entry.backup = relative
    entry.tables = count_rows(target)
    entry.backup_sha256 = sha256_of(target)
    if entry.tables != tables:
        entry.reason = (f"row counts in the backup {describe_count_differences(tables, entry.tables)}"
                        " from the copy it was made from")
        return
    entry.status = BACKED_UP
    if copied.identity != source.identity:
        entry.reason = "changed after discovery; the backup holds its newer content"


def backup_into_single_file(copy: Path, target: Path) -> None:
    """Run the online backup API from the private copy into `target`, then make `target` a rollback-journal
    (DELETE) database: the backup API copies the WAL flag, which would leave a `-wal` beside it."""
    source = sqlite3.connect(copy)  # the private copy: replaying its WAL here touches no source file
    try:
        destination = sqlite3.connect(target)
        try:
            source.backup(destination)
            destination.execute("PRAGMA journal_mode=DELETE").fetchone()
        finally:
            destination.close()
    finally:
        source.close()
    flush_to_disk(target)


def count_rows(database: Path) -> dict[str, int]:
    """Row count per ordinary table, as discovery and load count them."""
    return {table.name: table.row_count for table in list_tables(database)}


def backup_relative_path(source: SourceFile, roots: list[Path]) -> str:
    """`source_db` with one root, `<n>-<root folder name>/source_db` with several (n counts from 1)."""
    if len(roots) == 1:
        return source.source_db
    index = root_index(source, roots)
    return f"{index + 1}-{source.root.name or 'root'}/{source.source_db}"


def root_index(source: SourceFile, roots: list[Path]) -> int:
    """The position of the root that discovery found `source` under (a file root counts as its file)."""
    for index, root in enumerate(roots):
        if (root.is_dir() and source.root == root) or (source.found_as or source.path) == root:
            return index
    raise ValueError(f"{source.path} was not found under any of {roots}")


# ------------------------------------------------------------------------------------- destination

def check_destination(destination: Path, roots: list[Path], overwrite: bool, exclude: list[Path] = ()) -> None:
    """Raise `BackupError` unless `destination` is missing, empty, or (with `overwrite`) an earlier backup
    holding nothing but what its manifest lists."""
    refusal = destination_refusal(destination, roots, exclude, "a later run would back up the backups")
    if refusal:
        raise BackupError(refusal)
    if is_new_or_empty(destination):
        return
    earlier = read_earlier_backup(destination)
    if not overwrite:
        raise BackupExists(f"{destination} already holds a backup made at {earlier.created_at}: "
                           "choose a new folder")
    unlisted = unrecorded_files(destination, earlier)
    if unlisted:
        raise BackupError(f"{destination} holds files its manifest does not list ({', '.join(unlisted[:5])}"
                          f"{', ...' if len(unlisted) > 5 else ''}); not replacing it")


def read_earlier_backup(destination: Path) -> BackupManifest:
    if not (destination / MANIFEST_NAME).is_file():
        raise BackupError(f"{destination} is not empty and is not a backup (no {MANIFEST_NAME}); "
                          "choose an empty or new folder")
    try:
        return read_manifest(destination)
    except ValueError as error:
        raise BackupError(f"{destination / MANIFEST_NAME} is not a consolidate backup manifest ({error}); "
                          "choose an empty or new folder") from error


# ---------------------------------------------------------------------------------------- manifest

def write_manifest(folder: Path, manifest: BackupManifest) -> None:
    path = folder / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8")
    flush_to_disk(path)


def read_manifest(folder: Path) -> BackupManifest:
    """The manifest of a backup folder. Raise ValueError if it is not one."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {MANIFEST_NAME}: {error}") from error
    try:
        return BackupManifest.from_json(data)
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{MANIFEST_NAME} lacks or mangles {error}") from error


def unrecorded_files(folder: Path, manifest: BackupManifest) -> list[str]:
    """Files under `folder` that are neither the manifest nor a backup it lists, relative and sorted."""
    listed = {MANIFEST_NAME} | {entry.backup for entry in manifest.backed_up}
    return sorted(path for path in files_under(folder) if path not in listed)


def files_under(folder: Path) -> list[str]:
    found = []
    for parent, subfolders, names in os.walk(folder):
        subfolders.sort()
        for name in sorted(names):
            found.append((Path(parent) / name).relative_to(folder).as_posix())
    return found


# ------------------------------------------------------------------------------------------ verify

def verify(destination: Path) -> list[Problem]:
    """Check a backup folder against its manifest: every listed backup inside the folder (an entry that
    resolves outside it is refused unread), present, with its sha256, passing `PRAGMA integrity_check`,
    with its per-table row counts (read from a private copy), and no file that the manifest does not
    list. Returns the problems; an empty list means verified."""
    try:
        manifest = read_manifest(destination)
    except ValueError as error:
        return [Problem(MANIFEST_NAME, f"{error}: not a backup folder")]
    problems = []
    for entry in manifest.backed_up:
        problems.extend(verify_entry(destination, entry))
    problems.extend(Problem(path, "not recorded in the manifest")
                    for path in unrecorded_files(destination, manifest))
    return problems


def escapes(destination: Path, relative) -> str | None:
    """Why the manifest path `relative` does not name a file inside `destination`, or None. Such an entry
    is never hashed nor opened: a manifest is no licence to read a file elsewhere."""
    if not isinstance(relative, str) or not relative:
        return f"the manifest gives no backup path ({relative!r})"
    real_folder = destination.resolve()
    real = (destination / relative).resolve()
    if Path(relative).is_absolute() or not real.is_relative_to(real_folder) or real == real_folder:
        return f"the manifest path {relative!r} resolves to {real}, outside {real_folder}: refused, not read"
    return None


def verify_entry(destination: Path, entry: BackupEntry) -> list[Problem]:
    def problem(text: str) -> Problem:
        return Problem(str(entry.backup), text, str(entry.path))

    outside = escapes(destination, entry.backup)
    if outside:
        return [problem(outside)]
    path = destination / entry.backup
    if not path.is_file():
        return [problem("missing: listed in the manifest, not in the folder")]
    problems = []
    actual = sha256_of(path)
    if actual != entry.backup_sha256:
        problems.append(problem(f"sha256 {actual} differs from the manifest's {entry.backup_sha256}"))
    try:
        integrity, counts = check_private_copy(path)
    except sqlite3.DatabaseError as error:
        return problems + [problem(f"cannot be read as SQLite: {error}")]
    if integrity != ["ok"]:
        problems.append(problem("integrity_check: " + "; ".join(integrity[:5])))
    if counts != entry.tables:
        problems.append(problem(f"row counts {describe_count_differences(entry.tables, counts)}"))
    return problems


def check_private_copy(backup_file: Path) -> tuple[list[str], dict[str, int]]:
    """`PRAGMA integrity_check` messages and per-table row counts, read from a private copy."""
    with private_copy(backup_file) as copy:
        connection = sqlite3.connect(copy.path)
        try:
            integrity = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        finally:
            connection.close()
        return integrity, count_rows(copy.path)


def describe_count_differences(expected: dict[str, int], actual: dict[str, int]) -> str:
    differences = [f"{name}: expected {expected.get(name)}, found {actual.get(name)}"
                   for name in sorted(expected.keys() | actual.keys()) if expected.get(name) != actual.get(name)]
    return "differ (" + "; ".join(differences) + ")"
