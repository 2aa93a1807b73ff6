"""Where a memory entry came from: every version of it across files, loads and writes made in PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from psycopg import sql

from loader import ledger
from loader.database import Target
from loader.ledger import SQLITE_DELETE_VIA
from loader.relations import MEMORY_ALL_LOADS, MEMORY_RANKED

# The role of a version: winner / superseded (a current version); for a file's row that is not current,
# `deleted in a later load` or `changed in a later load` when a row-level change load retired it
# (loader/load/delta.py: `retired_by` names that load, `retired_at` when it ran, `retired_as` deleted or
# changed: deleted when its ledger records the rowid as deleted), else `earlier load` (a file's older load,
# replaced whole); pending for a current version the marts do not rank yet: a file's current row loaded
# since the last build (`load` without `build`), a write the build has not ranked (written to the log by
# hand). Current is what the marts rank: a file's current rows, whose load may be an earlier one its current
# load applies on; the ranked rows name that load.
VERSIONS_QUERY = sql.SQL("""
SELECT v.key, v.namespace, v.source_path, v.source_table, v.source_rowid, v.load_id,
       l.source_db, v.updated_at, v.accessed_at, v.value, v.data_type,
       CASE WHEN r.is_winner THEN 'winner'
            WHEN r.is_winner IS NOT NULL THEN 'superseded'
            WHEN x.load_id IS NOT NULL THEN retired.retired_as || ' in a later load'
            WHEN current_part.part_load_id IS NOT NULL THEN 'pending'
            ELSE 'earlier load' END AS role,
       false AS deleted, NULL::bigint AS write_id, NULL::timestamptz AS written_at, NULL AS written_by,
       NULL AS db_user, NULL AS via, x.load_id AS retired_by, retiring.started_at AS retired_at,
       retired.retired_as, NULL AS home_source_path, r.version_rank, v.loaded_at
FROM {all_loads} AS v
JOIN {load_files} AS l ON l.load_id = v.load_id AND l.source_path = v.source_path
LEFT JOIN {ranked} AS r
       ON r.load_id = v.load_id AND r.source_path = v.source_path
      AND r.source_table = v.source_table AND r.source_rowid = v.source_rowid
LEFT JOIN {retired_rows} AS x
       ON r.load_id IS NULL AND x.row_load_id = v.load_id AND x.source_path = v.source_path
      AND x.source_table = v.source_table AND x.source_rowid = v.source_rowid
LEFT JOIN {load_files} AS retiring ON retiring.load_id = x.load_id AND retiring.source_path = x.source_path
LEFT JOIN {current_load_parts} AS current_part
       ON r.load_id IS NULL AND current_part.part_load_id = v.load_id AND current_part.source_path = v.source_path
LEFT JOIN LATERAL (
    SELECT CASE WHEN EXISTS (SELECT 1 FROM {deleted_rows} AS d
                             WHERE d.load_id = x.load_id AND d.source_path = x.source_path
                               AND d.source_table = x.source_table AND d.source_rowid = x.source_rowid)
                THEN 'deleted' ELSE 'changed' END AS retired_as
    WHERE x.load_id IS NOT NULL
) AS retired ON true
WHERE v.key = %(key)s AND (%(namespace)s::text IS NULL OR v.namespace = %(namespace)s)
UNION ALL
SELECT w.key, w.namespace, NULL, 'memory_writes', w.write_id, NULL,
       'postgresql', w.updated_at, w.accessed_at, w.value, w.data_type,
       CASE WHEN r.is_winner THEN 'winner'
            WHEN r.is_winner IS NOT NULL THEN 'superseded'
            ELSE 'pending' END,
       w.operation = 'delete', w.write_id, w.written_at, w.application_name, w.db_user, w.via, NULL, NULL,
       NULL, w.home_source_path, r.version_rank, w.written_at
FROM {memory_writes} AS w
LEFT JOIN {ranked} AS r ON r.write_id = w.write_id
WHERE w.key = %(key)s AND (%(namespace)s::text IS NULL OR w.namespace = %(namespace)s)
ORDER BY 2, 23 NULLS LAST, 24 DESC, 3, 5
""").format(all_loads=sql.Identifier(*MEMORY_ALL_LOADS), load_files=ledger.table("load_files"),
           ranked=sql.Identifier(*MEMORY_RANKED), memory_writes=sql.Identifier(ledger.WRITE_LOG_SCHEMA, "memory_writes"),
           retired_rows=ledger.table("retired_rows"), deleted_rows=ledger.table("deleted_rows"),
           current_load_parts=ledger.table("current_load_parts"))


class NotBuilt(Exception):
    """The relations lineage reads are not there yet: nothing was loaded and built."""


@dataclass
class Version:
    key: str
    namespace: str
    source_path: str | None
    source_table: str
    source_rowid: int | None
    load_id: str | None
    source_db: str
    updated_at: datetime | None
    accessed_at: datetime | None
    value: object
    data_type: str | None
    role: str
    deleted: bool = False
    # a write made in PostgreSQL: its id in raw_postgres.memory_writes, when, by which application and
    # role, and through which path (client, a compatibility view, DML on a mart)
    write_id: int | None = None
    written_at: datetime | None = None
    written_by: str | None = None
    db_user: str | None = None
    via: str | None = None
    # a file's row a row-level change load retired: that load, when it ran, and whether it 'deleted' or
    # 'changed' the row
    retired_by: str | None = None
    retired_at: datetime | None = None
    retired_as: str | None = None
    # a write tied to a file (MemoryClient(source=...), or a delete a sync found in it)
    home_source_path: str | None = None

    @property
    def winner(self) -> bool:
        return self.role == "winner"

    @property
    def value_preview(self) -> str:
        if self.deleted:
            return "(deleted)"
        text = json.dumps(self.value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:57] + "..."

    @property
    def origin(self) -> str:
        """Where the version came from, for a person."""
        if self.write_id is None:
            return self.source_db
        if self.via == SQLITE_DELETE_VIA:
            return (f"deleted in SQLite ({self.home_source_path}), recorded by a sync at "
                    f"{self.written_at:%Y-%m-%d %H:%M:%S%z}")
        return (f"{'deleted' if self.deleted else 'written'} in PostgreSQL by {self.written_by or '?'} "
                f"({self.db_user}) via {self.via} at {self.written_at:%Y-%m-%d %H:%M:%S%z}")

    def to_json(self) -> dict:
        return {name: value.isoformat() if isinstance(value, datetime) else value
                for name, value in asdict(self).items()}


def versions(target: Target, key: str, namespace: str | None = None) -> list[Version]:
    """Every version of `key` (in `namespace`, or in any): the current winner, the versions it
    superseded (writes made in PostgreSQL among them), and versions from earlier loads of a file. Raises
    NotBuilt before the first build."""
    with target.connect() as connection:
        needed = [MEMORY_ALL_LOADS, MEMORY_RANKED, (target.schema, "unified_memory"), (ledger.LEDGER_SCHEMA, "load_files"),
                  (ledger.LEDGER_SCHEMA, "retired_rows"), (ledger.WRITE_LOG_SCHEMA, "memory_writes")]
        missing = ledger.missing_relations(connection, needed)
        if missing:
            raise NotBuilt(ledger.not_built(connection, missing, target.schema))
        rows = connection.execute(VERSIONS_QUERY, {"key": key, "namespace": namespace}).fetchall()
    return [Version(*row[:22]) for row in rows]
