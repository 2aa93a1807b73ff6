"""Per-file reconciliation after a run: rows in SQLite, in raw, and where every memory row went."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from psycopg import sql

from loader import ledger
from loader.database import Target
from loader.ledger import LEDGER_SCHEMA


@dataclass
class FileSummary:
    source_path: str
    source_db: str
    kind: str
    status: str
    rows_in_sqlite: int | None
    rows_in_raw: int | None
    memory_rows: int | None
    kept: int | None
    superseded: int | None
    moved: int | None
    reconciled: bool  # false for a file that failed to load: none of its rows were migrated
    error: str | None = None  # why the file failed to load

    def to_json(self) -> dict:
        return asdict(self)


SUMMARY_QUERY = """
WITH this_load AS (
    SELECT source_path, source_db, kind, status, error_message FROM {ledger}.load_files WHERE load_id = %(load_id)s
), current_tables AS (
    SELECT t.source_path, sum(t.rows_in_sqlite)::bigint AS rows_in_sqlite, sum(t.rows_loaded)::bigint AS rows_in_raw
    FROM {ledger}.load_tables AS t
    JOIN {ledger}.current_loads AS c USING (load_id, source_path)
    GROUP BY t.source_path
)
SELECT l.source_path, l.source_db, l.kind, l.status,
       -- a loaded database without tables has no load_tables rows: 0 rows on both sides
       CASE WHEN l.status IN ('loaded', 'unchanged') THEN coalesce(t.rows_in_sqlite, 0) END,
       CASE WHEN l.status IN ('loaded', 'unchanged') THEN coalesce(t.rows_in_raw, 0) END,
       r.rows_in_sqlite AS memory_rows, r.kept, r.superseded, r.moved,
       CASE WHEN l.status IN ('loaded', 'unchanged') THEN coalesce(t.rows_in_sqlite = t.rows_in_raw, true)
            ELSE l.status <> 'failed' END
         AND coalesce(r.reconciled, true) AS reconciled,
       l.error_message
FROM this_load AS l
LEFT JOIN current_tables AS t USING (source_path)
LEFT JOIN {reconciliation} AS r USING (source_path)
ORDER BY l.source_path
"""

# Stands in for the reconciliation mart when no build has made it yet.
NO_RECONCILIATION = """(SELECT NULL::text AS source_path, NULL::bigint AS rows_in_sqlite, NULL::bigint AS kept,
    NULL::bigint AS superseded, NULL::bigint AS moved, NULL::boolean AS reconciled WHERE false)"""


def summarize(target: Target, load_id: str) -> list[FileSummary]:
    with target.connect() as connection:
        mart = sql.Identifier(target.schema, "reconciliation")
        exists = ledger.relation_exists(connection, target.schema, "reconciliation")
        reconciliation = mart if exists else sql.SQL(NO_RECONCILIATION)
        query = sql.SQL(SUMMARY_QUERY).format(ledger=sql.Identifier(LEDGER_SCHEMA), reconciliation=reconciliation)
        rows = connection.execute(query, {"load_id": load_id}).fetchall()
    return [FileSummary(*row) for row in rows]
