"""Read SQLite tables with DuckDB's sqlite scanner into CSV files ready for PostgreSQL's COPY.

Every column is read as text (`sqlite_all_varchar`): raw keeps the original value and typing happens
in dbt staging. The extension is loaded from its PyPI wheel; nothing is ever downloaded.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import duckdb
import duckdb_extension_sqlite_scanner


@dataclass(frozen=True)
class SourceTable:
    name: str
    columns: list[str]
    has_rowid: bool
    row_count: int


def quote(identifier: str) -> str:
    """Quote an identifier for DuckDB or SQLite (both use standard double quotes)."""
    return '"' + identifier.replace('"', '""') + '"'


def sqlite_scanner_path() -> Path:
    folder = Path(duckdb_extension_sqlite_scanner.__file__).parent / "extensions"
    found = sorted(folder.glob("*/sqlite_scanner.duckdb_extension"))
    if not found:
        raise RuntimeError(f"sqlite_scanner extension missing from its wheel ({folder})")
    return found[-1]


def duckdb_session() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(config={
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
    })
    connection.execute(f"LOAD '{sqlite_scanner_path()}'")
    connection.execute("SET sqlite_all_varchar = true")
    return connection


def list_tables(database: Path) -> list[SourceTable]:
    """Ordinary tables of a private copy, with columns, rowid availability and row counts."""
    connection = sqlite3.connect(database)
    try:
        rows = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
            "AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name").fetchall()
        tables = []
        for name, ddl in rows:
            columns = [row[1] for row in connection.execute(f"PRAGMA table_info({quote(name)})")]
            count = connection.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()[0]
            has_rowid = "WITHOUT ROWID" not in (ddl or "").upper()
            tables.append(SourceTable(name, columns, has_rowid, count))
        return tables
    finally:
        connection.close()


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def attach_sqlite(duck: duckdb.DuckDBPyConnection, database: Path, alias: str) -> None:
    duck.execute(f"ATTACH {literal(database.as_posix())} AS {quote(alias)} (TYPE sqlite, READ_ONLY)")


def export_csv(duck: duckdb.DuckDBPyConnection, alias: str, table: SourceTable, target: Path,
               column_expressions: list[str], constants: list[str]) -> None:
    """Write the table as CSV: rowid, one value per source column (`column_expressions`, in the
    order of table.columns), then `constants` on every row. Every non-NULL value is quoted, so
    PostgreSQL tells NULL (unquoted empty) from '' (quoted empty)."""
    rowid = "rowid" if table.has_rowid else "NULL"
    columns = ", ".join([rowid, *column_expressions] + [literal(c) for c in constants])
    duck.execute(
        f"COPY (SELECT {columns} FROM {alias}.{quote(table.name)}) "
        f"TO {literal(target.as_posix())} (FORMAT csv, HEADER false, FORCE_QUOTE *)")
