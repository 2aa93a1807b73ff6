"""Write into PostgreSQL from a DuckDB session: rows by binary COPY, ledger rows beside them.

DuckDB's postgres extension (loaded from its PyPI wheel; nothing is downloaded) turns
`INSERT INTO pg.<schema>.<table> SELECT ... FROM <attached SQLite>` into a binary COPY: no CSV is
written and PostgreSQL parses no text format. A DuckDB transaction is one PostgreSQL transaction on
one connection, and `postgres_execute` runs inside it, so a file's raw rows, the DDL they need and
their ledger rows commit together or not at all (checked: a ROLLBACK leaves none of them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import duckdb
import duckdb_extension_postgres_scanner
import psycopg

from loader.database import Target
from loader.sources.sqlite_reader import extension_path, literal, quote

ALIAS = "pg"
PASSWORD_SECRET = "consolidate_pg_password"


class AttachFailed(Exception):
    """DuckDB could not connect to PostgreSQL; the message never holds the password."""


def attach_postgres(duck: duckdb.DuckDBPyConnection, target: Target) -> None:
    """Attach the target database as `pg`. DuckDB quotes the connection string in its errors, so it
    gets the DSN without its password; the password goes into a temporary (in-memory) DuckDB secret
    that the attach uses."""
    duck.execute(f"LOAD {literal(extension_path(duckdb_extension_postgres_scanner, 'postgres_scanner').as_posix())}")
    options = "TYPE postgres"
    if target.password:
        duck.execute(f"CREATE OR REPLACE TEMPORARY SECRET {PASSWORD_SECRET} "
                     f"(TYPE postgres, PASSWORD {literal(target.password)})")
        options += f", SECRET {PASSWORD_SECRET}"
    try:
        duck.execute(f"ATTACH {literal(target.without_password)} AS {ALIAS} ({options})")
    except duckdb.Error as error:
        raise AttachFailed(target.redact(str(error)).splitlines()[0]) from None


class LedgerCursor:
    """The part of a psycopg cursor the ledger uses (`execute`, `executemany`), run inside DuckDB's
    PostgreSQL transaction. psycopg renders each statement with its own literal quoting (a client-side
    cursor's `mogrify`, which sends nothing); `postgres_execute` runs it on DuckDB's connection."""

    def __init__(self, duck: duckdb.DuckDBPyConnection, connection: psycopg.Connection):
        self.duck = duck
        self.renderer = psycopg.ClientCursor(connection)

    def execute(self, query, params: Sequence | None = None) -> None:
        self.run([self.renderer.mogrify(query, params)])

    def executemany(self, query, params_seq: Iterable[Sequence]) -> None:
        self.run([self.renderer.mogrify(query, params) for params in params_seq])

    def run(self, statements: list[str]) -> None:
        if statements:
            self.duck.execute("CALL postgres_execute(?, ?)", [ALIAS, ";\n".join(statements)])


def insert_rows(duck: duckdb.DuckDBPyConnection, schema: str, table: str, columns: list[str],
                select: str) -> int:
    """INSERT the rows of `select` into `schema.table` (its `columns`, in the select's order); return
    how many arrived."""
    names = ", ".join(map(quote, columns))
    return duck.execute(f"INSERT INTO {ALIAS}.{quote(schema)}.{quote(table)} ({names}) {select}").fetchone()[0]


def refresh_catalog(duck: duckdb.DuckDBPyConnection) -> None:
    """Forget DuckDB's cached PostgreSQL catalog, so tables and columns created since are seen."""
    duck.execute("CALL pg_clear_cache()")
