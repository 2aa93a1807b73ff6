"""Copy every table of every discovered database into PostgreSQL raw schemas.

Each file loads in one transaction together with its ledger rows: either all of its tables arrive,
with counts verified against the private copy, or none do and the ledger says `failed` and why.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from loader import ledger
from loader.database import Target
from loader.discover import Discovery, SourceFile
from loader.extract import SourceTable, attach_sqlite, duckdb_session, export_csv, list_tables, quote
from loader.raw_contract import RAW_SCHEMAS
from loader.secret_policy import SecretPolicy
from loader.snapshot import SourceKeptChanging, private_copy

COPY_CHUNK = 1 << 20
# Lineage columns stamped on every row, in the order load_file passes their values.
LINEAGE_CONSTANTS = ["_load_id", "_source_path", "_source_sha256", "_loaded_at"]


@dataclass
class FileOutcome:
    source: SourceFile
    status: str
    rows_in_sqlite: int = 0
    rows_loaded: int = 0
    error: str | None = None
    tables: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"source_path": str(self.source.path), "source_db": self.source.source_db,
                "kind": self.source.kind, "status": self.status, "rows_in_sqlite": self.rows_in_sqlite,
                "rows_loaded": self.rows_loaded, "error": self.error, "tables": self.tables,
                "copy_of": str(self.source.copy_of) if self.source.copy_of else None}


@dataclass
class LoadOutcome:
    load_id: str
    files: list[FileOutcome]

    @property
    def failed(self) -> list[FileOutcome]:
        return [f for f in self.files if f.status == "failed"]

    def to_json(self) -> dict:
        return {"load_id": self.load_id, "files": [f.to_json() for f in self.files]}


class CountMismatch(Exception):
    pass


class TableFailed(Exception):
    """A table of a file could not be loaded; the message names the table and the reason."""


def copy_csv_into(cursor: psycopg.Cursor, schema: str, table: SourceTable, csv_path: Path) -> int:
    """COPY an export (rowid, source columns, lineage) into the raw table; return the rows copied."""
    names = ["_source_rowid", *table.columns, *LINEAGE_CONSTANTS]
    columns = sql.SQL(", ").join(map(sql.Identifier, names))
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(sql.Identifier(schema, table.name), columns)
    with cursor.copy(statement) as copy, open(csv_path, "rb") as handle:
        while chunk := handle.read(COPY_CHUNK):
            copy.write(chunk)
    return cursor.rowcount


def load_table(cursor: psycopg.Cursor, duck, schema: str, table: SourceTable, database: Path,
               column_expressions: list[str], lineage: list[str]) -> int:
    ledger.ensure_raw_table(cursor, schema, table.name, table.columns)
    csv_path = database.with_suffix(".csv")
    export_csv(duck, "src", table, csv_path, column_expressions, lineage)
    try:
        copied = copy_csv_into(cursor, schema, table, csv_path)
    finally:
        csv_path.unlink()
    if copied != table.row_count:
        raise CountMismatch(f"{table.row_count} rows in SQLite, {copied} copied")
    return copied


def load_file(connection: psycopg.Connection, duck, load_id: str, source: SourceFile,
              policy: SecretPolicy) -> FileOutcome:
    record = ledger.FileRecord(
        load_id=load_id, source_path=str(source.path), source_db=source.source_db, kind=source.kind,
        source_sha256=source.sha256, wal_sha256=source.wal_sha256, size_bytes=source.size_bytes,
        status="loaded", started_at=ledger.now())
    schema = RAW_SCHEMAS[source.kind]
    outcome = FileOutcome(source, "loaded")
    with private_copy(source.path) as snapshot:
        record.source_sha256, record.wal_sha256 = snapshot.sha256, snapshot.wal_sha256
        tables = list_tables(snapshot.path)
        attach_sqlite(duck, snapshot.path, "src")
        try:
            with connection.transaction(), connection.cursor() as cursor:
                lineage = [load_id, record.source_path, record.source_sha256, ledger.now().isoformat()]
                for table in tables:
                    try:
                        columns = [policy.select_expression(source.kind, table.name, column, quote(column))
                                   for column in table.columns]
                        copied = load_table(cursor, duck, schema, table, snapshot.path, columns, lineage)
                    except (psycopg.Error, duckdb.Error, CountMismatch) as error:
                        raise TableFailed(f"table {table.name!r}: {type(error).__name__}: {error}") from error
                    ledger.record_table(cursor, load_id, record.source_path, table.name, schema,
                                        table.name, table.row_count, copied)
                    outcome.tables[table.name] = copied
                outcome.rows_in_sqlite = record.rows_in_sqlite = sum(t.row_count for t in tables)
                outcome.rows_loaded = record.rows_loaded = sum(outcome.tables.values())
                record.completed_at = ledger.now()
                ledger.record_file(cursor, record)
        finally:
            duck.execute("DETACH src")
    return outcome


def record_outcome_without_rows(connection: psycopg.Connection, load_id: str, source: SourceFile,
                                status: str, error: str | None = None) -> FileOutcome:
    with connection.transaction(), connection.cursor() as cursor:
        ledger.record_file(cursor, ledger.FileRecord(
            load_id=load_id, source_path=str(source.path), source_db=source.source_db, kind=source.kind,
            source_sha256=source.sha256, wal_sha256=source.wal_sha256, size_bytes=source.size_bytes,
            status=status, started_at=ledger.now(), completed_at=ledger.now(), error_message=error,
            copy_of=str(source.copy_of) if source.copy_of else None))
    return FileOutcome(source, status, error=error)


def load(discovery: Discovery, target: Target, roots: list[str], policy: SecretPolicy, *,
         force: bool = False, on_file: Callable[[FileOutcome], None] = lambda outcome: None) -> LoadOutcome:
    """Load every discovered file; return what happened to each. Never raises for a bad file."""
    with target.connect() as connection:
        ledger.bootstrap(connection)
        load_id = ledger.start_load(connection, roots)
        outcomes = []
        duck = duckdb_session()
        try:
            for source in discovery.files:
                outcome = load_one(connection, duck, load_id, source, policy, force)
                outcomes.append(outcome)
                on_file(outcome)
        except BaseException:
            if not connection.broken:
                ledger.finish_load(connection, load_id, "failed")
            raise
        finally:
            duck.close()
        ledger.finish_load(connection, load_id, "failed" if any(o.status == "failed" for o in outcomes)
                           else "completed")
        return LoadOutcome(load_id, outcomes)


def load_one(connection: psycopg.Connection, duck, load_id: str, source: SourceFile, policy: SecretPolicy,
             force: bool) -> FileOutcome:
    if source.copy_of is not None:
        return record_outcome_without_rows(connection, load_id, source, "copy")
    if source.error is not None:
        return record_outcome_without_rows(connection, load_id, source, "failed", source.error)
    if not force and ledger.current_checksums(connection, str(source.path)) == source.identity:
        return record_outcome_without_rows(connection, load_id, source, "unchanged")
    try:
        return load_file(connection, duck, load_id, source, policy)
    except TableFailed as error:
        return record_outcome_without_rows(connection, load_id, source, "failed", str(error))
    except (psycopg.Error, duckdb.Error, sqlite3.Error, OSError, SourceKeptChanging) as error:
        if connection.broken:
            raise
        return record_outcome_without_rows(connection, load_id, source, "failed",
                                           f"{type(error).__name__}: {error}".strip())
