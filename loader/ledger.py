"""The ledger: every `consolidate.*` table (what was loaded, when, from where, how it changed, what was
built and validated), its versions, and the queries the stages share.

Versions
--------
`MIGRATIONS[n - 1]` brings a ledger at version n - 1 to version n; `consolidate.schema_version` has one
row per version applied. `ensure` applies the missing ones in order, in one transaction, so a ledger
made by an earlier release is upgraded in place the first time a newer one writes to it. To change
the ledger, append a migration (never edit one that has shipped):

    MIGRATIONS.append(f"ALTER TABLE {LEDGER_SCHEMA}.load_files ADD COLUMN IF NOT EXISTS note text;")

Ledgers made before versions existed (release 0.1.0, no `schema_version`) count as version 0. The
four migrations below are what that release created, from its four modules, with `IF NOT EXISTS`: so
they complete such a ledger whatever of it exists, and change nothing it already holds.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from loader import __version__
from loader.database import Target

LEDGER_SCHEMA = "consolidate"
# Where writes made in PostgreSQL are kept (migration 7): the one raw schema no SQLite file loads into.
WRITE_LOG_SCHEMA = "raw_postgres"
# The write log's `via` of a delete made in a SQLite file, which a sync records there (loader/load/delta.py).
SQLITE_DELETE_VIA = "sqlite delete"

MIGRATIONS: list[str] = [
    # 1: loads, the files and tables each load found, every column's raw name, and the current loads.
    f"""
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
""",
    # 2: change detection (loader.operate.change_detection): per load, file and table the rows inserted, updated,
    # deleted and unchanged since the file's previous load, and every deleted row's identity.
    f"""
-- One row per table of a loaded file version: how its raw rows differ from the file's previous
-- `loaded` version (previous_load_id NULL: the file's first load, every row inserted).
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.load_changes (
    load_id          text NOT NULL,
    previous_load_id text,
    source_path      text NOT NULL,
    source_table     text NOT NULL,
    inserted         bigint NOT NULL,
    updated          bigint NOT NULL,
    deleted          bigint NOT NULL,
    unchanged        bigint NOT NULL,
    detected_at      timestamptz NOT NULL,
    PRIMARY KEY (load_id, source_path, source_table),
    FOREIGN KEY (load_id, source_path) REFERENCES {LEDGER_SCHEMA}.load_files (load_id, source_path)
);

-- Rows present in the previous load of a file and absent from this one. The row itself stays in raw
-- under previous_load_id (raw is append-only); row_md5 is the md5 of its content (raw_tables.row_digest), which
-- identifies it in a table without rowids (source_rowid NULL).
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.deleted_rows (
    load_id          text NOT NULL,
    source_path      text NOT NULL,
    source_table     text NOT NULL,
    source_rowid     bigint,
    row_md5          text NOT NULL,
    previous_load_id text NOT NULL,
    FOREIGN KEY (load_id, source_path) REFERENCES {LEDGER_SCHEMA}.load_files (load_id, source_path)
);
CREATE INDEX IF NOT EXISTS deleted_rows_by_file
    ON {LEDGER_SCHEMA}.deleted_rows (source_path, source_table, load_id);
""",
    # 3: every build of the marts and what it was built from (loader.transform.freshness).
    f"""
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.builds (
    built_at          timestamptz NOT NULL DEFAULT now(),
    marts_schema      text NOT NULL,
    fingerprint       text NOT NULL,
    build_passed      boolean NOT NULL,
    validation_passed boolean
);
""",
    # 4: validation runs and their per-file results (loader.verify).
    f"""
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
        CHECK (checksum_status IN ('unchanged', 'changed', 'missing', 'unreadable')),
    backup_checksum_status text
        CHECK (backup_checksum_status IN ('matches', 'differs', 'not backed up')),
    spot_checked           integer NOT NULL,
    spot_mismatches        integer NOT NULL,
    mismatch_details       jsonb NOT NULL,
    tables                 jsonb NOT NULL,
    problems               text[] NOT NULL,
    passed                 boolean NOT NULL,
    PRIMARY KEY (run_id, source_path)
);
""",
    # 5: the secret policy each load ran under (loader/load/secret_policy.py: its rules, how `scrub`
    # finds secrets and an identifier of the key, never the key) and the sha256 of that document; and
    # the paths that reached a file through a symbolic link (source_path is the real path). NULL on
    # rows written before.
    f"""
ALTER TABLE {LEDGER_SCHEMA}.loads ADD COLUMN IF NOT EXISTS secret_policy_digest text;
ALTER TABLE {LEDGER_SCHEMA}.loads ADD COLUMN IF NOT EXISTS secret_policy jsonb;
ALTER TABLE {LEDGER_SCHEMA}.load_files ADD COLUMN IF NOT EXISTS link_paths text[];
""",
    # 6: every `consolidate app-copy` of an n8n or Flowise database into the schema the application
    # made (loader/apps): verified (every table's rows and digest matched, the copy committed), mismatch
    # (rolled back) or refused (nothing written; message says why); and the type each column's CREATE
    # TABLE declared (loader/sources/sqlite_ddl.py, sqlglot's spelling: VARCHAR(36), DATETIME(3), BOOLEAN...;
    # NULL: none declared, or rows written before), which the typed app staging models cast by.
    f"""
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.app_copies (
    copy_id         text PRIMARY KEY,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    mode            text NOT NULL CHECK (mode IN ('copy', 'verify')),
    status          text NOT NULL CHECK (status IN ('verified', 'mismatch', 'refused')),
    application     text,
    source_path     text NOT NULL,
    source_sha256   text,
    wal_sha256      text,
    target_schema   text NOT NULL,
    source_migration text,
    target_migration text,
    replace         boolean NOT NULL,
    message         text,
    tables          jsonb,
    copy_seconds    double precision,
    verify_seconds  double precision,
    tool_version    text NOT NULL
);
ALTER TABLE {LEDGER_SCHEMA}.load_columns ADD COLUMN IF NOT EXISTS declared_type text;
""",
    # 7: PostgreSQL as the system of record (issue 11). Every write made in PostgreSQL to a memory entry
    # (through loader.serve.client.MemoryClient, the compatibility views or DML on the marts) is one row
    # of raw_postgres.memory_writes, appended in the transaction that changes the marts. The dbt project
    # reads it as the source `raw_postgres.memory_writes`: each row is a version of its (key, namespace)
    # like a SQLite row of a current load (an `upsert` a value, a `delete` a tombstone), ranked by the
    # same rule. The rows are never updated or deleted (a trigger refuses it), so a build (full refresh
    # included) always finds every write again. And the marts' ids, given once per (namespace, key), and the
    # record of the builds an incremental build's tests start from.
    f"""
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
    -- 'compat_extended_memory.memory_store', '<schema>.unified_memory', '<schema>.performance_metrics';
    -- 'sqlite delete': a delete a sync found in a SQLite file, recorded by consolidate (loader/load/delta.py)
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

-- One row per dbt invocation against the memory marts (dbt_project/macros/incremental_memory.sql:
-- on-run-start adds it, on-run-end marks it passed when it ran tests and none failed). An incremental
-- build after a passing one tests only the entries changed since (memory_test_scope).
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.memory_builds (
    invocation_id   text PRIMARY KEY,
    marts_schema    text NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    -- the write log's highest write_id when the build started
    write_watermark bigint NOT NULL,
    tests_run       integer,
    passed          boolean
);
""",
    # 8: services cut over to PostgreSQL (issue 11; loader/operate/cutover.py and rollback.py).
    # Append-only: every `consolidate cutover`, `cutover --undo` and `rollback` adds a row, so the
    # history of each switch stays.
    f"""
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
""",
    # 9: row-level change loads (issue 11; loader/load/delta.py). A changed memory file's new load stores
    # only the rows that changed since the file's previous state; its unchanged rows stay where they are.
    f"""
-- delta_of: the load this one was applied on top of (NULL: a full load, holding every row of the file).
-- load_tables.rows_unchanged: rows of the snapshot identical to the previous state, not stored again, so
-- the load's raw rows are rows_loaded - rows_unchanged.
ALTER TABLE {LEDGER_SCHEMA}.load_files ADD COLUMN IF NOT EXISTS delta_of text;
ALTER TABLE {LEDGER_SCHEMA}.load_tables ADD COLUMN IF NOT EXISTS rows_unchanged bigint NOT NULL DEFAULT 0;

-- Raw rows that stopped being current: (row_load_id, source_path, source_table, source_rowid) names the
-- raw row (in raw_schema.raw_table), load_id the delta load whose snapshot changed or deleted it. The row
-- itself stays in raw.
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.retired_rows (
    row_load_id  text NOT NULL,
    source_path  text NOT NULL,
    source_table text NOT NULL,
    source_rowid bigint NOT NULL,
    raw_schema   text NOT NULL,
    raw_table    text NOT NULL,
    load_id      text NOT NULL,
    PRIMARY KEY (row_load_id, source_path, source_table, source_rowid)
);
CREATE INDEX IF NOT EXISTS retired_rows_by_load ON {LEDGER_SCHEMA}.retired_rows (load_id, source_path);

-- Every load whose raw rows make up a file's current state: its current load and, for a delta, the loads
-- it was applied on (back to a full load). A file's current rows are its parts' raw rows that are not
-- retired. For a full load, one row: the load itself.
-- source_db and kind are the current load's (what readers of raw rows would join current_loads for).
CREATE OR REPLACE VIEW {LEDGER_SCHEMA}.current_load_parts AS
WITH RECURSIVE parts AS (
    SELECT c.load_id, c.source_path, c.load_id AS part_load_id, f.delta_of, c.source_db, c.kind
    FROM {LEDGER_SCHEMA}.current_loads AS c
    JOIN {LEDGER_SCHEMA}.load_files AS f USING (load_id, source_path)
    UNION ALL
    SELECT parts.load_id, parts.source_path, f.load_id, f.delta_of, parts.source_db, parts.kind
    FROM parts
    JOIN {LEDGER_SCHEMA}.load_files AS f ON f.load_id = parts.delta_of AND f.source_path = parts.source_path
)
SELECT load_id, source_path, part_load_id, source_db, kind FROM parts;
""",
    # 10: what a sync needs to build only what its changes affect (loader/transform/build.py).
    f"""
-- project_digest: the dbt project's files (loader/transform/freshness.py); compiled_from: a digest of what its
-- views were compiled from (those files and the raw tables' columns); both NULL when not run through
-- consolidate. complete: it built every node as a plain `build` does; reconciled: it rebuilt
-- reconciliation (dbt_project/models/marts/reconciliation.sql recounts only what changed since the
-- previous invocation, when that one reconciled with the same project).
ALTER TABLE {LEDGER_SCHEMA}.memory_builds ADD COLUMN IF NOT EXISTS project_digest text;
ALTER TABLE {LEDGER_SCHEMA}.memory_builds ADD COLUMN IF NOT EXISTS compiled_from text;
ALTER TABLE {LEDGER_SCHEMA}.memory_builds ADD COLUMN IF NOT EXISTS complete boolean NOT NULL DEFAULT false;
ALTER TABLE {LEDGER_SCHEMA}.memory_builds ADD COLUMN IF NOT EXISTS reconciled boolean NOT NULL DEFAULT false;
""",
    # 11: originals removed after archiving (plan phase 5, loader/operate/archive.py). Their bytes live on in
    # the archive, where validate and rollback read them.
    f"""
-- One row per file version `consolidate archive --remove-originals` deleted: (source_path, load_id) names
-- the load whose bytes (sha256, wal_sha256) were archived; members: the file's parts in the zip by suffix
-- ({{"": "files/.../memory.db", "-wal": "files/.../memory.db-wal"}}); archive_sha256 as in its .sha256 file.
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.archived_removals (
    source_path    text NOT NULL,
    load_id        text NOT NULL,
    sha256         text NOT NULL,
    wal_sha256     text,
    archive_path   text NOT NULL,
    archive_sha256 text NOT NULL,
    members        jsonb NOT NULL,
    removed_at     timestamptz NOT NULL DEFAULT now(),
    removed_by     text NOT NULL DEFAULT current_user,
    PRIMARY KEY (source_path, load_id)
);
ALTER TABLE {LEDGER_SCHEMA}.validation_files DROP CONSTRAINT IF EXISTS validation_files_checksum_status_check;
ALTER TABLE {LEDGER_SCHEMA}.validation_files ADD CONSTRAINT validation_files_checksum_status_check
    CHECK (checksum_status IN ('unchanged', 'changed', 'missing', 'unreadable', 'archived'));
""",
    # 12: files deleted outside `archive`, accepted as gone (loader/operate/forget.py): PostgreSQL keeps
    # their rows, validate stops asking for their bytes.
    f"""
-- One row per file version `consolidate forget` accepted as gone: (source_path, load_id) names the current
-- load then; a later load of the path (the file back on disk) makes it void.
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.forgotten_files (
    source_path  text NOT NULL,
    load_id      text NOT NULL,
    forgotten_at timestamptz NOT NULL DEFAULT now(),
    forgotten_by text NOT NULL,
    note         text,
    PRIMARY KEY (source_path, load_id)
);
ALTER TABLE {LEDGER_SCHEMA}.validation_files DROP CONSTRAINT IF EXISTS validation_files_checksum_status_check;
ALTER TABLE {LEDGER_SCHEMA}.validation_files ADD CONSTRAINT validation_files_checksum_status_check
    CHECK (checksum_status IN ('unchanged', 'changed', 'missing', 'unreadable', 'archived', 'forgotten'));
""",
    # 13: a file's rows of load_files by path (its label, its latest row, whether it was ever loaded: a write
    # made in PostgreSQL checks the file it is tied to, consolidate.write_memory_entry).
    f"""
CREATE INDEX IF NOT EXISTS load_files_by_path ON {LEDGER_SCHEMA}.load_files (source_path, started_at, load_id);
""",
    # 14: which of the memory models an invocation built, so a later build knows whether the marts hold
    # what int_memory_ranked does (loader/transform/build.py can_build_incrementally).
    f"""
-- memory_models: of the tables that carry the memory state (dbt_project/macros/incremental_memory.sql
-- memory_model_ids), whether the invocation built 'none' (it selected none: a test, docs, freshness; set as
-- it starts), 'all' of them, or only 'some' (a selection, a failure): set at its end, NULL when one that
-- selected them died, or for an invocation from before this column.
ALTER TABLE {LEDGER_SCHEMA}.memory_builds ADD COLUMN IF NOT EXISTS memory_models text;
""",
    # 15: the rule both the builds (loader/transform/build.py can_build_incrementally) and the tests' scope
    # (dbt_project/macros/incremental_memory.sql memory_test_scope) read from the record of migration 14.
    f"""
-- Whether the latest dbt invocation against marts_schema that selected a memory model (other than
-- `besides`: the invocation asking) finished with nothing failed and built all of them, and, when `tested`,
-- ran tests: the marts then hold what int_memory_ranked does, so an incremental build may continue from
-- them (and its tests check only what changed). One that failed, died (passed NULL) or built only some
-- (a selection) may have left marts that do not. True when there was none; NULL memory_models (an
-- invocation from before migration 14 that finished) counts as 'all'.
CREATE OR REPLACE FUNCTION {LEDGER_SCHEMA}.memory_models_left_whole(marts_schema text, besides text DEFAULT NULL,
                                                                 tested boolean DEFAULT false)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce((
        SELECT (b.passed AND coalesce(b.memory_models, 'all') = 'all' AND (NOT tested OR b.tests_run > 0)) IS TRUE
        FROM {LEDGER_SCHEMA}.memory_builds AS b
        WHERE b.marts_schema = memory_models_left_whole.marts_schema
          AND b.invocation_id IS DISTINCT FROM besides AND b.memory_models IS DISTINCT FROM 'none'
        ORDER BY b.started_at DESC LIMIT 1), true)
$$;
""",
    # 16: split brain names the entries a cut-over file deleted (loader/operate/cutover.py).
    f"""
-- The memory entries whose rows the file deleted since the cutover, with no write in PostgreSQL since
-- (those are in `entries`): [{{"namespace", "key"}}]. The file's version of each left the marts; one
-- that had no other version is no longer in them (`consolidate lineage` shows its last value).
ALTER TABLE {LEDGER_SCHEMA}.split_brain ADD COLUMN IF NOT EXISTS deleted_entries jsonb NOT NULL DEFAULT '[]';
""",
    # 17: an app-copy interrupted (Ctrl-C) before it committed is an attempt too (loader/apps/copier.py).
    f"""
ALTER TABLE {LEDGER_SCHEMA}.app_copies DROP CONSTRAINT IF EXISTS app_copies_status_check;
ALTER TABLE {LEDGER_SCHEMA}.app_copies ADD CONSTRAINT app_copies_status_check
    CHECK (status IN ('verified', 'mismatch', 'refused', 'interrupted'));
""",
    # 18: which fields a write gave (consolidate.write_memory_entry's p_given): a rollback tells a value the
    # writer gave from one the write path filled in (loader/operate/rollback.py columns_postgresql_changed).
    f"""
-- NULL: a delete, or a write from before this column.
ALTER TABLE {WRITE_LOG_SCHEMA}.memory_writes ADD COLUMN IF NOT EXISTS given text[];
""",
]

VERSION_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {LEDGER_SCHEMA};
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.schema_version (
    version      integer PRIMARY KEY,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    tool_version text NOT NULL
);
"""


class LedgerTooNew(RuntimeError):
    """The ledger was written by a newer consolidate: this one would not know its tables."""


def now() -> datetime:
    return datetime.now(timezone.utc)


def new_id(at: datetime | None = None) -> str:
    """An id of a load, app copy or validation run (and the stamp in an archive's name): the UTC time to
    the second, then 6 random hex digits; ids of one kind sort by time. A naive `at` is taken as UTC."""
    at = at or now()
    at = at.astimezone(timezone.utc) if at.tzinfo else at.replace(tzinfo=timezone.utc)
    return at.strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


def table(name: str) -> sql.Identifier:
    """A ledger table or view, quoted: `sql.SQL("SELECT ... FROM {}").format(ledger.table("loads"))`."""
    return sql.Identifier(LEDGER_SCHEMA, name)


# ---------------------------------------------------------------------------------------- versions

def relation_exists(connection: psycopg.Connection, schema: str, name: str) -> bool:
    """Whether a table or view `schema.name` exists (names taken literally, never parsed)."""
    row = connection.execute(
        "SELECT 1 FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s", (schema, name)).fetchone()
    return row is not None


def missing_relations(connection: psycopg.Connection, names: Sequence[tuple[str, str]]) -> list[str]:
    """`schema.name` of each of `names` (schema, name) that does not exist (relation_exists)."""
    return [f"{schema}.{name}" for schema, name in names if not relation_exists(connection, schema, name)]


def not_built(connection: psycopg.Connection, missing: list[str], schema: str) -> str:
    """What to do when `missing` relations of the marts in `schema` are not there: build, or, when builds
    made the marts in another schema, name it (a --schema left out)."""
    message = f"{', '.join(missing)} not found: load and build first (consolidate run)"
    if relation_exists(connection, LEDGER_SCHEMA, "builds"):
        built = [name for (name,) in connection.execute(
            sql.SQL("SELECT marts_schema FROM {} WHERE build_passed AND marts_schema <> %s GROUP BY marts_schema "
                    "ORDER BY max(built_at) DESC").format(sql.Identifier(LEDGER_SCHEMA, "builds")), (schema,))]
        if built:
            message += (f"; the marts were built in schema {', '.join(map(repr, built))}, not {schema!r}: "
                        f"give --schema {built[0]} (or set CONSOLIDATE_TARGET_SCHEMA)")
    return message


def exists(connection: psycopg.Connection) -> bool:
    """Whether a load has ever written a ledger here (its loads, files and current loads)."""
    return all(relation_exists(connection, LEDGER_SCHEMA, name) for name in ("loads", "load_files", "current_loads"))


def version(connection: psycopg.Connection) -> int:
    """The ledger's version: 0 when there is none, or one made before versions existed."""
    if not relation_exists(connection, LEDGER_SCHEMA, "schema_version"):
        return 0
    return connection.execute(sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(
        table("schema_version"))).fetchone()[0]


def ensure(connection: psycopg.Connection) -> int:
    """Create the ledger, or bring it to the latest version (see the module docstring); return that
    version. Raises LedgerTooNew for a ledger of a later release."""
    latest = len(MIGRATIONS)
    if version(connection) == latest:
        return latest
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('consolidate.ledger'))")
        cursor.execute(VERSION_DDL)
        current = version(connection)
        if current > latest:
            raise LedgerTooNew(f"the {LEDGER_SCHEMA} ledger is at version {current}, newer than this "
                               f"consolidate {__version__} knows ({latest}): upgrade consolidate")
        for number, migration in enumerate(MIGRATIONS[current:], start=current + 1):
            cursor.execute(migration)
            cursor.execute(sql.SQL("INSERT INTO {} (version, tool_version) VALUES (%s, %s)").format(
                table("schema_version")), (number, __version__))
    return latest


# ------------------------------------------------------------------------------------------- paths

def ledger_path(connection: psycopg.Connection, path: Path | str) -> str:
    """How the ledger spells a file: the path as given, made absolute, when the ledger knows it; failing
    that, the one ledger path that is the same file once symlinks and `..` are resolved (discovery
    records real paths)."""
    spelled = str(Path(path).absolute())
    known = [row[0] for row in connection.execute(f"SELECT DISTINCT source_path FROM {LEDGER_SCHEMA}.load_files")]
    if spelled in known:
        return spelled
    real = os.path.realpath(spelled)
    same = [candidate for candidate in known if os.path.realpath(candidate) == real]
    return same[0] if len(same) == 1 else spelled


@contextlib.contextmanager
def recording(target: Target, sources: Sequence[Path | str], lock: str,
              prepare: Callable[[psycopg.Connection], object] = ensure) -> Iterator[tuple[psycopg.Connection, list[str]]]:
    """For recording something of each of `sources`, all or none: a connection (made ready by `prepare`)
    in a transaction holding the advisory lock `lock` (one such recording at a time), and each source as
    the ledger spells it, once."""
    with target.connect() as connection:
        prepare(connection)
        paths = list(dict.fromkeys(ledger_path(connection, source) for source in sources))
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
            yield connection, paths


# ------------------------------------------------------------------------------------------- loads

def start_load(connection: psycopg.Connection, roots: list[str], secret_policy: dict | None = None,
               secret_policy_digest: str | None = None) -> str:
    """Register a new load, with the secret policy it runs under (secret_policy.SecretPolicy.describe
    and its digest). Loads run one at a time (a session lock held until the connection closes), so a
    load still `running` when the lock is ours died mid-way: it is marked interrupted."""
    load_id = new_id()
    connection.execute("SELECT pg_advisory_lock(hashtext('consolidate.load'))")
    with connection.transaction():
        connection.execute(
            f"UPDATE {LEDGER_SCHEMA}.loads SET status = 'interrupted', finished_at = %s WHERE status = 'running'",
            (now(),))
        connection.execute(
            f"INSERT INTO {LEDGER_SCHEMA}.loads (load_id, started_at, status, roots, tool_version, "
            "secret_policy_digest, secret_policy) VALUES (%s, %s, 'running', %s, %s, %s, %s)",
            (load_id, now(), roots, __version__, secret_policy_digest,
             Jsonb(secret_policy) if secret_policy is not None else None))
    return load_id


def finish_load(connection: psycopg.Connection, load_id: str, status: str) -> None:
    with connection.transaction():
        connection.execute(
            f"UPDATE {LEDGER_SCHEMA}.loads SET finished_at = %s, status = %s WHERE load_id = %s",
            (now(), status, load_id))


@dataclass
class FileRecord:
    load_id: str
    source_path: str
    source_db: str
    kind: str
    source_sha256: str
    wal_sha256: str | None
    size_bytes: int
    status: str
    started_at: datetime
    copy_of: str | None = None
    completed_at: datetime | None = None
    error_message: str | None = None
    rows_in_sqlite: int | None = None
    rows_loaded: int | None = None
    stat: dict | None = None  # discover.stat_signature of the file when its checksums were taken
    link_paths: list[str] | None = None  # paths that reached the file through a symbolic link


def record_file(cursor: psycopg.Cursor, record: FileRecord) -> None:
    fields = list(record.__dataclass_fields__)
    cursor.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            table("load_files"),
            sql.SQL(", ").join(map(sql.Identifier, fields)),
            sql.SQL(", ").join(sql.Placeholder() * len(fields))),
        [Jsonb(record.stat) if f == "stat" and record.stat is not None else getattr(record, f) for f in fields])


def record_table(cursor: psycopg.Cursor, load_id: str, source_path: str, source_table: str,
                 raw_schema: str, raw_table: str, rows_in_sqlite: int, rows_loaded: int, *,
                 reader: str | None = None, notes: str | None = None, rows_with_binary: int | None = None) -> None:
    cursor.execute(
        f"INSERT INTO {LEDGER_SCHEMA}.load_tables (load_id, source_path, source_table, raw_schema, "
        "raw_table, rows_in_sqlite, rows_loaded, reader, notes, rows_with_binary) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (load_id, source_path, source_table, raw_schema, raw_table, rows_in_sqlite, rows_loaded, reader,
         notes, rows_with_binary))


def record_columns(cursor: psycopg.Cursor, load_id: str, source_path: str, source_table: str,
                   columns: list[tuple[str, str]], declared: dict[str, str] | None = None) -> None:
    """Every (source column, raw column) pair of a loaded table, with the column's declared type."""
    declared = declared or {}
    cursor.executemany(
        f"INSERT INTO {LEDGER_SCHEMA}.load_columns (load_id, source_path, source_table, source_column, "
        "raw_column, declared_type) VALUES (%s, %s, %s, %s, %s, %s)",
        [(load_id, source_path, source_table, source, raw, declared.get(source)) for source, raw in columns])


def tables_loaded(connection: psycopg.Connection, load_id: str, *, changes_at_least: int = 1) -> list[tuple[str, str]]:
    """(raw schema, raw table) of every table the load added rows to; when only row-level change loads
    added to it, at least `changes_at_least` rows."""
    return connection.execute(
        f"SELECT t.raw_schema, t.raw_table FROM {LEDGER_SCHEMA}.load_tables AS t "
        f"JOIN {LEDGER_SCHEMA}.load_files AS f USING (load_id, source_path) WHERE t.load_id = %s "
        "GROUP BY 1, 2 HAVING sum(t.rows_loaded - t.rows_unchanged) >= "
        "CASE WHEN bool_and(f.delta_of IS NOT NULL) THEN %s ELSE 1 END ORDER BY 1, 2",
        [load_id, changes_at_least]).fetchall()


# The change tables' INSERT heads: change detection (loader/operate/change_detection.py) and a change load
# (loader/load/delta.py) each fill them with a statement of their own.
INSERT_LOAD_CHANGES = (f"INSERT INTO {LEDGER_SCHEMA}.load_changes (load_id, previous_load_id, source_path, source_table, "
                       "inserted, updated, deleted, unchanged, detected_at)")
INSERT_DELETED_ROWS = (f"INSERT INTO {LEDGER_SCHEMA}.deleted_rows (load_id, source_path, source_table, source_rowid, "
                       "row_md5, previous_load_id)")
INSERT_RETIRED_ROWS = (f"INSERT INTO {LEDGER_SCHEMA}.retired_rows (row_load_id, source_path, source_table, "
                       "source_rowid, raw_schema, raw_table, load_id)")


def who() -> str:
    """The operator a ledger record names (user@host)."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


# ---------------------------------------------------------------------------------- current loads

@dataclass(frozen=True)
class KnownFile:
    """What the ledger holds of a file's current load: its checksums, kind and table counts."""

    sha256: str
    wal_sha256: str | None
    kind: str
    tables: dict[str, int]
    stat: dict | None = None

    @property
    def identity(self) -> tuple[str, str | None]:
        return (self.sha256, self.wal_sha256)


@dataclass(frozen=True)
class CurrentLoad:
    """A source path's current load: the load whose rows are current in raw (`current_loads`)."""

    source_path: str
    source_db: str
    kind: str
    load_id: str
    loaded_at: datetime | None
    sha256: str
    wal_sha256: str | None
    rows_in_sqlite: int | None
    rows_loaded: int | None

    @property
    def identity(self) -> tuple[str, str | None]:
        return (self.sha256, self.wal_sha256)

    def to_json(self) -> dict:
        return {"load_id": self.load_id, "loaded_at": self.loaded_at.isoformat() if self.loaded_at else None,
                "rows_in_sqlite": self.rows_in_sqlite, "rows_loaded": self.rows_loaded,
                "sha256": self.sha256, "wal_sha256": self.wal_sha256}


CURRENT_LOADS_QUERY = f"""
SELECT c.source_path, c.source_db, c.kind, c.load_id, f.completed_at, c.source_sha256, c.wal_sha256,
       f.rows_in_sqlite, f.rows_loaded
FROM {LEDGER_SCHEMA}.current_loads AS c
JOIN {LEDGER_SCHEMA}.load_files AS f USING (load_id, source_path)
ORDER BY c.source_path
"""


def current_loads(connection: psycopg.Connection) -> list[CurrentLoad]:
    """Every source path's current load, by path."""
    return [CurrentLoad(*row) for row in connection.execute(CURRENT_LOADS_QUERY).fetchall()]


def never_loaded_files(connection: psycopg.Connection) -> dict[str, str]:
    """The files whose every load failed (no current load; a byte-identical copy has none either, and is not
    one of them), by path, with their latest load's error."""
    rows = connection.execute(
        f"SELECT DISTINCT ON (f.source_path) f.source_path, f.status, coalesce(f.error_message, '') "
        f"FROM {LEDGER_SCHEMA}.load_files AS f WHERE NOT EXISTS (SELECT 1 FROM {LEDGER_SCHEMA}.current_loads AS c "
        "WHERE c.source_path = f.source_path) ORDER BY f.source_path, f.started_at DESC, f.load_id DESC").fetchall()
    return {path: error for path, status, error in rows if status == "failed"}


def current_load_of(connection: psycopg.Connection, source_path: str) -> tuple[str, str, str, str | None] | None:
    """(load_id, kind, source_sha256, wal_sha256) of the file's current load, if any."""
    return connection.execute(
        f"SELECT load_id, kind, source_sha256, wal_sha256 FROM {LEDGER_SCHEMA}.current_loads WHERE source_path = %s",
        (source_path,)).fetchone()


def current_checksums(connection: psycopg.Connection, source_path: str) -> tuple[str, str | None] | None:
    """Checksums of the file's version whose rows are current in raw, if any."""
    current = current_load_of(connection, source_path)
    return (current[2], current[3]) if current else None


def current_table_counts(connection: psycopg.Connection, source_path: str) -> dict[str, tuple[int, int]]:
    """{source_table: (rows in SQLite, the file's rows in raw now)} of the file's current load ({} when none)."""
    return {table: (in_sqlite, loaded) for table, in_sqlite, loaded in connection.execute(
        f"SELECT t.source_table, t.rows_in_sqlite, t.rows_loaded FROM {LEDGER_SCHEMA}.current_loads AS c "
        f"JOIN {LEDGER_SCHEMA}.load_tables AS t USING (load_id, source_path) WHERE c.source_path = %s",
        (source_path,)).fetchall()}


def known_files(target: Target) -> dict[str, KnownFile]:
    """Every source path's current load: checksums, kind and table counts (empty before the first
    load). Discovery takes unchanged files' kind and counts from here instead of copying them."""
    with target.connect() as connection:
        if not relation_exists(connection, LEDGER_SCHEMA, "current_loads"):
            return {}
        rows = connection.execute(
            f"SELECT c.source_path, c.source_sha256, c.wal_sha256, c.kind, "
            f"coalesce(jsonb_object_agg(t.source_table, t.rows_in_sqlite) FILTER (WHERE t.source_table IS NOT NULL), '{{}}'), "
            f"f.stat FROM {LEDGER_SCHEMA}.current_loads AS c "
            f"JOIN {LEDGER_SCHEMA}.load_files AS f USING (load_id, source_path) "
            f"LEFT JOIN {LEDGER_SCHEMA}.load_tables AS t USING (load_id, source_path) "
            "GROUP BY c.source_path, c.source_sha256, c.wal_sha256, c.kind, f.stat").fetchall()
    return {path: KnownFile(*known) for path, *known in rows}


def current_loads_text(connection: psycopg.Connection) -> str:
    """Every current load as `load_id source_path` lines, by path: what the marts are built from."""
    return connection.execute(
        f"SELECT coalesce(string_agg(load_id || ' ' || source_path, E'\\n' ORDER BY source_path), '') "
        f"FROM {LEDGER_SCHEMA}.current_loads").fetchone()[0]


def secret_policies(connection: psycopg.Connection) -> dict[str, dict]:
    """The secret policy each load recorded (SecretPolicy.describe), by load_id."""
    if not connection.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = %s "
                              "AND table_name = 'loads' AND column_name = 'secret_policy'", [LEDGER_SCHEMA]).fetchone():
        return {}
    return dict(connection.execute(sql.SQL("SELECT load_id, secret_policy FROM {} WHERE secret_policy IS NOT NULL")
                                   .format(sql.Identifier(LEDGER_SCHEMA, "loads"))).fetchall())


# ------------------------------------------------------------------------------- a file's latest row

# The ledger's latest row of each source path, whatever its status (loaded, unchanged, copy or failed): its
# latest word on the file, where current_loads is its latest `loaded` row. A subquery of load_files' columns,
# one row per path, to select FROM (`... FROM {LATEST_FILE_ROWS} AS latest`; a condition on source_path
# reaches inside it). Not a view: status, validate and archive read a ledger without upgrading it, and
# every ledger has load_files.
LATEST_FILE_ROWS = f"""(
    SELECT DISTINCT ON (source_path) *
    FROM {LEDGER_SCHEMA}.load_files
    ORDER BY source_path, started_at DESC, load_id DESC
)"""


def file_labels(connection: psycopg.Connection, wanted: dict[str, str]) -> dict[str, str]:
    """The source_db of each file a load is about to record ({path: the label discovery gives it, relative
    to the root given}): the one the ledger knows the path by (its latest row's), so that a file keeps its
    first load's label whatever root a later sync is given; for a new file, the label wanted, or, when
    another file has it already or it names the end of another file's path too (`.swarm/memory.db` of one
    service among others), the shortest longer end of its path that names it alone."""
    known = dict(connection.execute(
        f"SELECT source_path, source_db FROM {LATEST_FILE_ROWS} AS latest WHERE source_path = ANY(%s)",
        (list(wanted),)).fetchall())
    if set(wanted) <= set(known):  # every file known: no label taken to look up
        return {path: known[path] for path in wanted}
    taken = {label for (label,) in connection.execute(f"SELECT DISTINCT source_db FROM {LEDGER_SCHEMA}.load_files")}
    taken |= set(known.values())
    paths = {path for (path,) in connection.execute(f"SELECT DISTINCT source_path FROM {LEDGER_SCHEMA}.load_files")}
    ends_of: dict[str, set[str]] = {}  # every end of every file's path -> the paths ending so
    for path in paths | set(wanted):
        parts = Path(path).parts
        for count in range(1, len(parts)):
            ends_of.setdefault("/".join(parts[-count:]), set()).add(path)
    labels = {}
    for path, label in wanted.items():
        if path in known:
            labels[path] = known[path]
            continue
        parts = Path(path).parts
        ends = ["/".join(parts[-count:]) for count in range(len(Path(label).parts) + 1, len(parts))]
        labels[path] = next((end for end in [label, *ends]
                             if end not in taken and not ends_of.get(end, set()) - {path}), path)
        taken.add(labels[path])
    return labels


# ------------------------------------------------------------------------------- archived originals

# What validate, status and rollback say when the archive a removal record names is not there any more.
RELOCATE_HINT = "if it was moved, `consolidate archive --verify NEW_PATH --relocate`"


@dataclass(frozen=True)
class ArchivedRemoval:
    """A file whose original `consolidate archive --remove-originals` deleted: where its bytes are now."""

    source_path: str
    load_id: str
    sha256: str
    wal_sha256: str | None
    archive_path: str
    archive_sha256: str
    members: dict[str, str]  # suffix ("", "-wal", "-journal") -> member name in the zip
    removed_at: datetime
    removed_by: str

    @property
    def archive_exists(self) -> bool:
        """Whether the archive is still where the ledger says (else RELOCATE_HINT applies)."""
        return Path(self.archive_path).is_file()

    def to_json(self) -> dict:
        return {"archive_path": self.archive_path, "archive_sha256": self.archive_sha256,
                "members": self.members, "removed_at": self.removed_at.isoformat(), "removed_by": self.removed_by,
                "archive_exists": self.archive_exists}


def record_archived_removal(connection: psycopg.Connection, source_path: str, load_id: str, sha256: str,
                            wal_sha256: str | None, archive_path: str, archive_sha256: str,
                            members: dict[str, str], removed_by: str) -> None:
    connection.execute(
        sql.SQL("INSERT INTO {} (source_path, load_id, sha256, wal_sha256, archive_path, archive_sha256, members, "
                "removed_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (source_path, load_id) DO UPDATE "
                "SET archive_path = excluded.archive_path, archive_sha256 = excluded.archive_sha256, "
                "members = excluded.members, removed_at = now(), removed_by = excluded.removed_by").format(
            table("archived_removals")),
        (source_path, load_id, sha256, wal_sha256, archive_path, archive_sha256, Jsonb(members), removed_by))


def forget_archived_removal(connection: psycopg.Connection, source_path: str, load_id: str) -> None:
    connection.execute(sql.SQL("DELETE FROM {} WHERE source_path = %s AND load_id = %s").format(
        table("archived_removals")), (source_path, load_id))


def relocate_archive(connection: psycopg.Connection, archive_sha256: str,
                     archive_path: str) -> list[tuple[str, str]] | None:
    """Point the removal records of the archive with these bytes at `archive_path`, where it was moved;
    returns (source_path, previous archive_path) of each record moved, None when no record names an
    archive with these bytes."""
    if not relation_exists(connection, LEDGER_SCHEMA, "archived_removals"):
        return None
    records = connection.execute(
        sql.SQL("SELECT source_path, archive_path FROM {} WHERE archive_sha256 = %s ORDER BY source_path").format(
            table("archived_removals")), (archive_sha256,)).fetchall()
    if not records:
        return None
    connection.execute(sql.SQL("UPDATE {} SET archive_path = %s WHERE archive_sha256 = %s").format(
        table("archived_removals")), (archive_path, archive_sha256))
    return [(path, previous) for path, previous in records if previous != archive_path]


ARCHIVED_REMOVALS_QUERY = f"""
WITH copies AS (
    SELECT source_path, load_id, source_sha256, wal_sha256
    FROM {LATEST_FILE_ROWS} AS latest
    WHERE status = 'copy' AND source_path NOT IN (SELECT source_path FROM {LEDGER_SCHEMA}.current_loads)
), still_true AS (
    SELECT source_path, load_id, source_sha256, wal_sha256 FROM {LEDGER_SCHEMA}.current_loads
    UNION ALL
    SELECT source_path, load_id, source_sha256, wal_sha256 FROM copies
)
SELECT r.source_path, r.load_id, r.sha256, r.wal_sha256, r.archive_path, r.archive_sha256, r.members,
       r.removed_at, r.removed_by
FROM {LEDGER_SCHEMA}.archived_removals AS r
JOIN still_true AS t ON t.source_path = r.source_path AND t.load_id = r.load_id AND t.source_sha256 = r.sha256
                    AND t.wal_sha256 IS NOT DISTINCT FROM r.wal_sha256
"""


def archived_removals(connection: psycopg.Connection) -> dict[str, ArchivedRemoval]:
    """The files archived and then removed from disk whose record still holds, by path: a loaded file's
    while its current load is the one whose bytes were archived, a byte-identical copy's while the
    ledger's latest word on its path is still the load that found it a copy (empty for a ledger from
    before migration 11)."""
    if not relation_exists(connection, LEDGER_SCHEMA, "archived_removals"):
        return {}
    return {row[0]: ArchivedRemoval(*row) for row in connection.execute(ARCHIVED_REMOVALS_QUERY).fetchall()}


# ----------------------------------------------------------------------------------- forgotten files

@dataclass(frozen=True)
class ForgottenFile:
    """A file deleted outside `archive` that `consolidate forget` accepted as gone."""

    source_path: str
    load_id: str
    forgotten_at: datetime
    forgotten_by: str
    note: str | None

    def to_json(self) -> dict:
        return {"load_id": self.load_id, "forgotten_at": self.forgotten_at.isoformat(),
                "forgotten_by": self.forgotten_by, "note": self.note}


def record_forgotten(connection: psycopg.Connection, source_path: str, load_id: str, forgotten_by: str,
                     note: str | None) -> ForgottenFile:
    row = connection.execute(
        sql.SQL("INSERT INTO {} (source_path, load_id, forgotten_by, note) VALUES (%s, %s, %s, %s) "
                "RETURNING source_path, load_id, forgotten_at, forgotten_by, note").format(table("forgotten_files")),
        (source_path, load_id, forgotten_by, note)).fetchone()
    return ForgottenFile(*row)


# A forget holds while the load it names is still the file's current load or, for a file with none (a
# copy of another file, or one that only ever failed), while it is still the ledger's latest word on the path.
FORGOTTEN_FILES_QUERY = f"""
SELECT f.source_path, f.load_id, f.forgotten_at, f.forgotten_by, f.note
FROM {LEDGER_SCHEMA}.forgotten_files AS f
LEFT JOIN {LEDGER_SCHEMA}.current_loads AS c ON c.source_path = f.source_path
WHERE c.load_id = f.load_id
   OR (c.load_id IS NULL AND EXISTS (SELECT 1 FROM {LATEST_FILE_ROWS} AS latest
                                     WHERE latest.source_path = f.source_path AND latest.load_id = f.load_id))
"""


def forgotten_files(connection: psycopg.Connection) -> dict[str, ForgottenFile]:
    """The files accepted as gone whose record still holds, by path; empty for a ledger from before
    migration 12."""
    if not relation_exists(connection, LEDGER_SCHEMA, "forgotten_files"):
        return {}
    return {row[0]: ForgottenFile(*row) for row in connection.execute(FORGOTTEN_FILES_QUERY)}



# ------------------------------------------------------------- a file on disk against its current load

# Its bytes (main file and `-wal`) are the current load's, or not, or could not be read.
UNCHANGED, CHANGED, UNREADABLE = "unchanged", "changed", "unreadable"
# Not on disk: removed by `archive --remove-originals` (its bytes are in the archive), accepted as gone by
# `consolidate forget`, or neither (a problem). validation_files.checksum_status takes these six.
ARCHIVED, FORGOTTEN, MISSING = "archived", "forgotten", "missing"


@dataclass(frozen=True)
class GoneFiles:
    """The ledger's records of files that left the disk on purpose, by path."""

    archived: dict[str, ArchivedRemoval]
    forgotten: dict[str, ForgottenFile]

    def why_gone(self, source_path: str) -> str:
        """ARCHIVED, FORGOTTEN or MISSING, for a file that is not on disk (a removal after archiving
        outranks a forget: it keeps the bytes)."""
        return ARCHIVED if source_path in self.archived else FORGOTTEN if source_path in self.forgotten else MISSING

    def gone_since(self, source_path: str) -> datetime | None:
        """When the file left the disk on purpose, by the record `why_gone` goes by."""
        if source_path in self.archived:
            return self.archived[source_path].removed_at
        forgotten = self.forgotten.get(source_path)
        return forgotten.forgotten_at if forgotten else None


def gone_files(connection: psycopg.Connection) -> GoneFiles:
    return GoneFiles(archived_removals(connection), forgotten_files(connection))

# ------------------------------------------------------------------------------- a file's current rows

# The loads whose raw rows make up the state a load's file had at load %(previous)s: that load and,
# if it is a delta, the loads it was applied on (same as consolidate.current_load_parts, for one load).
CHAIN = f"""
WITH RECURSIVE chain AS (
    SELECT load_id, delta_of FROM {LEDGER_SCHEMA}.load_files
    WHERE load_id = %(previous)s AND source_path = %(source_path)s
    UNION ALL
    SELECT f.load_id, f.delta_of
    FROM chain
    JOIN {LEDGER_SCHEMA}.load_files AS f ON f.load_id = chain.delta_of AND f.source_path = %(source_path)s
)"""


def state_loads(load_param: str) -> sql.Composed:
    """A subquery of the loads whose raw rows make up a file's state at the load named by the placeholder
    `load_param` (and %(source_path)s): that load and, for a change load, the loads it applies on."""
    return sql.SQL("({} SELECT load_id FROM chain)").format(
        sql.SQL(CHAIN.replace("%(previous)s", f"%({load_param})s")))


def in_state(row: str, source_table: str, load_param: str) -> sql.Composed:
    """`row` (an alias of raw rows of the file's `source_table`) is a row of the file's state at the load
    %(load_param)s: a row of one of its loads (state_loads) that none of them retired. Rows retired by
    later loads were still there then. At the file's current load: the file's current rows."""
    return in_loads(row, source_table, state_loads(load_param))


def in_loads(row: str, source_table: str, loads: sql.Composable) -> sql.Composed:
    """`row` (an alias of raw rows of the file %(source_path)s's `source_table`) is a row of one of `loads`
    (a subquery of load ids) that none of them retired: in_state, for loads already known."""
    return sql.SQL(
        "{row}._load_id IN {loads} AND {row}._source_path = %(source_path)s "
        "AND NOT EXISTS (SELECT 1 FROM {retired} AS retired WHERE retired.row_load_id = {row}._load_id "
        "AND retired.source_path = {row}._source_path AND retired.source_table = {table} "
        "AND retired.source_rowid = {row}._source_rowid AND retired.load_id IN {loads})").format(
        row=sql.Identifier(row), loads=loads, retired=sql.Identifier(LEDGER_SCHEMA, "retired_rows"),
        table=sql.Literal(source_table))


def not_retired(row: str, raw_schema: str | sql.Composable, raw_table: str | sql.Composable) -> sql.Composed:
    """`row` (an alias of a raw table's rows) is not retired: the condition every reader of a file's current
    rows adds to its join with consolidate.current_load_parts. `raw_schema`/`raw_table`: literals or SQL."""
    def value(part):
        return part if isinstance(part, sql.Composable) else sql.Literal(part)
    return sql.SQL(
        "NOT EXISTS (SELECT 1 FROM {ledger}.retired_rows AS retired WHERE retired.row_load_id = {row}._load_id "
        "AND retired.source_path = {row}._source_path AND retired.raw_schema = {schema} "
        "AND retired.raw_table = {table} AND retired.source_rowid = {row}._source_rowid)").format(
        ledger=sql.Identifier(LEDGER_SCHEMA), row=sql.Identifier(row), schema=value(raw_schema), table=value(raw_table))


# ------------------------------------------------------------------------------------------ builds

def record_build(target: Target, fingerprint: str, build_passed: bool, validation_passed: bool | None) -> None:
    with target.connect() as connection:
        ensure(connection)
        connection.execute(
            sql.SQL("INSERT INTO {} (marts_schema, fingerprint, build_passed, validation_passed) "
                    "VALUES (%s, %s, %s, %s)").format(table("builds")),
            (target.schema, fingerprint, build_passed, validation_passed))


def memory_models_left_whole(connection: psycopg.Connection, marts_schema: str) -> bool:
    """Whether the latest dbt invocation against the marts' schema that selected a memory model
    (consolidate.memory_builds: a `build`, a `run`'s build, any `consolidate dbt` command; one that selected
    none, like `source freshness`, `docs generate` or `test`, changed none of them, whatever its outcome)
    finished with nothing failed and built all of them; True when there was none. One that failed, died or
    built only some (a selection such as `dbt run --select int_memory_ranked`) may have left marts that do
    not hold what int_memory_ranked does, which an incremental build, recomputing only what changed since,
    would keep. The rule is the ledger's SQL function (migration 15), which the tests' scope reads too."""
    return connection.execute(sql.SQL("SELECT {}(%s)").format(table("memory_models_left_whole")),
                              (marts_schema,)).fetchone()[0]


def latest_build(connection: psycopg.Connection, marts_schema: str) -> tuple[str, bool, bool | None] | None:
    """(fingerprint, build passed, validation passed) of the latest `run`'s build of the marts' schema."""
    ensure(connection)
    return connection.execute(
        sql.SQL("SELECT fingerprint, build_passed, validation_passed FROM {} "
                "WHERE marts_schema = %s ORDER BY built_at DESC LIMIT 1").format(table("builds")),
        (marts_schema,)).fetchone()
