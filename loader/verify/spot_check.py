"""The spot check: N random rows of each file, read with Python's sqlite3 from a private copy (never
DuckDB, never dbt), compared field by field with the marts row that represents them (by the rules of
loader.verify.rules) and column by column with their raw row. The rows compared with are fetched for
every file at once: one scan per mart and raw table instead of one per file."""

from __future__ import annotations

import json
import random
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from loader import ledger
from loader.json_depth import too_deep
from loader.ledger import (
    ARCHIVED,
    CHANGED,
    LEDGER_SCHEMA,
    RELOCATE_HINT,
    UNCHANGED,
    UNREADABLE,
    WRITE_LOG_SCHEMA,
    ArchivedRemoval,
    CurrentLoad,
    GoneFiles,
    not_retired,
)
from loader.load.secret_policy import SecretPolicy
from loader.sources.snapshot import ArchiveUnreadable, SourceKeptChanging, archived_private_copy, private_copy
from loader.sources.sqlite_reader import SourceTable, chunks, list_tables, quote
from loader.verify.checksums import BackupIndex
from loader.verify.results import Mismatch
from loader.verify.rules import (
    HMAC_SHAPE,
    MEMORY_FIELDS,
    MEMORY_LAYOUTS,
    TIMESTAMP_FIELDS,
    UNIX_EPOCH,
    Losers,
    MemoryLayout,
    MemoryVersion,
    expected_history,
    expected_in_raw,
    expected_performance_metrics,
    expected_unified_memory,
    loaded_value,
    memory_version,
    parse_json,
    raw_matches,
    same,
    secret_action,
    sql_max,
)

DETAIL_MAX_CHARS = 200
SQLITE_IN_LIST_CHUNK = 500
COLUMNS_PER_READ = 500  # two result columns each; SQLite returns at most 2000


@dataclass(frozen=True)
class Options:
    schema: str
    sample_size: int
    seed: int
    backup: BackupIndex | None
    secret_policy: SecretPolicy | None


@dataclass
class SpotCheck:
    checked: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    reason: str | None = None


@dataclass
class RawSample:
    """Sampled rows of one source table as raw should hold them, read from the private copy."""

    table: SourceTable
    raw_table: tuple[str, str]
    rows: dict[int, dict[str, str | None]]  # rowid -> {source column: value as loaded}
    raw_columns: dict[str, str]  # source column -> raw column


@dataclass
class Sample:
    """What the spot check read from a file's private copy. The rows it is compared with are fetched
    afterwards for every file at once (one scan per mart and raw table instead of one per file)."""

    checked: int = 0
    memory: dict[str, list[MemoryVersion]] = field(default_factory=dict)  # source table -> versions
    raw: list[RawSample] = field(default_factory=list)
    reason: str | None = None


def check_source(connection: psycopg.Connection, current: CurrentLoad, options: Options,
                 gone: GoneFiles) -> tuple[str, Sample]:
    """The file's checksum status, and the spot check's sample of a private copy when the file is
    unchanged. The copy's checksums are those of the bytes on disk now (taken while nothing wrote).
    A file not on disk is checked as `gone` says: one removed after archiving is read from the archive
    (its current load's bytes), one forgotten (loader/operate/forget.py) or missing is not checked."""
    try:
        with private_copy(Path(current.source_path)) as snapshot:
            if snapshot.identity != current.identity:
                return CHANGED, Sample()
            return UNCHANGED, sample_file(connection, snapshot.path, current, options)
    except FileNotFoundError:
        why = gone.why_gone(current.source_path)
        if why == ARCHIVED:
            return check_archived_source(connection, current, options, gone.archived[current.source_path])
        return why, Sample()
    except (SourceKeptChanging, OSError) as error:
        return UNREADABLE, Sample(reason=f"{type(error).__name__}: {error}")


def check_archived_source(connection: psycopg.Connection, current: CurrentLoad, options: Options,
                          archived: ArchivedRemoval) -> tuple[str, Sample]:
    name = Path(current.source_path).name
    try:
        with archived_private_copy(Path(archived.archive_path), archived.members, name, current.identity) as snapshot:
            return ARCHIVED, sample_file(connection, snapshot.path, current, options)
    except ArchiveUnreadable as error:
        hint = "" if archived.archive_exists else f"; {RELOCATE_HINT}"
        return UNREADABLE, Sample(reason=f"removed after archiving, and the archive cannot be read: {error}{hint}")


def sample_file(connection: psycopg.Connection, database: Path, current: CurrentLoad, options: Options) -> Sample:
    """N random memory rows (for the marts and raw) and N random rows of the other tables (for raw)."""
    rng = random.Random(f"{options.seed}:{current.source_path}")
    layout = MEMORY_LAYOUTS.get(current.kind)
    memory_table = layout.table if layout is not None else None
    sqlite = sqlite3.connect(database)
    sqlite.text_factory = bytes  # raw holds the exact bytes of what is not UTF-8 text (see loaded_value)
    try:
        # the rowid is the lineage: tables without one (WITHOUT ROWID, or every alias hidden) are not sampled
        tables = {table.name: table for table in list_tables(database) if table.has_rowid and table.rowid_column}
        memory_rows = sample_rows(sqlite, [t for t in tables.values() if t.name == memory_table],
                                  options.sample_size, rng)
        other_rows = sample_rows(sqlite, [t for t in tables.values() if t.name != memory_table],
                                 options.sample_size, rng)
        raw_tables = raw_table_names(connection, current)
        return Sample(
            checked=len(memory_rows) + len(other_rows),
            memory={name: read_memory_versions(sqlite, layout, tables[name], rowids)
                    for name, rowids in group_by_table(memory_rows).items()},
            raw=[RawSample(tables[name], raw_tables[name],
                           read_as_loaded(sqlite, tables[name], {c: c for c in tables[name].columns}, rowids),
                           recorded_raw_columns(connection, current, tables[name]))
                 for name, rowids in group_by_table(memory_rows + other_rows).items()])
    finally:
        sqlite.close()


@dataclass
class SampledRows:
    """The marts, history aggregates and raw rows of every file's sample, by (load_id, source_path,
    source_table or raw table, rowid)."""

    marts: dict[str, dict[tuple, list[dict]]]
    losers: dict[tuple, Losers]
    raw: dict[tuple[str, str], dict[tuple, list[dict]]]
    accesses: dict[tuple[str, str], Losers] = field(default_factory=dict)  # (namespace, key) -> reads


def fetch_sampled_rows(connection: psycopg.Connection, schema: str,
                       samples: list[tuple[CurrentLoad, Sample]]) -> SampledRows:
    raw_samples: dict[tuple[str, str], list[tuple[CurrentLoad, RawSample]]] = {}
    for current, sample in samples:
        for raw_sample in sample.raw:
            raw_samples.setdefault(raw_sample.raw_table, []).append((current, raw_sample))
    raw = {raw_table: raw_rows(connection, raw_table, sampled) for raw_table, sampled in raw_samples.items()}
    # A version's rows in the marts name the load its raw row is in: for a file whose current load is a
    # row-level change load, possibly an earlier part of its state (loader/load/delta.py).
    stored_in = {(current.load_id, current.source_path, raw_sample.table.name, rowid): rows[0]["_load_id"]
                 for raw_table, sampled in raw_samples.items() for current, raw_sample in sampled
                 for rowid in raw_sample.rows
                 if len(rows := raw[raw_table].get((current.load_id, current.source_path, rowid), [])) == 1}
    sampled_versions = [(current.load_id, current.source_path, table, version.rowid)
                        for current, sample in samples for table, table_versions in sample.memory.items()
                        for version in table_versions]
    as_stored = {(stored_in.get(identity, identity[0]), *identity[1:]): identity for identity in sampled_versions}
    versions = list(as_stored)
    entries = sorted({(version.namespace, version.key) for _, sample in samples
                      for table_versions in sample.memory.values() for version in table_versions
                      if version.key is not None})
    return SampledRows(
        marts={mart: by_sampled_identity(mart_rows(connection, schema, mart, versions), as_stored)
               for mart in MART_COLUMNS},
        losers=by_sampled_identity(losers_of(connection, schema, versions), as_stored),
        raw=raw,
        accesses=accesses_of(connection, entries))


def by_sampled_identity(found: dict[tuple, object], as_stored: dict[tuple, tuple]) -> dict[tuple, object]:
    """`found`, keyed by the version's stored identity, keyed again by its identity in the sample (the file's
    current load, path, table, rowid)."""
    return {as_stored.get(identity, identity): value for identity, value in found.items()}


def compare_sample(current: CurrentLoad, sample: Sample, found: SampledRows, policy: SecretPolicy | None) -> SpotCheck:
    result = SpotCheck(checked=sample.checked, reason=sample.reason)
    for table, versions in sample.memory.items():
        result.mismatches += compare_with_marts(current, table, versions, found)
    for raw_sample in sample.raw:
        result.mismatches += compare_with_raw(current, raw_sample, found.raw[raw_sample.raw_table], policy)
    return result


def sample_rows(sqlite: sqlite3.Connection, tables: list[SourceTable], size: int,
                rng: random.Random) -> list[tuple[str, int]]:
    """`size` random (table, rowid) pairs drawn from all rows of `tables` (all of them when fewer)."""
    pool = [(table.name, rowid) for table in tables
            for (rowid,) in sqlite.execute(f"SELECT {table.rowid_column} FROM {quote(table.name)} ORDER BY 1")]
    return sorted(rng.sample(pool, min(size, len(pool))))


def group_by_table(rows: list[tuple[str, int]]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for table, rowid in rows:
        grouped.setdefault(table, []).append(rowid)
    return grouped


def read_as_loaded(sqlite: sqlite3.Connection, table: SourceTable, columns: dict[str, str | None],
                   rowids: list[int]) -> dict[int, dict[str, str | None]]:
    """{rowid: {name: value as raw holds it (see loaded_value)}} for the given rows; `columns` maps each
    name to a source column (None: NULL). `sqlite` reads TEXT as bytes."""
    rows: dict[int, dict[str, str | None]] = {}
    # Columns in groups: SQLite returns at most 2000 columns, and a table may have that many.
    for names in chunks(list(columns), COLUMNS_PER_READ):
        select = ", ".join(f"typeof({quote(columns[n])}), {as_text(columns[n])}" if columns[n] is not None
                           else "NULL, NULL" for n in names)
        for chunk in chunks(rowids, SQLITE_IN_LIST_CHUNK):
            cursor = sqlite.execute(f"SELECT {table.rowid_column}, {select} FROM {quote(table.name)} "
                                    f"WHERE {table.rowid_column} IN ({', '.join('?' * len(chunk))})", chunk)
            for row in cursor:
                rows.setdefault(row[0], {}).update(
                    {name: loaded_value(row[1 + 2 * i], row[2 + 2 * i]) for i, name in enumerate(names)})
    return rows


def as_text(column: str) -> str:
    """SQLite's own text of a value: what sqlite3_column_text (and so DuckDB's all_varchar) returns; a
    BLOB's own bytes (as the load keeps them: in a UTF-16 database, CAST would read them as UTF-16 text)."""
    return f"CASE WHEN typeof({quote(column)}) = 'blob' THEN {quote(column)} ELSE CAST({quote(column)} AS TEXT) END"


def describe(value) -> str:
    """A value as JSON text (so "42" and 42 stay apart, and NULL is null), cut when long."""
    text = json.dumps(value, cls=DecimalAsNumber, ensure_ascii=False)
    return text if len(text) <= DETAIL_MAX_CHARS else text[:DETAIL_MAX_CHARS] + "…"


class DecimalAsNumber(json.JSONEncoder):
    def default(self, value):
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        return super().default(value)


def row_count_mismatch(table: str, rowid: int, against: str, found: int) -> Mismatch:
    return Mismatch(table, rowid, against, "row", "1 row", f"{found} rows")


def raw_table_names(connection: psycopg.Connection, current: CurrentLoad) -> dict[str, tuple[str, str]]:
    rows = connection.execute(sql.SQL(
        "SELECT source_table, raw_schema, raw_table FROM {}.load_tables WHERE load_id = %s AND source_path = %s"
    ).format(sql.Identifier(LEDGER_SCHEMA)), [current.load_id, current.source_path]).fetchall()
    return {table: (schema, raw_table) for table, schema, raw_table in rows}


def compare_with_raw(current: CurrentLoad, sample: RawSample, raw: dict[tuple, list[dict]],
                     policy: SecretPolicy | None) -> list[Mismatch]:
    """Every column's SQLite text against the raw row with the same rowid: raw keeps the text untouched
    (or its bytes as Binary), except secret columns (see expected_in_raw). Columns are found under their
    raw names (consolidate.load_columns)."""
    table, source, names = sample.table, sample.rows, sample.raw_columns
    actions = {column: secret_action(policy, table.name, column) for column in table.columns}
    key = policy.key if policy is not None else None
    against = ".".join(sample.raw_table)
    mismatches = []
    for rowid in source:
        found = raw.get((current.load_id, current.source_path, rowid), [])
        if len(found) != 1:
            mismatches.append(row_count_mismatch(table.name, rowid, against, len(found)))
            continue
        for column, text in source[rowid].items():
            expected = expected_in_raw(text, actions[column], key)
            if not raw_matches(expected, found[0][names[column]]):
                mismatches.append(Mismatch(table.name, rowid, against, column, describe_raw(expected),
                                           describe(found[0][names[column]])))
    return mismatches


def recorded_raw_columns(connection: psycopg.Connection, current: CurrentLoad, table: SourceTable) -> dict[str, str]:
    """Source column -> raw column for the table in the file's current load, as the ledger recorded it (the
    same name when the ledger predates consolidate.load_columns or does not list the column)."""
    names = {column: column for column in table.columns}
    if ledger.relation_exists(connection, LEDGER_SCHEMA, "load_columns"):
        names.update(connection.execute(sql.SQL(
            "SELECT source_column, raw_column FROM {} WHERE load_id = %s AND source_path = %s AND source_table = %s"
        ).format(sql.Identifier(LEDGER_SCHEMA, "load_columns")),
            [current.load_id, current.source_path, table.name]).fetchall())
    return names


def describe_raw(expected: str | re.Pattern | None) -> str:
    if expected is HMAC_SHAPE:
        return "hmac-sha256:<64 hex digits>"
    if isinstance(expected, re.Pattern):
        return "the scrubbed JSON (hashes by shape): " + describe(expected.pattern)
    return describe(expected)


def raw_rows(connection: psycopg.Connection, raw_table: tuple[str, str],
             sampled: list[tuple[CurrentLoad, RawSample]]) -> dict[tuple, list[dict]]:
    """{(load_id, source_path, rowid): raw rows} of the sampled rows of every file loaded into `raw_table`."""
    columns = sorted({sample.raw_columns[column] for _, sample in sampled for column in sample.table.columns})
    files = sorted({(current.load_id, current.source_path) for current, _ in sampled})
    # a file's current rows may be in several loads (a row-level change load's parts, loader/load/delta.py)
    parts = connection.execute(sql.SQL(
        "SELECT part_load_id, source_path, load_id FROM {}.current_load_parts "
        "WHERE (load_id, source_path) IN (SELECT * FROM unnest(%s::text[], %s::text[]))").format(
        sql.Identifier(LEDGER_SCHEMA)), arrays(files, 2)).fetchall()
    current_of = {(part, path): load_id for part, path, load_id in parts}
    parts_of: dict[tuple[str, str], list[str]] = {}
    for part, path, load_id in parts:
        parts_of.setdefault((load_id, path), []).append(part)
    keys = [(part, current.source_path, rowid) for current, sample in sampled for rowid in sample.rows
            for part in parts_of.get((current.load_id, current.source_path), [current.load_id])]
    query = sql.SQL("SELECT r._load_id, r._source_path, r._source_rowid, {} FROM {} AS r "
                    "WHERE (r._load_id, r._source_path, r._source_rowid) IN "
                    "(SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[])) AND {}").format(
        sql.SQL(", ").join(sql.SQL("r.") + sql.Identifier(c) for c in columns), sql.Identifier(*raw_table),
        not_retired("r", *raw_table))
    with connection.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(query, arrays(keys, 3)).fetchall()
    found: dict[tuple, list[dict]] = {}
    for row in rows:
        part, path = row["_load_id"], row.pop("_source_path")
        found.setdefault((current_of.get((part, path), part), path, row.pop("_source_rowid")), []).append(row)
    return found


def read_memory_versions(sqlite: sqlite3.Connection, layout: MemoryLayout, table: SourceTable,
                         rowids: list[int]) -> list[MemoryVersion]:
    columns = {name: layout.columns[name] if layout.columns.get(name) in table.columns else None
               for name in MEMORY_FIELDS}
    rows = read_as_loaded(sqlite, table, columns, rowids)
    return [memory_version(rowid, rows[rowid], layout) for rowid in rowids]


def epoch(column: str) -> str:
    return f"extract(epoch FROM {column}) AS {column}"


# The columns each mart is compared on (JSON columns as text, timestamps as exact epoch seconds), and the
# expected values of a source row represented there.
MART_COLUMNS = {
    "unified_memory": (["key", "namespace", "value::text AS value", "data_type", epoch("created_at"),
                        epoch("updated_at"), epoch("accessed_at"), epoch("expires_at"), "access_count", "ttl",
                        "version_count", "flags"], expected_unified_memory),
    "performance_metrics": (["key", "namespace", "metric_data::text AS metric_data", "metric_name",
                             "metric_value", 'extract(epoch FROM "timestamp") AS "timestamp"', "flags"],
                            expected_performance_metrics),
    "unified_memory_history": (["key", "namespace", "value::text AS value", "data_type", "raw_value",
                                epoch("created_at"), epoch("updated_at"), epoch("accessed_at"),
                                epoch("expires_at"), "access_count", "ttl", "flags"], expected_history),
}
JSON_COLUMNS = ("value", "metric_data")


def compare_with_marts(current: CurrentLoad, table: str, versions: list[MemoryVersion],
                       found: SampledRows) -> list[Mismatch]:
    mismatches = []
    for version in versions:
        identity = (current.load_id, current.source_path, table, version.rowid)
        rows = [(mart, row) for mart, by_identity in found.marts.items() for row in by_identity.get(identity, [])]
        if len(rows) != 1:
            mismatches.append(row_count_mismatch(table, version.rowid, "marts", len(rows)))
            continue
        mart, row = rows[0]
        row = {**row, "json_too_deep": f"json_too_deep:{version.value_column}" in (row["flags"] or [])}
        expected = MART_COLUMNS[mart][1](version, with_reads(found.losers.get(identity, Losers()),
                                                             found.accesses.get((version.namespace, version.key))))
        mismatches += [Mismatch(table, version.rowid, mart, name, shown(name, value), shown(name, row[name]))
                       for name, value in expected.items() if not same(value, row[name])]
    return mismatches


# The sampled versions (load_id, source_path, source_table, source_rowid), passed as four arrays (see arrays).
SAMPLED_VERSIONS = "(SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[]))"


def arrays(keys: list[tuple], width: int) -> list[list]:
    """Tuples of `width` values as `width` parallel lists, for unnest()."""
    return [list(column) for column in zip(*keys)] or [[] for _ in range(width)]


def mart_rows(connection: psycopg.Connection, schema: str, mart: str,
              versions: list[tuple[str, str, str, int]]) -> dict[tuple, list[dict]]:
    columns = sql.SQL(", ").join(sql.SQL(column) for column in MART_COLUMNS[mart][0])
    query = sql.SQL("SELECT load_id, source_path, source_table, source_rowid, {} FROM {} "
                    "WHERE (load_id, source_path, source_table, source_rowid) IN " + SAMPLED_VERSIONS).format(
        columns, sql.Identifier(schema, mart))
    with connection.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(query, arrays(versions, 4)).fetchall()
    found: dict[tuple, list[dict]] = {}
    for row in rows:
        for name in JSON_COLUMNS:
            if row.get(name) is not None:
                # A document nested too deep to decode is compared as its text (its data_type and flag
                # then tell it apart from the text staging keeps).
                row[name] = row[name] if too_deep(row[name]) else parse_json(row[name])
        identity = (row.pop("load_id"), row.pop("source_path"), row.pop("source_table"), row.pop("source_rowid"))
        found.setdefault(identity, []).append(row)
    return found


def losers_of(connection: psycopg.Connection, schema: str,
              versions: list[tuple[str, str, str, int]]) -> dict[tuple, Losers]:
    rows = connection.execute(sql.SQL(
        "SELECT winner_load_id, winner_source_path, winner_source_table, winner_source_rowid, count(*), "
        "min(extract(epoch FROM created_at)), max(extract(epoch FROM accessed_at)), max(access_count) FROM {} "
        "WHERE (winner_load_id, winner_source_path, winner_source_table, winner_source_rowid) IN "
        + SAMPLED_VERSIONS + " GROUP BY 1, 2, 3, 4").format(sql.Identifier(schema, "unified_memory_history")),
        arrays(versions, 4)).fetchall()
    return {tuple(row[:4]): Losers(*row[4:]) for row in rows}


def accesses_of(connection: psycopg.Connection, entries: list[tuple[str, str]]) -> dict[tuple[str, str], Losers]:
    """Reads of the sampled entries through the client (raw_postgres.memory_accesses): they count in an
    entry's accessed_at (latest) and access_count (largest) like its superseded versions do."""
    accesses = sql.Identifier(WRITE_LOG_SCHEMA, "memory_accesses")
    if not ledger.relation_exists(connection, WRITE_LOG_SCHEMA, "memory_accesses"):
        return {}
    rows = connection.execute(sql.SQL(
        "SELECT namespace, key, extract(epoch FROM accessed_at), access_count FROM {} "
        "WHERE (namespace, key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))").format(accesses),
        arrays(entries, 2)).fetchall()
    return {(namespace, key): Losers(accessed_at=at, access_count=count) for namespace, key, at, count in rows}


def with_reads(losers: Losers, reads: Losers | None) -> Losers:
    if reads is None:
        return losers
    return Losers(count=losers.count, created_at=losers.created_at,
                  accessed_at=sql_max(losers.accessed_at, reads.accessed_at),
                  access_count=sql_max(losers.access_count, reads.access_count))


def shown(name: str, value) -> str:
    """A marts value as JSON text for a person; timestamps (epoch seconds here) as ISO 8601 strings."""
    if name in TIMESTAMP_FIELDS and isinstance(value, Decimal):
        try:
            value = (UNIX_EPOCH + timedelta(microseconds=int(value * 1_000_000))).isoformat()
        except OverflowError:
            pass
    return describe(value)
