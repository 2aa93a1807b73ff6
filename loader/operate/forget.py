"""`consolidate forget SOURCE`: accept that a file deleted outside `archive` is gone.

A file of the ledger that is no longer on disk, and that `consolidate archive --remove-originals` did not
remove, is `missing`: `validate` fails on it, since it cannot compare the marts with the file's bytes, and
keeps failing until the file is back. When the file is gone on purpose (its service retired, the disk
lost), `forget` records that in the ledger (`consolidate.forgotten_files`: the current load, when, by whom,
a note). Nothing else changes: its rows stay current and in the marts (PostgreSQL is their system of
record now), `validate` still reconciles their counts but reports the file `forgotten` instead of asking
for its bytes, and `status` and `sync` say `forgotten`, not `missing`. The record holds for the load it
names: a file put back on disk counts from disk again, and once a later load of it is current the record
is void.

A file with no current load (a byte-identical copy of another, or one that only ever failed) has no rows
to keep, but `status` says `missing` of it until it is forgotten too; that record names the ledger's latest
row of the file, and holds until a later one. A file that only ever failed can be forgotten while still on
disk (one the tool cannot read, left out on purpose): `validate`, which fails on a file none of whose rows
reached PostgreSQL, then stops failing on it, until it loads.

Refused, for all SOURCEs, unless the ledger knows each and none is on disk (neither its main file nor its
`-wal`) but a file that only ever failed; a file removed by `archive` is already accounted for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from loader import ledger
from loader.database import Target
from loader.ledger import ARCHIVED, LATEST_FILE_ROWS, ForgottenFile, GoneFiles
from loader.sources.snapshot import side_file


class ForgetError(Exception):
    """A forget refused; nothing was recorded."""


@dataclass
class ForgetOutcome:
    source_path: str
    outcome: str  # forgotten / already forgotten
    forgotten: ForgottenFile

    def to_json(self) -> dict:
        return {"source_path": self.source_path, "outcome": self.outcome, "forgotten": self.forgotten.to_json()}


LATEST_LOAD = f"SELECT load_id FROM {LATEST_FILE_ROWS} AS latest WHERE source_path = %s"


def load_to_forget(connection: psycopg.Connection, source_path: str, gone: GoneFiles,
                   never_loaded: dict[str, str]) -> tuple[str | None, str | None]:
    """(the load the forget names, None) when `source_path` can be forgotten, else (None, why not). The
    load is the file's current one or, for a file with none (a copy, or one that only ever failed), the
    ledger's latest row of it. `never_loaded`: ledger.never_loaded_files."""
    current = ledger.current_load_of(connection, source_path)
    latest = connection.execute(LATEST_LOAD, (source_path,)).fetchone()
    if latest is None:
        return None, f"{source_path}: the ledger knows no file by that path (see `consolidate status`)"
    on_disk = [str(part) for part in (Path(source_path), side_file(Path(source_path), "-wal")) if part.exists()]
    if on_disk and source_path not in never_loaded:
        return None, (f"{source_path}: still on disk ({', '.join(on_disk)}); only a file that is gone can be "
                      "forgotten (`consolidate archive --remove-originals` removes one and keeps its bytes)")
    if gone.why_gone(source_path) == ARCHIVED:
        return None, f"{source_path}: removed by `consolidate archive --remove-originals`; its bytes are in the archive"
    return (current or latest)[0], None


def forget(target: Target, sources: Sequence[Path | str], *, note: str | None = None) -> list[ForgetOutcome]:
    """Record that each of `sources` is gone on purpose, all or none: a ForgetError names every file
    refused."""
    with ledger.recording(target, sources, "consolidate.forget") as (connection, paths):
        gone = ledger.gone_files(connection)
        never_loaded = ledger.never_loaded_files(connection)
        checked = {path: load_to_forget(connection, path, gone, never_loaded)
                   for path in paths if path not in gone.forgotten}
        refused = [reason for _, reason in checked.values() if reason]
        if refused:
            raise ForgetError("\n".join(refused))
        return [ForgetOutcome(path, "already forgotten", gone.forgotten[path]) if path in gone.forgotten else
                ForgetOutcome(path, "forgotten", ledger.record_forgotten(connection, path, checked[path][0],
                                                                        ledger.who(), note))
                for path in paths]
