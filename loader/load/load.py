"""Copy every table of every discovered database into PostgreSQL raw schemas.

Each file loads in one transaction together with its ledger rows: either all of its tables arrive,
with counts verified against the private copy, or none do and the ledger says `failed` and why. The
private copy must pass SQLite's `PRAGMA quick_check` first: a damaged b-tree can hide rows from every
count and every read alike, so a file that fails it is `failed`, never loaded partially.

Files load `jobs` at a time (default 2), each by a worker with its own PostgreSQL session and DuckDB
session. A file whose tables DuckDB can all read goes **directly**: DuckDB's postgres extension sends
the rows by binary COPY, and the file's DDL and ledger rows run in the same PostgreSQL transaction
(duckdb_postgres). Otherwise, or when the direct path fails, the file goes **through CSV** in a psycopg
transaction: each table is read by DuckDB into a CSV file unless `sqlite_reader.needs_fallback` names a reason
to read it with the Python fallback (BLOBs, invalid UTF-8, NUL, hidden rowid, empty names), or the
secret policy scrubs JSON in one of its columns (`scrub_reason`); a DuckDB
read that fails anyway is rolled back to a savepoint and retried with the fallback. The ledger's
`load_tables.reader` and `notes` say which reader each table used and why; `load_columns` maps every
source column to its raw column (raw_contract.raw_column_names); `load_tables.raw_table` is
raw_contract.raw_name of the table.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from loader import ledger
from loader.database import Target, redact_password
from loader.exit_codes import ExitCode
from loader.load import delta, raw_tables
from loader.load.duckdb_postgres import AttachFailed, LedgerCursor, attach_postgres, insert_rows, refresh_catalog
from loader.load.raw_contract import (
    LINEAGE_COLUMNS,
    MEMORY_NAMESPACES,
    MEMORY_TABLES,
    POSTGRES_MAX_COLUMNS,
    RAW_SCHEMAS,
    raw_column_names,
    raw_name,
)
from loader.load.secret_policy import SecretPolicy
from loader.parallel import run_in_order
from loader.sources.discover import Discovery, DiscoveryWarning, SourceFile
from loader.sources.snapshot import Snapshot, private_copy
from loader.sources.sqlite_ddl import declared_types
from loader.sources.sqlite_reader import (
    DUCKDB,
    PYTHON_FALLBACK,
    ColumnRead,
    FallbackExport,
    SourceTable,
    attach_sqlite,
    duckdb_session,
    export_csv,
    export_csv_python,
    list_tables,
    needs_fallback,
    open_for_reading,
    quote,
    select_rows,
)

COPY_CHUNK = 1 << 20
# Lineage columns stamped on every row, in the order load_file passes their values.
LINEAGE_CONSTANTS = ["_load_id", "_source_path", "_source_sha256", "_loaded_at"]
BINARY_COLUMNS = "_binary_columns"
QUICK_CHECK_MAX_ERRORS = 10
# Two files at a time: on two cores one worker's DuckDB reads SQLite while the server takes the other's rows.
DEFAULT_JOBS = 2


@dataclass
class FileOutcome:
    source: SourceFile
    status: str
    rows_in_sqlite: int = 0
    rows_loaded: int = 0  # the file's rows in raw now (a change load: its stored rows and the unchanged ones)
    rows_stored: int = 0  # rows this load wrote to raw (a change load: the inserted and changed ones only)
    # an unchanged file: rows_in_sqlite, rows_loaded and tables are its current load's, rows_stored 0
    error: str | None = None
    tables: dict[str, int] = field(default_factory=dict)
    # Tables read by the Python fallback, with the ledger's note (why, and what was stored as hex).
    fallback_tables: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"source_path": str(self.source.path), "source_db": self.source.source_db,
                "kind": self.source.kind, "status": self.status, "rows_in_sqlite": self.rows_in_sqlite,
                "rows_loaded": self.rows_loaded, "rows_stored": self.rows_stored, "error": self.error, "tables": self.tables,
                "fallback_tables": self.fallback_tables,
                "copy_of": str(self.source.copy_of) if self.source.copy_of else None}


@dataclass
class LoadOutcome:
    load_id: str
    files: list[FileOutcome]
    warnings: list[DiscoveryWarning] = field(default_factory=list)  # discovery's: not SQLite, orphan -wal...

    @property
    def failed(self) -> list[FileOutcome]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.SOURCE_UNREADABLE if self.failed else ExitCode.OK

    def to_json(self) -> dict:
        return {"load_id": self.load_id, "files": [f.to_json() for f in self.files],
                "warnings": [w.to_json() for w in self.warnings]}


class CountMismatch(Exception):
    pass


class TableFailed(Exception):
    """A table of a file could not be loaded; the message names the table and the reason."""


class FileFailed(Exception):
    """The file cannot be loaded at all; the message says why."""


@dataclass
class TablePlan:
    """A source table, where it goes and how it is read (fallback_reason None: DuckDB)."""

    table: SourceTable
    raw_table: str
    raw_columns: list[str]
    fallback_reason: str | None


@dataclass
class TableResult:
    copied: int
    reader: str
    notes: str | None = None
    rows_with_binary: int = 0


# The marts key every memory entry by (namespace, key) in btree indexes (and claude-flow v3's entries by
# their id too), whose entries hold at most 2,704 bytes after compression: a key too long to index would
# load, then fail every later build of the database. So does a NULL key, and a row the marts cannot trace
# to its file (no rowid). Keys longer than INDEX_TRIAL_BYTES are tried in a scratch index, as PostgreSQL
# compresses them; shorter ones always fit.
INDEX_TRIAL_BYTES = 2000
UNKEYABLE_ROW = "CN001"  # the SQLSTATE unkeyable_memory_rows raises


def untraceable_memory_table(kind: str, plans: list[TablePlan]) -> None:
    """Refuse a memory table whose rows have no rowid to be traced by (WITHOUT ROWID, or every rowid
    alias taken by a column)."""
    for plan in plans:
        table = plan.table
        if table.name == MEMORY_TABLES.get(kind) and table.row_count and table.rowid_column is None:
            raise FileFailed(f"table {table.name!r} has no rowid (WITHOUT ROWID, or columns named rowid, _rowid_ "
                             "and oid hide it): its rows could not be traced from the marts to the file and "
                             "rolled back to it, so the file is not loaded")


def unkeyable_memory_rows(kind: str, schema: str, plan: TablePlan, load_id: str, source_path: str) -> sql.Composed | None:
    """A statement that raises UNKEYABLE_ROW, naming the first row of this load's memory table that the marts
    cannot key (a NULL key; namespace and key, or a v3 id, too long for a PostgreSQL index), None for another
    table. It runs in the load's transaction, after the rows: a change load's inserted rows are all it reads."""
    if plan.table.name != MEMORY_TABLES.get(kind):
        return None
    raw = dict(zip(plan.table.columns, plan.raw_columns))
    key = sql.Identifier(raw.get("key", "key"))  # a file without the column: NULL in raw's column
    v3_id = sql.Identifier(raw["id"]) if kind == "claude-flow-v3" and "id" in raw else sql.SQL("NULL::text")
    tag = sql.SQL("$check_{}$").format(sql.SQL(secrets.token_hex(6)))
    return sql.SQL("""DO {tag}
DECLARE
    problem text;
    candidate record;
BEGIN
    SELECT format('table %s rowid %s: its key is NULL', {table}, _source_rowid) INTO problem
    FROM {raw_table} WHERE _load_id = {load_id} AND _source_path = {source_path} AND {key} IS NULL
    ORDER BY _source_rowid LIMIT 1;
    IF problem IS NULL THEN
        FOR candidate IN
            SELECT _source_rowid AS rowid, {namespace} AS namespace, {key} AS key, {v3_id} AS v3_id
            FROM {raw_table} WHERE _load_id = {load_id} AND _source_path = {source_path}
              AND (octet_length({namespace}) + octet_length({key}) > {trial} OR octet_length({v3_id}) > {trial})
            ORDER BY _source_rowid
        LOOP
            -- made for the first long key only: a load without one needs no TEMPORARY privilege
            IF to_regclass('pg_temp.consolidate_index_trial') IS NULL THEN
                CREATE TEMP TABLE consolidate_index_trial (namespace text, key text) ON COMMIT DROP;
                CREATE INDEX ON consolidate_index_trial (namespace, key);
            END IF;
            BEGIN
                INSERT INTO consolidate_index_trial VALUES (candidate.namespace, candidate.key), (candidate.v3_id, '');
            EXCEPTION WHEN program_limit_exceeded THEN
                problem := format('table %s rowid %s: its namespace and key (%s bytes) or its id (%s bytes) are too '
                                  'long for a PostgreSQL index', {table}, candidate.rowid,
                                  octet_length(candidate.namespace) + octet_length(candidate.key),
                                  coalesce(octet_length(candidate.v3_id), 0));
                EXIT;
            END;
        END LOOP;
        DROP TABLE IF EXISTS pg_temp.consolidate_index_trial;
    END IF;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = {code}, MESSAGE = problem || {why};
    END IF;
END
{tag}""").format(
        tag=tag, table=sql.Literal(plan.table.name), raw_table=sql.Identifier(schema, plan.raw_table),
        load_id=sql.Literal(load_id), source_path=sql.Literal(source_path), code=sql.Literal(UNKEYABLE_ROW),
        key=key, namespace=MEMORY_NAMESPACES[kind], v3_id=v3_id, trial=sql.Literal(INDEX_TRIAL_BYTES),
        why=sql.Literal(": the marts key every memory entry by its namespace and key (a claude-flow v3 entry by its "
                        "id too) in PostgreSQL indexes, so the file is not loaded (change or remove that row in the "
                        "file, then sync)"))


def unkeyable_row_failure(error: duckdb.Error) -> Exception:
    """The file's failure when the direct path's unkeyable_memory_rows raised (else the DuckDB error itself,
    for the CSV path to try)."""
    text = str(error)
    start = text.find("table ", text.find(UNKEYABLE_ROW) if UNKEYABLE_ROW in text else 0)
    if "the marts key every memory entry" not in text or start < 0:
        return error
    return FileFailed(first_line(text[start:]))


def check_integrity(reader: sqlite3.Connection) -> None:
    """Refuse a copy SQLite itself finds damaged (its b-trees, free list and overflow chains)."""
    rows = [row[0] for row in reader.execute(f"PRAGMA quick_check({QUICK_CHECK_MAX_ERRORS})")]
    messages = [r.decode("utf-8", "replace") if isinstance(r, bytes) else str(r) for r in rows]
    if messages != ["ok"]:
        raise FileFailed("damaged database: SQLite's integrity check (PRAGMA quick_check) reports: "
                         + " | ".join(m.replace("\n", " ") for m in messages))


def plan_tables(reader: sqlite3.Connection, tables: list[SourceTable], policy: SecretPolicy,
                check_text: bool = True) -> list[TablePlan]:
    plans, owners = [], {}
    for table in tables:
        target = raw_name(table.name)
        if target in owners:
            raise TableFailed(f"table {table.name!r}: its raw name {target!r} is also that of table "
                              f"{owners[target]!r} of the same file")
        owners[target] = table.name
        width = len(table.columns) + len(LINEAGE_COLUMNS)
        if width > POSTGRES_MAX_COLUMNS:
            raise TableFailed(f"table {table.name!r} has {len(table.columns)} columns: with the "
                              f"{len(LINEAGE_COLUMNS)} lineage columns its raw table would have {width}, more "
                              f"than the {POSTGRES_MAX_COLUMNS} columns a PostgreSQL table can have")
        try:
            reason = needs_fallback(reader, table, check_text)
        except sqlite3.Error as error:
            raise TableFailed(f"table {table.name!r}: {type(error).__name__}: {error}") from error
        reason = reason or scrub_reason(table, policy)
        plans.append(TablePlan(table, target, raw_column_names(table.columns), reason))
    return plans


def scrub_reason(table: SourceTable, policy: SecretPolicy) -> str | None:
    """Why a table holding JSON with secrets goes to the Python reader: the scrub is Python (as a DuckDB
    function it measured 2.5 times slower: DuckDB spends ~0.25 ms calling Python for each value)."""
    scrubbed = [column for column in table.columns if policy.action(table.name, column) == "scrub"]
    if not scrubbed:
        return None
    return f"secrets are scrubbed out of the JSON in {', '.join(map(repr, scrubbed))} (secret_policy)"


def copy_csv_into(cursor: psycopg.Cursor, schema: str, raw_table: str, columns: list[str],
                  csv_path: Path) -> int:
    """COPY an export (its fields in the order of `columns`) into the raw table; return the rows copied."""
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(sql.Identifier(schema, raw_table), names)
    with cursor.copy(statement) as copy, open(csv_path, "rb") as handle:
        while chunk := handle.read(COPY_CHUNK):
            copy.write(chunk)
    return cursor.rowcount


class Worker:
    """Loads one file at a time: a PostgreSQL session, and a DuckDB session attached to the same
    database, opened when a file first needs it (`direct_unavailable`: why DuckDB could not attach
    PostgreSQL; every file then goes through CSV)."""

    def __init__(self, target: Target):
        self.target = target
        self.connection = target.connect(autocommit=True)
        self._duck: duckdb.DuckDBPyConnection | None = None
        self._direct_unavailable: str | None = None

    def open_duckdb(self) -> None:
        if self._duck is None:
            self._duck = duckdb_session()
            # Parallelism is across files, one per worker: a second DuckDB thread per worker only
            # competes for the same cores (measured: 0.38 -> 0.99 CPU-s for the same 250k rows).
            self._duck.execute("SET threads = 1")
            try:
                attach_postgres(self._duck, self.target.dsn)
            except AttachFailed as error:
                self._direct_unavailable = f"DuckDB could not attach PostgreSQL: {error}"

    @property
    def duck(self) -> duckdb.DuckDBPyConnection:
        self.open_duckdb()
        return self._duck

    @property
    def direct_unavailable(self) -> str | None:
        self.open_duckdb()
        return self._direct_unavailable

    def close(self) -> None:
        if self._duck is not None:
            self._duck.close()
        self.connection.close()


class WorkerPool:
    """One Worker per thread, opened on first use and all closed together."""

    def __init__(self, target: Target):
        self.target = target
        self.local = threading.local()
        self.opened: list[Worker] = []
        self.lock = threading.Lock()

    def worker(self) -> Worker:
        if getattr(self.local, "worker", None) is None:
            self.local.worker = Worker(self.target)
            with self.lock:
                self.opened.append(self.local.worker)
        return self.local.worker

    def close(self) -> None:
        for worker in self.opened:
            worker.close()


@dataclass
class FileContext:
    """What every table of one file's load shares."""

    worker: Worker
    reader: sqlite3.Connection
    database: Path
    schema: str
    kind: str
    policy: SecretPolicy
    lineage: list[str]
    previous: delta.PreviousState | None = None  # the file's state this load is a delta of; None: a full load

    @property
    def csv_path(self) -> Path:
        # Next to the private copy, under a name no copied file can have.
        return self.database.with_name(self.database.name + ".export.csv")

    def duckdb_columns(self, table: SourceTable) -> list[str]:
        return [self.policy.select_expression(table.name, column, quote(column))
                for column in table.columns]


@contextlib.contextmanager
def sqlite_attached(context: FileContext):
    attach_sqlite(context.worker.duck, context.database, "src")
    try:
        yield
    finally:
        context.worker.duck.execute("DETACH src")


def read_with_duckdb(context: FileContext, plan: TablePlan, cursor: psycopg.Cursor) -> int:
    try:
        export_csv(context.worker.duck, "src", plan.table, context.csv_path, context.duckdb_columns(plan.table),
                   context.lineage)
        return copy_csv_into(cursor, context.schema, plan.raw_table,
                             ["_source_rowid", *plan.raw_columns, *LINEAGE_CONSTANTS], context.csv_path)
    finally:
        context.csv_path.unlink(missing_ok=True)


def read_with_python(context: FileContext, plan: TablePlan, cursor: psycopg.Cursor) -> tuple[int, FallbackExport]:
    table = plan.table
    columns = [ColumnRead(column, raw, context.policy.action(table.name, column))
               for column, raw in zip(table.columns, plan.raw_columns)]
    try:
        exported = export_csv_python(context.reader, table, context.csv_path, columns, context.lineage,
                                     context.policy.stored_value)
        copied = copy_csv_into(cursor, context.schema, plan.raw_table,
                               ["_source_rowid", *plan.raw_columns, *LINEAGE_CONSTANTS, BINARY_COLUMNS],
                               context.csv_path)
    finally:
        context.csv_path.unlink(missing_ok=True)
    if exported.rows != copied:
        raise CountMismatch(f"{exported.rows} rows read, {copied} copied")
    return copied, exported


def load_table_through_csv(context: FileContext, plan: TablePlan, cursor: psycopg.Cursor,
                           direct_failure: str | None) -> TableResult:
    """One table into raw, in a savepoint: its rows arrive counted, or nothing of it does."""
    connection = context.worker.connection
    table = plan.table
    reason = plan.fallback_reason
    result = None
    if reason is None:
        try:
            with connection.transaction():
                result = TableResult(read_with_duckdb(context, plan, cursor), DUCKDB, direct_failure)
        except (duckdb.Error, psycopg.errors.DataError) as error:
            if connection.broken:
                raise
            reason = f"the DuckDB path failed ({type(error).__name__}: {first_line(error)})"
    if result is None:
        with connection.transaction():
            copied, exported = read_with_python(context, plan, cursor)
        notes = [reason, exported.describe()]
        if table.has_rowid and table.rowid_column is None:
            notes.append("_source_rowid is NULL: columns named rowid, _rowid_ and oid hide the rowid")
        result = TableResult(copied, PYTHON_FALLBACK, "; ".join(notes), exported.rows_with_binary)
    if result.copied != table.row_count:
        raise CountMismatch(f"{table.row_count} rows in SQLite, {result.copied} copied")
    return result


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def table_failed(table: SourceTable, error: BaseException) -> TableFailed:
    return TableFailed(f"table {table.name!r}: {type(error).__name__}: {error}")


def record_table(cursor, context: FileContext, record: ledger.FileRecord, plan: TablePlan, result: TableResult,
                 outcome: FileOutcome) -> None:
    table = plan.table
    notes = redact_password(result.notes, context.worker.target.dsn) if result.notes else result.notes
    ledger.record_table(cursor, record.load_id, record.source_path, table.name, context.schema, plan.raw_table,
                        table.row_count, result.copied, reader=result.reader, notes=notes,
                        rows_with_binary=result.rows_with_binary)
    ledger.record_columns(cursor, record.load_id, record.source_path, table.name,
                          list(zip(table.columns, plan.raw_columns)), declared_types(table.ddl))
    outcome.tables[table.name] = result.copied
    if result.reader == PYTHON_FALLBACK:
        outcome.fallback_tables[table.name] = result.notes


def record_file(cursor, record: ledger.FileRecord, plans: list[TablePlan], outcome: FileOutcome) -> None:
    outcome.rows_in_sqlite = record.rows_in_sqlite = sum(plan.table.row_count for plan in plans)
    outcome.rows_loaded = record.rows_loaded = sum(outcome.tables.values())
    record.completed_at = ledger.now()
    ledger.record_file(cursor, record)


STORED_ROWS = f"""
SELECT coalesce(sum(rows_loaded - rows_unchanged), 0)::bigint FROM {ledger.LEDGER_SCHEMA}.load_tables
WHERE load_id = %s AND source_path = %s
"""


def keep_changed_rows_only(cursor, previous: delta.PreviousState | None, load_id: str) -> None:
    """The CSV path: make the load, whose rows and ledger rows are in, a delta of the file's previous state
    (loader/load/delta.py)."""
    if previous is not None:
        for statement, parameters in delta.statements(previous, load_id):
            cursor.execute(statement, parameters)


def previous_state(worker: Worker, source: SourceFile, schema: str, plans: list[TablePlan]) -> delta.PreviousState | None:
    tables = [delta.DeltaTable(plan.table.name, schema, plan.raw_table, tuple(zip(plan.table.columns, plan.raw_columns)))
              for plan in plans]
    has_rowids = all(plan.table.has_rowid and plan.table.rowid_column is not None for plan in plans)
    return delta.previous_state(worker.connection, str(source.path), source.kind, tables, has_rowids)


def create_raw_tables(cursor, ddl: list[sql.Composed]) -> None:
    for statement in ddl:
        cursor.execute(statement)


def load_directly(context: FileContext, plans: list[TablePlan], ddl: list[sql.Composed],
                  record: ledger.FileRecord, outcome: FileOutcome) -> FileOutcome:
    """The whole file in one DuckDB transaction (one PostgreSQL transaction): rows by binary COPY."""
    duck = context.worker.duck
    cursor = LedgerCursor(duck, context.worker.connection)
    with sqlite_attached(context):
        duck.execute("BEGIN")
        try:
            create_raw_tables(cursor, ddl)
            refresh_catalog(duck)
            changes = []
            for plan in plans:
                table = plan.table
                columns = ["_source_rowid", *plan.raw_columns, *LINEAGE_CONSTANTS]
                select = select_rows("src", table, context.duckdb_columns(table), context.lineage)
                if context.previous is None:
                    copied = insert_rows(duck, context.schema, plan.raw_table, columns, select)
                else:  # a change load: only the changed rows travel (delta.compare_in_duckdb)
                    found = delta.compare_in_duckdb(duck, cursor.renderer, context.previous, table.name,
                                                    columns, select)
                    changes.append(found)
                    copied = found.read
                if copied != table.row_count:
                    raise CountMismatch(f"table {table.name!r}: {table.row_count} rows in SQLite, {copied} copied")
                record_table(cursor, context, record, plan, TableResult(copied, DUCKDB), outcome)
                check = unkeyable_memory_rows(context.kind, context.schema, plan, record.load_id, record.source_path)
                if check is not None:
                    try:
                        cursor.execute(check)
                    except duckdb.Error as error:
                        raise unkeyable_row_failure(error) from None
            record_file(cursor, record, plans, outcome)
            outcome.rows_stored = outcome.rows_loaded
            if context.previous is not None:
                for statement, parameters in delta.record_changes(context.previous, record.load_id, changes):
                    cursor.execute(statement, parameters)
                outcome.rows_stored = sum(found.inserted + found.updated for found in changes)
            duck.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                duck.execute("ROLLBACK")
            raise
    return outcome


def load_through_csv(context: FileContext, plans: list[TablePlan], ddl: list[sql.Composed],
                     record: ledger.FileRecord, outcome: FileOutcome, direct_failure: str | None) -> FileOutcome:
    """The whole file in one psycopg transaction, table by table through a CSV file and COPY."""
    connection = context.worker.connection
    with connection.transaction(), connection.cursor() as cursor, sqlite_attached(context):
        create_raw_tables(cursor, ddl)
        for plan in plans:
            try:
                result = load_table_through_csv(context, plan, cursor, direct_failure)
            except (psycopg.Error, duckdb.Error, sqlite3.Error, CountMismatch, ValueError, OSError) as error:
                if connection.broken:
                    raise
                raise table_failed(plan.table, error) from error
            record_table(cursor, context, record, plan, result, outcome)
        record_file(cursor, record, plans, outcome)
        keep_changed_rows_only(cursor, context.previous, record.load_id)
        outcome.rows_stored, = cursor.execute(STORED_ROWS, (record.load_id, record.source_path)).fetchone()
        for plan in plans:
            check = unkeyable_memory_rows(context.kind, context.schema, plan, record.load_id, record.source_path)
            if check is not None:
                try:
                    cursor.execute(check)
                except psycopg.Error as error:
                    if error.sqlstate != UNKEYABLE_ROW:
                        raise
                    raise FileFailed(error.diag.message_primary) from None
    return outcome


@contextlib.contextmanager
def snapshot_of(source: SourceFile) -> Iterator[Snapshot]:
    """The private copy discovery kept for this file (removed once loaded), or a new one."""
    if source.snapshot is None:
        with private_copy(source.path) as snapshot:
            yield snapshot
        return
    try:
        yield source.snapshot
    finally:
        shutil.rmtree(source.snapshot.path.parent, ignore_errors=True)
        source.snapshot = None


def link_paths(source: SourceFile) -> list[str] | None:
    return [str(link) for link in source.link_paths] or None


def load_file(worker: Worker, load_id: str, source: SourceFile, policy: SecretPolicy, *,
              full: bool = False) -> FileOutcome:
    """Load one file in one transaction; a delta of its previous state when it can be (loader/load/delta.py),
    a full load when `full`."""
    record = ledger.FileRecord(
        load_id=load_id, source_path=str(source.path), source_db=source.source_db, kind=source.kind,
        source_sha256=source.sha256, wal_sha256=source.wal_sha256, size_bytes=source.size_bytes,
        status="loaded", started_at=ledger.now(), stat=source.stat, link_paths=link_paths(source))
    schema = RAW_SCHEMAS[source.kind]
    with snapshot_of(source) as snapshot:
        record.source_sha256, record.wal_sha256 = snapshot.sha256, snapshot.wal_sha256
        reader = open_for_reading(snapshot.path)
        try:
            check_integrity(reader)
            tables = list_tables(snapshot.path)
            plans = plan_tables(reader, tables, policy, check_text=False)
            untraceable_memory_table(source.kind, plans)
            with worker.connection.cursor() as cursor:
                ddl = [statement for plan in plans for statement in
                       raw_tables.raw_table_statements(cursor, schema, plan.raw_table, plan.raw_columns)]
            lineage = [load_id, record.source_path, record.source_sha256, ledger.now().isoformat()]
            previous = None if full else previous_state(worker, source, schema, plans)
            context = FileContext(worker, reader, snapshot.path, schema, source.kind, policy, lineage, previous)
            direct_failure = worker.direct_unavailable
            with raw_tables.raw_ddl_lock(worker.connection, needed=bool(ddl)):
                if direct_failure is None and all(plan.fallback_reason is None for plan in plans):
                    try:
                        return load_directly(context, plans, ddl, record, FileOutcome(source, "loaded"))
                    except (duckdb.Error, CountMismatch) as error:
                        direct_failure = f"through CSV: the direct path failed ({type(error).__name__}: {first_line(error)})"
                plans = plan_tables(reader, tables, policy)  # with the text check: each table's reader, and why
                return load_through_csv(context, plans, ddl, record, FileOutcome(source, "loaded"), direct_failure)
        finally:
            reader.close()


def record_outcome_without_rows(connection: psycopg.Connection, load_id: str, source: SourceFile,
                                status: str, error: str | None = None) -> FileOutcome:
    with connection.transaction(), connection.cursor() as cursor:
        ledger.record_file(cursor, ledger.FileRecord(
            load_id=load_id, source_path=str(source.path), source_db=source.source_db, kind=source.kind,
            source_sha256=source.sha256, wal_sha256=source.wal_sha256, size_bytes=source.size_bytes,
            status=status, started_at=ledger.now(), completed_at=ledger.now(), error_message=error,
            copy_of=str(source.copy_of) if source.copy_of else None, link_paths=link_paths(source)))
    return FileOutcome(source, status, error=error)


def load(discovery: Discovery, target: Target, roots: list[str], policy: SecretPolicy, *,
         force: bool = False, jobs: int = DEFAULT_JOBS,
         on_file: Callable[[FileOutcome], None] = lambda outcome: None) -> LoadOutcome:
    """Load every discovered file, `jobs` at a time; return what happened to each, in discovery
    order. Never raises for a bad file."""
    with target.connect(autocommit=True) as connection:
        raw_tables.bootstrap(connection)
        load_id = ledger.start_load(connection, roots, policy.describe(), policy.digest)
        labels = ledger.file_labels(connection, {str(source.path): source.source_db for source in discovery.files})
        for source in discovery.files:
            source.known_as = labels[str(source.path)]
        try:
            outcomes = load_in_parallel(discovery.files, target, load_id, policy, force, jobs, on_file)
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                ledger.finish_load(connection, load_id, "failed")
            raise
        analyze_loaded_tables(connection, load_id)
        ledger.finish_load(connection, load_id, "failed" if any(o.status == "failed" for o in outcomes)
                           else "completed")
        return LoadOutcome(load_id, outcomes, discovery.warnings)


# Change loads that add fewer rows leave the planner's statistics as good as they were: VACUUM (ANALYZE) would
# read the whole table (0.5-1.6 s at 1M rows) for a few rows; autovacuum catches up later.
ANALYZE_AFTER_CHANGES = 1000


def analyze_loaded_tables(connection: psycopg.Connection, load_id: str) -> None:
    """Fresh planner statistics and visibility map for every raw table this load added rows to, before dbt
    reads them: right after a bulk load a table has no statistics until autovacuum gets to it, so the
    build's joins and aggregations are planned blind (measured at 1M: int_memory_ranked 24 -> 19 s); and
    no page is marked all-visible, so every index-only scan (the ledger-count and row-identity tests, the
    incremental reads by load) fetches each row from the heap too (the ledger-count test at 1M:
    0.35 s -> 0.08 s). VACUUM (ANALYZE) does both in about the time ANALYZE alone took (0.8 s at 1M).
    The ledger's files and tables are analyzed too: a few dozen rows, below autovacuum's threshold, so
    without this the planner takes consolidate.current_loads for one row and reads raw by index, load
    after load (assert_raw_memory_rows_represented_once at 1M: 12.7 -> 9.1 s)."""
    for schema, table in ledger.tables_loaded(connection, load_id, changes_at_least=ANALYZE_AFTER_CHANGES):
        connection.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(schema, table)))
    for table in ("load_files", "load_tables", "retired_rows"):
        connection.execute(sql.SQL("ANALYZE {}").format(ledger.table(table)))


def load_in_parallel(files: list[SourceFile], target: Target, load_id: str, policy: SecretPolicy, force: bool,
                     jobs: int, on_file: Callable[[FileOutcome], None]) -> list[FileOutcome]:
    """Each file by the next free worker; outcomes reported in discovery order."""
    pool = WorkerPool(target)
    try:
        return run_in_order(lambda source: load_one(pool.worker(), load_id, source, policy, force), files, jobs,
                            on_file)
    finally:
        pool.close()


def load_one(worker: Worker, load_id: str, source: SourceFile, policy: SecretPolicy, force: bool) -> FileOutcome:
    connection = worker.connection
    if source.copy_of is not None:
        return record_outcome_without_rows(connection, load_id, source, "copy")
    if source.error is not None:
        return record_outcome_without_rows(connection, load_id, source, "failed", source.error)
    if not force and ledger.current_checksums(connection, str(source.path)) == source.identity:
        unchanged = record_outcome_without_rows(connection, load_id, source, "unchanged")
        counts = ledger.current_table_counts(connection, str(source.path))  # as its current load left them
        unchanged.tables = {table: in_raw for table, (_, in_raw) in counts.items()}
        unchanged.rows_in_sqlite = sum(in_sqlite for in_sqlite, _ in counts.values())
        unchanged.rows_loaded = sum(unchanged.tables.values())
        return unchanged
    try:
        return load_file(worker, load_id, source, policy, full=force)
    except (TableFailed, FileFailed) as error:
        if connection.broken:
            raise
        return record_outcome_without_rows(connection, load_id, source, "failed",
                                           redact_password(str(error), worker.target.dsn))
    except Exception as error:  # a bad file is named with its reason; the run goes on
        if connection.broken:
            raise
        reason = f"{type(error).__name__}: {error}".strip()
        return record_outcome_without_rows(connection, load_id, source, "failed",
                                           redact_password(reason, worker.target.dsn))
