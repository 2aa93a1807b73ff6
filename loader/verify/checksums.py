"""Checksums: is the file on disk (main file and `-wal`) still the current load's bytes, and does the
backup hold exactly those bytes?"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from loader.backup.backup import BACKED_UP, COPY, BackupEntry, read_manifest
from loader.ledger import ARCHIVED, CHANGED, FORGOTTEN, MISSING, UNCHANGED, UNREADABLE, CurrentLoad
from loader.verify.results import ValidationError

BACKUP_MATCHES, BACKUP_DIFFERS, NOT_BACKED_UP = "matches", "differs", "not backed up"


@dataclass(frozen=True)
class BackupIndex:
    """A backup's files by path, and the roots it was made of."""

    entries: dict[str, BackupEntry]
    roots: tuple[Path, ...]
    created_at: datetime

    def covers(self, source_path: str) -> bool:
        return any(Path(source_path).is_relative_to(root) for root in self.roots)


def backup_entries(backup_dir: Path) -> BackupIndex:
    try:
        manifest = read_manifest(backup_dir)
    except ValueError as error:
        raise ValidationError(f"{backup_dir}: {error}") from error
    return BackupIndex({str(entry.path): entry for entry in manifest.files}, tuple(Path(root) for root in manifest.roots),
                       datetime.fromisoformat(manifest.created_at))


def backup_checksum_status(backup: BackupIndex | None, current: CurrentLoad) -> str | None:
    """Whether the backup holds the bytes of the current load (a `copy` entry: through its original).
    None when there is no backup, or when the file is under none of the roots it was made of (a `run`
    over some roots backs up those, while the ledger holds the files of every root loaded before)."""
    if backup is None or not backup.covers(current.source_path):
        return None
    entries = backup.entries
    entry = entries.get(current.source_path)
    if entry is not None and entry.status == COPY and entry.copy_of is not None:
        entry = entries.get(str(entry.copy_of))
    if entry is None or entry.status != BACKED_UP:
        return NOT_BACKED_UP
    return BACKUP_MATCHES if (entry.sha256, entry.wal_sha256) == current.identity else BACKUP_DIFFERS


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


def backup_problems(status: str | None) -> list[str]:
    return {
        None: [],
        BACKUP_MATCHES: [],
        BACKUP_DIFFERS: ["the backup holds other bytes than the current load"],
        NOT_BACKED_UP: ["not in the backup"],
    }[status]
