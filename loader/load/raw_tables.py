"""The raw schemas and tables a load writes into: created up front for the tables the dbt models read,
completed on arrival for the columns a file brings (the shape: loader.load.raw_contract)."""

from __future__ import annotations

import contextlib
from collections.abc import Container, Iterable, Iterator

import psycopg
from psycopg import sql

from loader import ledger
from loader.load.raw_contract import (
    CORE_RAW_TABLES,
    LINEAGE_COLUMNS,
    NOT_CONTENT,
    RAW_MEMORY_INDEX,
    RAW_MEMORY_TABLES,
    RAW_SCHEMAS,
    REPLACED_RAW_MEMORY_INDEX,
)


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


def content_columns(connection: psycopg.Connection | psycopg.Cursor, schema: str, table: str) -> list[str]:
    """A raw table's content columns, in order (raw_contract.NOT_CONTENT left out)."""
    return [name for (name,) in connection.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
        "ORDER BY ordinal_position", (schema, table)).fetchall() if name not in NOT_CONTENT]


def row_digest(alias: str, columns: Iterable[str], present: Container[str] | None = None) -> sql.Composed:
    """md5 of a raw row's values in `columns` order, `alias` the row's: how two states of a file compare
    a row (change detection, a change load's CSV path, split brain) and what deleted_rows.row_md5 holds.
    A column not `present` in the row's raw table counts as NULL, so tables with different columns compare."""
    values = [sql.Identifier(alias, column) if present is None or column in present else sql.SQL("NULL")
              for column in columns]
    return sql.SQL("md5(ROW({})::text)").format(sql.SQL(", ").join(values))


def ensure_raw_table(cursor: psycopg.Cursor, schema: str, table: str, columns: list[str]) -> None:
    for statement in raw_table_statements(cursor, schema, table, columns):
        cursor.execute(statement)


def ensure_raw_memory_indexes(cursor: psycopg.Cursor) -> None:
    """Each raw memory table's index (raw_contract.RAW_MEMORY_INDEX), created once: looked up first, since
    CREATE INDEX IF NOT EXISTS locks the table even when the index is there."""
    name_pattern, columns = RAW_MEMORY_INDEX
    for schema, table in RAW_MEMORY_TABLES:
        existing = {name for (name,) in cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s", (schema, table))}
        name = name_pattern.format(table=table)
        if name not in existing:
            cursor.execute(sql.SQL("CREATE INDEX {} ON {} {}").format(
                sql.Identifier(name), sql.Identifier(schema, table), sql.SQL(columns)))
        replaced = REPLACED_RAW_MEMORY_INDEX.format(table=table)
        if replaced in existing:
            cursor.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, replaced)))


def bootstrap(connection: psycopg.Connection) -> None:
    """Create (or upgrade) the ledger (the write log of writes made in PostgreSQL included), the raw
    schemas and the raw tables the dbt models read, with the index the incremental build reads them by."""
    ledger.ensure(connection)
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('consolidate.bootstrap'))")
        for schema in RAW_SCHEMAS.values():
            cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for (schema, table), columns in CORE_RAW_TABLES.items():
            ensure_raw_table(cursor, schema, table, columns)
        # Raw tables made before a lineage column existed (and no file loads into them now) get it too.
        for schema, table in cursor.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema = ANY(%s) AND table_type = 'BASE TABLE'", [list(RAW_SCHEMAS.values())]).fetchall():
            ensure_raw_table(cursor, schema, table, [])
        ensure_raw_memory_indexes(cursor)
