"""`consolidate status`: the ledger at a glance, and whether each file on disk still matches it.

For every source path the ledger has ever seen: the kind and status of its latest ledger row, its
current load (`consolidate.current_loads`; after a row-level change load, which stores only the changed
rows, its rows loaded are still every row of the file's snapshot: loader/load/delta.py) with rows in
SQLite, rows loaded and checksums, how the file on disk compares with that load, its last failure, and the
time since it was last in sync. Plus totals and the latest `consolidate load` as a whole.

On disk, a file is `unchanged` (main file and `-wal` have the current load's sha256), `changed`,
`missing`, `archived` (removed by `consolidate archive --remove-originals` after its current load's bytes
were archived: `archived` names where), `forgotten` (gone, and accepted as gone by `consolidate forget`:
`forgotten` says by whom and when), or None when it exists but has no current load to compare with
(it only ever failed, or is a copy of another file). Files are hashed, never opened as databases.

"In sync" means the ledger's latest row saying raw holds exactly this file's content: a `loaded`
row, or an `unchanged` one (checked, same checksums as the loaded version).

A file cut over to PostgreSQL (`consolidate cutover`, loader/operate/cutover.py) shows since when and by
whom, and how many of its loads since then found it changed (split brain).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from loader import ledger
from loader.database import Target
from loader.ledger import (
    ARCHIVED,
    CHANGED,
    FORGOTTEN,
    LATEST_FILE_ROWS,
    LEDGER_SCHEMA,
    MISSING,
    UNCHANGED,
    ArchivedRemoval,
    CurrentLoad,
    ForgottenFile,
    GoneFiles,
)
from loader.sources.snapshot import sha256_or_none, side_file

NO_LEDGER_MESSAGE = ("no load has run against this database yet (there is no consolidate ledger); "
                     "run `consolidate load` or `consolidate run`")
EMPTY_LEDGER_MESSAGE = "the ledger records no file yet"


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


@dataclass
class Failure:
    load_id: str
    failed_at: datetime
    error_message: str | None

    def to_json(self) -> dict:
        return {"load_id": self.load_id, "failed_at": iso(self.failed_at), "error_message": self.error_message}


@dataclass
class CutOver:
    """The cutover that holds for a file, and its loads since that found the file changed."""

    cut_over_at: datetime
    cut_over_by: str
    note: str | None
    split_brain_loads: int

    def to_json(self) -> dict:
        return {"cut_over_at": iso(self.cut_over_at), "cut_over_by": self.cut_over_by, "note": self.note,
                "split_brain_loads": self.split_brain_loads}


@dataclass
class FileStatus:
    source_path: str
    source_db: str
    kind: str
    status: str
    last_load_id: str
    last_load_at: datetime
    current: CurrentLoad | None
    on_disk: str | None
    last_failure: Failure | None
    last_synced_at: datetime | None
    seconds_since_sync: float | None
    cut_over: CutOver | None = None
    archived: ArchivedRemoval | None = None
    forgotten: ForgottenFile | None = None

    def to_json(self) -> dict:
        return {"source_path": self.source_path, "source_db": self.source_db, "kind": self.kind,
                "status": self.status, "last_load_id": self.last_load_id,
                "last_load_at": iso(self.last_load_at),
                "current": self.current.to_json() if self.current else None, "on_disk": self.on_disk,
                "last_failure": self.last_failure.to_json() if self.last_failure else None,
                "last_synced_at": iso(self.last_synced_at), "seconds_since_sync": self.seconds_since_sync,
                "cut_over": self.cut_over.to_json() if self.cut_over else None,
                "archived": self.archived.to_json() if self.archived else None,
                "forgotten": self.forgotten.to_json() if self.forgotten else None}

    @property
    def archive_exists(self) -> bool | None:
        """Whether the archive holding a removed file's bytes is still where it was written (None: not archived)."""
        return self.archived.archive_exists if self.archived else None


@dataclass
class LoadRun:
    """One `consolidate load` invocation, from `consolidate.loads`."""

    load_id: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    roots: list[str]

    def to_json(self) -> dict:
        return {"load_id": self.load_id, "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at), "status": self.status, "roots": self.roots}


@dataclass
class Totals:
    files: int
    rows_in_sqlite: int
    rows_loaded: int
    failed_files: int
    changed_files: int
    missing_files: int
    cut_over_files: int = 0
    archived_files: int = 0
    forgotten_files: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class StatusReport:
    files: list[FileStatus]
    last_load: LoadRun | None
    message: str | None = None

    @property
    def totals(self) -> Totals:
        current = [f.current for f in self.files if f.current]
        return Totals(
            files=len(self.files),
            rows_in_sqlite=sum(c.rows_in_sqlite or 0 for c in current),
            rows_loaded=sum(c.rows_loaded or 0 for c in current),
            failed_files=sum(f.status == "failed" and f.on_disk != FORGOTTEN for f in self.files),
            changed_files=sum(f.on_disk == CHANGED for f in self.files),
            missing_files=sum(f.on_disk == MISSING for f in self.files),
            cut_over_files=sum(f.cut_over is not None for f in self.files),
            archived_files=sum(f.on_disk == ARCHIVED for f in self.files),
            forgotten_files=sum(f.on_disk == FORGOTTEN for f in self.files))

    def to_json(self) -> dict:
        return {"message": self.message, "last_load": self.last_load.to_json() if self.last_load else None,
                "totals": self.totals.to_json(), "files": [f.to_json() for f in self.files]}


# ------------------------------------------------------------------------------------------ ledger

# A ledger before migration 8 (status reads, never upgrades) has no cut_over_files: no file is cut over.
CUT_OVER_QUERY = """
SELECT c.source_path, c.cut_over_at, c.cut_over_by, c.note,
       (SELECT count(*) FROM {ledger}.split_brain AS s WHERE s.cutover_id = c.cutover_id AND s.changed)
FROM {ledger}.cut_over_files AS c
"""


def read_cut_over(connection: psycopg.Connection) -> dict[str, CutOver]:
    if not ledger.relation_exists(connection, LEDGER_SCHEMA, "cut_over_files"):
        return {}
    return {path: CutOver(*rest) for path, *rest in connection.execute(ledger_query(CUT_OVER_QUERY))}


FILES_QUERY = """
WITH latest AS (
    SELECT source_path, source_db, kind, status, load_id, coalesce(completed_at, started_at) AS at
    FROM {latest_file_rows} AS latest_row
), current_load AS (
    SELECT f.source_path, f.source_db, f.kind, f.load_id, f.completed_at, f.rows_in_sqlite, f.rows_loaded,
           f.source_sha256, f.wal_sha256
    FROM {ledger}.current_loads AS c
    JOIN {ledger}.load_files AS f USING (load_id, source_path)
), last_failure AS (
    SELECT DISTINCT ON (source_path) source_path, load_id, coalesce(completed_at, started_at) AS at,
           error_message
    FROM {ledger}.load_files
    WHERE status = 'failed'
    ORDER BY source_path, started_at DESC, load_id DESC
), last_sync AS (
    SELECT source_path, max(completed_at) AS at
    FROM {ledger}.load_files
    WHERE status IN ('loaded', 'unchanged')
    GROUP BY source_path
)
SELECT latest.source_path, latest.source_db, latest.kind, latest.status,
       latest.load_id AS last_load_id, latest.at AS last_load_at,
       current_load.source_db AS current_source_db, current_load.kind AS current_kind,
       current_load.load_id AS current_load_id, current_load.completed_at AS current_loaded_at,
       current_load.rows_in_sqlite, current_load.rows_loaded,
       current_load.source_sha256, current_load.wal_sha256,
       last_failure.load_id AS failed_load_id, last_failure.at AS failed_at, last_failure.error_message,
       last_sync.at AS synced_at
FROM latest
LEFT JOIN current_load USING (source_path)
LEFT JOIN last_failure USING (source_path)
LEFT JOIN last_sync USING (source_path)
ORDER BY latest.source_path
"""

LAST_LOAD_QUERY = """
SELECT load_id, started_at, finished_at, status, roots
FROM {ledger}.loads
ORDER BY started_at DESC, load_id DESC
LIMIT 1
"""


def ledger_query(text: str) -> sql.Composed:
    """`text` with {ledger} the ledger's schema and {latest_file_rows} ledger.LATEST_FILE_ROWS."""
    return sql.SQL(text).format(ledger=sql.Identifier(LEDGER_SCHEMA), latest_file_rows=sql.SQL(LATEST_FILE_ROWS))


def read_last_load(connection: psycopg.Connection) -> LoadRun | None:
    row = connection.execute(ledger_query(LAST_LOAD_QUERY)).fetchone()
    return LoadRun(*row) if row else None


# ------------------------------------------------------------------------------------------- disk

def disk_checksums(path: Path) -> tuple[str | None, str | None]:
    """sha256 of the main file and of its `-wal` as they are now (None for one that does not exist)."""
    return sha256_or_none(path), sha256_or_none(side_file(path, "-wal"))


def compare_with_disk(path: Path, current: CurrentLoad | None) -> str | None:
    if current is None:
        return None if path.exists() else MISSING
    main, wal = disk_checksums(path)
    if main is None:
        return MISSING
    return UNCHANGED if (main, wal) == current.identity else CHANGED


# --------------------------------------------------------------------------------------------- report

def current_load_from_row(row: dict) -> CurrentLoad | None:
    if row["current_load_id"] is None:
        return None
    return CurrentLoad(source_path=row["source_path"], source_db=row["current_source_db"], kind=row["current_kind"],
                       load_id=row["current_load_id"], loaded_at=row["current_loaded_at"],
                       rows_in_sqlite=row["rows_in_sqlite"], rows_loaded=row["rows_loaded"],
                       sha256=row["source_sha256"], wal_sha256=row["wal_sha256"])


def failure_of(row: dict) -> Failure | None:
    if row["failed_load_id"] is None:
        return None
    return Failure(load_id=row["failed_load_id"], failed_at=row["failed_at"], error_message=row["error_message"])


def file_status(row: dict, now: datetime, gone: GoneFiles, cut_over: CutOver | None = None) -> FileStatus:
    path = row["source_path"]
    current = current_load_from_row(row)
    synced_at = row["synced_at"]
    on_disk = compare_with_disk(Path(path), current)
    if on_disk == MISSING:  # not on disk: why, as the ledger says (a file back on disk counts from disk)
        on_disk = gone.why_gone(path)
    return FileStatus(
        source_path=path, source_db=row["source_db"], kind=row["kind"], status=row["status"],
        last_load_id=row["last_load_id"], last_load_at=row["last_load_at"], current=current,
        on_disk=on_disk, last_failure=failure_of(row),
        last_synced_at=synced_at, seconds_since_sync=(now - synced_at).total_seconds() if synced_at else None,
        cut_over=cut_over, archived=gone.archived[path] if on_disk == ARCHIVED else None,
        forgotten=gone.forgotten[path] if on_disk == FORGOTTEN else None)


def status(target: Target) -> StatusReport:
    """What the ledger in `target` says about every file it has seen, and how each file on disk compares.
    A database without a ledger gives an empty report whose message says so."""
    with target.connect() as connection:
        if not ledger.exists(connection):
            return StatusReport(files=[], last_load=None, message=NO_LEDGER_MESSAGE)
        last_load = read_last_load(connection)
        with connection.cursor(row_factory=dict_row) as cursor:
            rows = cursor.execute(ledger_query(FILES_QUERY)).fetchall()
        cut_over = read_cut_over(connection)
        gone = ledger.gone_files(connection)
    now = datetime.now(timezone.utc)
    files = [file_status(row, now, gone, cut_over.get(row["source_path"])) for row in rows]
    return StatusReport(files=files, last_load=last_load, message=None if files else EMPTY_LEDGER_MESSAGE)
