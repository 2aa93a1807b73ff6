"""Checksums: is the file on disk (main file and `-wal`) still the current load's bytes, and does the
backup hold exactly those bytes?"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from loader.backup.backup import BACKED_UP, COPY, BackupEntry, read_manifest, verify_entry
from loader.ledger import ARCHIVED, CHANGED, FORGOTTEN, MISSING, UNCHANGED, UNREADABLE, CurrentLoad
from loader.sources.snapshot import SourceKeptChanging
from loader.verify.results import ValidationError

BACKUP_MATCHES, BACKUP_DIFFERS, NOT_BACKED_UP = "matches", "differs", "not backed up"


@dataclass(frozen=True)
class BackupIndex:
    """A backup's files by path, and the roots it was made of."""

    entries: dict[str, BackupEntry]
    roots: tuple[Path, ...]
    created_at: datetime
    # repr(an entry's backup path) -> what `backup --verify` found wrong with that file (none when the
    # files were not read)
    file_problems: dict[str, list[str]] = field(default_factory=dict)

    def covers(self, source_path: str) -> bool:
        return any(Path(source_path).is_relative_to(root) for root in self.roots)


def backup_file_problems(backup_dir: Path, entry: BackupEntry) -> list[str]:
    """What `backup --verify` finds wrong with the entry's file in the folder: missing, other bytes than
    the manifest's, not SQLite, failing integrity_check, other row counts; unreadable."""
    try:
        return [f"its backup {problem.path}: {problem.problem}" for problem in verify_entry(backup_dir, entry)]
    except (OSError, SourceKeptChanging) as error:  # unreadable, or changing while read
        return [f"its backup {entry.backup}: cannot be read: {error}"]


def backup_entries(backup_dir: Path, check_files: bool = True) -> BackupIndex:
    """The backup's manifest and, with `check_files`, each backed-up file checked (read here, before
    validate opens its database snapshot; without: the manifest trusted, as `run` trusts the backup it
    has just written, each file hashed and counted as it was)."""
    try:
        manifest = read_manifest(backup_dir)
    except ValueError as error:
        raise ValidationError(f"{backup_dir}: {error}") from error
    problems = {repr(entry.backup): backup_file_problems(backup_dir, entry)
                for entry in manifest.backed_up} if check_files else {}
    return BackupIndex({str(entry.path): entry for entry in manifest.files}, tuple(Path(root) for root in manifest.roots),
                       datetime.fromisoformat(manifest.created_at), problems)


def backup_check(backup: BackupIndex | None, current: CurrentLoad) -> tuple[str | None, list[str]]:
    """Whether the backup holds the bytes of the current load (a `copy` entry: through its original): its
    manifest records them, and its file in the folder is the one the manifest describes (otherwise it
    differs, the problems named). None when there is no backup, or when the file is under none of the
    roots it was made of (a `run` over some roots backs up those, while the ledger holds the files of
    every root loaded before)."""
    if backup is None or not backup.covers(current.source_path):
        return None, []
    entries = backup.entries
    entry = entries.get(current.source_path)
    if entry is not None and entry.status == COPY and entry.copy_of is not None:
        entry = entries.get(str(entry.copy_of))
    if entry is None or entry.status != BACKED_UP:
        return NOT_BACKED_UP, ["not in the backup"]
    if entry.identity != current.identity:
        return BACKUP_DIFFERS, ["the backup holds other bytes than the current load"]
    problems = backup.file_problems.get(repr(entry.backup), [])
    return (BACKUP_DIFFERS if problems else BACKUP_MATCHES), problems


def checksum_problems(status: str, reason: str | None) -> list[str]:
    return {
        UNCHANGED: [],
        CHANGED: ["changed on disk since its load (main file or -wal): not validated; load it again"],
        MISSING: ["no longer exists on disk, and `consolidate archive --remove-originals` did not remove it "
                  "(it would have recorded the archive to read): not validated"],
        ARCHIVED: [],
        FORGOTTEN: [],
        UNREADABLE: [f"could not be read: {reason}"],
    }[status]

