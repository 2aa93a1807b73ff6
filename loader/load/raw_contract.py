"""The shape of what `load` writes into PostgreSQL: ledger tables and raw schemas.

This is the contract between the loader and the dbt project. Raw tables keep every source column as
TEXT (the original value, untouched; staging does the typing) plus the lineage columns below. The
memory tables the dbt models read are created up front with their known columns, so the models compile
even when no file of that kind was found; columns a file brings beyond these are added on arrival.

Values: every value is its text (SQLite's own text of it: what `CAST(x AS TEXT)` gives, numbers
included), except a value PostgreSQL text cannot hold as it is: a BLOB, TEXT that is not valid UTF-8,
or TEXT containing NUL. Such a value is stored as `\\x` followed by the lowercase hex of its exact bytes,
and the row's `_binary_columns` lists the raw columns of that row stored so (NULL when none), so
`decode(substr(value, 3), 'hex')` gives the original bytes back.

Names: SQLite names are kept as they are when PostgreSQL can hold them (see `raw_name`); others are
mapped deterministically, and `consolidate.load_tables.raw_table` / `consolidate.load_columns` record
every table's and column's raw name.
"""

from __future__ import annotations

import hashlib

LEDGER_SCHEMA = "consolidate"

# Schema kinds a discovered file is classified into, and the raw schema each one loads into.
RAW_SCHEMAS = {
    "claude-flow-v2": "raw_claude_flow_v2",
    "claude-flow-v3": "raw_claude_flow_v3",
    "extended-memory": "raw_extended_memory",
    "n8n": "raw_n8n",
    "flowise": "raw_flowise",
    "other": "raw_other",
}

# Lineage columns on every raw row, in this order, after the source columns.
LINEAGE_COLUMNS = [
    ("_load_id", "text NOT NULL"),
    ("_source_path", "text NOT NULL"),
    ("_source_sha256", "text NOT NULL"),
    ("_source_rowid", "bigint"),
    ("_loaded_at", "timestamptz NOT NULL"),
    # The raw columns whose value in this row is `\x` + hex of its bytes (see the docstring); NULL: none.
    ("_binary_columns", "text[]"),
]
LINEAGE_NAMES = frozenset(name for name, _ in LINEAGE_COLUMNS)

# PostgreSQL silently truncates identifiers to NAMEDATALEN - 1 bytes.
MAX_IDENTIFIER_BYTES = 63
HASH_SUFFIX_HEX = 8
# Appended to a source column whose name is a lineage column's (then mapped by raw_name as usual).
LINEAGE_CLASH_SUFFIX = "__source"


def name_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_SUFFIX_HEX]


def raw_name(name: str) -> str:
    """The PostgreSQL name of a SQLite table or column: the name itself when it is 1 to 63 bytes of
    UTF-8; otherwise (longer, which PostgreSQL would truncate, or empty, which it refuses) its longest
    prefix cut on a character boundary that leaves room for `_` + the first 8 hex digits of
    sha256(name), so distinct names that share their first 63 bytes stay distinct."""
    encoded = name.encode("utf-8", "surrogatepass")
    if 0 < len(encoded) <= MAX_IDENTIFIER_BYTES:
        return name
    room = MAX_IDENTIFIER_BYTES - 1 - HASH_SUFFIX_HEX
    prefix = encoded[:room].decode("utf-8", "ignore")  # drops a character cut in the middle
    return f"{prefix}_{name_hash(name)}"


def raw_column_names(columns: list[str]) -> list[str]:
    """The raw column of each source column, in order. A name PostgreSQL holds as it is (`raw_name`
    keeps it) and that is no lineage column's stays. Then, in column order, every other column gets
    raw_name(name), or raw_name(name + '__source') for a lineage column's name; if that is taken
    (by a lineage column or another column), raw_name(name + '__2'), '__3', ... until one is free."""
    kept = {column for column in columns if column not in LINEAGE_NAMES and raw_name(column) == column}
    taken = set(LINEAGE_NAMES) | kept
    mapped = []
    for column in columns:
        if column in kept:
            mapped.append(column)
            continue
        candidate = raw_name(column + LINEAGE_CLASH_SUFFIX if column in LINEAGE_NAMES else column)
        counter = 1
        while candidate in taken:
            counter += 1
            candidate = raw_name(f"{column}__{counter}")
        taken.add(candidate)
        mapped.append(candidate)
    return mapped

# Where writes made in PostgreSQL are kept (WRITE_LOG_DDL): the one raw schema no SQLite file loads into.
WRITE_LOG_SCHEMA = "raw_postgres"

# Tables the dbt models read; always present, even if empty.
CORE_RAW_TABLES = {
    ("raw_claude_flow_v2", "memory_entries"): [
        "id", "key", "value", "namespace", "metadata", "created_at", "updated_at", "accessed_at",
        "access_count", "ttl", "expires_at",
    ],
    ("raw_claude_flow_v3", "memory_entries"): [
        "id", "key", "namespace", "content", "type", "embedding", "embedding_model",
        "embedding_dimensions", "tags", "metadata", "owner_id", "created_at", "updated_at",
        "expires_at", "last_accessed_at", "access_count", "status",
    ],
    ("raw_claude_flow_v3", "sessions"): [
        "id", "state", "status", "project_path", "branch", "tasks_completed", "patterns_learned",
        "created_at", "updated_at", "expires_at",
    ],
    ("raw_extended_memory", "memory_store"): [
        "key", "value", "type", "created_at", "updated_at", "accessed_at", "access_count",
    ],
    ("raw_extended_memory", "metadata"): ["key", "value", "updated_at"],
}

LEDGER_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {LEDGER_SCHEMA};

-- One row per `consolidate load` invocation.
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.loads (
    load_id      text PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    -- interrupted: the process died (kill -9, power) while loading; found and marked by the next load
    status       text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
    roots        text[] NOT NULL,
    tool_version text NOT NULL
);

-- One row per discovered SQLite file per load.
--   loaded    : every table copied, in one transaction, counts verified
--   failed    : nothing of the file is in raw; error_message says why
--   copy      : byte-identical (main file and WAL) to copy_of, which is loaded instead
--   unchanged : same checksums as the file's last loaded version; its rows are already in raw
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.load_files (
    load_id        text NOT NULL REFERENCES {LEDGER_SCHEMA}.loads (load_id),
    source_path    text NOT NULL,
    source_db      text NOT NULL,
    kind           text NOT NULL,
    source_sha256  text NOT NULL,
    wal_sha256     text,
    size_bytes     bigint NOT NULL,
    status         text NOT NULL CHECK (status IN ('loaded', 'failed', 'copy', 'unchanged')),
    copy_of        text,
    started_at     timestamptz NOT NULL,
    completed_at   timestamptz,
    error_message  text,
    rows_in_sqlite bigint,
    rows_loaded    bigint,
    PRIMARY KEY (load_id, source_path)
);

-- The stat of the main file and its -wal when the checksums were taken (discover.stat_signature):
-- a later discovery that finds the same stat trusts these checksums instead of reading the file.
ALTER TABLE {LEDGER_SCHEMA}.load_files ADD COLUMN IF NOT EXISTS stat jsonb;

-- One row per table of a loaded file.
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.load_tables (
    load_id        text NOT NULL,
    source_path    text NOT NULL,
    source_table   text NOT NULL,
    raw_schema     text NOT NULL,
    raw_table      text NOT NULL,
    rows_in_sqlite bigint NOT NULL,
    rows_loaded    bigint NOT NULL,
    PRIMARY KEY (load_id, source_path, source_table),
    FOREIGN KEY (load_id, source_path) REFERENCES {LEDGER_SCHEMA}.load_files (load_id, source_path)
        DEFERRABLE INITIALLY DEFERRED
);
-- How the table was read (NULL on rows written before these columns existed):
--   reader           : 'duckdb' (the sqlite scanner) or 'python-fallback' (sqlite3, for tables whose
--                      values DuckDB or PostgreSQL text cannot carry: BLOBs, invalid UTF-8, NUL)
--   notes            : why the fallback was used, and what it stored as \\x hex
--   rows_with_binary : rows with a non-NULL _binary_columns
ALTER TABLE {LEDGER_SCHEMA}.load_tables ADD COLUMN IF NOT EXISTS reader text;
ALTER TABLE {LEDGER_SCHEMA}.load_tables ADD COLUMN IF NOT EXISTS notes text;
ALTER TABLE {LEDGER_SCHEMA}.load_tables ADD COLUMN IF NOT EXISTS rows_with_binary bigint;

-- Every column of every loaded table and its raw column (raw_contract.raw_column_names): the same name
-- unless it was longer than 63 bytes, empty, a lineage column's name, or taken.
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.load_columns (
    load_id       text NOT NULL,
    source_path   text NOT NULL,
    source_table  text NOT NULL,
    source_column text NOT NULL,
    raw_column    text NOT NULL,
    PRIMARY KEY (load_id, source_path, source_table, source_column),
    FOREIGN KEY (load_id, source_path, source_table)
        REFERENCES {LEDGER_SCHEMA}.load_tables (load_id, source_path, source_table)
        DEFERRABLE INITIALLY DEFERRED
);

-- The load whose rows are current for each source path: its latest `loaded` row.
CREATE OR REPLACE VIEW {LEDGER_SCHEMA}.current_loads AS
SELECT DISTINCT ON (source_path) load_id, source_path, source_db, kind, source_sha256, wal_sha256
FROM {LEDGER_SCHEMA}.load_files
WHERE status = 'loaded'
ORDER BY source_path, completed_at DESC, load_id DESC;
"""

# Services cut over to PostgreSQL (issue 11; loader/operate/cutover.py and rollback.py). Append-only: every
# `consolidate cutover`, `cutover --undo` and `rollback` adds a row, so the history of each switch stays.
CUTOVER_DDL = f"""
-- One row per `consolidate cutover SOURCE` (action 'cutover': from now on the file's service writes to
-- PostgreSQL) and per `consolidate cutover --undo SOURCE` ('undo': it writes to its SQLite file again). A
-- file is cut over while its latest row is a 'cutover'. load_id and the checksums are the file's current
-- load when the row was written: for a cutover, the version later loads are compared with (split brain).
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.cutovers (
    cutover_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_path   text NOT NULL,
    action        text NOT NULL CHECK (action IN ('cutover', 'undo')),
    recorded_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    recorded_by   text NOT NULL,
    note          text,
    load_id       text,
    source_sha256 text,
    wal_sha256    text
);
CREATE INDEX IF NOT EXISTS cutovers_by_file ON {LEDGER_SCHEMA}.cutovers (source_path, cutover_id);

-- The files cut over now, each with the cutover that holds.
CREATE OR REPLACE VIEW {LEDGER_SCHEMA}.cut_over_files AS
SELECT cutover_id, source_path, recorded_at AS cut_over_at, recorded_by AS cut_over_by, note, load_id,
       source_sha256, wal_sha256
FROM (SELECT DISTINCT ON (source_path) *
      FROM {LEDGER_SCHEMA}.cutovers
      ORDER BY source_path, cutover_id DESC) AS latest
WHERE action = 'cutover';

-- Every load of a cut-over file made after its cutover, checked once by `consolidate sync`. changed: its
-- rows differ from the cutover's load although the service writes to PostgreSQL (split brain).
-- sqlite_entries counts the memory entries the file changed since the cutover's load, other_rows the rows
-- of its other tables changed since; `entries` names the memory entries also written in PostgreSQL since
-- the cutover (written on both sides): [{{"namespace", "key", "sqlite_change" (inserted / updated /
-- deleted), "postgres_writes", "last_written_at", "last_written_by"}}].
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.split_brain (
    load_id        text NOT NULL,
    source_path    text NOT NULL,
    cutover_id     bigint NOT NULL REFERENCES {LEDGER_SCHEMA}.cutovers (cutover_id),
    detected_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    changed        boolean NOT NULL,
    sqlite_entries bigint NOT NULL,
    other_rows     bigint NOT NULL,
    entries        jsonb NOT NULL,
    PRIMARY KEY (load_id, source_path)
);

-- One row per `consolidate rollback SOURCE --to FILE`: the SQLite file written from PostgreSQL's state
-- (the cutover itself is undone by `consolidate cutover --undo`, once the service writes to SQLite again).
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.rollbacks (
    rollback_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_path  text NOT NULL,
    written_to   text NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    written_by   text NOT NULL,
    load_id      text NOT NULL,
    sha256       text NOT NULL,
    unchanged    bigint NOT NULL,
    changed      bigint NOT NULL,
    created      bigint NOT NULL,
    deleted      bigint NOT NULL,
    skipped      jsonb NOT NULL
);
"""

# Raw memory tables are read per load by the incremental build (the rows of the loads new since the last
# build): an index on _load_id finds them without scanning every earlier load.
RAW_MEMORY_TABLES = [("raw_claude_flow_v2", "memory_entries"), ("raw_claude_flow_v3", "memory_entries"),
                     ("raw_extended_memory", "memory_store")]
RAW_MEMORY_INDEXES = "\n".join(
    f"CREATE INDEX IF NOT EXISTS {table}__load_id ON {schema}.{table} (_load_id);"
    for schema, table in RAW_MEMORY_TABLES)

# PostgreSQL as the system of record (issue 11). Every write made in PostgreSQL to a memory entry (through
# loader.client.MemoryClient, the compatibility views or DML on the marts) is one row of
# raw_postgres.memory_writes, appended in the transaction that changes the marts. The dbt project reads
# it as the source `raw_postgres.memory_writes`: each row is a version of its (key, namespace) like a
# SQLite row of a current load (an `upsert` a value, a `delete` a tombstone), ranked by the same rule.
# The rows are never updated or deleted (a trigger refuses it), so a build (full refresh included)
# always finds every write again.
WRITE_LOG_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {WRITE_LOG_SCHEMA};

CREATE TABLE IF NOT EXISTS {WRITE_LOG_SCHEMA}.memory_writes (
    write_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- who and when: the writer's clock at the write, its transaction, its connection's application_name
    -- (MemoryClient sets `consolidate-memory-client` unless the DSN names one) and role
    written_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    txid             bigint NOT NULL DEFAULT txid_current(),
    application_name text DEFAULT current_setting('application_name'),
    db_user          text NOT NULL DEFAULT current_user,
    -- the path: 'client' (MemoryClient), 'compat.memory_entries', 'compat_claude_flow_v3.memory_entries',
    -- 'compat_extended_memory.memory_store', '<schema>.unified_memory', '<schema>.performance_metrics'
    via              text NOT NULL,
    -- upsert: this row is the entry's new value; delete: a tombstone (the entry leaves the marts, its
    -- versions stay in unified_memory_history)
    operation        text NOT NULL CHECK (operation IN ('upsert', 'delete')),
    key              text NOT NULL,
    namespace        text NOT NULL,
    -- the version, in the marts' types (NULL for a delete but updated_at): value and data_type as in
    -- unified_memory, times as timestamptz. updated_at is what ranks the version (see the README).
    value            jsonb,
    data_type        text,
    metadata         jsonb,
    created_at       timestamptz,
    updated_at       timestamptz NOT NULL,
    accessed_at      timestamptz,
    expires_at       timestamptz,
    access_count     integer,
    ttl              integer,
    -- the SQLite file whose service wrote this entry (MemoryClient(source=...)); NULL when unknown
    home_source_path text,
    CHECK (operation = 'delete' OR (value IS NOT NULL AND data_type IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS memory_writes_by_entry ON {WRITE_LOG_SCHEMA}.memory_writes (namespace, key, write_id);

-- Reads through MemoryClient bump an entry's access_count and accessed_at. They are bookkeeping, not
-- versions: one row per entry holding the latest, folded into the marts' accessed_at (latest) and
-- access_count (largest) by every build.
CREATE TABLE IF NOT EXISTS {WRITE_LOG_SCHEMA}.memory_accesses (
    namespace    text NOT NULL,
    key          text NOT NULL,
    accessed_at  timestamptz NOT NULL,
    access_count integer NOT NULL,
    PRIMARY KEY (namespace, key)
);

CREATE OR REPLACE FUNCTION {LEDGER_SCHEMA}.refuse_rewriting_the_write_log() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION '%.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING HINT = 'Every write made in PostgreSQL is kept as a version; write a new one instead.';
END
$fn$;
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = '{WRITE_LOG_SCHEMA}.memory_writes'::regclass AND tgname = 'append_only') THEN
        CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {WRITE_LOG_SCHEMA}.memory_writes
            FOR EACH STATEMENT EXECUTE FUNCTION {LEDGER_SCHEMA}.refuse_rewriting_the_write_log();
    END IF;
END
$do$;

-- Every (namespace, key) ever seen gets its mart id once and keeps it: ids are never renumbered, not even
-- by a full refresh. New pairs of a build are numbered after the mart's highest id in (namespace, key)
-- order (the order the marts were numbered in before ids were kept, so a first build gives those same
-- ids); a pair first written in PostgreSQL gets the next id at its write. An entry that is deleted keeps
-- its id for when it comes back.
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.entry_ids (
    namespace   text NOT NULL,
    key         text NOT NULL,
    mart        text NOT NULL CHECK (mart IN ('unified_memory', 'performance_metrics')),
    id          bigint NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, key),
    UNIQUE (mart, id)
);
"""
