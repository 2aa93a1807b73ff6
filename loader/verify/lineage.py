"""Where a memory entry came from: every version of it across files and loads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from psycopg import sql

from loader import ledger
from loader.database import Target
from loader.transform.relations import MEMORY_ALL_LOADS, MEMORY_RANKED

VERSIONS_QUERY = sql.SQL("""
SELECT v.key, v.namespace, v.source_path, v.source_table, v.source_rowid, v.load_id,
       l.source_db, v.updated_at, v.accessed_at, v.value, v.data_type,
       CASE WHEN r.is_winner THEN 'winner'
            WHEN r.is_winner IS NOT NULL THEN 'superseded'
            ELSE 'earlier load' END AS role
FROM {all_loads} AS v
JOIN {load_files} AS l ON l.load_id = v.load_id AND l.source_path = v.source_path
LEFT JOIN {ranked} AS r
       ON r.load_id = v.load_id AND r.source_path = v.source_path
      AND r.source_table = v.source_table AND r.source_rowid = v.source_rowid
WHERE v.key = %(key)s AND (%(namespace)s::text IS NULL OR v.namespace = %(namespace)s)
ORDER BY v.namespace, r.version_rank NULLS LAST, v.loaded_at DESC, v.source_path, v.source_rowid
""").format(all_loads=sql.Identifier(*MEMORY_ALL_LOADS), load_files=ledger.table("load_files"),
           ranked=sql.Identifier(*MEMORY_RANKED))


class NotBuilt(Exception):
    """The relations lineage reads are not there yet: nothing was loaded and built."""


@dataclass
class Version:
    key: str
    namespace: str
    source_path: str
    source_table: str
    source_rowid: int | None
    load_id: str
    source_db: str
    updated_at: datetime | None
    accessed_at: datetime | None
    value: object
    data_type: str
    role: str

    @property
    def winner(self) -> bool:
        return self.role == "winner"

    @property
    def value_preview(self) -> str:
        text = json.dumps(self.value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:57] + "..."

    def to_json(self) -> dict:
        return asdict(self)


def versions(target: Target, key: str, namespace: str | None = None) -> list[Version]:
    """Every version of `key` (in `namespace`, or in any): the current winner, the versions it
    superseded, and versions from earlier loads of a file. Raises NotBuilt before the first build."""
    with target.connect() as connection:
        needed = [MEMORY_ALL_LOADS, MEMORY_RANKED, (ledger.LEDGER_SCHEMA, "load_files")]
        missing = [".".join(name) for name in needed if not ledger.relation_exists(connection, *name)]
        if missing:
            raise NotBuilt(f"{', '.join(missing)} not found: load and build first (consolidate run)")
        rows = connection.execute(VERSIONS_QUERY, {"key": key, "namespace": namespace}).fetchall()
    return [Version(*row) for row in rows]
