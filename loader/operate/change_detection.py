"""Change detection for the incremental sync of the parallel-run period (the sync itself, discover →
load → change detection → dbt build, is ordered by loader.pipeline.sync and .watch).

The data model is the loader's: raw is append-only per load, an unchanged file is skipped, and a changed
memory file's new load is a row-level change load (loader/load/delta.py), which records its own changes
(inserted / updated / deleted per table, `consolidate.load_changes`) as it is made. Any other load of a
changed file holds the whole file (`consolidate.current_loads`), and what sync adds for it is **change
detection**: its raw rows are compared, set-based in PostgreSQL, with the rows of the file's previous
`loaded` load, table by table:

- by `_source_rowid` (SQLite's rowid): only in the new load → inserted, only in the previous → deleted,
  in both with a different md5 of the row's content (every raw column but the lineage that names the
  load: _load_id, _source_path, _source_sha256, _source_rowid, _loaded_at) → updated, else unchanged;
- for a table without rowids (WITHOUT ROWID), by the whole row (a multiset of row digests): a changed
  row counts as one deletion and one insertion.

The counts go to `consolidate.load_changes` (one row per load, file and table) and every deleted row's
identity to `consolidate.deleted_rows`. Deletions are recorded, never applied to history: the deleted
row's raw version stays in raw under the previous load (`consolidate lineage` shows it as
'earlier load'), and the marts, built from current loads only, reflect each file's current state.

Loads made by `consolidate load` / `run` are diffed too: every sync first detects the changes of any
`loaded` file version that has none recorded yet.

A load of a file cut over to PostgreSQL (`consolidate cutover`) made after its cutover is checked for
split brain (loader/operate/cutover.py, called by pipeline.sync after the change detection): the file
changed although its service writes to PostgreSQL. It is loaded all the same (every version kept); the
report warns and names the entries written on both sides and those the file deleted
(`pipeline.SyncReport.split_brain`).

The build is incremental (loader/transform/build.py): only the entries of the files whose current load
changed are recomputed, and, after a build whose tests passed, the heavy tests check only those. dbt's
unit tests (the project's SQL on fixed rows) are left to `consolidate build` and `run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from loader import ledger
from loader.database import Target
from loader.ledger import ARCHIVED, INSERT_DELETED_ROWS, INSERT_LOAD_CHANGES, LEDGER_SCHEMA, MISSING
from loader.load import raw_tables
from loader.load.load import FileOutcome, LoadOutcome

# The file version loaded just before (load_id, source_path): same order as consolidate.current_loads.
PREVIOUS_LOAD = f"""
SELECT earlier.load_id
FROM {LEDGER_SCHEMA}.load_files AS this
JOIN {LEDGER_SCHEMA}.load_files AS earlier
  ON earlier.source_path = this.source_path AND earlier.status = 'loaded'
 AND (earlier.completed_at, earlier.load_id) < (this.completed_at, this.load_id)
WHERE this.load_id = %(load_id)s AND this.source_path = %(source_path)s
ORDER BY earlier.completed_at DESC, earlier.load_id DESC
LIMIT 1
"""

# Every table of either version, with where its raw rows are.
TABLES_OF_TWO_LOADS = f"""
SELECT coalesce(new.source_table, old.source_table), new.raw_schema, new.raw_table, old.raw_schema, old.raw_table
FROM (SELECT * FROM {LEDGER_SCHEMA}.load_tables WHERE load_id = %(load_id)s AND source_path = %(source_path)s) AS new
FULL JOIN (SELECT * FROM {LEDGER_SCHEMA}.load_tables
           WHERE load_id = %(previous_load_id)s AND source_path = %(source_path)s) AS old
  ON old.source_table = new.source_table
ORDER BY 1
"""

# A file's first load: every table's rows, as loaded, are inserted.
FIRST_LOAD_CHANGES = f"""
{INSERT_LOAD_CHANGES}
SELECT load_id, NULL, source_path, source_table, rows_loaded, 0, 0, 0, now()
FROM {LEDGER_SCHEMA}.load_tables
WHERE load_id = %(load_id)s AND source_path = %(source_path)s
ORDER BY source_table
RETURNING source_table, inserted
"""

RECORDED_CHANGES = f"""
SELECT source_path, previous_load_id, source_table, inserted, updated, deleted, unchanged
FROM {LEDGER_SCHEMA}.load_changes
WHERE load_id = %s
ORDER BY source_path, source_table
"""

# `loaded` file versions whose changes were never detected (loaded by `load`/`run`, or by a sync that
# stopped between the load and the detection), oldest first.
PENDING_LOADS = f"""
SELECT f.load_id, f.source_path
FROM {LEDGER_SCHEMA}.load_files AS f
WHERE f.status = 'loaded'
  AND NOT EXISTS (SELECT 1 FROM {LEDGER_SCHEMA}.load_changes AS c
                  WHERE c.load_id = f.load_id AND c.source_path = f.source_path)
ORDER BY f.completed_at, f.load_id
"""

# The diff of one table between two loads of a file, stored in one statement. {old} / {new} select
# (rowid, digest) of each side; a side the table does not exist in selects nothing.
DIFF_TABLE = """
WITH old_rows AS ({old}),
new_rows AS ({new}),
by_content AS (
    -- no rowids on either side (a WITHOUT ROWID table): rows are identified by their content
    SELECT coalesce(bool_or(rowid IS NULL), false) AS yes
    FROM (SELECT rowid FROM old_rows UNION ALL SELECT rowid FROM new_rows) AS both_sides
),
old_keyed AS (
    SELECT rowid, digest, identity, row_number() OVER (PARTITION BY identity) AS occurrence
    FROM (SELECT rowid, digest, CASE WHEN by_content.yes THEN 'c' || digest ELSE 'r' || rowid END AS identity
          FROM old_rows, by_content) AS keyed
),
new_keyed AS (
    SELECT rowid, digest, identity, row_number() OVER (PARTITION BY identity) AS occurrence
    FROM (SELECT rowid, digest, CASE WHEN by_content.yes THEN 'c' || digest ELSE 'r' || rowid END AS identity
          FROM new_rows, by_content) AS keyed
),
diff AS (
    SELECT old_keyed.rowid AS old_rowid, old_keyed.digest AS old_digest, new_keyed.digest AS new_digest,
           old_keyed.identity IS NOT NULL AS in_old, new_keyed.identity IS NOT NULL AS in_new
    FROM old_keyed
    FULL JOIN new_keyed
      ON new_keyed.identity = old_keyed.identity AND new_keyed.occurrence = old_keyed.occurrence
),
recorded_deletions AS (
    {insert_deleted_rows}
    SELECT %(load_id)s, %(source_path)s, %(source_table)s, old_rowid, old_digest, %(previous_load_id)s
    FROM diff
    WHERE in_old AND NOT in_new
    RETURNING 1
)
{insert_load_changes}
SELECT %(load_id)s, %(previous_load_id)s, %(source_path)s, %(source_table)s,
       count(*) FILTER (WHERE in_new AND NOT in_old),
       count(*) FILTER (WHERE in_new AND in_old AND new_digest <> old_digest),
       count(*) FILTER (WHERE in_old AND NOT in_new),
       count(*) FILTER (WHERE in_new AND in_old AND new_digest = old_digest),
       now()
FROM diff
RETURNING inserted, updated, deleted, unchanged
"""


# ------------------------------------------------------------------------------------------ results

@dataclass
class TableChanges:
    source_table: str
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0

    def to_json(self) -> dict:
        return {"source_table": self.source_table, "inserted": self.inserted, "updated": self.updated,
                "deleted": self.deleted, "unchanged": self.unchanged}


@dataclass
class FileChanges:
    load_id: str
    source_path: str
    previous_load_id: str | None
    tables: list[TableChanges] = field(default_factory=list)


@dataclass
class FileSync:
    """What one sync did to one discovered file (or to a ledger file no longer found: `missing`, or
    `archived` when `consolidate archive --remove-originals` removed it)."""

    source_path: str
    source_db: str
    kind: str
    status: str  # loaded / unchanged / copy / failed / missing / archived (removed after archiving) / forgotten
    load_id: str | None = None  # the load whose rows are current for this file after the sync
    previous_load_id: str | None = None
    rows: int | None = None  # rows of the current load
    error: str | None = None
    tables: list[TableChanges] = field(default_factory=list)
    archived: ledger.ArchivedRemoval | None = None  # status archived: the archive holding the current load's bytes

    @property
    def archive_path(self) -> str | None:
        return self.archived.archive_path if self.archived else None

    @property
    def archive_exists(self) -> bool | None:
        return self.archived.archive_exists if self.archived else None

    # The file's totals count application rows: SQLite's own tables (sqlite_sequence, sqlite_stat1),
    # which change with them, are listed in `tables` but not counted.
    def total(self, kind: str) -> int:
        return sum(getattr(t, kind) for t in self.tables if not t.source_table.startswith("sqlite_"))

    @property
    def inserted(self) -> int:
        return self.total("inserted")

    @property
    def updated(self) -> int:
        return self.total("updated")

    @property
    def deleted(self) -> int:
        return self.total("deleted")

    def to_json(self) -> dict:
        return {"source_path": self.source_path, "source_db": self.source_db, "kind": self.kind,
                "status": self.status, "load_id": self.load_id, "previous_load_id": self.previous_load_id,
                "rows": self.rows, "inserted": self.inserted, "updated": self.updated, "deleted": self.deleted,
                "error": self.error, "tables": [t.to_json() for t in self.tables], "archive_path": self.archive_path,
                "archive_exists": self.archive_exists}


# ---------------------------------------------------------------------------------- change detection

def side_query(schema: str | None, table: str | None, columns: list[str], present: set[str],
               load_param: str, *, state: bool = False) -> sql.Composable:
    """(rowid, md5 of the source columns) of one load's rows of a table; nothing if it has no such table.
    A column the raw table lacks counts as NULL, so two raw tables with different columns compare.
    `state`: the file's whole state at that load (for a row-level change load, the loads it applies on
    too, less the rows retired: loader/load/delta.py), not only the rows the load stored."""
    if schema is None:
        return sql.SQL("SELECT NULL::bigint AS rowid, NULL::text AS digest WHERE false")
    loads = ledger.state_loads(load_param) if state else sql.SQL("({})").format(sql.Placeholder(load_param))
    return sql.SQL("SELECT r._source_rowid AS rowid, {} AS digest FROM {} AS r "
                   "WHERE r._load_id IN {} AND r._source_path = %(source_path)s AND {}").format(
        raw_tables.row_digest("r", columns, present), sql.Identifier(schema, table), loads,
        ledger.not_retired("r", schema, table) if state else sql.SQL("true"))


def detect_changes(connection: psycopg.Connection, load_id: str, source_path: str) -> FileChanges:
    """Compare the raw rows of (load_id, source_path) with the file's previous `loaded` version and
    store the result in load_changes / deleted_rows (replacing an earlier detection of the same load).
    One transaction; set-based SQL."""
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"consolidate.sync:{load_id}:{source_path}",))
        parameters = {"load_id": load_id, "source_path": source_path}
        cursor.execute(PREVIOUS_LOAD, parameters)
        row = cursor.fetchone()
        parameters["previous_load_id"] = row[0] if row else None
        for table in ("deleted_rows", "load_changes"):
            cursor.execute(sql.SQL("DELETE FROM {} WHERE load_id = %s AND source_path = %s").format(
                sql.Identifier(LEDGER_SCHEMA, table)), (load_id, source_path))
        changes = FileChanges(load_id, source_path, parameters["previous_load_id"])
        if parameters["previous_load_id"] is None:
            # the file's first load: every row is inserted, as the ledger counted them (no row to compare)
            cursor.execute(FIRST_LOAD_CHANGES, parameters)
            changes.tables = [TableChanges(table, inserted) for table, inserted in cursor.fetchall()]
            return changes
        cursor.execute(TABLES_OF_TWO_LOADS, parameters)
        for source_table, new_schema, new_table, old_schema, old_table in cursor.fetchall():
            new_columns = raw_tables.content_columns(cursor, new_schema, new_table) if new_schema else []
            old_columns = raw_tables.content_columns(cursor, old_schema, old_table) if old_schema else []
            columns = new_columns + [c for c in old_columns if c not in new_columns]
            statement = sql.SQL(DIFF_TABLE).format(
                old=side_query(old_schema, old_table, columns, set(old_columns), "previous_load_id", state=True),
                new=side_query(new_schema, new_table, columns, set(new_columns), "load_id"),
                insert_deleted_rows=sql.SQL(INSERT_DELETED_ROWS), insert_load_changes=sql.SQL(INSERT_LOAD_CHANGES))
            cursor.execute(statement, {**parameters, "source_table": source_table})
            inserted, updated, deleted, unchanged = cursor.fetchone()
            changes.tables.append(TableChanges(source_table, inserted, updated, deleted, unchanged))
    return changes


def detect_pending(connection: psycopg.Connection) -> list[FileChanges]:
    """Detect the changes of every `loaded` file version that has none recorded yet, oldest first."""
    pending = connection.execute(PENDING_LOADS).fetchall()
    return [detect_changes(connection, load_id, source_path) for load_id, source_path in pending]


def recorded_changes(connection: psycopg.Connection, load_id: str) -> list[FileChanges]:
    """The changes recorded when the load itself was made (a row-level change load, loader/load/delta.py)."""
    files: dict[str, FileChanges] = {}
    for source_path, previous, table, inserted, updated, deleted, unchanged in connection.execute(RECORDED_CHANGES,
                                                                                                   (load_id,)):
        changes = files.setdefault(source_path, FileChanges(load_id, source_path, previous))
        changes.tables.append(TableChanges(table, inserted, updated, deleted, unchanged))
    return list(files.values())


# ------------------------------------------------------------------------------------ what sync did

def is_under(path: str, roots: Sequence[Path]) -> bool:
    candidate = Path(path)
    return any(candidate == root or root in candidate.parents for root in roots)


def file_result(outcome: FileOutcome, changes: dict[tuple[str, str], FileChanges],
                current: dict[str, tuple[str, int | None]], load_id: str) -> FileSync:
    source = outcome.source
    path = str(source.path)
    result = FileSync(source_path=path, source_db=source.source_db, kind=source.kind, status=outcome.status,
                      error=outcome.error)
    result.load_id, result.rows = current.get(path, (None, None))
    if outcome.status == "loaded":
        detected = changes.get((load_id, path))
        if detected is not None:
            result.previous_load_id, result.tables = detected.previous_load_id, detected.tables
    return result


def detect(target: Target, loaded: LoadOutcome, roots: Sequence[Path]) -> tuple[int, list[FileSync]]:
    """After `loaded`: detect the changes of every `loaded` file version that has none yet, and say
    per file what the sync did; a file of the ledger under `roots` that was not discovered any more
    is `missing`, or `archived` when the archive removed it, or `forgotten` when `consolidate forget`
    accepted it as gone, and nothing is at its path (either way its
    last load stays current: reported, not applied). Returns how many earlier loads
    (by `load` / `run`) were caught up, and the files."""
    with target.connect(autocommit=True) as connection:  # each file's detection commits on its own
        ledger.ensure(connection)
        detected = detect_pending(connection)
        caught_up = sum(c.load_id != loaded.load_id for c in detected)
        detected += [c for c in recorded_changes(connection, loaded.load_id)
                     if (c.load_id, c.source_path) not in {(d.load_id, d.source_path) for d in detected}]
        loads = {c.source_path: c for c in ledger.current_loads(connection)}
        gone = ledger.gone_files(connection)
    current = {path: (c.load_id, c.rows_loaded) for path, c in loads.items()}
    by_load = {(c.load_id, c.source_path): c for c in detected}
    files = [file_result(outcome, by_load, current, loaded.load_id) for outcome in loaded.files]
    discovered = {f.source_path for f in files}
    for path in sorted(set(current) - discovered):
        if is_under(path, roots):
            status = MISSING if Path(path).exists() else gone.why_gone(path)
            files.append(FileSync(source_path=path, source_db=loads[path].source_db, kind=loads[path].kind,
                                  status=status,
                                  load_id=current[path][0], rows=current[path][1],
                                  archived=gone.archived[path] if status == ARCHIVED else None))
    return caught_up, files
