"""`consolidate rollback SOURCE --to FILE`: PostgreSQL's current state of SOURCE's entries, written as a
new SQLite database in SOURCE's own schema, for a service that goes back to its SQLite file.

**Home.** An entry (namespace, key) is at home in SOURCE when SOURCE's current rows hold a row of it (so
its winner in the marts, or one of its current versions, comes from SOURCE; SOURCE's current rows: its
current load's and, for a row-level change load, those of the loads it applies on that no later one
retired, loader/load/delta.py), or when a write made in
PostgreSQL tied it to SOURCE (`MemoryClient(..., source=SOURCE)`, or a view write with the session
setting `consolidate.source` = SOURCE, fills `home_source_path` of raw_postgres.memory_writes). An entry held by several files is at home in each: each one's rollback
holds it, with PostgreSQL's state.

**What FILE holds** (SOURCE a claude-flow v2, claude-flow v3 or extended-memory file):
- SOURCE's schema: every table, index, trigger and view with its exact SQL from `sqlite_master`, in its
  order (`sqlite3 .schema` prints the same; a table's rows go in before the triggers that follow it), and its
  page_size, auto_vacuum, text encoding, user_version, application_id and journal mode (WAL or not);
- SOURCE's other tables (v3 sessions, patterns, metadata, sqlite_sequence, ...): their rows as they are in
  its current load (its current rows);
- per entry at home, from the marts (`unified_memory`, `performance_metrics`):
  - absent (a delete won, or it never was): no row;
  - the winner is one of SOURCE's current rows: that row, byte for byte. Reads made in
    PostgreSQL (accessed_at / access_count bookkeeping) do not make a row changed and are not carried;
  - otherwise (written in PostgreSQL, or a newer version from another file won): SOURCE's row (its rowid,
    v2's id and every column PostgreSQL does not hold, such as v3's embedding; v3's id: below) with PostgreSQL's values in the
    columns the marts hold, converted as the compatibility views convert them: the value as its JSON text
    for data_type `json` (jsonb's spelling) and as the string itself otherwise (the bytes for `binary`;
    extended-memory: JSON text unless pickle, binary or unsupported JSON, consolidate.extended_memory_value),
    times in the source's units (v2 epoch seconds and v3 epoch milliseconds, floored; extended-memory
    naive UTC text `YYYY-MM-DD HH:MM:SS.ffffff`), v3's type, tags, status and owner_id taken back out of
    the metadata, extended-memory's `type` as compat_extended_memory.memory_store shows it (the same SQL
    function, consolidate.extended_memory_type: the type kept when it fits the value, else named from
    it). A column the marts hold NULL that SOURCE declares NOT NULL keeps its row's (or its default)
    value, and a column PostgreSQL did not change keeps the row's own bytes and SQLite type: one whose
    value PostgreSQL's state gives as staging's reading of the row gives it (columns_postgresql_changed:
    its own JSON text, a `__compressed__` value, metadata that is not JSON, v3's NULL type or status, a
    value staging could not read and PostgreSQL holds none of or only a write's fill-in of created_at or
    access_count), or that says the same (says_the_same: the same JSON or instant; TEXT whose bytes are
    not UTF-8, which PostgreSQL holds as binary, when PostgreSQL's bytes are those). An entry SOURCE has no row of becomes a new row: v2 the next id, v3 the id
    compat_claude_flow_v3.memory_entries shows it by: its own v3 id (metadata claude_flow_v3.id) when it
    has one, else `unified-<mart id>` (negated for performance_metrics, as compat.memory_entries numbers
    them); a v3 id another row of FILE already holds (v3's id is its primary key: hostile data, two
    entries with one id) gives the new row `unified-<mart id>`. A v3 row written with PostgreSQL's values
    takes the id the view shows its entry by too (an INSERT through the view may have given the entry a
    new one; for performance_metrics, which the view does not show, only an own v3 id), rows that trade
    ids included; one another row of FILE holds gives it `unified-<mart id>`;
  - an entry extended-memory cannot hold (a namespace other than `extended-memory`) is skipped and listed.
  Several rows of SOURCE with one (namespace, key) (a schema without its UNIQUE constraint) become one:
  the winner's row, or the first by rowid.

Rows are copied from a private consistent copy of SOURCE checked to be byte for byte the version loaded
as its current load (so they are exactly the rows raw holds, with SQLite's own types and bytes, which
raw's text alone cannot restore in every case: a column without affinity, a REAL beyond 15 digits, TEXT
raw keeps as hex). A SOURCE `consolidate archive --remove-originals` removed is read from the archive
the ledger names (`consolidate.archived_removals`), checked the same way. A SOURCE changed since its
current load is refused (`consolidate sync` it first), and so are marts not built since that load.
SOURCE is never opened; FILE is written beside itself and moved into place (never over an existing
FILE unless `overwrite`); each rollback is recorded in `consolidate.rollbacks`.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import socket
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from loader import ledger
from loader.backup.destination import flush_to_disk
from loader.database import Target
from loader.ledger import LEDGER_SCHEMA, WRITE_LOG_SCHEMA, in_state, ledger_path, state_loads
from loader.load import raw_tables
from loader.load.raw_contract import MEMORY_NAMESPACES, MEMORY_TABLES
from loader.operate.cutover import not_a_loaded_memory_file
from loader.relations import MEMORY_RANKED
from loader.sources.snapshot import (
    EVERY_SIDE_FILE,
    ArchiveUnreadable,
    Snapshot,
    SourceKeptChanging,
    archived_copy,
    consistent_copy,
    sha256_of,
    side_file,
)
from loader.sources.sqlite_reader import quote

PRAGMAS = ("page_size", "auto_vacuum", "encoding", "user_version", "application_id", "journal_mode")
EXTENDED_NAMESPACE = "extended-memory"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class RollbackError(Exception):
    """A rollback refused or failed; FILE was not written."""


class WritingFailed(RollbackError):
    """Writing FILE failed (SQLite refused a statement, or the file fails integrity_check); nothing was left."""


class DestinationRefused(RollbackError):
    """FILE may not be written: it exists (without overwrite), it is the source, or its folder is not one."""


@dataclass
class RollbackReport:
    source_path: str
    written_to: str
    kind: str
    load_id: str
    sha256: str = ""
    tables: dict[str, int] = field(default_factory=dict)  # rows per table in FILE
    unchanged: int = 0  # the source's rows copied as they are
    changed: list[tuple[str, str]] = field(default_factory=list)
    created: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # entries SOURCE's schema cannot hold, with why
    # entries written without fields SOURCE's schema has no column for (extended-memory: expires_at, metadata)
    fields_not_written: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # where a changed or created entry's value comes from: another SQLite file's path (its row is newer than
    # SOURCE's), or None for a write made in PostgreSQL
    value_from: dict[tuple[str, str], str | None] = field(default_factory=dict)

    @property
    def from_other_files(self) -> list[tuple[str, str]]:
        """The changed entries whose value is another SQLite file's row, not a write made in PostgreSQL."""
        return [name for name in self.changed if self.value_from.get(name) not in (None, self.source_path)]

    def to_json(self) -> dict:
        def entries(pairs):
            return [{"namespace": namespace, "key": key} for namespace, key in pairs]
        changed = [{"namespace": namespace, "key": key, "value_from": self.value_from.get((namespace, key)) or "postgresql"}
                   for namespace, key in self.changed]
        return {"source_path": self.source_path, "written_to": self.written_to, "kind": self.kind,
                "load_id": self.load_id, "sha256": self.sha256, "tables": self.tables,
                "unchanged": self.unchanged, "changed": changed,
                "created": entries(self.created), "deleted": entries(self.deleted), "skipped": self.skipped,
                "fields_not_written": self.fields_not_written, "notes": self.notes}


# ------------------------------------------------------------------------------ PostgreSQL's state

# The source's rows that are the marts' winners (untouched: copied as they are). The marts name the load a
# row is stored in: the current load or, after a row-level change load, one it applies on ({current_loads}). An entry at home in the
# source whose winner is not one of them is read with its state by CHANGED_ENTRIES.
UNTOUCHED_ROWS = """
SELECT source_rowid FROM {unified_memory}
WHERE source_path = %(source_path)s AND load_id IN {current_loads} AND source_table = %(source_table)s
UNION ALL
SELECT source_rowid FROM {performance_metrics}
WHERE source_path = %(source_path)s AND load_id IN {current_loads} AND source_table = %(source_table)s
"""

# Every other entry at home in the source (its rows that are not winners, and the entries written in
# PostgreSQL with the source as their home), with its state in the marts (mart NULL: absent) and the
# rowids of the source's rows of it. Shaped for a few changed entries among millions of rows: an anti-join
# on rowids, then the marts' rows of those entries only. performance_metrics keeps only a metric's value and time: the
# other fields of its winner come from int_memory_ranked, which every build and write keep in step with it.
CHANGED_ENTRIES = """
WITH untouched AS ({untouched}),
candidates AS MATERIALIZED (
    SELECT {namespace} AS namespace, source.key, source._source_rowid AS rowid
    FROM {raw_table} AS source
    WHERE {current_row} AND source.key IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM untouched WHERE untouched.source_rowid = source._source_rowid)
    UNION ALL
    SELECT namespace, key, NULL FROM {write_log} WHERE home_source_path = %(source_path)s
),
entries AS MATERIALIZED (
    SELECT namespace, key, array_agg(rowid ORDER BY rowid) FILTER (WHERE rowid IS NOT NULL) AS rowids
    FROM candidates
    GROUP BY namespace, key
)
SELECT entries.namespace, entries.key, entries.rowids AS base_rowids, state.mart, state.id,
       {state_fields}, {own_fields}, own.source_rowid IS NOT NULL AS has_own,
       state.source_path = %(source_path)s AND state.load_id IN {current_loads}
           AND state.source_table = %(source_table)s AS won_by_another_row,
       state.source_path AS value_from,
       ARRAY(SELECT DISTINCT field FROM {write_log} AS written, unnest(written.given) AS field
             WHERE written.namespace = entries.namespace AND written.key = entries.key) AS written_fields
FROM entries
-- the source's row of the entry as staging read it: a column PostgreSQL holds as that row gives it keeps its bytes
LEFT JOIN {ranked} AS own
       ON own.source_path = %(source_path)s AND own.source_table = %(source_table)s
      AND own.source_rowid = entries.rowids[1] AND own.write_id IS NULL AND own.load_id IN {current_loads}
LEFT JOIN (
    SELECT 'unified_memory'::text AS mart, id, namespace, key, value, data_type, metadata, created_at, updated_at,
           accessed_at, expires_at, access_count, ttl, source_path, load_id, source_table
    FROM {unified_memory}
    WHERE (namespace, key) IN (SELECT namespace, key FROM entries)
    UNION ALL
    SELECT 'performance_metrics', metrics.id, metrics.namespace, metrics.key, metrics.metric_data, ranked.data_type,
           ranked.metadata, ranked.first_created_at, ranked.updated_at, ranked.last_accessed_at, ranked.expires_at,
           ranked.max_access_count, ranked.ttl, metrics.source_path, metrics.load_id, metrics.source_table
    FROM {performance_metrics} AS metrics
    LEFT JOIN {ranked} AS ranked
           ON ranked.namespace = metrics.namespace AND ranked.key = metrics.key AND ranked.is_winner
    WHERE (metrics.namespace, metrics.key) IN (SELECT namespace, key FROM entries)
) AS state ON state.namespace = entries.namespace AND state.key = entries.key
"""

# The functions of the dbt project (macros/compat.sql) CHANGED_ENTRIES calls: a build by this version made them.
FUNCTIONS_READ = """
SELECT to_regprocedure('consolidate.extended_memory_type(jsonb, text, jsonb)') IS NOT NULL
   AND to_regprocedure('consolidate.extended_memory_value(jsonb, text)') IS NOT NULL
"""

# v3's own fields, which staging keeps under the metadata's `claude_flow_v3` (compat_claude_flow_v3's rule).
V3_FIELDS = ("id", "type", "tags", "status", "owner_id")
# What row_values reads of an entry's state, by the expression over a row with the marts' (or a version's)
# columns that gives it; {r} is the row's alias.
STATE_FIELDS = {
    "data_type": "{r}.data_type",
    "value_json": "{r}.value::text",
    "value_string": "{r}.value #>> ARRAY[]::text[]",  # the scalar as text (a string without its quotes)
    "metadata": "{r}.metadata::text",
    "metadata_without_v3": "(CASE WHEN jsonb_typeof({r}.metadata) = 'object' THEN {r}.metadata - 'claude_flow_v3' "
                           "ELSE {r}.metadata END)::text",
    **{f"v3_{name}": f"CASE WHEN jsonb_typeof({{r}}.metadata -> 'claude_flow_v3') = 'object' "
                     f"THEN {{r}}.metadata -> 'claude_flow_v3' ->> '{name}' END" for name in V3_FIELDS},
    "extended_type": "consolidate.extended_memory_type({r}.value, {r}.data_type, {r}.metadata)",
    "extended_value": "consolidate.extended_memory_value({r}.value, {r}.data_type)",
    **{name: f"{{r}}.{name}" for name in ("created_at", "updated_at", "accessed_at", "expires_at", "access_count", "ttl")},
}
OWN = "own_"  # the prefix of the same fields read from the source's own row (as staging read it)


def state_fields(row: str, prefix: str = "") -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL(expression.format(r=row) + " AS {}").format(sql.Identifier(prefix + name))
                              for name, expression in STATE_FIELDS.items())


def raw_memory_table(connection: psycopg.Connection, load_id: str, source_path: str, table: str) -> tuple[str, str] | None:
    return connection.execute(
        f"SELECT raw_schema, raw_table FROM {LEDGER_SCHEMA}.load_tables "
        "WHERE load_id = %s AND source_path = %s AND source_table = %s", (load_id, source_path, table)).fetchone()


# A memory row the file's loads retired (loader/load/delta.py) that the marts still rank: not built since.
RANKED_RETIRED = """
SELECT EXISTS (
    SELECT 1 FROM {retired_rows} AS retired
    JOIN {ranked} AS ranked
      ON ranked.load_id = retired.row_load_id AND ranked.source_path = retired.source_path
     AND ranked.source_table = retired.source_table AND ranked.source_rowid = retired.source_rowid
    WHERE retired.source_path = %(source_path)s AND retired.source_table = %(source_table)s
      AND retired.load_id IN {current_loads})
"""


def marts_hold_load(connection: psycopg.Connection, load_id: str, source_path: str, raw_table: tuple[str, str],
                    memory_table: str) -> bool:
    """Whether the last build ranked the file's current rows (false before the build that follows a load):
    the load's own memory rows are ranked, and no row its loads retired (a row-level change load's
    changed and deleted rows) still is."""
    parameters = {"load_id": load_id, "source_path": source_path, "source_table": memory_table}
    has_rows = connection.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE _load_id = %s AND _source_path = %s)")
                                  .format(sql.Identifier(*raw_table)), (load_id, source_path)).fetchone()[0]
    if has_rows and not connection.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE load_id = %s AND source_path = %s)").format(
                sql.Identifier(*MEMORY_RANKED)), (load_id, source_path)).fetchone()[0]:
        return False
    return not connection.execute(sql.SQL(RANKED_RETIRED).format(
        retired_rows=sql.Identifier(LEDGER_SCHEMA, "retired_rows"), ranked=sql.Identifier(*MEMORY_RANKED),
        current_loads=state_loads("load_id")),
        parameters).fetchone()[0]


def read_state(connection: psycopg.Connection, target: Target, source_path: str, load_id: str, kind: str,
               raw_table: tuple[str, str]) -> tuple[list[int], list[dict]]:
    """The source's untouched rows (rowids), and every other entry at home in it with its state."""
    names = {"namespace": MEMORY_NAMESPACES[kind], "raw_table": sql.Identifier(*raw_table),
             "write_log": sql.Identifier(WRITE_LOG_SCHEMA, "memory_writes"),
             "unified_memory": sql.Identifier(target.schema, "unified_memory"),
             "performance_metrics": sql.Identifier(target.schema, "performance_metrics"),
             "ranked": sql.Identifier(*MEMORY_RANKED),
             "state_fields": state_fields("state"), "own_fields": state_fields("own", OWN),
             "current_loads": state_loads("load_id"),
             "current_row": in_state("source", MEMORY_TABLES[kind], "load_id")}
    parameters = {"load_id": load_id, "source_path": source_path, "source_table": MEMORY_TABLES[kind]}
    untouched = sql.SQL(UNTOUCHED_ROWS).format(**names)
    rowids = [rowid for (rowid,) in connection.execute(untouched, parameters)]
    with connection.cursor(row_factory=dict_row) as cursor:
        return rowids, cursor.execute(sql.SQL(CHANGED_ENTRIES).format(untouched=untouched, **names),
                                      parameters).fetchall()


# ------------------------------------------------------------------------- rows in the source's shape

def epoch_seconds(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - EPOCH) // timedelta(seconds=1)


def epoch_milliseconds(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - EPOCH) // timedelta(milliseconds=1)


def naive_utc_text(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def value_bytes_or_text(entry: dict) -> str | bytes:
    """The value as the compatibility views give it: JSON text for `json`, the string itself otherwise,
    the bytes for `binary` (kept as `\\x` + hex)."""
    if entry["data_type"] == "binary" and (entry["value_string"] or "").startswith("\\x"):
        return bytes.fromhex(entry["value_string"][2:])
    return entry["value_json"] if entry["data_type"] == "json" else entry["value_string"]


def row_values(kind: str, entry: dict) -> dict[str, object]:
    """The columns PostgreSQL holds, in the source kind's shape (column -> value)."""
    if kind == "claude-flow-v2":
        return {"value": value_bytes_or_text(entry), "metadata": entry["metadata"],
                "created_at": epoch_seconds(entry["created_at"]), "updated_at": epoch_seconds(entry["updated_at"]),
                "accessed_at": epoch_seconds(entry["accessed_at"]), "access_count": entry["access_count"],
                "ttl": entry["ttl"], "expires_at": epoch_seconds(entry["expires_at"])}
    if kind == "claude-flow-v3":
        return {"content": value_bytes_or_text(entry), "type": entry["v3_type"] or "semantic",
                "tags": entry["v3_tags"], "metadata": entry["metadata_without_v3"], "owner_id": entry["v3_owner_id"],
                "created_at": epoch_milliseconds(entry["created_at"]),
                "updated_at": epoch_milliseconds(entry["updated_at"]),
                "expires_at": epoch_milliseconds(entry["expires_at"]),
                "last_accessed_at": epoch_milliseconds(entry["accessed_at"]),
                "access_count": entry["access_count"], "status": entry["v3_status"] or "active"}
    value = value_bytes_or_text(entry) if entry["data_type"] == "binary" else entry["extended_value"]
    return {"value": value, "type": entry["extended_type"],
            "created_at": naive_utc_text(entry["created_at"]), "updated_at": naive_utc_text(entry["updated_at"]),
            "accessed_at": naive_utc_text(entry["accessed_at"]), "access_count": entry["access_count"]}


# The aggregates a write made in PostgreSQL fills in when no version holds one and the writer gave none
# (the earliest created_at: the write's now(); the largest access_count: 0).
FILLED_IN_BY_WRITES = {"created_at", "access_count"}


def columns_postgresql_changed(kind: str, entry: dict) -> dict[str, object]:
    """row_values, less the columns whose value PostgreSQL's state gives as the source row's own (as
    staging read it) gives it: the row keeps its own bytes of those (its own JSON text, `__compressed__`
    form, a REAL time, milliseconds in a seconds column, metadata that is not JSON...), not the value
    written again from PostgreSQL's. So it does of created_at and access_count when staging read none from
    the row and no write gave one: PostgreSQL's is then a write's fill-in (a value the row holds that
    staging could not read stays the row's)."""
    from_state = row_values(kind, entry)
    if not entry["has_own"]:
        return from_state
    own = {name: entry[OWN + name] for name in STATE_FIELDS}
    from_own = row_values(kind, own)
    filled_in = {column for column in FILLED_IN_BY_WRITES
                 if own[column] is None and column not in entry["written_fields"]}
    return {column: value for column, value in from_state.items()
            if column not in filled_in and not (value == from_own[column] and type(value) is type(from_own[column]))}


def marts_v3_id(entry: dict) -> str:
    """`unified-<mart id>`, the v3 id of an entry that has none of its own (compat_v3_id)."""
    return f"unified-{entry['id'] if entry['mart'] == 'unified_memory' else -entry['id']}"


def shown_v3_id(entry: dict) -> str | None:
    """The id compat_claude_flow_v3.memory_entries shows the entry by: its own v3 id (metadata
    claude_flow_v3.id), else the marts' `unified-<id>`; None for an entry of performance_metrics without a
    v3 id of its own (the view shows unified_memory's entries only)."""
    if entry["v3_id"] is not None:
        return entry["v3_id"]
    return marts_v3_id(entry) if entry["mart"] == "unified_memory" else None


def new_row_identity(kind: str, entry: dict) -> dict[str, object]:
    """The columns that name a new row: its key (and namespace, and v3's id: the entry's own v3 id, else
    the marts', as compat_claude_flow_v3.memory_entries shows it)."""
    if kind == "extended-memory":
        return {"key": entry["key"]}
    identity = {"key": entry["key"], "namespace": entry["namespace"]}
    if kind == "claude-flow-v3":
        identity["id"] = entry["v3_id"] if entry["v3_id"] is not None else marts_v3_id(entry)
    return identity


# ------------------------------------------------------------------------------------- the new file

@dataclass
class Plan:
    """What the memory table of the new file holds, decided from PostgreSQL's state."""

    kept_rowids: list[int] = field(default_factory=list)  # copied from the source as they are
    # (rowid copied, then these columns set, the entry's (namespace, key))
    updates: list[tuple[int, dict, tuple[str, str]]] = field(default_factory=list)
    # v3: a changed row's id when the view's id of its entry is taken in the file (give_ids), by rowid
    moved_id_fallbacks: dict[int, str] = field(default_factory=dict)
    inserts: list[dict] = field(default_factory=list)  # new rows: these columns, defaults for the rest
    # v3: a new row's id when the one it has is taken in the file (insert_new_rows), by its place in inserts
    taken_id_fallbacks: dict[int, str] = field(default_factory=dict)


def plan_memory_table(kind: str, untouched: list[int], entries: list[dict], report: RollbackReport) -> Plan:
    plan = Plan(kept_rowids=untouched)
    duplicates = 0
    for entry in sorted(entries, key=lambda e: (e["namespace"], e["key"])):
        name = (entry["namespace"], entry["key"])
        rowids = entry["base_rowids"] or []
        if entry["won_by_another_row"]:
            duplicates += len(rowids)  # the source holds the entry twice (no UNIQUE): its winner row is kept
        elif entry["mart"] is None:
            if rowids:
                report.deleted.append(name)
        elif kind == "extended-memory" and entry["namespace"] != EXTENDED_NAMESPACE:
            report.skipped.append({"namespace": entry["namespace"], "key": entry["key"],
                                   "reason": "extended-memory has no namespace column: only namespace "
                                             f"{EXTENDED_NAMESPACE!r} fits"})
        elif rowids:
            values = columns_postgresql_changed(kind, entry)
            if kind == "claude-flow-v3" and shown_v3_id(entry) is not None:
                # the id the view shows the entry by: an INSERT through it may have given a new one
                values = {"id": shown_v3_id(entry), **values}
                plan.moved_id_fallbacks[rowids[0]] = marts_v3_id(entry)
            plan.updates.append((rowids[0], values, name))
            report.changed.append(name)
            report.value_from[name] = entry["value_from"]
        else:
            if kind == "claude-flow-v3":
                plan.taken_id_fallbacks[len(plan.inserts)] = marts_v3_id(entry)
            plan.inserts.append({**new_row_identity(kind, entry), **row_values(kind, entry)})
            report.created.append(name)
    if duplicates:
        report.notes.append(f"{duplicates} row(s) not written: another row of the source with the same "
                            "(namespace, key) is the entry's winner")
    if kind == "extended-memory":
        written = set(report.changed) | set(report.created)
        report.fields_not_written = [
            {"namespace": e["namespace"], "key": e["key"], "fields": fields}
            for e in sorted(entries, key=lambda e: (e["namespace"], e["key"]))
            if (e["namespace"], e["key"]) in written and (fields := fields_extended_memory_cannot_hold(e))]
        if report.fields_not_written:
            report.notes.append(
                f"{len(report.fields_not_written)} entr{'y' if len(report.fields_not_written) == 1 else 'ies'} "
                "written without what extended-memory's memory_store has no column for (an expiry, metadata "
                "other than its type): " + ", ".join(f"{e['namespace']}/{e['key']} ({', '.join(e['fields'])})"
                                                     for e in report.fields_not_written[:5])
                + (" ..." if len(report.fields_not_written) > 5 else "") + " (`fields_not_written` in --json)")
    return plan


def fields_extended_memory_cannot_hold(entry: dict) -> list[str]:
    """What PostgreSQL holds of an entry that extended-memory's memory_store has no column for: an expiry
    (a TTL given through the client), metadata beyond the `extended_memory` type staging keeps there."""
    fields = ["expires_at"] if entry["expires_at"] is not None else []
    metadata = json.loads(entry["metadata"]) if entry["metadata"] is not None else None
    kept = metadata.get("extended_memory") if isinstance(metadata, dict) else None
    if metadata is not None and (not isinstance(metadata, dict) or set(metadata) - {"extended_memory"}
                                 or (kept is not None and (not isinstance(kept, dict) or set(kept) - {"type"}))):
        fields.append("metadata")
    return fields


@dataclass(frozen=True)
class SchemaObject:
    type: str
    name: str
    sql: str | None


@dataclass(frozen=True)
class Table:
    name: str
    columns: list[str]
    not_null: set[str]
    rowid: str | None  # the name that selects its rowid (None: WITHOUT ROWID, or hidden by columns)
    virtual: bool


def read_source_schema(connection: sqlite3.Connection) -> tuple[dict[str, object], list[SchemaObject], dict[str, Table]]:
    pragmas = {name: connection.execute(f"PRAGMA {name}").fetchone()[0] for name in PRAGMAS}
    objects = [SchemaObject(*row) for row in connection.execute(
        "SELECT type, name, sql FROM sqlite_master ORDER BY rowid")]
    tables = {}
    for item in objects:
        if item.type != "table":
            continue
        virtual = (item.sql or "").upper().startswith("CREATE VIRTUAL TABLE")
        info = [] if virtual else connection.execute(f"PRAGMA table_info({quote(item.name)})").fetchall()
        columns = [row[1] for row in info]
        without_rowid = "WITHOUT ROWID" in (item.sql or "").upper().replace("\n", " ")
        hidden = {column.lower() for column in columns}
        rowid = None if without_rowid else next((a for a in ("rowid", "_rowid_", "oid") if a not in hidden), None)
        tables[item.name] = Table(item.name, columns, {row[1] for row in info if row[3]}, rowid, virtual)
    return pragmas, objects, tables


def copy_rows(connection: sqlite3.Connection, table: Table, where: str = "") -> None:
    """Rows of the attached source's table into the new file's, rowids kept."""
    columns = [quote(c) for c in table.columns]
    if table.rowid is not None:
        columns = [table.rowid, *columns]
    listed = ", ".join(columns)
    connection.execute(f"INSERT INTO main.{quote(table.name)} ({listed}) "
                       f"SELECT {listed} FROM source.{quote(table.name)} {where}")


def settable(table: Table, values: dict[str, object]) -> dict[str, object]:
    """The values the table has a column for, leaving a NOT NULL column PostgreSQL holds NULL as it is."""
    return {c: v for c, v in values.items() if c in table.columns and not (v is None and c in table.not_null)}


# Columns holding JSON text, and extended-memory's text times: a changed row keeps its own text of a value
# PostgreSQL holds unchanged (not jsonb's or the marts' spelling of it).
JSON_COLUMNS = {"value", "content", "metadata", "tags"}
TEXT_TIME_COLUMNS = {"created_at", "updated_at", "accessed_at"}


def sorted_json_text(text: str) -> str | None:
    try:
        return json.dumps(json.loads(text), sort_keys=True)
    except ValueError:
        return None


def instant(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def own_text(raw: bytes) -> str:
    """A TEXT value of the source as read for comparing: bytes that are not UTF-8 (loaded as exact hex,
    flagged binary_value) kept as surrogates, so reading them never fails."""
    return raw.decode("utf-8", "surrogateescape")


def says_the_same(column: str, own, new) -> bool:
    """Whether a row's own value of `column` says what PostgreSQL's value says, so its bytes stay."""
    if own == new and type(own) is type(new):
        return True
    if isinstance(own, str) and isinstance(new, bytes):  # TEXT whose bytes PostgreSQL holds as binary
        return own.encode("utf-8", "surrogateescape") == new
    if not (isinstance(own, str) and isinstance(new, str)):
        return False
    if column in TEXT_TIME_COLUMNS:
        return instant(own) is not None and instant(own) == instant(new)
    return column in JSON_COLUMNS and sorted_json_text(own) is not None and sorted_json_text(own) == sorted_json_text(new)


def write_memory_table(connection: sqlite3.Connection, table: Table, plan: Plan) -> list[tuple[str, str]]:
    """The source's rows the plan keeps, those it changes changed (new rows: insert_new_rows). Returns the
    entries whose row PostgreSQL's state left as it was (every value says the same)."""
    connection.execute("CREATE TEMP TABLE kept (rowid INTEGER PRIMARY KEY)")
    connection.executemany("INSERT OR IGNORE INTO temp.kept VALUES (?)",
                           [(rowid,) for rowid in plan.kept_rowids + [rowid for rowid, _, _ in plan.updates]])
    copy_rows(connection, table, f"WHERE {table.rowid} IN (SELECT rowid FROM temp.kept)")
    connection.execute("DROP TABLE temp.kept")
    as_they_were, changes = [], []
    for rowid, values, name in plan.updates:
        values = settable(table, values)
        if not values:
            as_they_were.append(name)
            continue
        kept = connection.execute(f"SELECT {', '.join(map(quote, values))} FROM main.{quote(table.name)} "
                                  f"WHERE {table.rowid} = ?", (rowid,)).fetchone()
        values = {c: v for (c, v), own in zip(values.items(), kept) if not says_the_same(c, own, v)}
        if values:
            changes.append((rowid, values, name))
        else:
            as_they_were.append(name)
    give_ids(connection, table, {rowid: values.pop("id") for rowid, values, _ in changes if "id" in values},
             plan.moved_id_fallbacks)
    for rowid, values, name in changes:
        if values:
            assignments = ", ".join(f"{quote(c)} = ?" for c in values)
            with naming_the_entry(table, name, values):
                connection.execute(f"UPDATE main.{quote(table.name)} SET {assignments} WHERE {table.rowid} = ?",
                                   [*values.values(), rowid])
    return as_they_were


@contextlib.contextmanager
def naming_the_entry(table: Table, entry: tuple[str, str], values: dict) -> Iterator[None]:
    """A constraint of the source's own table (a v3 CHECK on type or status, NOT NULL...) refusing an
    entry's values from PostgreSQL: the error names the entry and the values, so that it can be put right in
    PostgreSQL (through its compatibility view) before rolling back again."""
    try:
        yield
    except sqlite3.IntegrityError as error:
        namespace, key = entry
        shown = ", ".join(f"{column}={value!r}"[:120] for column, value in values.items()
                          if column not in ("key", "namespace"))
        raise sqlite3.IntegrityError(
            f"{error}: the source's table {table.name!r} refuses entry (namespace {namespace!r}, key {key!r}) "
            f"as PostgreSQL holds it ({shown}); change that entry in PostgreSQL and roll back again") from error


def give_ids(connection: sqlite3.Connection, table: Table, moved: dict[int, str], fallbacks: dict[int, str]) -> None:
    """v3: the changed rows whose entry the view shows by another id than the row's (rowid -> that id) get
    it. Their own ids are set aside first, so that rows that trade ids both get theirs; an id another row
    of the file holds (two entries with one id: v3's id is its primary key) gives way to the entry's
    `unified-<mart id>`, as for a new row (rows in the plan's order)."""
    update = f"UPDATE main.{quote(table.name)} SET id = ? WHERE {table.rowid} = ?"
    for rowid in moved:
        connection.execute(update, (f"consolidate-rollback-moving-{rowid}", rowid))
    for rowid, entry_id in moved.items():
        connection.execute(update, (free_id(connection, table, entry_id, fallbacks[rowid]), rowid))


def free_id(connection: sqlite3.Connection, table: Table, wanted: str, fallback: str) -> str:
    """v3: `wanted`, unless a row of the file already holds it (v3's id is its primary key): then
    `fallback`, the entry's `unified-<mart id>`."""
    taken = connection.execute(f"SELECT 1 FROM main.{quote(table.name)} WHERE id = ?", (wanted,)).fetchone()
    return fallback if taken else wanted


def insert_new_rows(connection: sqlite3.Connection, table: Table, plan: Plan) -> None:
    """The entries the source has no row of; an AUTOINCREMENT id moves sqlite_sequence on, as it would
    in the source. A v3 id another row already holds gives way to the entry's `unified-<mart id>`."""
    for place, values in enumerate(plan.inserts):
        values = settable(table, values)
        if place in plan.taken_id_fallbacks and "id" in values:
            values["id"] = free_id(connection, table, values["id"], plan.taken_id_fallbacks[place])
        with naming_the_entry(table, (values.get("namespace"), values.get("key")), values):
            connection.execute(f"INSERT INTO main.{quote(table.name)} ({', '.join(map(quote, values))}) "
                               f"VALUES ({', '.join('?' for _ in values)})", list(values.values()))


def present(connection: sqlite3.Connection, table: str) -> bool:
    return connection.execute("SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?",
                              (table,)).fetchone() is not None


def create_table(connection: sqlite3.Connection, item: SchemaObject) -> None:
    """The source's table, unless creating another made it (SQLite's own: sqlite_sequence with the first
    AUTOINCREMENT table, a virtual table's shadow tables). ANALYZE alone makes sqlite_stat1 (and the
    other sqlite_stat tables this SQLite has): of sqlite_master, so that it gathers no statistics."""
    if present(connection, item.name) or not item.sql:
        return
    if item.name.startswith("sqlite_stat"):
        connection.execute("ANALYZE main.sqlite_master")
    elif not item.name.startswith("sqlite_"):
        connection.execute(item.sql)


def restore_sequence(connection: sqlite3.Connection, sequence: Table, memory: Table, moved_on: bool) -> None:
    """sqlite_sequence as the source has it (an INSERT into an AUTOINCREMENT table writes its row there
    even when it copies no row), but for the memory table's row when new rows moved it on (`moved_on`)."""
    memory_seq = connection.execute("SELECT seq FROM main.sqlite_sequence WHERE name = ?",
                                    (memory.name,)).fetchone() if moved_on else None
    connection.execute("DELETE FROM main.sqlite_sequence")
    copy_rows(connection, sequence)
    if memory_seq is not None and not connection.execute(
            "UPDATE main.sqlite_sequence SET seq = ? WHERE name = ?", (memory_seq[0], memory.name)).rowcount:
        connection.execute("INSERT INTO main.sqlite_sequence (name, seq) VALUES (?, ?)", (memory.name, memory_seq[0]))


def create_database(snapshot: Path, path: Path, kind: str, plan: Plan, report: RollbackReport) -> None:
    """Write the new file at `path`: the snapshot's schema and pragmas, its rows, the memory table by `plan`."""
    with contextlib.closing(sqlite3.connect(snapshot)) as reading:
        pragmas, objects, tables = read_source_schema(reading)
    memory = tables.get(MEMORY_TABLES[kind])
    if memory is None or memory.rowid is None:
        raise RollbackError(f"{report.source_path}: its {MEMORY_TABLES[kind]} table has no rowid to keep rows by")
    connection = sqlite3.connect(path, isolation_level=None)
    connection.text_factory = own_text
    sequence_copied = False
    try:
        for name in ("page_size", "auto_vacuum", "user_version", "application_id"):  # the first two: before any table
            connection.execute(f"PRAGMA {name} = {int(pragmas[name])}")
        connection.execute(f"PRAGMA encoding = '{pragmas['encoding']}'")
        # a file being written beside its destination: nothing to recover on a crash (it is removed), and
        # move_into_place syncs it to disk before it is moved
        connection.execute("PRAGMA journal_mode = OFF")
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("ATTACH ? AS source", (str(snapshot),))
        connection.execute("BEGIN")
        # every object in the source's order (sqlite_master's, which `.schema` lists): a table's rows go in
        # as it is created, before the indexes, triggers and views that follow it (no trigger of a table
        # exists yet when its rows are written)
        for item in objects:
            if item.type != "table":
                if item.sql:
                    connection.execute(item.sql)
                continue
            create_table(connection, item)
            if item.name == "sqlite_sequence":
                continue  # its rows went in when it was created (by the first AUTOINCREMENT table)
            if not sequence_copied and "sqlite_sequence" in tables and present(connection, "sqlite_sequence"):
                # the source's rows, before any AUTOINCREMENT table's: a new memory row's id follows its seq
                copy_rows(connection, tables["sqlite_sequence"])
                sequence_copied = True
            table = tables[item.name]
            if table.virtual or not present(connection, table.name):
                if not table.virtual:
                    report.notes.append(f"table {table.name!r} not written: this SQLite cannot create it")
                continue
            connection.execute(f"DELETE FROM main.{quote(table.name)}")  # what creating a table put there
            if table is memory:
                for name in write_memory_table(connection, table, plan):  # a version that says the same
                    report.changed.remove(name)
                    report.unchanged += 1
                insert_new_rows(connection, memory, plan)
            else:
                copy_rows(connection, table)
        if sequence_copied:
            restore_sequence(connection, tables["sqlite_sequence"], memory, moved_on=bool(plan.inserts))
        elif "sqlite_sequence" in tables:
            report.notes.append("table 'sqlite_sequence' not written: no AUTOINCREMENT table made it")
        connection.execute("COMMIT")
        connection.execute("DETACH source")
        if pragmas["journal_mode"] == "wal":
            connection.execute("PRAGMA journal_mode = WAL")
        problems = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise WritingFailed(f"the written file fails integrity_check: {'; '.join(problems[:5])}")
        report.tables = {name: connection.execute(f"SELECT count(*) FROM main.{quote(name)}").fetchone()[0]
                         for name, table in tables.items() if not table.virtual}
    except sqlite3.Error as error:
        raise WritingFailed(f"writing {report.written_to}: {type(error).__name__}: {error}") from error
    finally:
        connection.close()


def remove_leftovers_of_killed_rollbacks(destination: Path) -> list[str]:
    """The partial files (and their side files) that rollbacks to `destination` killed before they could
    clean up (kill -9) left beside it, removed: each names the host and process that wrote it, and only a
    process of this host that is gone leaves one (a rollback on another host sharing the folder is left
    alone). Returns what was removed, as notes."""
    notes = []
    prefix = f".{destination.name}.rollback-{socket.gethostname()}-"
    for leftover in sorted(destination.parent.glob(f"{glob.escape(prefix)}*-*")):
        pid = leftover.name.removeprefix(prefix).split("-")[0]
        if not pid.isdigit() or process_alive(int(pid)) or leftover.name.endswith(EVERY_SIDE_FILE):
            continue
        for part in (leftover, *(side_file(leftover, s) for s in EVERY_SIDE_FILE)):
            part.unlink(missing_ok=True)
        notes.append(f"removed {leftover.name}, the partial file of a rollback to {destination.name} that was "
                     f"killed (process {pid})")
    return notes


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def move_into_place(written: Path, destination: Path, overwrite: bool) -> None:
    """`written` becomes `destination` in one step: a hard link that fails if destination exists, or with
    `overwrite` a rename over it (its stale -wal / -shm / -journal removed first: SQLite would replay
    them into the new file)."""
    flush_to_disk(written)
    if overwrite:
        # the replaced file's side files are set aside first and put back if the replace fails, so a
        # failed rollback leaves the old FILE whole
        aside = []
        for suffix in EVERY_SIDE_FILE:
            side = side_file(destination, suffix)
            if side.exists():
                aside.append((side, written.with_name(f"{written.name}.replaced{suffix}")))
                os.replace(*aside[-1])
        try:
            os.replace(written, destination)
        except OSError:
            for side, kept in aside:
                os.replace(kept, side)
            raise
        for _, kept in aside:
            kept.unlink()
    else:
        try:
            os.link(written, destination)
        except FileExistsError:
            raise DestinationRefused(f"{destination} exists (--overwrite to replace it)") from None
        written.unlink()
    flush_to_disk(destination.parent)


def check_destination(connection: psycopg.Connection, source: Path, destination: Path, overwrite: bool) -> None:
    if not destination.parent.is_dir():
        raise DestinationRefused(f"{destination.parent} is not a folder")
    if destination.is_dir():
        raise DestinationRefused(f"{destination} is a folder: give the path of the new SQLite file")
    source_files = [source, *(side_file(source, suffix) for suffix in EVERY_SIDE_FILE)]
    if any(destination == path or (destination.exists() and path.exists() and os.path.samefile(destination, path))
           for path in source_files):
        raise DestinationRefused(f"{destination} is the source itself (or one of its files): a rollback never touches it")
    if destination.is_symlink() and not destination.exists():
        if not overwrite:
            raise DestinationRefused(f"{destination} is a link to {os.readlink(destination)}, which does not exist "
                                     "(--overwrite to replace the link with the new file)")
    elif destination.exists():
        loaded = ledger_path(connection, destination)
        if ledger.current_load_of(connection, loaded) is not None:
            raise DestinationRefused(f"{destination} is a source file the ledger loads ({loaded}): a rollback never "
                                     "replaces one; write elsewhere, then move it into place with its service stopped")
        if not overwrite:
            raise DestinationRefused(f"{destination} exists (--overwrite to replace it)")
    root = root_holding(connection, destination)
    if root is not None:
        raise DestinationRefused(f"{destination} is inside {root}, a root the loads read: the next `sync` would "
                                 "load it as a source file of its own; write it outside the roots, then move it "
                                 "into place with its service stopped")


def root_holding(connection: psycopg.Connection, destination: Path) -> str | None:
    """A folder discovery searches that `destination` lies in: a root of a load in the ledger, or the
    folder of a file the ledger knows (reached through a link under a root, it is searched too); None."""
    real_folder = destination.parent.resolve()
    for (root,) in connection.execute(f"SELECT DISTINCT unnest(roots) FROM {LEDGER_SCHEMA}.loads ORDER BY 1"):
        real_root = Path(root).resolve()
        if real_root.is_dir() and real_folder.is_relative_to(real_root):
            return root
    for (path,) in connection.execute(f"SELECT DISTINCT source_path FROM {LEDGER_SCHEMA}.load_files ORDER BY 1"):
        if Path(path).parent.resolve() == real_folder:
            return str(Path(path).parent)
    return None


RECORD = f"""
INSERT INTO {LEDGER_SCHEMA}.rollbacks (source_path, written_to, written_by, load_id, sha256, unchanged, changed,
                                       created, deleted, skipped)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


def source_copy(connection: psycopg.Connection, source: Path, folder: Path) -> Snapshot:
    """A consistent copy of the file; of its bytes in the archive when `consolidate archive
    --remove-originals` removed it (`consolidate.archived_removals`: the current load's bytes)."""
    if not source.exists():
        archived = ledger.archived_removals(connection).get(str(source))
        if archived is not None:
            if not archived.archive_exists:
                raise ArchiveUnreadable(f"removed after archiving into {archived.archive_path}, which is not there "
                                        f"any more; {ledger.RELOCATE_HINT}")
            return archived_copy(Path(archived.archive_path), archived.members, folder, source.name,
                                 (archived.sha256, archived.wal_sha256))
    return consistent_copy(source, folder)


def rollback(target: Target, source: Path | str, destination: Path | str, *, overwrite: bool = False) -> RollbackReport:
    """Write `destination`, a new SQLite database in `source`'s schema holding PostgreSQL's current state
    of every entry at home in `source` (the module's docstring has the rules). Raises RollbackError, with
    nothing written, when the rollback is refused or fails."""
    # as the ledger records it: absolute, its folder with links and `..` resolved as the OS resolves them
    destination = Path(destination).absolute()
    destination = destination.parent.resolve() / destination.name
    with target.connect(autocommit=True) as connection:
        raw_tables.bootstrap(connection)
        source_path = ledger_path(connection, source)
        source = Path(source_path)
        check_destination(connection, source, destination, overwrite)
        current = ledger.current_load_of(connection, source_path)
        problem = not_a_loaded_memory_file(connection, source_path, current)
        if problem:
            raise RollbackError(problem)
        load_id, kind, sha256, wal_sha256 = current
        report = RollbackReport(source_path, str(destination), kind, load_id)
        raw_table = raw_memory_table(connection, load_id, source_path, MEMORY_TABLES[kind])
        if raw_table is None:
            raise RollbackError(f"{source_path}: its current load has no {MEMORY_TABLES[kind]} table")
        with tempfile.TemporaryDirectory(prefix="consolidate-rollback-") as folder:
            try:
                snapshot = source_copy(connection, source, Path(folder))
            except (OSError, SourceKeptChanging, ArchiveUnreadable) as error:
                raise RollbackError(f"{source_path}: cannot be copied: {error}") from error
            if snapshot.identity != (sha256, wal_sha256):
                raise RollbackError(f"{source_path}: changed since its current load {load_id}; run `consolidate "
                                    "sync` first so PostgreSQL, and the rollback, hold those changes")
            with target.connect() as reading:  # one snapshot of PostgreSQL for every read
                reading.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                if not marts_hold_load(reading, load_id, source_path, raw_table, MEMORY_TABLES[kind]):
                    raise RollbackError(f"{source_path}: the marts do not hold its current load {load_id} yet; "
                                        "run `consolidate build` (or `sync`) first")
                if not reading.execute(FUNCTIONS_READ).fetchone()[0]:
                    raise RollbackError("the marts were built by an earlier version of consolidate, without the "
                                        "functions rollback reads values through; run `consolidate build` first")
                untouched, entries = read_state(reading, target, source_path, load_id, kind, raw_table)
                untouched += [rowid for (rowid,) in reading.execute(  # rows that are no entry: as they are
                    sql.SQL("SELECT source._source_rowid FROM {} AS source WHERE {} AND source.key IS NULL").format(
                        sql.Identifier(*raw_table), in_state("source", MEMORY_TABLES[kind], "load_id")),
                    {"load_id": load_id, "source_path": source_path})]
            report.unchanged = len(untouched)
            plan = plan_memory_table(kind, untouched, entries, report)
            report.notes += remove_leftovers_of_killed_rollbacks(destination)
            written = destination.with_name(
                f".{destination.name}.rollback-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")
            try:
                create_database(snapshot.path, written, kind, plan, report)
                report.sha256 = sha256_of(written)
                move_into_place(written, destination, overwrite)
            except OSError as error:  # a full disk, a folder made read-only meanwhile
                raise WritingFailed(f"writing {destination}: {error}") from error
            finally:
                for leftover in (written, *(side_file(written, s) for s in EVERY_SIDE_FILE)):
                    leftover.unlink(missing_ok=True)
        with connection.transaction():
            connection.execute(RECORD, (source_path, str(destination), ledger.who(), load_id, report.sha256,
                                        report.unchanged, len(report.changed), len(report.created),
                                        len(report.deleted), Jsonb(report.skipped)))
    return report
