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

    folder: Path
    entries: dict[str, BackupEntry]
    roots: tuple[Path, ...]
    created_at: datetime
    check_files: bool = True  # read each backup file (False: trust the manifest, just written and checked)
    checked: dict[str, list[str]] = field(default_factory=dict, compare=False)  # repr(backup path) -> problems

    def covers(self, source_path: str) -> bool:
        return any(Path(source_path).is_relative_to(root) for root in self.roots)

    def file_problems(self, entry: BackupEntry) -> list[str]:
        """What `backup --verify` finds wrong with the entry's file in the folder (missing, other bytes than
        the manifest's, not SQLite, failing integrity_check, other row counts); read once per file."""
        key = repr(entry.backup)  # the manifest's value, whatever JSON gave it
        if not self.check_files:
            return []
        if key not in self.checked:
            try:
                problems = [f"its backup {problem.path}: {problem.problem}"
                            for problem in verify_entry(self.folder, entry)]
            except (OSError, SourceKeptChanging) as error:  # unreadable, or changing while read
                problems = [f"its backup {entry.backup}: cannot be read: {error}"]
            self.checked[key] = problems
        return self.checked[key]


def backup_entries(backup_dir: Path, check_files: bool = True) -> BackupIndex:
    try:
        manifest = read_manifest(backup_dir)
    except ValueError as error:
        raise ValidationError(f"{backup_dir}: {error}") from error
    return BackupIndex(backup_dir, {str(entry.path): entry for entry in manifest.files},
                       tuple(Path(root) for root in manifest.roots), datetime.fromisoformat(manifest.created_at),
                       check_files)


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
    if (entry.sha256, entry.wal_sha256) != current.identity:
        return BACKUP_DIFFERS, ["the backup holds other bytes than the current load"]
    problems = backup.file_problems(entry)
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

