"""The schema an application built in PostgreSQL, as its catalog describes it: tables, column types,
keys, foreign keys and sequences. The application's own DDL is the contract app-copy fills."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from loader.apps.applications import MIGRATIONS_TABLE
from loader.apps.convert import ColumnType
from loader.apps.migrations import Migration


@dataclass(frozen=True)
class TargetColumn:
    name: str
    type: ColumnType
    not_null: bool
    has_default: bool


@dataclass(frozen=True)
class TargetTable:
    name: str
    columns: tuple[TargetColumn, ...]
    primary_key: tuple[str, ...]

    def column(self, name: str) -> TargetColumn | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclass(frozen=True)
class SequenceUse:
    """A sequence that gives a column its values (serial, identity or a nextval default)."""

    table: str
    column: str
    sequence: str  # regclass text, schema-qualified and quoted as needed


@dataclass
class TargetSchema:
    name: str
    tables: dict[str, TargetTable]
    foreign_keys: list[tuple[str, str]]  # (referencing table, referenced table), self-references excluded
    sequences: list[SequenceUse]

    def relation(self, table: str) -> sql.Identifier:
        return sql.Identifier(self.name, table)


def schema_exists(connection: psycopg.Connection, schema: str) -> bool:
    return connection.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]).fetchone() is not None


def inspect(connection: psycopg.Connection, schema: str) -> TargetSchema:
    columns: dict[str, list[TargetColumn]] = {}
    for table, column, typname, typmod, category, declared, not_null, has_default in connection.execute(
            """
            SELECT c.relname, a.attname, coalesce(bt.typname, t.typname),
                   CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
                   coalesce(bt.typcategory, t.typcategory), format_type(a.atttypid, a.atttypmod),
                   a.attnotnull, a.atthasdef OR a.attidentity <> ''
            FROM pg_class AS c
            JOIN pg_namespace AS n ON n.oid = c.relnamespace
            JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            JOIN pg_type AS t ON t.oid = a.atttypid
            LEFT JOIN pg_type AS bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
            WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attgenerated = ''
            ORDER BY c.relname, a.attnum""", [schema]):
        columns.setdefault(table, []).append(
            TargetColumn(column, ColumnType(typname, typmod, category, declared), not_null, has_default))
    keys = {table: tuple(key) for table, key in connection.execute(
        """
        SELECT c.relname, array_agg(a.attname ORDER BY k.ordinality)
        FROM pg_constraint AS con
        JOIN pg_class AS c ON c.oid = con.conrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ordinality)
        JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum = k.attnum
        WHERE n.nspname = %s AND con.contype = 'p'
        GROUP BY c.relname""", [schema])}
    foreign_keys = connection.execute(
        """
        SELECT DISTINCT child.relname, parent.relname
        FROM pg_constraint AS con
        JOIN pg_class AS child ON child.oid = con.conrelid
        JOIN pg_class AS parent ON parent.oid = con.confrelid
        JOIN pg_namespace AS n ON n.oid = child.relnamespace
        JOIN pg_namespace AS pn ON pn.oid = parent.relnamespace
        WHERE n.nspname = %s AND pn.nspname = %s AND con.contype = 'f' AND child.oid <> parent.oid
        ORDER BY 1, 2""", [schema, schema]).fetchall()
    sequences = [SequenceUse(table, column, sequence) for table, column, sequence in connection.execute(
        """
        SELECT c.relname, a.attname,
               coalesce(pg_get_serial_sequence(format('%%I.%%I', n.nspname, c.relname), a.attname),
                        substring(pg_get_expr(d.adbin, d.adrelid) FROM $$nextval\\('(.+)'::regclass\\)$$))
        FROM pg_class AS c
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_attrdef AS d ON d.adrelid = c.oid AND d.adnum = a.attnum
        WHERE n.nspname = %s AND c.relkind IN ('r', 'p')
        ORDER BY 1, 2""", [schema]) if sequence]
    tables = {name: TargetTable(name, tuple(cols), keys.get(name, ())) for name, cols in columns.items()}
    return TargetSchema(schema, tables, [tuple(fk) for fk in foreign_keys], sequences)


def count(connection: psycopg.Connection, schema: TargetSchema, table: str, condition: str | None = None) -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(schema.relation(table))
    if condition:
        query += sql.SQL(" WHERE ") + sql.SQL(condition)
    return connection.execute(query).fetchone()[0]


def migrations(connection: psycopg.Connection, schema: TargetSchema) -> list[Migration]:
    if MIGRATIONS_TABLE not in schema.tables:
        return []
    return [Migration(int(timestamp), str(name)) for timestamp, name in connection.execute(
        sql.SQL("SELECT timestamp, name FROM {}").format(schema.relation(MIGRATIONS_TABLE)))]


def dependency_order(tables: list[str], foreign_keys: list[tuple[str, str]]) -> list[str]:
    """`tables` with every referenced table before the tables referencing it (self-references
    aside: one COPY per table checks them at its end). Raises ValueError on a cycle."""
    wanted = set(tables)
    parents = {table: {parent for child, parent in foreign_keys if child == table and parent in wanted}
               for table in tables}
    ordered: list[str] = []
    while parents:
        ready = sorted(table for table, needs in parents.items() if not needs)
        if not ready:
            raise ValueError("foreign keys form a cycle between tables " + ", ".join(sorted(parents)))
        for table in ready:
            ordered.append(table)
            del parents[table]
        for needs in parents.values():
            needs.difference_update(ready)
    return ordered
