"""Validation report (plan phase 3): re-check every current source file against what PostgreSQL holds.

For each file of `consolidate.current_loads`:

- counts: rows in SQLite (the ledger's, per table) against rows counted in raw now, and the file's
  memory rows in raw against kept + superseded + moved (the `reconciliation` mart);
- flagged: current memory versions whose `flags` (set in dbt staging, see
  dbt_project/macros/memory_flags.sql) name a problem: text in an INTEGER column, an unparsable or
  missing timestamp, a unit the magnitude rule corrected, JSON jsonb rejects, a bad `__compressed__`
  payload, a value stored as `\\x` hex bytes... The row is loaded all the same; this counts it;
- checksums: the file on disk now (main file and `-wal`) against the ledger's checksums of its current
  load, and, given a backup folder, the ledger's checksums against the backup manifest's for that path
  (does the backup hold exactly the bytes that were loaded?);
- a spot check of N random rows, read with Python's sqlite3 from a private copy (never DuckDB, never
  dbt): memory rows are compared field by field with the marts row that represents them
  (unified_memory, performance_metrics or unified_memory_history) after applying the documented rules
  independently, and with their raw row; rows of every other table are compared column by column with
  their raw row. Raw holds `sqlite3_column_text` of every value, which is what SQLite's
  `CAST(x AS TEXT)` returns, so the comparison is exact for every storage class (REAL and BLOB too).
  Secret columns (loader/secret_policy.py) are expected as the policy stores them: NULL for
  `exclude`, and for `hash` the exact HMAC when the policy (with its key) is given, else only the
  shape `hmac-sha256:<64 hex>`. The ledger does not record the policy a load used.

A file passes when its counts reconcile, it is unchanged on disk, no spot-checked field differs and
(given a backup) the backup holds the loaded bytes. Results are stored in `consolidate.validation_runs`
and `consolidate.validation_files`.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from loader.backup.backup import BACKED_UP, COPY, BackupEntry, read_manifest
from loader.database import Target
from loader.sources.sqlite_reader import SourceTable, list_tables, quote
from loader.ledger import now
from loader.load.raw_contract import LEDGER_SCHEMA
from loader.load.secret_policy import DEFAULT_POLICY, SecretPolicy, load_policy
from loader.sources.snapshot import SourceKeptChanging, private_copy

UNCHANGED, CHANGED, MISSING, UNREADABLE = "unchanged", "changed", "missing", "unreadable"
BACKUP_MATCHES, BACKUP_DIFFERS, NOT_BACKED_UP = "matches", "differs", "not backed up"

RESULTS_DDL = f"""
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.validation_runs (
    run_id       text PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    passed       boolean NOT NULL,
    sample_size  integer NOT NULL,
    seed         bigint NOT NULL,
    marts_schema text NOT NULL,
    backup_dir   text
);

CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.validation_files (
    run_id                 text NOT NULL REFERENCES {LEDGER_SCHEMA}.validation_runs (run_id),
    source_path            text NOT NULL,
    load_id                text NOT NULL,
    rows_in_sqlite         bigint,
    rows_in_raw            bigint NOT NULL,
    kept                   bigint,
    superseded             bigint,
    moved                  bigint,
    flagged                bigint,
    checksum_status        text NOT NULL
        CHECK (checksum_status IN ('{UNCHANGED}', '{CHANGED}', '{MISSING}', '{UNREADABLE}')),
    backup_checksum_status text
        CHECK (backup_checksum_status IN ('{BACKUP_MATCHES}', '{BACKUP_DIFFERS}', '{NOT_BACKED_UP}')),
    spot_checked           integer NOT NULL,
    spot_mismatches        integer NOT NULL,
    mismatch_details       jsonb NOT NULL,
    tables                 jsonb NOT NULL,
    problems               text[] NOT NULL,
    passed                 boolean NOT NULL,
    PRIMARY KEY (run_id, source_path)
);
"""

# Relations validate reads besides the ledger: the marts (in Target.schema) and the ranked versions.
MARTS = ("unified_memory", "performance_metrics", "unified_memory_history", "reconciliation")
RANKED_VERSIONS = ("intermediate", "int_memory_ranked")

# A current memory version is flagged when staging recorded a problem of its source row (a non-empty
# `flags` array in int_memory_ranked and the marts; the rules live in dbt_project/macros/memory_flags.sql).
FLAGGED = "cardinality(flags) > 0"

DETAIL_MAX_CHARS = 200
SQLITE_IN_LIST_CHUNK = 500


class ValidationError(Exception):
    """Validation cannot run at all (nothing loaded, marts not built, not a backup folder)."""


# ------------------------------------------------------------------------------------------ report

@dataclass
class Mismatch:
    """One spot-checked field that differs. `against` is the mart or raw table compared with."""

    source_table: str
    source_rowid: int
    against: str
    field: str
    expected: str
    actual: str


@dataclass
class TableCount:
    source_table: str
    raw_schema: str
    raw_table: str
    rows_in_sqlite: int
    rows_in_raw: int


@dataclass
class FileValidation:
    source_path: str
    source_db: str
    kind: str
    load_id: str
    rows_in_sqlite: int | None
    tables: list[TableCount]
    kept: int | None
    superseded: int | None
    moved: int | None
    flagged: int | None
    checksum_status: str
    backup_checksum_status: str | None
    spot_checked: int
    mismatches: list[Mismatch]
    problems: list[str]

    @property
    def rows_in_raw(self) -> int:
        return sum(table.rows_in_raw for table in self.tables)

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(rows_in_raw=self.rows_in_raw, spot_mismatches=len(self.mismatches), passed=self.passed)
        return data


@dataclass
class ValidationReport:
    run_id: str
    started_at: datetime
    finished_at: datetime
    sample_size: int
    seed: int
    marts_schema: str
    backup_dir: str | None
    files: list[FileValidation]

    @property
    def passed(self) -> bool:
        return all(file.passed for file in self.files)

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat(), "passed": self.passed,
                "sample_size": self.sample_size, "seed": self.seed, "marts_schema": self.marts_schema,
                "backup_dir": self.backup_dir, "files": [file.to_json() for file in self.files]}


# -------------------------------------------------------------------------------------- validating

@dataclass(frozen=True)
class CurrentFile:
    """A source file and its current load, from the ledger."""

    source_path: str
    source_db: str
    kind: str
    load_id: str
    sha256: str
    wal_sha256: str | None
    rows_in_sqlite: int | None

    @property
    def identity(self) -> tuple[str, str | None]:
        return (self.sha256, self.wal_sha256)


@dataclass(frozen=True)
class Options:
    schema: str
    sample_size: int
    seed: int
    backup: dict[str, BackupEntry] | None
    secret_policy: SecretPolicy | None


def validate(target: Target, *, sample_size: int = 20, backup_dir: Path | None = None,
             seed: int | None = None, secret_policy: SecretPolicy | None = None) -> ValidationReport:
    """Validate every current source file (see the module docstring), store the results in
    consolidate.validation_runs / validation_files and return them. `seed` makes the spot check's
    choice of rows repeatable; without one a seed is drawn and recorded. `secret_policy`: the one the
    loads used (see `secret_policy_in_use`); without it the default policy's hashed columns are
    checked by shape only. Raises ValidationError when nothing can be validated."""
    if sample_size < 0:
        raise ValueError("sample_size must be 0 or more")
    started_at = now()
    options = Options(schema=target.schema, sample_size=sample_size,
                      seed=seed if seed is not None else secrets.randbelow(2**31),
                      backup=backup_entries(backup_dir) if backup_dir is not None else None,
                      secret_policy=secret_policy)
    with target.connect() as connection:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot for all reads
        require_relations(connection, target.schema)
        currents = current_files(connection)
        flagged = flagged_by_file(connection)
        raw_counts = raw_rows_by_file(connection)
        sources = [check_source(connection, current, options) for current in currents]
        found = fetch_sampled_rows(connection, options.schema,
                                   [(current, sample) for current, (_, sample) in zip(currents, sources)])
        files = [validate_file(connection, current, options, flagged, raw_counts, status,
                               compare_sample(current, sample, found, options.secret_policy))
                 for current, (status, sample) in zip(currents, sources)]
        connection.commit()
        report = ValidationReport(run_id=new_run_id(started_at), started_at=started_at, finished_at=now(),
                                  sample_size=sample_size, seed=options.seed, marts_schema=target.schema,
                                  backup_dir=str(backup_dir) if backup_dir is not None else None, files=files)
        store(connection, report)
    return report


def secret_policy_in_use(home: Path, overrides: Path | None = None) -> SecretPolicy | None:
    """The secret policy loads under `home` used, when its key exists; None otherwise (a key is never
    created here: a new one could not reproduce any stored hash)."""
    if not (os.environ.get("CONSOLIDATE_SECRET_KEY") or (home / "secret.key").exists()):
        return None
    return load_policy(home, overrides)


def new_run_id(started_at: datetime) -> str:
    return started_at.strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


def require_relations(connection: psycopg.Connection, schema: str) -> None:
    needed = [(LEDGER_SCHEMA, "current_loads"), RANKED_VERSIONS, *((schema, mart) for mart in MARTS)]
    missing = [f"{namespace}.{name}" for namespace, name in needed if connection.execute(
        "SELECT to_regclass(%s) IS NULL", [sql.Identifier(namespace, name).as_string(connection)]).fetchone()[0]]
    if missing:
        raise ValidationError(f"{', '.join(missing)} not found: load and build first (consolidate run)")


def current_files(connection: psycopg.Connection) -> list[CurrentFile]:
    rows = connection.execute(sql.SQL(
        "SELECT c.source_path, c.source_db, c.kind, c.load_id, c.source_sha256, c.wal_sha256, f.rows_in_sqlite "
        "FROM {ledger}.current_loads AS c JOIN {ledger}.load_files AS f USING (load_id, source_path) "
        "ORDER BY c.source_path").format(ledger=sql.Identifier(LEDGER_SCHEMA))).fetchall()
    return [CurrentFile(*row) for row in rows]


def validate_file(connection: psycopg.Connection, current: CurrentFile, options: Options,
                  flagged: dict[tuple[str, str], int], raw_counts: dict[tuple[str, str], dict[tuple[str, str], int]],
                  checksum_status: str, spot: SpotCheck) -> FileValidation:
    tables = table_counts(connection, current, raw_counts)
    reconciliation = reconciliation_row(connection, options.schema, current)
    backup_status = backup_checksum_status(options.backup, current)
    is_memory_file = current.kind in MEMORY_TABLES
    problems = (count_problems(current, tables, reconciliation)
                + checksum_problems(checksum_status, spot.reason)
                + backup_problems(backup_status)
                + ([f"spot check: {len(spot.mismatches)} difference(s)"] if spot.mismatches else []))
    return FileValidation(
        source_path=current.source_path, source_db=current.source_db, kind=current.kind,
        load_id=current.load_id, rows_in_sqlite=current.rows_in_sqlite, tables=tables,
        kept=reconciliation.get("kept"), superseded=reconciliation.get("superseded"),
        moved=reconciliation.get("moved"), flagged=flagged.get((current.load_id, current.source_path), 0) if is_memory_file else None,
        checksum_status=checksum_status, backup_checksum_status=backup_status, spot_checked=spot.checked,
        mismatches=spot.mismatches, problems=problems)


# ------------------------------------------------------------------------------------------ counts

# The raw memory tables the marts are built from (dbt macro memory_raw_tables), by kind.
MEMORY_TABLES = {
    "claude-flow-v2": {("raw_claude_flow_v2", "memory_entries")},
    "claude-flow-v3": {("raw_claude_flow_v3", "memory_entries")},
    "extended-memory": {("raw_extended_memory", "memory_store")},
}


def table_counts(connection: psycopg.Connection, current: CurrentFile,
                 raw_counts: dict[tuple[str, str], dict[tuple[str, str], int]]) -> list[TableCount]:
    ledger_rows = connection.execute(sql.SQL(
        "SELECT source_table, raw_schema, raw_table, rows_in_sqlite FROM {}.load_tables "
        "WHERE load_id = %s AND source_path = %s ORDER BY source_table").format(sql.Identifier(LEDGER_SCHEMA)),
        [current.load_id, current.source_path]).fetchall()
    return [TableCount(table, schema, raw_table, rows,
                       raw_counts.get((schema, raw_table), {}).get((current.load_id, current.source_path), 0))
            for table, schema, raw_table, rows in ledger_rows]


def raw_rows_by_file(connection: psycopg.Connection) -> dict[tuple[str, str], dict[tuple[str, str], int]]:
    """{(raw schema, raw table): {(load_id, source_path): rows now in raw}} for every raw table of a current
    load: one pass over each table for all files (a missing table counts 0 rows)."""
    tables = connection.execute(sql.SQL(
        "SELECT DISTINCT t.raw_schema, t.raw_table FROM {ledger}.load_tables AS t "
        "JOIN {ledger}.current_loads AS c USING (load_id, source_path) ORDER BY 1, 2").format(
        ledger=sql.Identifier(LEDGER_SCHEMA))).fetchall()
    counts = {}
    for schema, table in tables:
        if connection.execute("SELECT to_regclass(%s) IS NOT NULL",
                              [sql.Identifier(schema, table).as_string(connection)]).fetchone()[0]:
            rows = connection.execute(sql.SQL(
                "SELECT _load_id, _source_path, count(*) FROM {} GROUP BY 1, 2").format(
                sql.Identifier(schema, table))).fetchall()
            counts[(schema, table)] = {(load_id, path): count for load_id, path, count in rows}
    return counts


def reconciliation_row(connection: psycopg.Connection, schema: str, current: CurrentFile) -> dict:
    """The file's row of the reconciliation mart ({} when it has none: no memory tables, or not built)."""
    with connection.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(sql.SQL(
            "SELECT load_id, kept, superseded, moved FROM {}.reconciliation WHERE source_path = %s").format(
            sql.Identifier(schema)), [current.source_path]).fetchone()
    return row or {}


def flagged_by_file(connection: psycopg.Connection) -> dict[tuple[str, str], int]:
    """Flagged current versions per (load_id, source_path), in one pass over the ranked versions."""
    rows = connection.execute(sql.SQL(
        "SELECT load_id, source_path, count(*) FROM {} WHERE {} GROUP BY 1, 2").format(
        sql.Identifier(*RANKED_VERSIONS), sql.SQL(FLAGGED))).fetchall()
    return {(load_id, source_path): count for load_id, source_path, count in rows}


def count_problems(current: CurrentFile, tables: list[TableCount], reconciliation: dict) -> list[str]:
    problems = [f"table {t.source_table}: {t.rows_in_sqlite} rows in SQLite (ledger), {t.rows_in_raw} in "
                f"{t.raw_schema}.{t.raw_table}" for t in tables if t.rows_in_sqlite != t.rows_in_raw]
    ledger_total = sum(t.rows_in_sqlite for t in tables)
    if current.rows_in_sqlite != ledger_total:
        problems.append(f"the ledger's file total ({current.rows_in_sqlite}) differs from its tables' ({ledger_total})")
    if current.kind not in MEMORY_TABLES:
        return problems
    if reconciliation.get("load_id") != current.load_id:
        problems.append(f"the marts were not built from the current load {current.load_id}: run consolidate build")
        return problems
    memory_in_raw = sum(t.rows_in_raw for t in tables if (t.raw_schema, t.raw_table) in MEMORY_TABLES[current.kind])
    represented = reconciliation["kept"] + reconciliation["superseded"] + reconciliation["moved"]
    if memory_in_raw != represented:
        problems.append(f"{memory_in_raw} memory rows in raw, but kept + superseded + moved = {represented}")
    return problems


# --------------------------------------------------------------------------------------- checksums

def backup_entries(backup_dir: Path) -> dict[str, BackupEntry]:
    try:
        manifest = read_manifest(backup_dir)
    except ValueError as error:
        raise ValidationError(f"{backup_dir}: {error}") from error
    return {str(entry.path): entry for entry in manifest.files}


def backup_checksum_status(entries: dict[str, BackupEntry] | None, current: CurrentFile) -> str | None:
    """Whether the backup holds the bytes of the current load (a `copy` entry: through its original)."""
    if entries is None:
        return None
    entry = entries.get(current.source_path)
    if entry is not None and entry.status == COPY and entry.copy_of is not None:
        entry = entries.get(str(entry.copy_of))
    if entry is None or entry.status != BACKED_UP:
        return NOT_BACKED_UP
    return BACKUP_MATCHES if (entry.sha256, entry.wal_sha256) == current.identity else BACKUP_DIFFERS


def checksum_problems(status: str, reason: str | None) -> list[str]:
    return {
        UNCHANGED: [],
        CHANGED: ["changed on disk since its load (main file or -wal): not validated; load it again"],
        MISSING: ["no longer exists on disk: not validated"],
        UNREADABLE: [f"could not be read: {reason}"],
    }[status]


def backup_problems(status: str | None) -> list[str]:
    return {
        None: [],
        BACKUP_MATCHES: [],
        BACKUP_DIFFERS: ["the backup holds other bytes than the current load"],
        NOT_BACKED_UP: ["not in the backup"],
    }[status]


# -------------------------------------------------------------------------------------- spot check

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


def check_source(connection: psycopg.Connection, current: CurrentFile, options: Options) -> tuple[str, Sample]:
    """The file's checksum status, and the spot check's sample of a private copy when the file is
    unchanged. The copy's checksums are those of the bytes on disk now (taken while nothing wrote)."""
    try:
        with private_copy(Path(current.source_path)) as snapshot:
            if (snapshot.sha256, snapshot.wal_sha256) != current.identity:
                return CHANGED, Sample()
            return UNCHANGED, sample_file(connection, snapshot.path, current, options)
    except FileNotFoundError:
        return MISSING, Sample()
    except (SourceKeptChanging, OSError) as error:
        return UNREADABLE, Sample(reason=f"{type(error).__name__}: {error}")


def sample_file(connection: psycopg.Connection, database: Path, current: CurrentFile, options: Options) -> Sample:
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
                           raw_column_names(connection, current, tables[name]))
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
                       samples: list[tuple[CurrentFile, Sample]]) -> SampledRows:
    versions = [(current.load_id, current.source_path, table, version.rowid)
                for current, sample in samples for table, table_versions in sample.memory.items()
                for version in table_versions]
    raw_samples: dict[tuple[str, str], list[tuple[CurrentFile, RawSample]]] = {}
    for current, sample in samples:
        for raw_sample in sample.raw:
            raw_samples.setdefault(raw_sample.raw_table, []).append((current, raw_sample))
    entries = sorted({(version.namespace, version.key) for _, sample in samples
                      for table_versions in sample.memory.values() for version in table_versions
                      if version.key is not None})
    return SampledRows(
        marts={mart: mart_rows(connection, schema, mart, versions) for mart in MART_COLUMNS},
        losers=losers_of(connection, schema, versions),
        raw={raw_table: raw_rows(connection, raw_table, sampled) for raw_table, sampled in raw_samples.items()},
        accesses=accesses_of(connection, entries))


def compare_sample(current: CurrentFile, sample: Sample, found: SampledRows, policy: SecretPolicy | None) -> SpotCheck:
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


def chunks(items: list, size: int = SQLITE_IN_LIST_CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def read_as_loaded(sqlite: sqlite3.Connection, table: SourceTable, columns: dict[str, str | None],
                   rowids: list[int]) -> dict[int, dict[str, str | None]]:
    """{rowid: {name: value as raw holds it (see loaded_value)}} for the given rows; `columns` maps each
    name to a source column (None: NULL). `sqlite` reads TEXT as bytes."""
    select = ", ".join(f"typeof({quote(c)}), {as_text(c)}" if c is not None else "NULL, NULL"
                       for c in columns.values())
    rows = {}
    for chunk in chunks(rowids):
        cursor = sqlite.execute(f"SELECT {table.rowid_column}, {select} FROM {quote(table.name)} "
                                f"WHERE {table.rowid_column} IN ({', '.join('?' * len(chunk))})", chunk)
        rows.update({row[0]: {name: loaded_value(row[1 + 2 * i], row[2 + 2 * i]) for i, name in enumerate(columns)}
                     for row in cursor})
    return rows


class Binary(str):
    """A value raw holds as `\\x` + lowercase hex of its exact bytes (loader/raw_contract.py)."""

    @property
    def original(self) -> bytes:
        return bytes.fromhex(self[2:])


def loaded_value(storage_class: bytes | None, text: bytes | None) -> str | None:
    """A SQLite value as raw holds it: its text (SQLite's text of a number), or Binary for a BLOB,
    TEXT that is not valid UTF-8 or TEXT containing NUL."""
    if text is None:
        return None
    if storage_class != b"blob" and b"\x00" not in text:
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return Binary("\\x" + text.hex())


def as_text(column: str) -> str:
    """SQLite's own text of a value: what sqlite3_column_text (and so DuckDB's all_varchar) returns."""
    return f"CAST({quote(column)} AS TEXT)"


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


# ---------------------------------------------------------------------------------- against raw

def raw_table_names(connection: psycopg.Connection, current: CurrentFile) -> dict[str, tuple[str, str]]:
    rows = connection.execute(sql.SQL(
        "SELECT source_table, raw_schema, raw_table FROM {}.load_tables WHERE load_id = %s AND source_path = %s"
    ).format(sql.Identifier(LEDGER_SCHEMA)), [current.load_id, current.source_path]).fetchall()
    return {table: (schema, raw_table) for table, schema, raw_table in rows}


def compare_with_raw(current: CurrentFile, sample: RawSample, raw: dict[tuple, list[dict]],
                     policy: SecretPolicy | None) -> list[Mismatch]:
    """Every column's SQLite text against the raw row with the same rowid: raw keeps the text untouched
    (or its bytes as Binary), except secret columns (see expected_in_raw). Columns are found under their
    raw names (consolidate.load_columns)."""
    table, source, names = sample.table, sample.rows, sample.raw_columns
    actions = {column: secret_action(policy, current.kind, table.name, column) for column in table.columns}
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


HMAC_SHAPE = re.compile("hmac-sha256:[0-9a-f]{64}")


def raw_column_names(connection: psycopg.Connection, current: CurrentFile, table: SourceTable) -> dict[str, str]:
    """Source column -> raw column for the table in the file's current load (the same name when the
    ledger predates consolidate.load_columns or does not list the column)."""
    names = {column: column for column in table.columns}
    if connection.execute("SELECT to_regclass(%s) IS NOT NULL",
                          [sql.Identifier(LEDGER_SCHEMA, "load_columns").as_string(connection)]).fetchone()[0]:
        names.update(connection.execute(sql.SQL(
            "SELECT source_column, raw_column FROM {} WHERE load_id = %s AND source_path = %s AND source_table = %s"
        ).format(sql.Identifier(LEDGER_SCHEMA, "load_columns")),
            [current.load_id, current.source_path, table.name]).fetchall())
    return names


def secret_action(policy: SecretPolicy | None, kind: str, table: str, column: str) -> str:
    if policy is not None:
        return policy.action(kind, table, column)
    return DEFAULT_POLICY.get(f"{kind}.{table}.{column}", "keep")


def expected_in_raw(text: str | None, action: str, key: bytes | None) -> str | re.Pattern | None:
    """What raw holds for a source value under its secret-policy action: the text (`keep`), NULL
    (`exclude`), or HMAC-SHA256 of its UTF-8 text (`hash`; only its shape when the key is unknown)."""
    if text is None or action == "exclude":
        return None
    if action == "keep":
        return text
    if key is None:
        return HMAC_SHAPE
    original = text.original if isinstance(text, Binary) else text.encode()
    return "hmac-sha256:" + hmac.new(key, original, hashlib.sha256).hexdigest()


def raw_matches(expected: str | re.Pattern | None, actual: str | None) -> bool:
    if isinstance(expected, re.Pattern):
        return actual is not None and expected.fullmatch(actual) is not None
    return actual == expected


def describe_raw(expected: str | re.Pattern | None) -> str:
    return "hmac-sha256:<64 hex digits>" if isinstance(expected, re.Pattern) else describe(expected)


def raw_rows(connection: psycopg.Connection, raw_table: tuple[str, str],
             sampled: list[tuple[CurrentFile, RawSample]]) -> dict[tuple, list[dict]]:
    """{(load_id, source_path, rowid): raw rows} of the sampled rows of every file loaded into `raw_table`."""
    columns = sorted({sample.raw_columns[column] for _, sample in sampled for column in sample.table.columns})
    keys = [(current.load_id, current.source_path, rowid) for current, sample in sampled for rowid in sample.rows]
    query = sql.SQL("SELECT _load_id, _source_path, _source_rowid, {} FROM {} "
                    "WHERE (_load_id, _source_path, _source_rowid) IN "
                    "(SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[]))").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(*raw_table))
    with connection.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(query, arrays(keys, 3)).fetchall()
    found: dict[tuple, list[dict]] = {}
    for row in rows:
        found.setdefault((row.pop("_load_id"), row.pop("_source_path"), row.pop("_source_rowid")), []).append(row)
    return found


# ------------------------------------------------------------------- the documented rules, in Python

SPACE_CHARACTERS = " \t\n\r\f\v"  # [[:space:]] in PostgreSQL regular expressions
SPACE = f"[{SPACE_CHARACTERS}]"
NUMERIC_TEXT = re.compile(rf"{SPACE}*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{{1,3}})?{SPACE}*")
INTEGER_TEXT = re.compile(rf"{SPACE}*[+-]?[0-9]{{1,10}}(\.0*)?{SPACE}*")
TIMESTAMP_TEXT = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>0[1-9]|1[0-2])-(?P<day>0[1-9]|[12][0-9]|3[01])[ T]"
    r"(?P<hour>[01][0-9]|2[0-3]):(?P<minute>[0-5][0-9]):(?P<second>[0-5][0-9])(?P<fraction>\.[0-9]{1,9})?"
    r"(?P<zone>Z|(?P<sign>[+-])(?P<zone_hours>[01][0-9]|2[0-3]):?(?P<zone_minutes>[0-5][0-9])?)?")
MILLISECONDS_FROM = Decimal("1e11")  # |epoch| >= 1e11 is milliseconds (1e11 s would be the year 5138)
UNUSABLE_FROM = Decimal("1e14")
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
POSTGRES_EPOCH = 946684800  # 2000-01-01 in Unix seconds: PostgreSQL rounds relative to it
INT4_MIN, INT4_MAX = -2**31, 2**31 - 1
NUMERIC_MAX_WEIGHT, NUMERIC_MAX_SCALE = 131071, 16383


def try_numeric(text: str | None) -> Decimal | None:
    if text is None or len(text.encode()) > 1000 or not NUMERIC_TEXT.fullmatch(text):
        return None
    return Decimal(text.strip(SPACE_CHARACTERS))


def try_int(text: str | None) -> int | None:
    if text is None or not INTEGER_TEXT.fullmatch(text):
        return None
    number = Decimal(text.strip(SPACE_CHARACTERS))
    return int(number) if INT4_MIN <= number <= INT4_MAX else None


def seconds_from_micros(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-6)


def epoch_timestamp(text: str | None) -> Decimal | None:
    """Epoch seconds or, by magnitude, milliseconds -> epoch seconds as PostgreSQL's to_timestamp keeps
    them (double precision arithmetic, rounded to the microsecond)."""
    number = try_numeric(text)
    if number is None or abs(number) >= UNUSABLE_FROM:
        return None
    seconds = float(number) / 1000 if abs(number) >= MILLISECONDS_FROM else float(number)
    return seconds_from_micros(round((seconds - POSTGRES_EPOCH) * 1_000_000) + POSTGRES_EPOCH * 1_000_000)


def text_timestamp(text: str | None) -> Decimal | None:
    """`YYYY-MM-DD[ T]HH:MM:SS[.fff…][Z|±HH[:MM]]` (naive = UTC) -> epoch seconds; anything else None."""
    match = TIMESTAMP_TEXT.fullmatch(text) if text is not None else None
    if match is None or match["year"] == "0000":
        return None
    year, month, day = int(match["year"]), int(match["month"]), int(match["day"])
    if day > calendar.monthrange(year, month)[1]:
        return None
    whole_seconds = calendar.timegm((year, month, day, int(match["hour"]), int(match["minute"]),
                                     int(match["second"])))
    fraction = round(float(match["fraction"]) * 1_000_000) if match["fraction"] else 0
    return seconds_from_micros((whole_seconds - zone_offset_seconds(match)) * 1_000_000 + fraction)


def zone_offset_seconds(match: re.Match) -> int:
    if match["sign"] is None:
        return 0
    offset = int(match["zone_hours"]) * 3600 + int(match["zone_minutes"] or 0) * 60
    return offset if match["sign"] == "+" else -offset


def reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str):
    """JSON text -> Python, as PostgreSQL's jsonb accepts it (numbers as Decimal); ValueError otherwise."""
    try:
        value = json.loads(text, parse_float=Decimal, parse_int=Decimal, parse_constant=reject_constant)
    except RecursionError as error:
        raise ValueError("nested too deeply") from error
    if not jsonb_accepts(value):
        raise ValueError("not representable as jsonb")
    return value


def jsonb_accepts(value) -> bool:
    """jsonb rejects \\u0000, lone UTF-16 surrogates and numbers beyond numeric's range."""
    if isinstance(value, str):
        return "\x00" not in value and not any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, Decimal):
        return value.adjusted() <= NUMERIC_MAX_WEIGHT and -value.as_tuple().exponent <= NUMERIC_MAX_SCALE
    if isinstance(value, list):
        return all(jsonb_accepts(item) for item in value)
    if isinstance(value, dict):
        return all(jsonb_accepts(key) and jsonb_accepts(item) for key, item in value.items())
    return True


def decode_compressed(text: str):
    """`__compressed__` + base64 of UTF-8 JSON -> that JSON; ValueError otherwise."""
    payload = re.sub("[ \t\n\r]", "", text[len("__compressed__"):])  # PostgreSQL's decode skips these
    try:
        decoded = base64.b64decode(payload, validate=True).decode("utf-8")
    except ValueError as error:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise ValueError("not a compressed JSON document") from error
    return parse_json(decoded)


def normalized_value(raw: str | None, storage_type: str | None) -> tuple[object, str]:
    """(value, data_type) by the documented rule (dbt_project/macros/memory_values.sql): NULL -> JSON
    null; pickle -> the base64 text; __compressed__ + base64 JSON -> decoded; JSON text -> that JSON;
    JSON Python accepts but jsonb rejects (NaN, Infinity, \\u0000, ...) -> the text, unsupported_json;
    anything else -> the text."""
    if raw is None:
        return None, "json"
    if isinstance(raw, Binary):
        return str(raw), "binary"
    if storage_type == "pickle":
        return raw, "pickle"
    if raw.startswith("__compressed__"):
        try:
            return decode_compressed(raw), "json"
        except ValueError:
            return raw, "text"
    try:
        return parse_json(raw), "json"
    except ValueError:
        return raw, "unsupported_json" if python_accepts_json(raw) else "text"


def python_accepts_json(text: str) -> bool:
    """Whether Python's json module parses the text (it accepts NaN, Infinity, \\u0000, lone surrogates)."""
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def same(expected, actual) -> bool:
    """Strict JSON-like equality: numbers by value, but never a boolean for a number or a string for either."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, (int, Decimal)) and isinstance(actual, (int, Decimal)):
        return expected == actual
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(map(same, expected, actual))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(same(expected[k], actual[k]) for k in expected)
    if isinstance(expected, str) and isinstance(actual, str):  # Binary is a str
        return expected == actual
    return type(expected) is type(actual) and expected == actual


# ----------------------------------------------------------------------------------- memory rows

@dataclass(frozen=True)
class MemoryLayout:
    """Where a memory kind keeps the fields of the shared memory shape, and how its times are written."""

    table: str
    columns: dict[str, str]  # field -> source column
    to_timestamp: Callable[[str | None], Decimal | None]
    default_namespace: str


MEMORY_LAYOUTS = {
    "claude-flow-v2": MemoryLayout("memory_entries", {
        "key": "key", "namespace": "namespace", "value": "value", "created_at": "created_at",
        "updated_at": "updated_at", "accessed_at": "accessed_at", "expires_at": "expires_at",
        "access_count": "access_count", "ttl": "ttl"}, epoch_timestamp, "default"),
    "claude-flow-v3": MemoryLayout("memory_entries", {
        "key": "key", "namespace": "namespace", "value": "content", "created_at": "created_at",
        "updated_at": "updated_at", "accessed_at": "last_accessed_at", "expires_at": "expires_at",
        "access_count": "access_count"}, epoch_timestamp, "default"),
    "extended-memory": MemoryLayout("memory_store", {
        "key": "key", "value": "value", "storage_type": "type", "created_at": "created_at",
        "updated_at": "updated_at", "accessed_at": "accessed_at", "access_count": "access_count"},
        text_timestamp, "extended-memory"),
}
MEMORY_FIELDS = ("key", "namespace", "value", "storage_type", "created_at", "updated_at", "accessed_at",
                 "expires_at", "access_count", "ttl")
TIMESTAMP_FIELDS = ("created_at", "updated_at", "accessed_at", "expires_at", "timestamp")


@dataclass(frozen=True)
class MemoryVersion:
    """One SQLite memory row in the shared memory shape, by the documented rules (times: epoch seconds)."""

    rowid: int
    key: str | None
    namespace: str
    value: object
    data_type: str
    raw_value: str | None
    created_at: Decimal | None
    updated_at: Decimal | None
    accessed_at: Decimal | None
    expires_at: Decimal | None
    access_count: int | None
    ttl: int | None


def read_memory_versions(sqlite: sqlite3.Connection, layout: MemoryLayout, table: SourceTable,
                         rowids: list[int]) -> list[MemoryVersion]:
    columns = {name: layout.columns[name] if layout.columns.get(name) in table.columns else None
               for name in MEMORY_FIELDS}
    rows = read_as_loaded(sqlite, table, columns, rowids)
    return [memory_version(rowid, rows[rowid], layout) for rowid in rowids]


def memory_version(rowid: int, text: dict[str, str | None], layout: MemoryLayout) -> MemoryVersion:
    value, data_type = normalized_value(text["value"], text["storage_type"])
    return MemoryVersion(
        rowid=rowid, key=text["key"], namespace=coalesce(text["namespace"], layout.default_namespace), value=value,
        data_type=data_type, raw_value=text["value"], created_at=layout.to_timestamp(text["created_at"]),
        updated_at=layout.to_timestamp(text["updated_at"]), accessed_at=layout.to_timestamp(text["accessed_at"]),
        expires_at=layout.to_timestamp(text["expires_at"]), access_count=try_int(text["access_count"]),
        ttl=try_int(text["ttl"]))


# ---------------------------------------------------------------------------------- against marts

@dataclass(frozen=True)
class Losers:
    """What a winner's superseded versions (unified_memory_history) contribute to its aggregates."""

    count: int = 0
    created_at: Decimal | None = None
    accessed_at: Decimal | None = None
    access_count: int | None = None


def sql_min(*values):
    """min() ignoring NULLs, as SQL's min aggregate."""
    present = [value for value in values if value is not None]
    return min(present) if present else None


def sql_max(*values):
    """max() ignoring NULLs, as SQL's max aggregate."""
    present = [value for value in values if value is not None]
    return max(present) if present else None


def coalesce(*values):
    """The first value that is not NULL."""
    return next((value for value in values if value is not None), None)


def expected_unified_memory(version: MemoryVersion, losers: Losers) -> dict:
    return {"key": version.key, "namespace": version.namespace, "value": version.value,
            "data_type": version.data_type, "created_at": sql_min(version.created_at, losers.created_at),
            "updated_at": version.updated_at, "accessed_at": sql_max(version.accessed_at, losers.accessed_at),
            "expires_at": version.expires_at, "access_count": sql_max(version.access_count, losers.access_count),
            "ttl": version.ttl, "version_count": 1 + losers.count}


def expected_history(version: MemoryVersion, losers: Losers) -> dict:
    return {"key": version.key, "namespace": version.namespace, "value": version.value,
            "data_type": version.data_type, "raw_value": version.raw_value, "created_at": version.created_at,
            "updated_at": version.updated_at, "accessed_at": version.accessed_at,
            "expires_at": version.expires_at, "access_count": version.access_count, "ttl": version.ttl}


def expected_performance_metrics(version: MemoryVersion, losers: Losers) -> dict:
    fields = version.value if isinstance(version.value, dict) else {}
    return {"key": version.key, "namespace": version.namespace, "metric_data": version.value,
            "metric_name": version.key.split(":", 1)[0] if version.key is not None else None,
            "metric_value": json_field_as_numeric(fields.get("duration")),
            "timestamp": coalesce(
                text_timestamp(fields["timestamp"]) if isinstance(fields.get("timestamp"), str) else None,
                version.updated_at, sql_min(version.created_at, losers.created_at))}


def json_field_as_numeric(value) -> Decimal | None:
    """consolidate.try_numeric(value ->> 'field'): a JSON number, or a string holding one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        return value
    return try_numeric(value) if isinstance(value, str) else None


def epoch(column: str) -> str:
    return f"extract(epoch FROM {column}) AS {column}"


# The columns each mart is compared on (JSON columns as text, timestamps as exact epoch seconds), and the
# expected values of a source row represented there.
MART_COLUMNS = {
    "unified_memory": (["key", "namespace", "value::text AS value", "data_type", epoch("created_at"),
                        epoch("updated_at"), epoch("accessed_at"), epoch("expires_at"), "access_count", "ttl",
                        "version_count"], expected_unified_memory),
    "performance_metrics": (["key", "namespace", "metric_data::text AS metric_data", "metric_name",
                             "metric_value", 'extract(epoch FROM "timestamp") AS "timestamp"'],
                            expected_performance_metrics),
    "unified_memory_history": (["key", "namespace", "value::text AS value", "data_type", "raw_value",
                                epoch("created_at"), epoch("updated_at"), epoch("accessed_at"),
                                epoch("expires_at"), "access_count", "ttl"], expected_history),
}
JSON_COLUMNS = ("value", "metric_data")


def compare_with_marts(current: CurrentFile, table: str, versions: list[MemoryVersion],
                       found: SampledRows) -> list[Mismatch]:
    mismatches = []
    for version in versions:
        identity = (current.load_id, current.source_path, table, version.rowid)
        rows = [(mart, row) for mart, by_identity in found.marts.items() for row in by_identity.get(identity, [])]
        if len(rows) != 1:
            mismatches.append(row_count_mismatch(table, version.rowid, "marts", len(rows)))
            continue
        mart, row = rows[0]
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
                row[name] = parse_json(row[name])
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
    if connection.execute("SELECT to_regclass('raw_postgres.memory_accesses') IS NULL").fetchone()[0]:
        return {}
    rows = connection.execute(
        "SELECT namespace, key, extract(epoch FROM accessed_at), access_count FROM raw_postgres.memory_accesses "
        "WHERE (namespace, key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))", arrays(entries, 2)).fetchall()
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


# ------------------------------------------------------------------------------------------ storing

def store(connection: psycopg.Connection, report: ValidationReport) -> None:
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(hashtext('consolidate.validation'))")
        connection.execute(RESULTS_DDL)
        connection.execute(
            f"INSERT INTO {LEDGER_SCHEMA}.validation_runs (run_id, started_at, finished_at, passed, sample_size, "
            "seed, marts_schema, backup_dir) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (report.run_id, report.started_at, report.finished_at, report.passed, report.sample_size,
             report.seed, report.marts_schema, report.backup_dir))
        with connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {LEDGER_SCHEMA}.validation_files (run_id, source_path, load_id, rows_in_sqlite, "
                "rows_in_raw, kept, superseded, moved, flagged, checksum_status, backup_checksum_status, "
                "spot_checked, spot_mismatches, mismatch_details, tables, problems, passed) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(report.run_id, f.source_path, f.load_id, f.rows_in_sqlite, f.rows_in_raw, f.kept, f.superseded,
                  f.moved, f.flagged, f.checksum_status, f.backup_checksum_status, f.spot_checked,
                  len(f.mismatches), Jsonb([asdict(m) for m in f.mismatches]),
                  Jsonb([asdict(t) for t in f.tables]), f.problems, f.passed) for f in report.files])
