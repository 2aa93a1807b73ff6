"""Read SQLite tables as rows ready for PostgreSQL: a SELECT for DuckDB, or CSV files for COPY.

Every column is read as text: raw keeps the original value and typing happens in dbt staging. Two
readers write the same CSV shape:

- **duckdb** (the fast path): DuckDB's sqlite scanner with `sqlite_all_varchar`. The extension is
  loaded from its PyPI wheel; nothing is ever downloaded.
- **python-fallback**: sqlite3 returning TEXT as bytes (`SqliteText`), streamed row by row, for a table DuckDB or
  PostgreSQL text cannot carry: one holding a BLOB (DuckDB writes its raw bytes), TEXT that is not
  valid UTF-8 or TEXT containing NUL (PostgreSQL refuses both), or whose rowid a column named `rowid`
  hides from DuckDB, or with an empty name. Such values are written as `\\x` + lowercase hex of their exact bytes and the row's
  `_binary_columns` names them (see raw_contract); every other value is the same text DuckDB writes.

`needs_fallback` decides per table, before anything is read for the load, with one SQLite query.
SQLite has no test for valid UTF-8 (casts between TEXT and BLOB never touch the bytes; length(),
GLOB and json_valid() decode leniently), so BLOBs are found by `typeof` in SQLite and NUL / invalid
UTF-8 by one Python call per row (`bytes.isascii()` first, `decode` only for non-ASCII rows).
Measured on 200,000 rows x 5 columns (50 MB of CSV): about as long as DuckDB's export of the table; a
per-value `GLOB '*[^\\x01-\\x7f]*'` prefilter (exact for "has a byte >= 0x80") took 3 to 4 times as
long. Waiting for DuckDB to fail is no alternative: its COPY writes invalid UTF-8 through unchecked
(only building a value for Python checks it), leaving the check to PostgreSQL's input validation, and a
BLOB holding valid UTF-8 would arrive as text without its flag.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import duckdb_extension_sqlite_scanner

DUCKDB = "duckdb"
PYTHON_FALLBACK = "python-fallback"
ROWID_ALIASES = ("rowid", "_rowid_", "oid")
BAD_TEXT_FUNCTION = "consolidate_bad_text"
COLUMNS_PER_CHECK = 100


@dataclass(frozen=True)
class SourceTable:
    name: str
    columns: list[str]
    has_rowid: bool
    row_count: int
    # The name that selects the rowid: the first of rowid, _rowid_, oid that no column hides; None
    # for a WITHOUT ROWID table, or when columns hide all three.
    rowid_column: str | None = None
    # Its CREATE TABLE statement in sqlite_master (None for tables SQLite made without one).
    ddl: str | None = None


class UnreadableName(sqlite3.DatabaseError):
    """A table or column name that is not valid UTF-8: no SQL statement can name it."""


def quote(identifier: str) -> str:
    """Quote an identifier for DuckDB or SQLite (both use standard double quotes)."""
    return '"' + identifier.replace('"', '""') + '"'


def extension_path(package, name: str) -> Path:
    """A DuckDB extension inside its PyPI wheel (`package`, e.g. duckdb_extension_sqlite_scanner)."""
    folder = Path(package.__file__).parent / "extensions"
    found = sorted(folder.glob(f"*/{name}.duckdb_extension"))
    if not found:
        raise RuntimeError(f"{name} extension missing from its wheel ({folder})")
    return found[-1]


def duckdb_session() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(config={
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
    })
    connection.execute(f"LOAD {literal(extension_path(duckdb_extension_sqlite_scanner, 'sqlite_scanner').as_posix())}")
    connection.execute("SET sqlite_all_varchar = true")
    return connection


def decode_name(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableName(f"{what} name {raw!r} is not valid UTF-8: no SQL statement can name it") from None


def without_rowid(connection: sqlite3.Connection, name: str, ddl: str | None) -> bool:
    try:
        row = connection.execute("SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?",
                                 (name,)).fetchone()
    except sqlite3.OperationalError:  # SQLite before 3.37
        row = None
    if row is not None:
        return bool(row[0])
    return "WITHOUT ROWID" in (ddl or "").upper()


def list_tables(database: Path) -> list[SourceTable]:
    """Ordinary tables of a private copy, with columns, rowid availability and row counts."""
    connection = sqlite3.connect(database)
    connection.text_factory = bytes
    try:
        rows = connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
            "AND coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name").fetchall()
        tables = []
        for raw_table, raw_ddl in rows:
            name = decode_name(raw_table, "table")
            ddl = raw_ddl.decode("utf-8", "replace") if raw_ddl is not None else None
            columns = [decode_name(row[0], f"a column of table {name!r}") for row in connection.execute(
                "SELECT name FROM pragma_table_info(?) ORDER BY cid", (name,))]
            count = connection.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()[0]
            has_rowid = not without_rowid(connection, name, ddl)
            hidden = {column.lower() for column in columns}
            alias = next((a for a in ROWID_ALIASES if a not in hidden), None) if has_rowid else None
            tables.append(SourceTable(name, columns, has_rowid, count, alias, ddl))
        return tables
    finally:
        connection.close()


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def attach_sqlite(duck: duckdb.DuckDBPyConnection, database: Path, alias: str) -> None:
    duck.execute(f"ATTACH {literal(database.as_posix())} AS {quote(alias)} (TYPE sqlite, READ_ONLY)")


def select_rows(alias: str, table: SourceTable, column_expressions: list[str], constants: list[str]) -> str:
    """DuckDB's SELECT of the table's rows as loaded: rowid, one value per source column
    (`column_expressions`, in the order of table.columns), then `constants` on every row."""
    if table.has_rowid and table.rowid_column != "rowid":
        raise ValueError(f"table {table.name!r}: DuckDB cannot read its rowid (a column is named rowid)")
    rowid = "rowid" if table.has_rowid else "CAST(NULL AS BIGINT)"
    columns = ", ".join([rowid, *column_expressions] + [literal(c) for c in constants])
    return f"SELECT {columns} FROM {quote(alias)}.{quote(table.name)}"


def export_csv(duck: duckdb.DuckDBPyConnection, alias: str, table: SourceTable, target: Path,
               column_expressions: list[str], constants: list[str]) -> None:
    """Write `select_rows` as CSV. Every non-NULL value is quoted, so PostgreSQL tells NULL (unquoted
    empty) from '' (quoted empty)."""
    duck.execute(f"COPY ({select_rows(alias, table, column_expressions, constants)}) "
                 f"TO {literal(target.as_posix())} (FORMAT csv, HEADER false, FORCE_QUOTE *)")


# ----------------------------------------------------------------------------- choosing the reader

def bad_text(value: bytes | None) -> int:
    """1 when bytes hold NUL or are not valid UTF-8 (ASCII, the common case, is decided at C speed)."""
    if value is None:
        return 0
    if b"\x00" in value:
        return 1
    if value.isascii():
        return 0
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return 1
    return 0


class SqliteText(bytes):
    """The bytes of a TEXT value (a BLOB's come back as plain bytes): sqlite3's text_factory of
    open_for_reading, so one result column per value tells both apart."""


def open_for_reading(database: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(database)
    connection.text_factory = SqliteText
    connection.create_function(BAD_TEXT_FUNCTION, 1, bad_text, deterministic=True)
    return connection


def text_encoding(connection: sqlite3.Connection) -> str:
    encoding = connection.execute("PRAGMA encoding").fetchone()[0]
    return encoding.decode() if isinstance(encoding, bytes) else encoding


def value_problem(kind: bytes | None, value: bytes | None) -> str | None:
    if kind == b"blob":
        return "holds a BLOB"
    if value is not None and b"\x00" in value:
        return "holds TEXT containing NUL"
    if value is not None and bad_text(value):
        return "holds TEXT that is not valid UTF-8"
    return None


def chunks(items: list, size: int) -> list[list]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def needs_fallback(connection: sqlite3.Connection, table: SourceTable, check_text: bool = True) -> str | None:
    """Why `table` must be read by the Python fallback, or None when DuckDB can read it. `connection`
    comes from `open_for_reading`. One query per group of COLUMNS_PER_CHECK columns (one for most
    tables), stopping at the first row holding a value DuckDB or PostgreSQL text cannot carry: BLOBs by
    `typeof` in SQLite; for NUL and invalid UTF-8 (only with `check_text`), one call per row of a Python
    function over the group's values joined by a newline (a joint that can neither hide nor make a NUL
    or an invalid sequence). The reason names the column and the row. (Groups, because SQLite limits
    expression depth to 1000 and result columns to 2000: a table may have up to 2000 columns.) Without
    `check_text` the query runs at SQLite's speed and text is left to the writer: DuckDB refuses NUL and
    PostgreSQL refuses invalid UTF-8 (both checked), so a bad value fails the load of its file instead
    of passing, and the caller retries with `check_text`."""
    if table.has_rowid and table.rowid_column != "rowid":
        return "a column named rowid hides the rowid from DuckDB"
    if "" in (table.name, *table.columns):
        return "an empty table or column name, which DuckDB cannot quote"
    if not table.columns:
        return None
    encoding = text_encoding(connection)
    if encoding != "UTF-8":  # CAST(x AS BLOB) would give UTF-16 bytes: leave every table to Python
        return f"the database's text encoding is {encoding}"
    for group in chunks(table.columns, COLUMNS_PER_CHECK):
        reason = first_problem_in(connection, table, group, check_text)
        if reason is not None:
            return reason
    return None


def first_problem_in(connection: sqlite3.Connection, table: SourceTable, columns: list[str],
                     check_text: bool) -> str | None:
    """The reason `needs_fallback` gives for the first row whose `columns` hold a problem value, or None."""
    quoted = [quote(column) for column in columns]
    conditions = [f"typeof({c}) = 'blob'" for c in quoted]
    if check_text:
        joined = " || x'0a' || ".join(f"coalesce(CAST({c} AS BLOB), x'')" for c in quoted)
        conditions.append(f"{BAD_TEXT_FUNCTION}(CAST({joined} AS BLOB))")
    values = ", ".join(f"typeof({c}), CAST({c} AS BLOB)" for c in quoted)
    rowid = table.rowid_column or "NULL"
    row = connection.execute(f"SELECT {rowid}, {values} FROM {quote(table.name)} "
                             f"WHERE {' OR '.join(conditions)} LIMIT 1").fetchone()
    if row is None:
        return None
    where = f"rowid {row[0]}" if row[0] is not None else "a row without rowid"
    problems = [(column, value_problem(row[1 + 2 * i], row[2 + 2 * i])) for i, column in enumerate(columns)]
    return "; ".join(f"column {column!r} {problem} (first at {where})" for column, problem in problems if problem) \
        or f"{where} holds a value DuckDB or PostgreSQL text cannot carry"


# ------------------------------------------------------------------------------ the Python reader

@dataclass(frozen=True)
class ColumnRead:
    """How the fallback writes one source column: its raw name and its secret-policy action."""

    name: str
    raw_name: str
    action: str = "keep"  # keep / hash / scrub / exclude (secret_policy)


@dataclass
class FallbackExport:
    rows: int = 0
    rows_with_binary: int = 0
    binary_values: dict[str, int] = field(default_factory=dict)  # raw column -> values stored as hex

    def describe(self) -> str:
        if not self.binary_values:
            return "no value needed \\x hex"
        columns = ", ".join(f"{name!r} ({count})" for name, count in sorted(self.binary_values.items()))
        return f"{sum(self.binary_values.values())} value(s) in {self.rows_with_binary} row(s) stored as \\x hex: {columns}"


def csv_field(text: str | None) -> str:
    """A quoted CSV field; NULL is the unquoted empty field."""
    return "" if text is None else '"' + text.replace('"', '""') + '"'


def array_literal(names: list[str]) -> str:
    """A PostgreSQL text[] literal, every element quoted."""
    return "{" + ",".join('"' + n.replace("\\", "\\\\").replace('"', '\\"') + '"' for n in names) + "}"


def export_csv_python(connection: sqlite3.Connection, table: SourceTable, target: Path,
                      columns: list[ColumnRead], constants: list[str],
                      secret_value: Callable[[str, bytes], str] | None) -> FallbackExport:
    """Write the CSV `export_csv` writes, plus a last field `_binary_columns`, with sqlite3 (`connection`
    from `open_for_reading`): rowid, one value per column (SQLite's text of a number, the text of valid
    UTF-8 TEXT without NUL, else `\\x` + hex of the bytes), then `constants`. A column to `hash` or `scrub`
    gets secret_value(action, its bytes) instead (secret_policy.SecretPolicy.stored_value). Streams: one
    row in memory at a time; one result column per source column (SQLite allows 2000)."""
    selected = []
    for column in columns:
        c = quote(column.name)
        selected.append("NULL" if column.action == "exclude" else
                        f"CASE WHEN typeof({c}) IN ('integer', 'real') THEN CAST({c} AS TEXT) ELSE {c} END")
    rowid = table.rowid_column or "NULL"
    query = f"SELECT {rowid}{''.join(', ' + s for s in selected)} FROM {quote(table.name)}"
    tail = "".join("," + csv_field(c) for c in constants)
    result = FallbackExport()
    with open(target, "w", encoding="utf-8", newline="") as handle:
        for row in connection.execute(query):
            fields = ["" if row[0] is None else str(row[0])]
            binary = []
            for index, column in enumerate(columns):
                value = row[1 + index]
                if value is None or column.action == "exclude":
                    fields.append("")
                    continue
                if column.action in ("hash", "scrub"):
                    if secret_value is None:
                        raise ValueError(f"column {column.name!r} is to be hashed but no secret policy was given")
                    fields.append(csv_field(secret_value(column.action, value if isinstance(value, bytes) else str(value).encode())))
                    continue
                text = None
                if isinstance(value, SqliteText) and b"\x00" not in value:
                    try:
                        text = value.decode("utf-8")
                    except UnicodeDecodeError:
                        pass
                if text is None:
                    text = "\\x" + value.hex()
                    binary.append(column.raw_name)
                    result.binary_values[column.raw_name] = result.binary_values.get(column.raw_name, 0) + 1
                fields.append(csv_field(text))
            result.rows += 1
            if binary:
                result.rows_with_binary += 1
            handle.write(",".join(fields) + tail + "," + (csv_field(array_literal(binary)) if binary else "") + "\n")
    return result
