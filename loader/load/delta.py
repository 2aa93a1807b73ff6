"""Row-level change loads: a changed memory file's new load keeps only the rows that changed.

A file's new load is compared row by row (by SQLite rowid and the row's content) with the file's previous
state: the raw rows of its current load's parts that are not retired (`consolidate.current_load_parts`,
`consolidate.retired_rows`, loader/ledger.py migration 9).

- On the direct path DuckDB compares (compare_in_duckdb): PostgreSQL sends a digest per row of the
  previous state, DuckDB digests the snapshot's rows from SQLite, and only the inserted and changed rows
  travel to raw. On the CSV path every row is copied into raw and PostgreSQL compares (statements: the
  unchanged rows are deleted again).
- A row identical to the previous state is counted in `load_tables.rows_unchanged`: it stays current
  where it already is.
- A row of the previous state that the snapshot changed or deleted is retired (`retired_rows`); its raw
  row stays (raw is append-only), and `consolidate lineage` still shows it as an earlier version.
- The changes are recorded as change detection records them (`load_changes`, `deleted_rows`: a deleted
  row's `row_md5` is PostgreSQL's md5 of its raw row), and the load's `load_files.delta_of` names the
  load it was applied on.

So raw grows by the rows that changed, and an incremental build recomputes only their entries.

A load is a delta when the file is a memory file (claude-flow v2/v3, extended memory) with a current load
of the same kind, the same tables into the same raw tables with the same columns, and every table has
a rowid (rows are matched by it). Otherwise it is a full load, as before; `load --force` always is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import psycopg
from psycopg import sql

from loader.ledger import (
    CHAIN,
    INSERT_DELETED_ROWS,
    INSERT_LOAD_CHANGES,
    INSERT_RETIRED_ROWS,
    LEDGER_SCHEMA,
    SQLITE_DELETE_VIA,
    WRITE_LOG_SCHEMA,
    in_loads,
    state_loads,
)
from loader.load import raw_tables
from loader.load.duckdb_postgres import ALIAS, insert_rows
from loader.load.raw_contract import CONTENT_LINEAGE, MEMORY_KINDS, MEMORY_NAMESPACES, MEMORY_TABLES
from loader.relations import MEMORY_RANKED
from loader.sources.sqlite_reader import literal, quote

# One table's comparison on the CSV path, in one statement: the new load's rows are in raw; delete the
# unchanged ones again, retire the changed and deleted rows of the previous state, record the counts.
COMPARE_TABLE = CHAIN + """,
old_rows AS (
    SELECT r._load_id AS row_load_id, r._source_rowid AS rowid, {digest} AS digest
    FROM {raw} AS r
    WHERE r._load_id IN (SELECT load_id FROM chain) AND r._source_path = %(source_path)s
      AND NOT EXISTS (SELECT 1 FROM {ledger}.retired_rows AS x
                      WHERE x.row_load_id = r._load_id AND x.source_path = r._source_path
                        AND x.source_table = %(source_table)s AND x.source_rowid = r._source_rowid)
),
new_rows AS (
    SELECT r.ctid AS row_ctid, r._source_rowid AS rowid, {digest} AS digest
    FROM {raw} AS r WHERE r._load_id = %(load_id)s AND r._source_path = %(source_path)s
),
diff AS (
    SELECT old_rows.row_load_id, new_rows.row_ctid, coalesce(old_rows.rowid, new_rows.rowid) AS rowid,
           old_rows.digest AS old_digest, new_rows.digest AS new_digest
    FROM old_rows
    FULL JOIN new_rows ON new_rows.rowid = old_rows.rowid
),
-- by the row's physical address: one probe per unchanged row (by rowid, every probe would scan the load)
pruned AS (
    DELETE FROM {raw} AS r
    USING diff
    WHERE r.ctid = diff.row_ctid AND diff.old_digest = diff.new_digest
    RETURNING 1
),
retired AS (
    {insert_retired_rows}
    SELECT row_load_id, %(source_path)s, %(source_table)s, rowid, %(raw_schema)s, %(raw_table)s, %(load_id)s
    FROM diff
    WHERE old_digest IS NOT NULL AND new_digest IS DISTINCT FROM old_digest
    RETURNING 1
),
deletions AS (
    {insert_deleted_rows}
    SELECT %(load_id)s, %(source_path)s, %(source_table)s, rowid, old_digest, row_load_id
    FROM diff
    WHERE new_digest IS NULL
    RETURNING 1
),
unchanged_counted AS (
    UPDATE {ledger}.load_tables
    SET rows_unchanged = (SELECT count(*) FROM diff WHERE old_digest = new_digest)
    WHERE load_id = %(load_id)s AND source_path = %(source_path)s AND source_table = %(source_table)s
    RETURNING (SELECT count(*) FROM pruned) + (SELECT count(*) FROM retired) + (SELECT count(*) FROM deletions)
)
{insert_load_changes}
SELECT %(load_id)s, %(previous)s, %(source_path)s, %(source_table)s,
       count(*) FILTER (WHERE old_digest IS NULL),
       count(*) FILTER (WHERE old_digest IS NOT NULL AND new_digest IS NOT NULL AND old_digest <> new_digest),
       count(*) FILTER (WHERE new_digest IS NULL),
       count(*) FILTER (WHERE old_digest = new_digest),
       now()
FROM diff
WHERE (SELECT count(*) FROM unchanged_counted) = 1
"""
MARK_DELTA = f"""
UPDATE {LEDGER_SCHEMA}.load_files SET delta_of = %(previous)s
WHERE load_id = %(load_id)s AND source_path = %(source_path)s
"""

# The file's current load and the raw table and columns of each of its tables.
CURRENT_TABLES = f"""
SELECT c.load_id, c.kind, t.source_table, t.raw_schema, t.raw_table,
       coalesce((SELECT array_agg(ARRAY[col.source_column, col.raw_column] ORDER BY col.source_column)
                 FROM {LEDGER_SCHEMA}.load_columns AS col
                 WHERE col.load_id = t.load_id AND col.source_path = t.source_path
                   AND col.source_table = t.source_table), '{{}}')
FROM {LEDGER_SCHEMA}.current_loads AS c
JOIN {LEDGER_SCHEMA}.load_tables AS t USING (load_id, source_path)
WHERE c.source_path = %s
"""


@dataclass(frozen=True)
class DeltaTable:
    """A table of the new load: where its rows go and its (source column, raw column) pairs."""

    source_table: str
    raw_schema: str
    raw_table: str
    columns: tuple[tuple[str, str], ...]

    @property
    def raw_columns(self) -> tuple[str, ...]:
        return tuple(raw for _, raw in self.columns)

    @property
    def raw(self) -> sql.Identifier:
        return sql.Identifier(self.raw_schema, self.raw_table)


@dataclass(frozen=True)
class PreviousState:
    """The state a new load of a file is compared with: the file's current load (and its parts)."""

    load_id: str
    source_path: str
    kind: str
    tables: tuple[DeltaTable, ...]
    parts: tuple[str, ...]  # the loads whose raw rows make up the state: load_id and the loads it applies on
    ranked: bool = False  # whether a build ranked the memory versions (intermediate.int_memory_ranked is there)

    def table(self, source_table: str) -> DeltaTable:
        return next(table for table in self.tables if table.source_table == source_table)


def previous_state(connection: psycopg.Connection, source_path: str, kind: str,
                   tables: Sequence[DeltaTable], has_rowids: bool) -> PreviousState | None:
    """The state a new load of `source_path` (of `kind`, with `tables`) can be a delta of, or None when it
    must be a full load: not a memory file, no current load, another kind, other tables or columns, or
    a table without rowid."""
    if kind not in MEMORY_KINDS or not has_rowids or not tables:
        return None
    rows = connection.execute(CURRENT_TABLES, (source_path,)).fetchall()
    if not rows or any(row[1] != kind for row in rows):
        return None
    current = {row[2]: (row[3], row[4], frozenset(tuple(pair) for pair in row[5])) for row in rows}
    wanted = {table.source_table: (table.raw_schema, table.raw_table, frozenset(table.columns)) for table in tables}
    if current != wanted:
        return None
    parts, ranked = connection.execute(
        sql.SQL("SELECT array{}, to_regclass(%(ranked)s) IS NOT NULL").format(state_loads("previous")),
        {"previous": rows[0][0], "source_path": source_path, "ranked": ".".join(MEMORY_RANKED)}).fetchone()
    return PreviousState(rows[0][0], source_path, kind, tuple(tables), tuple(parts), ranked)


def statements(previous: PreviousState, load_id: str) -> list[tuple[sql.Composed | str, dict]]:
    """The CSV path's comparison: what turns the new load (its rows in raw and its ledger rows written, in
    the same transaction) into a delta of `previous`: one comparison per table, then the mark on load_files."""
    ledger = sql.Identifier(LEDGER_SCHEMA)
    result: list[tuple[sql.Composed | str, dict]] = []
    for table in previous.tables:
        statement = sql.SQL(COMPARE_TABLE).format(
            digest=row_digest_of(table), raw=table.raw, ledger=ledger, insert_retired_rows=sql.SQL(INSERT_RETIRED_ROWS),
            insert_deleted_rows=sql.SQL(INSERT_DELETED_ROWS), insert_load_changes=sql.SQL(INSERT_LOAD_CHANGES))
        result.append((statement, {"previous": previous.load_id, "load_id": load_id,
                                   "source_path": previous.source_path, "source_table": table.source_table,
                                   "raw_schema": table.raw_schema, "raw_table": table.raw_table}))
    result += record_sqlite_deletes(previous, load_id)
    result.append(mark_delta(previous, load_id))
    return result


# A delete made in SQLite that outranks a write made in PostgreSQL. The entries whose row this load retired
# (found in int_memory_ranked as the last build ranked them) and whose value is a write made in PostgreSQL
# before the file's previous load began, so certainly before the delete: when the file's new state holds no
# row of the entry (a changed row or an INSERT OR REPLACE is no delete), the delete is recorded in the write
# log, stamped one microsecond after that write (`sqlite delete`, tied to the file). Without it the write
# would stay the value although the delete came later (a service rolled back to its file deletes what it
# wrote before). A write made since the file's previous load may be later than the delete: it stays the
# value, as does another file's newer row; so the stamp is the earliest the delete can be, not the load's
# time (a write still in flight while this load ran, committed after it, would otherwise lose to it). A
# file cut over to PostgreSQL records nothing (its writer is stale: split brain).
RECORD_SQLITE_DELETES = """
WITH retired_entries AS MATERIALIZED (
    SELECT DISTINCT ranked.namespace, ranked.key
    FROM {ledger}.retired_rows AS x
    JOIN {ranked} AS ranked
      ON ranked.load_id = x.row_load_id AND ranked.source_path = x.source_path
     AND ranked.source_table = x.source_table AND ranked.source_rowid = x.source_rowid
    WHERE x.load_id = %(load_id)s AND x.source_path = %(source_path)s AND x.source_table = %(source_table)s
),
written_before AS MATERIALIZED (
    SELECT e.namespace, e.key, winner.updated_at
    FROM retired_entries AS e
    JOIN {ranked} AS winner
      ON winner.namespace = e.namespace AND winner.key = e.key AND winner.version_rank = 1
    JOIN {write_log} AS w ON w.write_id = winner.write_id
    WHERE NOT winner.deleted
      AND w.written_at < (SELECT started_at FROM {ledger}.load_files
                          WHERE load_id = %(previous)s AND source_path = %(source_path)s)
      AND NOT EXISTS (SELECT 1 FROM {ledger}.cut_over_files AS c WHERE c.source_path = %(source_path)s)
)
INSERT INTO {write_log} (application_name, via, operation, key, namespace, updated_at, home_source_path)
SELECT 'consolidate', %(via)s, 'delete', e.key, e.namespace,
       e.updated_at + interval '1 microsecond', %(source_path)s
FROM written_before AS e
WHERE NOT EXISTS (SELECT 1 FROM {raw} AS r  -- first the load's own rows: a few, where a changed row is
                  WHERE r._load_id = %(load_id)s AND r._source_path = %(source_path)s
                    AND r.{key} = e.key AND {namespace} = e.namespace)
  AND NOT EXISTS (SELECT 1 FROM {raw} AS r
                  WHERE {in_new_state} AND r.{key} = e.key AND {namespace} = e.namespace)
"""


def record_sqlite_deletes(previous: PreviousState, load_id: str) -> list[tuple[sql.Composed, dict]]:
    """RECORD_SQLITE_DELETES for the file's memory table (run after its retired rows are recorded);
    nothing before the first build (no ranked versions to find the entries in)."""
    table = next((t for t in previous.tables if t.source_table == MEMORY_TABLES[previous.kind]), None)
    raw_of = dict(table.columns) if table else {}
    if not previous.ranked or table is None or "key" not in raw_of:
        return []
    new_state = sql.SQL("(SELECT unnest(%(new_parts)s::text[]))")
    statement = sql.SQL(RECORD_SQLITE_DELETES).format(
        namespace=MEMORY_NAMESPACES[previous.kind], key=sql.Identifier(raw_of["key"]), raw=table.raw,
        ranked=sql.Identifier(*MEMORY_RANKED), ledger=sql.Identifier(LEDGER_SCHEMA),
        write_log=sql.Identifier(WRITE_LOG_SCHEMA, "memory_writes"),
        in_new_state=in_loads("r", table.source_table, new_state))
    return [(statement, {"load_id": load_id, "previous": previous.load_id, "source_path": previous.source_path,
                         "source_table": table.source_table, "new_parts": [*previous.parts, load_id],
                         "via": SQLITE_DELETE_VIA})]


def row_digest_of(table: DeltaTable) -> sql.Composed:
    """A raw row's digest (alias r) over its content, as the CSV path compares it and a deleted row's
    row_md5 holds it: the file's own columns, then _binary_columns."""
    return raw_tables.row_digest("r", (*table.raw_columns, *CONTENT_LINEAGE))


def mark_delta(previous: PreviousState, load_id: str) -> tuple[str, dict]:
    return MARK_DELTA, {"previous": previous.load_id, "load_id": load_id, "source_path": previous.source_path}


# ------------------------------------------------------------------------ the direct path: DuckDB compares

@dataclass
class ComparedTable:
    """What a change load found in one table against the previous state (DuckDB's comparison)."""

    source_table: str
    read: int  # rows of the snapshot
    inserted: int
    updated: int
    unchanged: int
    retired: list[tuple[str, int]]  # (the load whose raw row it is, rowid): changed or deleted rows
    deleted_rowids: list[int]


# One table's rows in the file's previous state, with the load each one is a row of: the rows of its loads,
# less those the loads retired (joined in DuckDB: probing retired_rows row by row costs PostgreSQL more).
PART_DIGESTS = """
SELECT r._load_id, r._source_rowid, md5({serialized}) AS digest FROM {raw} AS r
WHERE r._load_id = ANY(%(parts)s) AND r._source_path = %(source_path)s
"""
RETIRED_ROWS = f"""
SELECT x.row_load_id, x.source_rowid FROM {LEDGER_SCHEMA}.retired_rows AS x
WHERE x.load_id = ANY(%(parts)s) AND x.source_path = %(source_path)s AND x.source_table = %(source_table)s
"""
CHANGES = """
SELECT o._load_id AS row_load_id, coalesce(o._source_rowid, n._source_rowid) AS source_rowid,
       CASE WHEN o._source_rowid IS NULL THEN 'inserted'
            WHEN n._source_rowid IS NULL THEN 'deleted'
            WHEN n.digest = o.digest THEN 'unchanged'
            ELSE 'updated' END AS change
FROM change_old AS o
FULL JOIN (SELECT _source_rowid, md5({serialized}) AS digest FROM {new_rows}) AS n
  ON n._source_rowid = o._source_rowid
"""


def serialized(values: Sequence[str], length: str) -> str:
    """One text of a row's values (SQL expressions) that PostgreSQL and DuckDB both spell the same way, so
    that their md5s compare: each value as 'v', its length in bytes (`length`: the function that counts
    them), ':' and the value, or 'n' for NULL."""
    return " || ".join(f"coalesce('v' || {length}({value})::text || ':' || {value}, 'n')" for value in values)


# A deleted row as change detection records it: its row_md5 is PostgreSQL's digest of its raw row.
RECORD_DELETED = f"""
{INSERT_DELETED_ROWS}
SELECT %(load_id)s, %(source_path)s, %(source_table)s, r._source_rowid, {{digest}}, r._load_id
FROM {{raw}} AS r
WHERE {{in_parts}} AND r._source_rowid = ANY(%(rowids)s)
"""
# The previous state's loads, as in_loads takes them.
PARTS = sql.SQL("(SELECT unnest(%(parts)s::text[]))")
RECORD_RETIRED = f"""
{INSERT_RETIRED_ROWS}
SELECT unnest(%(row_load_ids)s::text[]), %(source_path)s, %(source_table)s, unnest(%(retired_rowids)s::bigint[]),
       %(raw_schema)s, %(raw_table)s, %(load_id)s
"""
RECORD_UNCHANGED = f"""
UPDATE {LEDGER_SCHEMA}.load_tables SET rows_unchanged = %(unchanged)s
WHERE load_id = %(load_id)s AND source_path = %(source_path)s AND source_table = %(source_table)s
"""
RECORD_COUNTS = f"""
{INSERT_LOAD_CHANGES}
VALUES (%(load_id)s, %(previous)s, %(source_path)s, %(source_table)s, %(inserted)s, %(updated)s, %(deleted)s,
        %(unchanged)s, now())
"""


def compare_in_duckdb(duck: duckdb.DuckDBPyConnection, renderer: psycopg.ClientCursor, previous: PreviousState,
                      source_table: str, columns: list[str], select: str) -> ComparedTable:
    """Inside the load's transaction (DuckDB's PostgreSQL transaction): compare the snapshot's rows of
    `source_table` (`select`, named `columns`: _source_rowid, the raw columns, then the lineage) with the
    previous state, of which PostgreSQL sends a digest per row; add only the inserted and changed rows to
    raw. The ledger records the rest (record_changes). Rows are compared by the md5 of their values as
    the text raw stores (the scanner reads SQLite as text; `serialized`); a row that came through the
    Python reader (`_binary_columns`) counts as changed. `renderer` renders PostgreSQL statements with
    their parameters (it sends nothing)."""
    table = previous.table(source_table)
    state = {"parts": list(previous.parts), "source_path": previous.source_path, "source_table": source_table}
    stored = [f"r.{quote(name)}::text" for name in (*table.raw_columns, *CONTENT_LINEAGE)]
    digests = literal(renderer.mogrify(sql.SQL(PART_DIGESTS).format(
        serialized=sql.SQL(serialized(stored, "octet_length")), raw=table.raw), state))
    retired_rows = literal(renderer.mogrify(RETIRED_ROWS, state))
    duck.execute(f"CREATE OR REPLACE TEMP TABLE change_old AS "
                 f"SELECT * FROM postgres_query({literal(ALIAS)}, {digests}) AS o "
                 f"ANTI JOIN postgres_query({literal(ALIAS)}, {retired_rows}) AS x "
                 f"ON x.row_load_id = o._load_id AND x.source_rowid = o._source_rowid")
    # the snapshot is read twice (to compare, then the changed rows), never held whole in memory
    new_rows = f"({select}) AS new_rows({', '.join(map(quote, columns))})"
    loaded = [quote(name) for name in table.raw_columns] + ["NULL"]  # no _binary_columns on this path
    duck.execute("CREATE OR REPLACE TEMP TABLE change_diff AS "
                 + CHANGES.format(serialized=serialized(loaded, "strlen"), new_rows=new_rows))
    read, inserted, updated, unchanged = duck.execute(
        "SELECT count(*) FILTER (WHERE change <> 'deleted'), count(*) FILTER (WHERE change = 'inserted'), "
        "count(*) FILTER (WHERE change = 'updated'), count(*) FILTER (WHERE change = 'unchanged') "
        "FROM change_diff").fetchone()
    retired = duck.execute("SELECT change, row_load_id, source_rowid FROM change_diff "
                           "WHERE change IN ('updated', 'deleted') ORDER BY source_rowid").fetchall()
    if inserted + updated:
        insert_rows(duck, table.raw_schema, table.raw_table, columns,
                    f"SELECT * FROM {new_rows} WHERE _source_rowid IN "
                    "(SELECT source_rowid FROM change_diff WHERE change IN ('inserted', 'updated'))")
    duck.execute("DROP TABLE change_old; DROP TABLE change_diff")
    return ComparedTable(source_table, read, inserted, updated, unchanged, [(load, rowid) for _, load, rowid in retired],
                        [rowid for change, _, rowid in retired if change == 'deleted'])


def record_changes(previous: PreviousState, load_id: str,
                   changes: Sequence[ComparedTable]) -> list[tuple[sql.Composed | str, dict]]:
    """What records DuckDB's comparisons once the load's ledger rows are written: the retired rows, the
    deleted rows, the counts, the mark on load_files."""
    result: list[tuple[sql.Composed | str, dict]] = []
    for found in changes:
        table = previous.table(found.source_table)
        parameters = {"previous": previous.load_id, "load_id": load_id, "source_path": previous.source_path,
                      "source_table": found.source_table, "inserted": found.inserted, "updated": found.updated,
                      "deleted": len(found.deleted_rowids), "unchanged": found.unchanged, "parts": list(previous.parts),
                      "rowids": found.deleted_rowids, "raw_schema": table.raw_schema, "raw_table": table.raw_table,
                      "row_load_ids": [load for load, _ in found.retired],
                      "retired_rowids": [rowid for _, rowid in found.retired]}
        if found.retired:
            result.append((RECORD_RETIRED, parameters))
        if found.deleted_rowids:
            result.append((sql.SQL(RECORD_DELETED).format(
                digest=row_digest_of(table), raw=table.raw, in_parts=in_loads("r", found.source_table, PARTS)),
                parameters))
        result.append((RECORD_UNCHANGED, parameters))
        result.append((RECORD_COUNTS, parameters))
    result += record_sqlite_deletes(previous, load_id)
    result.append(mark_delta(previous, load_id))
    return result
