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

Refused, for all SOURCEs, unless each is a file the ledger has a current load of and that is not on disk
(neither its main file nor its `-wal`); a file removed by `archive` is already accounted for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from loader import ledger
from loader.database import Target
from loader.ledger import ForgottenFile
from loader.operate.cutover import current_load_of, who
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


def refusal(connection: psycopg.Connection, source_path: str, archived: set[str]) -> str | None:
    """Why `source_path` cannot be forgotten, or None."""
    if current_load_of(connection, source_path) is None:
        return f"{source_path}: the ledger has no current load of it (see `consolidate status`)"
    on_disk = [str(part) for part in (Path(source_path), side_file(Path(source_path), "-wal")) if part.exists()]
    if on_disk:
        return (f"{source_path}: still on disk ({', '.join(on_disk)}); only a file that is gone can be forgotten "
                "(`consolidate archive --remove-originals` removes one and keeps its bytes)")
    if source_path in archived:
        return f"{source_path}: removed by `consolidate archive --remove-originals`; its bytes are in the archive"
    return None


def forget(target: Target, sources: Sequence[Path | str], *, note: str | None = None,
           by: str | None = None) -> list[ForgetOutcome]:
    """Record that each of `sources` is gone on purpose, all or none: a ForgetError names every file
    refused."""
    with target.connect() as connection:
        ledger.ensure(connection)
        paths = list(dict.fromkeys(ledger.ledger_path(connection, source) for source in sources))
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(hashtext('consolidate.forget'))")
            held = ledger.forgotten_files(connection)
            archived = set(ledger.archived_removals(connection))
            refused = [reason for path in paths if path not in held and (reason := refusal(connection, path, archived))]
            if refused:
                raise ForgetError("\n".join(refused))
            outcomes = []
            for path in paths:
                if path in held:
                    outcomes.append(ForgetOutcome(path, "already forgotten", held[path]))
                    continue
                load_id = current_load_of(connection, path)[0]
                ledger.record_forgotten(connection, path, load_id, by or who(), note)
                outcomes.append(ForgetOutcome(path, "forgotten", ledger.forgotten_files(connection)[path]))
    return outcomes
