"""Cutover by service: which SQLite files' services write to PostgreSQL now, and split brain.

`consolidate cutover SOURCE` records (`consolidate.cutovers`) that SOURCE's service writes to PostgreSQL
from now on; its new entries are tied to the file by `MemoryClient(..., source=SOURCE)` (or, for writes
through the views, the session setting `consolidate.source`), which fills `home_source_path` of its
writes in `raw_postgres.memory_writes`. A cutover is accepted only for a memory
file (claude-flow v2 / v3, extended-memory) whose bytes on disk are those of its current load: the
procedure is stop the service's writes, `consolidate sync`, cutover, point the service at PostgreSQL. That
load is the cutover's baseline. `consolidate cutover --undo SOURCE` records that the service writes to
its SQLite file again (after a rollback); the history of both stays.

Split brain: a cut-over file that changes afterwards is still loaded by `sync` (nothing is lost: its rows
are versions like any other and the latest `updated_at` wins), and every load of it made after its
cutover is checked once (`consolidate.split_brain`): the memory entries whose rows differ between the
file's state at the baseline load and its state at this one (by rowid and row content; a state: the raw
rows of the load and, for a row-level change load, of the loads it applies on, less the rows retired
by them, loader/load/delta.py) are the entries the file changed since the cutover, and those of them
also written in PostgreSQL since the cutover (`memory_writes.written_at`) are named as written on both
sides. Rows of its other tables changed since count too (sync's change
detection); a file with new bytes but the same rows (a WAL checkpoint, a VACUUM) is no split brain.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from loader import ledger
from loader.database import Target
from loader.ledger import LEDGER_SCHEMA, SQLITE_DELETE_VIA, WRITE_LOG_SCHEMA, in_state
from loader.load import raw_tables
from loader.load.raw_contract import MEMORY_NAMESPACES, MEMORY_TABLES
from loader.sources.snapshot import sha256_or_none, side_file


class CutoverError(Exception):
    """A cutover or undo refused; nothing was recorded."""


@dataclass
class Cutover:
    cutover_id: int
    source_path: str
    cut_over_at: datetime
    cut_over_by: str
    note: str | None
    load_id: str

    def to_json(self) -> dict:
        return {"cutover_id": self.cutover_id, "source_path": self.source_path,
                "cut_over_at": self.cut_over_at.isoformat(), "cut_over_by": self.cut_over_by,
                "note": self.note, "load_id": self.load_id}


@dataclass
class CutoverOutcome:
    source_path: str
    outcome: str  # cut over / already cut over / undone / was not cut over
    cutover: Cutover | None = None  # the cutover that holds (after cutover), or the one undone

    def to_json(self) -> dict:
        return {"source_path": self.source_path, "outcome": self.outcome,
                "cutover": self.cutover.to_json() if self.cutover else None}


CUT_OVER_FILES = f"""
SELECT cutover_id, source_path, cut_over_at, cut_over_by, note, load_id
FROM {LEDGER_SCHEMA}.cut_over_files
"""


def cut_over_files(connection: psycopg.Connection) -> dict[str, Cutover]:
    """Every file cut over now, by source path."""
    return {row[1]: Cutover(*row) for row in connection.execute(CUT_OVER_FILES + " ORDER BY source_path")}


def not_a_loaded_memory_file(connection: psycopg.Connection, source_path: str, current: tuple | None) -> str | None:
    """Why `source_path`, whose current load is `current` (ledger.current_load_of), is not a loaded memory
    file (cutover and rollback take only those), or None."""
    if current is None:
        if connection.execute(f"SELECT 1 FROM {LEDGER_SCHEMA}.load_files WHERE source_path = %s LIMIT 1",
                              (source_path,)).fetchone():
            return (f"{source_path}: never loaded: every load of it failed or it was only a copy of another file "
                    "(see `consolidate status`)")
        if not Path(source_path).exists():
            return f"{source_path}: no such file, and the ledger knows no file by that path (see `consolidate status`)"
        return f"{source_path}: never loaded (no current load in the ledger); `consolidate run` or `sync` it first"
    if current[1] not in MEMORY_TABLES:
        return (f"{source_path}: of kind {current[1]}; only memory files ({', '.join(MEMORY_TABLES)}) have a write "
                "path in PostgreSQL")
    return None


def refusal(connection: psycopg.Connection, source_path: str) -> str | None:
    """Why `source_path` cannot be cut over now, or None."""
    current = ledger.current_load_of(connection, source_path)
    problem = not_a_loaded_memory_file(connection, source_path, current)
    if problem:
        return problem
    _, _, sha256, wal_sha256 = current
    on_disk = (sha256_or_none(Path(source_path)), sha256_or_none(side_file(Path(source_path), "-wal")))
    if on_disk[0] is None:
        return f"{source_path}: not on disk"
    if on_disk != (sha256, wal_sha256):
        return (f"{source_path}: changed since its current load; stop its service's writes and run "
                "`consolidate sync` first, so the cutover starts from what PostgreSQL holds")
    return None


@contextlib.contextmanager
def recording(target: Target, sources: Sequence[Path | str]) -> Iterator[tuple[psycopg.Connection, list[str],
                                                                               dict[str, Cutover]]]:
    """For recording cutovers or undos of `sources`: a connection in a transaction holding the cutover
    lock (one recording at a time), each source as the ledger spells it (once), and the files cut over."""
    with ledger.recording(target, sources, "consolidate.cutover", prepare=raw_tables.bootstrap) as (connection, paths):
        yield connection, paths, cut_over_files(connection)


def record(connection: psycopg.Connection, path: str, action: str, note: str | None) -> None:
    """One row of `consolidate.cutovers`, with the file's current load (none for an undo of a file no
    longer in the ledger)."""
    load_id, _, sha256, wal_sha256 = ledger.current_load_of(connection, path) or (None,) * 4
    connection.execute(
        f"INSERT INTO {LEDGER_SCHEMA}.cutovers (source_path, action, recorded_by, note, load_id, source_sha256, "
        "wal_sha256) VALUES (%s, %s, %s, %s, %s, %s, %s)", (path, action, ledger.who(), note, load_id, sha256, wal_sha256))


def cutover(target: Target, sources: Sequence[Path | str], *, note: str | None = None) -> list[CutoverOutcome]:
    """Record that each of `sources` (files of the ledger) is cut over, all or none: a CutoverError names
    every file refused. A file already cut over keeps its cutover."""
    with recording(target, sources) as (connection, paths, held):
        refused = [reason for path in paths if path not in held and (reason := refusal(connection, path))]
        if refused:
            raise CutoverError("\n".join(refused))
        outcomes = []
        for path in paths:
            if path in held:
                outcomes.append(CutoverOutcome(path, "already cut over", held[path]))
                continue
            record(connection, path, "cutover", note)
            outcomes.append(CutoverOutcome(path, "cut over", cut_over_files(connection)[path]))
    return outcomes


def undo(target: Target, sources: Sequence[Path | str], *, note: str | None = None) -> list[CutoverOutcome]:
    """Record that each of `sources` writes to its SQLite file again (a file not cut over is reported so)."""
    with recording(target, sources) as (connection, paths, held):
        outcomes = []
        for path in paths:
            if path not in held:
                outcomes.append(CutoverOutcome(path, "was not cut over"))
                continue
            record(connection, path, "undo", note)
            outcomes.append(CutoverOutcome(path, "undone", held[path]))
    return outcomes


# ------------------------------------------------------------------------------------- split brain

@dataclass
class SplitBrain:
    """A load of a cut-over file made after its cutover whose rows differ from the cutover's."""

    source_path: str
    load_id: str
    cutover: Cutover
    sqlite_entries: int  # memory entries the file changed since the cutover
    other_rows: int  # rows of its other tables changed since (sync's load_changes)
    entries: list[dict] = field(default_factory=list)  # of the entries, those also written in PostgreSQL
    deleted: list[dict] = field(default_factory=list)  # of the entries, those the file deleted (and not those)

    def to_json(self) -> dict:
        return {"source_path": self.source_path, "load_id": self.load_id,
                "cut_over_at": self.cutover.cut_over_at.isoformat(), "sqlite_entries": self.sqlite_entries,
                "other_rows": self.other_rows, "written_on_both_sides": self.entries, "deleted_in_sqlite": self.deleted}

    def message(self) -> str:
        both = ", ".join(f"{e['namespace']}/{e['key']} ({e['sqlite_change']} in SQLite, "
                         f"{e['postgres_writes']} write(s) in PostgreSQL)" for e in self.entries)
        deleted = ", ".join(f"{e['namespace']}/{e['key']}" for e in self.deleted[:MESSAGE_ENTRIES])
        more = f" and {len(self.deleted) - MESSAGE_ENTRIES} more" if len(self.deleted) > MESSAGE_ENTRIES else ""
        return (f"split brain: {self.source_path} changed after its cutover at {self.cutover.cut_over_at:%Y-%m-%d %H:%M:%S%z} "
                f"(loaded: the latest updated_at wins, a version it replaces stays in unified_memory_history); "
                f"{self.sqlite_entries} entr{'y' if self.sqlite_entries == 1 else 'ies'} changed in SQLite"
                + (f" and {self.other_rows} row(s) of its other tables" if self.other_rows else "")
                + (f"; written on both sides: {both}" if both else "; none written in PostgreSQL since")
                + (f"; deleted in SQLite, so the file's version left the marts (an entry with no other version is "
                   f"gone from them; `consolidate lineage` shows its last value): {deleted}{more}" if deleted else ""))


MESSAGE_ENTRIES = 20  # entries named in the warning's text (--json and consolidate.split_brain name all)


# Loads of cut-over files after their cutover's baseline load, not checked yet, oldest first. "After" in
# the ledger's own order (completed_at, load_id: consolidate.current_loads'), never across two clocks.
PENDING_CHECKS = f"""
SELECT later.load_id, later.source_path, later.kind, later.source_sha256, later.wal_sha256,
       later.completed_at, baseline.completed_at AS baseline_completed_at, c.cutover_id, c.cut_over_at, c.cut_over_by, c.note, c.load_id AS baseline_load_id,
       c.source_sha256 AS baseline_sha256, c.wal_sha256 AS baseline_wal_sha256
FROM {LEDGER_SCHEMA}.cut_over_files AS c
JOIN {LEDGER_SCHEMA}.load_files AS baseline
  ON baseline.load_id = c.load_id AND baseline.source_path = c.source_path
JOIN {LEDGER_SCHEMA}.load_files AS later
  ON later.source_path = c.source_path AND later.status = 'loaded'
 AND (later.completed_at, later.load_id) > (baseline.completed_at, baseline.load_id)
WHERE NOT EXISTS (SELECT 1 FROM {LEDGER_SCHEMA}.split_brain AS s
                  WHERE s.load_id = later.load_id AND s.source_path = later.source_path)
ORDER BY later.completed_at, later.load_id
"""

RAW_TABLE_OF = f"""
SELECT raw_schema, raw_table FROM {LEDGER_SCHEMA}.load_tables
WHERE load_id = %s AND source_path = %s AND source_table = %s
"""

# The entries whose rows differ between two loads of a file ({old} and {new} select rowid, key,
# namespace and a digest of the row), and the writes made in PostgreSQL to them since the cutover.
BOTH_SIDES = """
WITH old_rows AS ({old}),
new_rows AS ({new}),
changed AS (
    SELECT o.namespace, o.key, false AS in_new FROM old_rows AS o
    WHERE NOT EXISTS (SELECT 1 FROM new_rows AS n WHERE n.rowid = o.rowid AND n.digest = o.digest)
    UNION ALL
    SELECT n.namespace, n.key, true FROM new_rows AS n
    WHERE NOT EXISTS (SELECT 1 FROM old_rows AS o WHERE o.rowid = n.rowid AND o.digest = n.digest)
),
entries AS (
    SELECT namespace, key,
           CASE WHEN bool_or(in_new) AND NOT bool_and(in_new) THEN 'updated'
                WHEN bool_or(in_new) THEN 'inserted' ELSE 'deleted' END AS sqlite_change
    FROM changed
    GROUP BY namespace, key
),
postgres AS (
    SELECT w.namespace, w.key, count(*) AS writes, max(w.written_at) AS last_written_at,
           (array_agg(coalesce(nullif(w.application_name, ''), w.db_user) ORDER BY w.write_id DESC))[1]
               AS last_written_by
    FROM {write_log} AS w
    JOIN entries USING (namespace, key)
    WHERE w.written_at >= %(cut_over_at)s AND w.via <> %(sqlite_delete)s  -- not the file's own deletes
    GROUP BY w.namespace, w.key
)
SELECT (SELECT count(*) FROM entries),
       coalesce(jsonb_agg(jsonb_build_object(
           'namespace', e.namespace, 'key', e.key, 'sqlite_change', e.sqlite_change,
           'postgres_writes', p.writes, 'last_written_at', p.last_written_at,
           'last_written_by', p.last_written_by) ORDER BY e.namespace, e.key)
           FILTER (WHERE p.writes IS NOT NULL), '[]'::jsonb),
       coalesce(jsonb_agg(jsonb_build_object('namespace', e.namespace, 'key', e.key) ORDER BY e.namespace, e.key)
           FILTER (WHERE p.writes IS NULL AND e.sqlite_change = 'deleted'), '[]'::jsonb)
FROM entries AS e
LEFT JOIN postgres AS p USING (namespace, key)
"""


def rows_of_state(relation: tuple[str, str] | None, columns: list[str], present: list[str], kind: str,
                  load_param: str) -> sql.Composable:
    """(rowid, namespace, key, digest of the row) of the file's memory rows in its state at one load
    (in_state); nothing without the table."""
    if relation is None:
        return sql.SQL("SELECT NULL::bigint AS rowid, NULL::text AS namespace, NULL::text AS key, "
                       "NULL::text AS digest WHERE false")
    return sql.SQL("SELECT r._source_rowid AS rowid, {namespace} AS namespace, r.key, "
                   "{digest} AS digest FROM {table} AS r WHERE {state}").format(
        namespace=MEMORY_NAMESPACES[kind], digest=raw_tables.row_digest("r", columns, set(present)),
        table=sql.Identifier(*relation),
        state=in_state("r", MEMORY_TABLES[kind], load_param))


def entries_changed_since_cutover(connection: psycopg.Connection, check: dict) -> tuple[int, list[dict], list[dict]]:
    """The memory entries whose rows the load changed since the cutover's (a count), those of them written in
    PostgreSQL since, and those of the others the file deleted."""
    table = MEMORY_TABLES[check["kind"]]
    old = connection.execute(RAW_TABLE_OF, (check["baseline_load_id"], check["source_path"], table)).fetchone()
    new = connection.execute(RAW_TABLE_OF, (check["load_id"], check["source_path"], table)).fetchone()
    old_columns = raw_tables.content_columns(connection, *old) if old else []
    new_columns = raw_tables.content_columns(connection, *new) if new else []
    columns = new_columns + [c for c in old_columns if c not in new_columns]
    statement = sql.SQL(BOTH_SIDES).format(
        old=rows_of_state(old, columns, old_columns, check["kind"], "baseline_load_id"),
        new=rows_of_state(new, columns, new_columns, check["kind"], "load_id"),
        write_log=sql.Identifier(WRITE_LOG_SCHEMA, "memory_writes"))
    count, entries, deleted = connection.execute(statement, {**check, "sqlite_delete": SQLITE_DELETE_VIA}).fetchone()
    return count, entries, deleted


# Rows of the file's other tables changed by its loads after the baseline up to this one, as sync's change
# detection counted them load by load (SQLite's own tables, which change with the others, left out).
OTHER_ROWS_CHANGED = f"""
SELECT coalesce(sum(c.inserted + c.updated + c.deleted), 0)::bigint
FROM {LEDGER_SCHEMA}.load_changes AS c
JOIN {LEDGER_SCHEMA}.load_files AS f ON f.load_id = c.load_id AND f.source_path = c.source_path
WHERE c.source_path = %(source_path)s AND c.source_table <> %(memory_table)s AND c.source_table NOT LIKE 'sqlite\\_%%'
  AND (f.completed_at, f.load_id) > (%(baseline_completed_at)s, %(baseline_load_id)s)
  AND (f.completed_at, f.load_id) <= (%(completed_at)s, %(load_id)s)
"""


def detect_split_brain(connection: psycopg.Connection) -> list[SplitBrain]:
    """Check every load of a cut-over file made after its cutover and not checked yet (after sync's
    change detection, whose counts it reads); record each (`consolidate.split_brain`, one transaction
    per load) and return those whose rows had changed. A file whose bytes changed but not its rows (a
    WAL checkpoint) is recorded as unchanged."""
    with connection.cursor(row_factory=dict_row) as cursor:
        pending = cursor.execute(PENDING_CHECKS).fetchall()
    found = []
    for check in pending:
        cutover_record = Cutover(check["cutover_id"], check["source_path"], check["cut_over_at"],
                                 check["cut_over_by"], check["note"], check["baseline_load_id"])
        same_bytes = (check["source_sha256"], check["wal_sha256"]) == (check["baseline_sha256"],
                                                                       check["baseline_wal_sha256"])
        with connection.transaction():
            count, entries, deleted, other_rows = 0, [], [], 0
            if not same_bytes:
                count, entries, deleted = entries_changed_since_cutover(connection, check)
                (other_rows,) = connection.execute(
                    OTHER_ROWS_CHANGED, {**check, "memory_table": MEMORY_TABLES[check["kind"]]}).fetchone()
            changed = count > 0 or other_rows > 0
            inserted = connection.execute(
                f"INSERT INTO {LEDGER_SCHEMA}.split_brain (load_id, source_path, cutover_id, changed, "
                "sqlite_entries, other_rows, entries, deleted_entries) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                (check["load_id"], check["source_path"], check["cutover_id"], changed, count, other_rows,
                 Jsonb(entries), Jsonb(deleted))).fetchone()
        if changed and inserted:
            found.append(SplitBrain(check["source_path"], check["load_id"], cutover_record, count, other_rows,
                                    entries, deleted))
    return found


def check_split_brain(target: Target) -> list[SplitBrain]:
    """detect_split_brain after a sync's change detection: each load's check commits on its own."""
    with target.connect(autocommit=True) as connection:
        ledger.ensure(connection)
        return detect_split_brain(connection)
