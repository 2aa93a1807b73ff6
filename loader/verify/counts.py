"""Counts: rows in SQLite (the ledger's, per table) against rows in raw now, and a file's memory rows
in raw against kept + superseded + moved (the `reconciliation` mart)."""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from loader import ledger
from loader.ledger import LEDGER_SCHEMA, CurrentLoad, not_retired
from loader.load.raw_contract import MEMORY_KINDS, MEMORY_TABLES, RAW_SCHEMAS
from loader.relations import MEMORY_RANKED
from loader.verify.results import TableCount


def table_counts(connection: psycopg.Connection, current: CurrentLoad,
                 raw_counts: dict[tuple[str, str], dict[tuple[str, str], int]]) -> list[TableCount]:
    ledger_rows = connection.execute(sql.SQL(
        "SELECT source_table, raw_schema, raw_table, rows_in_sqlite FROM {}.load_tables "
        "WHERE load_id = %s AND source_path = %s ORDER BY source_table").format(sql.Identifier(LEDGER_SCHEMA)),
        [current.load_id, current.source_path]).fetchall()
    return [TableCount(table, schema, raw_table, rows,
                       raw_counts.get((schema, raw_table), {}).get((current.load_id, current.source_path), 0))
            for table, schema, raw_table, rows in ledger_rows]


def raw_rows_by_file(connection: psycopg.Connection) -> dict[tuple[str, str], dict[tuple[str, str], int]]:
    """{(raw schema, raw table): {(load_id, source_path): the file's current rows in raw}} for every raw
    table of a current load (a file's current rows: its current load's parts' rows that are not retired,
    loader/load/delta.py): one pass over each table for all files (a missing table counts 0 rows)."""
    tables = connection.execute(sql.SQL(
        "SELECT DISTINCT t.raw_schema, t.raw_table FROM {ledger}.load_tables AS t "
        "JOIN {ledger}.current_loads AS c USING (load_id, source_path) ORDER BY 1, 2").format(
        ledger=sql.Identifier(LEDGER_SCHEMA))).fetchall()
    counts = {}
    for schema, table in tables:
        if ledger.relation_exists(connection, schema, table):
            rows = connection.execute(sql.SQL(
                "SELECT parts.load_id, r._source_path, count(*) FROM {raw} AS r "
                "JOIN {ledger}.current_load_parts AS parts "
                "ON parts.part_load_id = r._load_id AND parts.source_path = r._source_path "
                "WHERE {current} GROUP BY 1, 2").format(
                raw=sql.Identifier(schema, table), ledger=sql.Identifier(LEDGER_SCHEMA),
                current=not_retired("r", schema, table))).fetchall()
            counts[(schema, table)] = {(load_id, path): count for load_id, path, count in rows}
    return counts


def reconciliation_row(connection: psycopg.Connection, schema: str, current: CurrentLoad) -> dict:
    """The file's row of the reconciliation mart ({} when it has none: no memory tables, or not built).
    Its `flagged`, the file's rows that staging flagged with a problem, is exact: the build's
    assert_flags_reach_the_marts counts them again in the marts."""
    with connection.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(sql.SQL(
            "SELECT load_id, kept, superseded, moved, flagged FROM {}.reconciliation WHERE source_path = %s").format(
            sql.Identifier(schema)), [current.source_path]).fetchone()
    return row or {}


def written_since_counted(connection: psycopg.Connection, schema: str) -> dict[str, int]:
    """{source_path: entries with a current row of that file that PostgreSQL wrote since the reconciliation
    mart counted it}. Its kept / superseded / moved are the latest build's: such a write may move the file's
    row from kept to superseded (or back) until the next build recounts."""
    return dict(connection.execute(sql.SQL("""
        WITH counted AS (
            SELECT write_watermark FROM {builds}
            WHERE marts_schema = %s AND reconciled ORDER BY started_at DESC LIMIT 1
        ), written AS (
            SELECT DISTINCT namespace, key FROM {writes}
            WHERE write_id > (SELECT coalesce(max(write_watermark), 0) FROM counted)
        )
        SELECT ranked.source_path, count(DISTINCT (ranked.namespace, ranked.key))
        FROM written
        JOIN {ranked} AS ranked ON ranked.namespace = written.namespace AND ranked.key = written.key
        WHERE ranked.source_path IS NOT NULL
        GROUP BY 1""").format(builds=ledger.table("memory_builds"),
                              writes=sql.Identifier(ledger.WRITE_LOG_SCHEMA, "memory_writes"),
                              ranked=sql.Identifier(*MEMORY_RANKED)), (schema,)).fetchall())


def count_problems(current: CurrentLoad, tables: list[TableCount], reconciliation: dict) -> list[str]:
    problems = [f"table {t.source_table}: {t.rows_in_sqlite} rows in SQLite (ledger), {t.rows_in_raw} in "
                f"{t.raw_schema}.{t.raw_table}" for t in tables if t.rows_in_sqlite != t.rows_in_raw]
    ledger_total = sum(t.rows_in_sqlite for t in tables)
    if current.rows_in_sqlite != ledger_total:
        problems.append(f"the ledger's file total ({current.rows_in_sqlite}) differs from its tables' ({ledger_total})")
    if current.kind not in MEMORY_KINDS:
        return problems
    if reconciliation.get("load_id") != current.load_id:
        problems.append(f"the marts were not built from the current load {current.load_id}: run consolidate build")
        return problems
    memory_table = (RAW_SCHEMAS[current.kind], MEMORY_TABLES[current.kind])
    memory_in_raw = sum(t.rows_in_raw for t in tables if (t.raw_schema, t.raw_table) == memory_table)
    represented = reconciliation["kept"] + reconciliation["superseded"] + reconciliation["moved"]
    if memory_in_raw != represented:
        problems.append(f"{memory_in_raw} memory rows in raw, but kept + superseded + moved = {represented}")
    return problems
