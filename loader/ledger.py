"""The ledger in PostgreSQL: which loads ran, what each file and table held, what completed."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from loader import __version__
from loader.database import Target
from loader.sources.discover import KnownFile
from loader.load.raw_contract import (
    CORE_RAW_TABLES, CUTOVER_DDL, LEDGER_DDL, LEDGER_SCHEMA, LINEAGE_COLUMNS, RAW_MEMORY_INDEXES, RAW_SCHEMAS, WRITE_LOG_DDL)


def now() -> datetime:
    return datetime.now(timezone.utc)


def new_load_id() -> str:
    return now().strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


def raw_table_statements(cursor: psycopg.Cursor, schema: str, table: str, columns: list[str]) -> list[sql.Composed]:
    """What makes the raw table exist with `columns` (source columns as text, then lineage): nothing
    when `cursor` finds it complete; else a CREATE TABLE IF NOT EXISTS when it is missing and an ALTER
    TABLE adding whatever columns are still missing (a table made before a lineage column existed gets
    it too). The statements are idempotent and complete whatever another session created meanwhile, so
    they may run later, after RAW_DDL_LOCK. `table` and `columns` are raw names
    (raw_contract.raw_name / raw_column_names): PostgreSQL would truncate longer ones."""
    existing = {row[0] for row in cursor.execute(
        "SELECT a.attname FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped", [schema, table])}
    relation = sql.Identifier(schema, table)
    statements = []
    if not existing:
        source_columns = [sql.SQL("{} text").format(sql.Identifier(c)) for c in columns]
        lineage = [sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(ddl)) for name, ddl in LINEAGE_COLUMNS]
        statements.append(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
            relation, sql.SQL(", ").join(source_columns + lineage)))
    missing = [sql.SQL("ADD COLUMN IF NOT EXISTS {} text").format(sql.Identifier(c))
               for c in columns if c not in existing]
    missing += [sql.SQL("ADD COLUMN IF NOT EXISTS {} {}").format(sql.Identifier(name), sql.SQL(ddl.replace(" NOT NULL", "")))
                for name, ddl in LINEAGE_COLUMNS if name not in existing]
    if missing:
        statements.append(sql.SQL("ALTER TABLE {} {}").format(relation, sql.SQL(", ").join(missing)))
    return statements


@contextlib.contextmanager
def raw_ddl_lock(connection: psycopg.Connection, needed: bool = True) -> Iterator[None]:
    """Held (a session lock of `connection`) while a file's transaction creates or alters raw tables and
    until it ends: two files loading at once that need the same new table would otherwise both create
    it. Taken before that transaction starts, so its snapshot sees what the previous holder committed."""
    if not needed:
        yield
        return
    connection.execute("SELECT pg_advisory_lock(hashtext('consolidate.raw-ddl'))")
    try:
        yield
    finally:
        if not connection.broken:
            connection.execute("SELECT pg_advisory_unlock(hashtext('consolidate.raw-ddl'))")


def ensure_raw_table(cursor: psycopg.Cursor, schema: str, table: str, columns: list[str]) -> None:
    for statement in raw_table_statements(cursor, schema, table, columns):
        cursor.execute(statement)


def bootstrap(connection: psycopg.Connection) -> None:
    """Create the ledger (cutovers included), the raw schemas, the raw tables the dbt models read and the
    write log of writes made in PostgreSQL (raw_contract.WRITE_LOG_DDL)."""
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('consolidate.bootstrap'))")
        cursor.execute(LEDGER_DDL)
        cursor.execute(CUTOVER_DDL)
        for schema in RAW_SCHEMAS.values():
            cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for (schema, table), columns in CORE_RAW_TABLES.items():
            ensure_raw_table(cursor, schema, table, columns)
        # Raw tables made before a lineage column existed (and no file loads into them now) get it too.
        for schema, table in cursor.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema = ANY(%s) AND table_type = 'BASE TABLE'", [list(RAW_SCHEMAS.values())]).fetchall():
            ensure_raw_table(cursor, schema, table, [])
        cursor.execute(RAW_MEMORY_INDEXES)
        cursor.execute(WRITE_LOG_DDL)


def start_load(connection: psycopg.Connection, roots: list[str]) -> str:
    """Register a new load. Loads run one at a time (a session lock held until the connection
    closes), so a load still `running` when the lock is ours died mid-way: it is marked interrupted."""
    load_id = new_load_id()
    connection.execute("SELECT pg_advisory_lock(hashtext('consolidate.load'))")
    with connection.transaction():
        connection.execute(
            f"UPDATE {LEDGER_SCHEMA}.loads SET status = 'interrupted', finished_at = %s WHERE status = 'running'",
            (now(),))
        connection.execute(
            f"INSERT INTO {LEDGER_SCHEMA}.loads (load_id, started_at, status, roots, tool_version) "
            "VALUES (%s, %s, 'running', %s, %s)", (load_id, now(), roots, __version__))
    return load_id


def finish_load(connection: psycopg.Connection, load_id: str, status: str) -> None:
    with connection.transaction():
        connection.execute(
            f"UPDATE {LEDGER_SCHEMA}.loads SET finished_at = %s, status = %s WHERE load_id = %s",
            (now(), status, load_id))


@dataclass
class FileRecord:
    load_id: str
    source_path: str
    source_db: str
    kind: str
    source_sha256: str
    wal_sha256: str | None
    size_bytes: int
    status: str
    started_at: datetime
    copy_of: str | None = None
    completed_at: datetime | None = None
    error_message: str | None = None
    rows_in_sqlite: int | None = None
    rows_loaded: int | None = None
    stat: dict | None = None  # discover.stat_signature of the file when its checksums were taken


def record_file(cursor: psycopg.Cursor, record: FileRecord) -> None:
    fields = list(record.__dataclass_fields__)
    cursor.execute(
        sql.SQL("INSERT INTO {}.load_files ({}) VALUES ({})").format(
            sql.Identifier(LEDGER_SCHEMA),
            sql.SQL(", ").join(map(sql.Identifier, fields)),
            sql.SQL(", ").join(sql.Placeholder() * len(fields))),
        [Jsonb(record.stat) if f == "stat" and record.stat is not None else getattr(record, f) for f in fields])


def record_table(cursor: psycopg.Cursor, load_id: str, source_path: str, source_table: str,
                 raw_schema: str, raw_table: str, rows_in_sqlite: int, rows_loaded: int, *,
                 reader: str | None = None, notes: str | None = None, rows_with_binary: int | None = None) -> None:
    cursor.execute(
        f"INSERT INTO {LEDGER_SCHEMA}.load_tables (load_id, source_path, source_table, raw_schema, "
        "raw_table, rows_in_sqlite, rows_loaded, reader, notes, rows_with_binary) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (load_id, source_path, source_table, raw_schema, raw_table, rows_in_sqlite, rows_loaded, reader,
         notes, rows_with_binary))


def record_columns(cursor: psycopg.Cursor, load_id: str, source_path: str, source_table: str,
                   columns: list[tuple[str, str]]) -> None:
    """Every (source column, raw column) pair of a loaded table."""
    cursor.executemany(
        f"INSERT INTO {LEDGER_SCHEMA}.load_columns (load_id, source_path, source_table, source_column, "
        "raw_column) VALUES (%s, %s, %s, %s, %s)",
        [(load_id, source_path, source_table, source, raw) for source, raw in columns])


def current_checksums(connection: psycopg.Connection, source_path: str) -> tuple[str, str | None] | None:
    """Checksums of the file's version whose rows are current in raw, if any."""
    row = connection.execute(
        f"SELECT source_sha256, wal_sha256 FROM {LEDGER_SCHEMA}.current_loads WHERE source_path = %s",
        (source_path,)).fetchone()
    return (row[0], row[1]) if row else None


def known_files(target: Target) -> dict[str, KnownFile]:
    """Every source path's current load: checksums, kind and table counts (empty before the first
    load). Discovery takes unchanged files' kind and counts from here instead of copying them."""
    with target.connect() as connection:
        if connection.execute(f"SELECT to_regclass('{LEDGER_SCHEMA}.current_loads')").fetchone()[0] is None:
            return {}
        rows = connection.execute(
            f"SELECT c.source_path, c.source_sha256, c.wal_sha256, c.kind, "
            f"coalesce(jsonb_object_agg(t.source_table, t.rows_in_sqlite) FILTER (WHERE t.source_table IS NOT NULL), '{{}}'), "
            f"f.stat FROM {LEDGER_SCHEMA}.current_loads AS c "
            f"JOIN {LEDGER_SCHEMA}.load_files AS f USING (load_id, source_path) "
            f"LEFT JOIN {LEDGER_SCHEMA}.load_tables AS t USING (load_id, source_path) "
            "GROUP BY c.source_path, c.source_sha256, c.wal_sha256, c.kind, f.stat").fetchall()
    return {path: KnownFile(*known) for path, *known in rows}
