"""The shape of what `load` writes into PostgreSQL: ledger tables and raw schemas.

This is the contract between the loader and the dbt project. Raw tables keep every source column as
TEXT (the original value, untouched; staging does the typing) plus the lineage columns below. The
memory tables the dbt models read are created up front with their known columns, so the models compile
even when no file of that kind was found; columns a file brings beyond these are added on arrival.
"""

from __future__ import annotations

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
]

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
    status       text NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
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

-- The load whose rows are current for each source path: its latest `loaded` row.
CREATE OR REPLACE VIEW {LEDGER_SCHEMA}.current_loads AS
SELECT DISTINCT ON (source_path) load_id, source_path, source_db, kind, source_sha256, wal_sha256
FROM {LEDGER_SCHEMA}.load_files
WHERE status = 'loaded'
ORDER BY source_path, completed_at DESC, load_id DESC;
"""
