"""app-copy's conversion rules on every column type the applications use, and its refusals, on a small
n8n-shaped pair made here: a SQLite database and the PostgreSQL schema "the application" made (same
migrations, typed columns, a foreign key, a serial id). Expected values are written out by hand from
the documented rules, not taken from app-copy."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from conftest import AMBIENT_SETTINGS, consolidate, fetch, make_db, read_private_copy

MIGRATIONS = [(1588102412422, "InitialMigration1588102412422"), (1747824239000, "AddProjectDescriptionColumn1747824239000")]

SQLITE_DDL = (
    "CREATE TABLE migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp INTEGER NOT NULL, name TEXT NOT NULL)",
    ("INSERT INTO migrations (timestamp, name) VALUES (?, ?)", MIGRATIONS),
    "CREATE TABLE workflow_entity (id TEXT PRIMARY KEY, name TEXT, active BOOLEAN, nodes TEXT, meta TEXT, "
    "createdAt DATETIME, updatedAt DATETIME, triggerCount INTEGER, weight REAL, price NUMERIC, day DATE, "
    "icon BLOB, owner TEXT)",
    "CREATE TABLE execution_entity (id INTEGER PRIMARY KEY AUTOINCREMENT, workflowId TEXT REFERENCES workflow_entity(id), "
    "finished BOOLEAN)",
    "CREATE TABLE credentials_entity (id TEXT PRIMARY KEY)",
)

POSTGRES_DDL = """
CREATE SCHEMA app;
CREATE TABLE app.migrations (id serial PRIMARY KEY, "timestamp" bigint NOT NULL, name varchar NOT NULL);
CREATE TABLE app.workflow_entity (
    id varchar(36) PRIMARY KEY, name varchar(12), active boolean NOT NULL, nodes json, meta jsonb,
    "createdAt" timestamp(3) with time zone NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    "updatedAt" timestamp without time zone, "triggerCount" integer, weight double precision,
    price numeric(10, 2), day date, icon bytea, owner uuid, "versionId" varchar DEFAULT 'v1');
CREATE TABLE app.execution_entity (id serial PRIMARY KEY,
    "workflowId" varchar(36) REFERENCES app.workflow_entity (id), finished boolean NOT NULL);
CREATE TABLE app.credentials_entity (id varchar(36) PRIMARY KEY);
"""

WORKFLOW_COLUMNS = ("id, name, active, nodes, meta, createdAt, updatedAt, triggerCount, weight, price, day, icon, "
                    "owner")
GOOD_ROW = ("w1", "Ünïcode ✓", 1, '{"b": 1,  "a": [1.50, 2]}', '{"z": 1e2, "a": "x"}', "2025-08-01 20:01:03.4496",
            "2025-08-01T22:01:03+02:00", "7", 0.1, 12.345, "2025-08-01", b"\x00\xffPNG", "6930EEE8-23FC-4CF1-BE0B-C6A6C0D34E0C")


def app_pair(tmp_path: Path, target, *rows) -> Path:
    source = make_db(tmp_path / "app" / "database.sqlite", *SQLITE_DDL,
                     (f"INSERT INTO workflow_entity ({WORKFLOW_COLUMNS}) VALUES ({', '.join('?' * 13)})", rows),
                     ("INSERT INTO execution_entity (workflowId, finished) VALUES (?, ?)", [(rows[0][0], 0), (rows[0][0], 1)]))
    with target.connect() as connection:
        connection.execute(POSTGRES_DDL)
        connection.cursor().executemany('INSERT INTO app.migrations ("timestamp", name) VALUES (%s, %s)', MIGRATIONS)
    return source


def app_copy(source: Path, target, *options: str):
    result = consolidate("app-copy", str(source), "--schema", "app", "--dsn", target.dsn, "--json", *options)
    report = json.loads(result.stdout)
    assert report["exit_code"] == result.returncode, result.stdout[-2000:]
    return result, report


def test_values_take_their_column_types(tmp_path, target):
    source = app_pair(tmp_path, target, GOOD_ROW)
    result, report = app_copy(source, target)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    row = fetch(target, """
        SELECT name, active, nodes::text, meta::text, to_char("createdAt" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
               "updatedAt"::text, "triggerCount", weight = 0.1::float8, price::text, day::text, encode(icon, 'hex'),
               owner::text, "versionId"
        FROM app.workflow_entity""")
    assert row == [("Ünïcode ✓", True, '{"b": 1,  "a": [1.50, 2]}', '{"a": "x", "z": 100}',
                    "2025-08-01 20:01:03.450000",   # UTC text, rounded half up to milliseconds
                    "2025-08-01 20:01:03",          # an explicit offset is honoured: 22:01+02:00 is 20:01 UTC
                    7, True, "12.35", "2025-08-01", "00ff504e47", "6930eee8-23fc-4cf1-be0b-c6a6c0d34e0c", "v1")]
    assert fetch(target, 'SELECT "workflowId", finished FROM app.execution_entity ORDER BY id') == [
        ("w1", False), ("w1", True)]
    # the serial moved past the copied ids: the application's next execution gets id 3
    assert fetch(target, "INSERT INTO app.execution_entity (\"workflowId\", finished) VALUES ('w1', true) RETURNING id") \
        == [(3,)]
    assert {s["table"]: s["to"] for s in report["sequences"]} == {"execution_entity": 2}
    workflow = next(t for t in report["tables"] if t["table"] == "workflow_entity")
    assert "versionId" in workflow["note"]  # left to its default, and said so


def test_an_id_autoincrement_handed_out_to_a_deleted_row_is_not_handed_out_again(tmp_path, target):
    """SQLite's AUTOINCREMENT never reuses an id (sqlite_sequence keeps the largest handed out, a deleted
    row's included): nor does the application's serial after the copy."""
    source = app_pair(tmp_path, target, GOOD_ROW)  # executions 1 and 2
    with sqlite3.connect(source) as connection:
        connection.execute("INSERT INTO execution_entity (workflowId, finished) VALUES ('w1', 1)")
        connection.execute("DELETE FROM execution_entity WHERE id = 3")
    connection.close()
    handed_out = read_private_copy(source, tmp_path / "copy",
                                   "SELECT seq FROM sqlite_sequence WHERE name = 'execution_entity'")
    assert handed_out == [(3,)]
    result, report = app_copy(source, target)
    assert result.returncode == 0, report
    assert {s["table"]: s["to"] for s in report["sequences"]}["execution_entity"] == 3
    assert fetch(target, "INSERT INTO app.execution_entity (\"workflowId\", finished) VALUES ('w1', true) RETURNING id") \
        == [(4,)]


@pytest.mark.parametrize(("column", "value", "reason"), [
    ("active", "yes", "is not a boolean"),
    ("createdAt", "yesterday", "is not date-time text"),
    ("meta", '{"a": NaN}', "NaN"),
    ("owner", "not-a-uuid", "is not a UUID"),
    ("name", "far too long for twelve", "value too long"),
])
def test_a_value_the_column_cannot_hold_refuses_the_copy_naming_it(tmp_path, target, column, value, reason):
    bad = dict(zip([c.strip() for c in WORKFLOW_COLUMNS.split(",")], GOOD_ROW))
    bad.update(id="w2", **{column: value})
    source = app_pair(tmp_path, target, GOOD_ROW, tuple(bad.values()))
    result, report = app_copy(source, target)
    assert result.returncode == 5
    assert reason in report["message"] and "workflow_entity" in report["message"]
    assert "Nothing was written" in report["message"]
    # ours, and PostgreSQL's own refusal (which names a COPY line), name the row and column
    assert "row id='w2'" in report["message"] and f"column {column}" in report["message"]
    assert fetch(target, "SELECT count(*) FROM app.workflow_entity") == [(0,)]
    assert fetch(target, "SELECT status FROM consolidate.app_copies") == [("refused",)]


def test_a_row_whose_parent_is_missing_refuses_the_copy_naming_it(tmp_path, target):
    """A foreign key SQLite did not enforce (foreign_keys off, its default): PostgreSQL refuses the COPY;
    the refusal names the row by its key and the missing parent."""
    source = app_pair(tmp_path, target, GOOD_ROW)
    with sqlite3.connect(source) as connection:
        connection.execute("UPDATE execution_entity SET workflowId = 'gone' WHERE id = 2")
    connection.close()
    result, report = app_copy(source, target)
    assert result.returncode == 5, report
    assert "table execution_entity, row id=2:" in report["message"], report["message"]
    assert "(gone) is not present in table \"workflow_entity\"" in report["message"]
    assert fetch(target, "SELECT count(*) FROM app.execution_entity") == [(0,)]


def test_a_role_that_may_not_use_the_schema_is_told_which_grant_is_missing(tmp_path, target):
    """README step 2's GRANT forgotten: the role app-copy connects as may not use the application's schema.
    A usage error naming the grant (it was a traceback, exit 1, nothing on stdout with --json)."""
    source = app_pair(tmp_path, target, GOOD_ROW)
    with target.connect() as connection:
        connection.execute("CREATE ROLE outsider LOGIN")
        owner = connection.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'app'").fetchone()[0]
    try:
        result = consolidate("app-copy", str(source), "--schema", "app", "--json",
                             "--dsn", make_conninfo(target.dsn, user="outsider"))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        report = json.loads(result.stdout)
        assert report["exit_code"] == 2
        assert "role outsider may not use schema app" in report["error"]
        assert f"GRANT {owner} TO outsider" in report["error"]
        # granted, the copy itself may go on; the ledger's schema needs CREATE on the database, which is said
        # as PostgreSQL says it (not as the grant above): the schema and its tables owned by an application
        # role of their own (a member of the superuser that made them could create anything)
        with target.connect() as connection:
            connection.execute("CREATE ROLE app_owner")
            connection.execute("ALTER SCHEMA app OWNER TO app_owner")
            for (table,) in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'app'").fetchall():
                connection.execute(f'ALTER TABLE app."{table}" OWNER TO app_owner')
            connection.execute("GRANT app_owner TO outsider")
        result = consolidate("app-copy", str(source), "--schema", "app", "--json",
                             "--dsn", make_conninfo(target.dsn, user="outsider"))
        report = json.loads(result.stdout)
        assert result.returncode == 2 and "lacks a privilege app-copy needs: permission denied for database" \
            in report["error"], report
    finally:
        with target.connect() as connection:
            connection.execute("DROP OWNED BY outsider")
            connection.execute("DROP ROLE outsider")
            connection.execute("DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_owner') THEN "
                               "REASSIGN OWNED BY app_owner TO CURRENT_USER; DROP ROLE app_owner; END IF; END $$")
    assert fetch(target, "SELECT count(*) FROM app.workflow_entity") == [(0,)]


def test_an_interrupted_copy_writes_nothing_and_is_recorded(tmp_path, target):
    """Ctrl-C in the middle of the COPY: nothing kept, the attempt is a row of the ledger, and the command
    says so (exit 130, with --json a document): it ended in silence."""
    source = app_pair(tmp_path, target, GOOD_ROW)
    with sqlite3.connect(source) as connection:
        connection.executemany("INSERT INTO execution_entity (workflowId, finished) VALUES ('w1', 1)",
                               [()] * 300_000)
    connection.close()
    environment = {k: v for k, v in os.environ.items() if k not in AMBIENT_SETTINGS}
    process = subprocess.Popen([sys.executable, "-m", "loader", "app-copy", str(source), "--schema", "app",
                                "--dsn", target.dsn, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=environment)
    try:
        deadline = time.monotonic() + 120
        while not fetch(target, "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'COPY %%execution_entity%%' "
                                "AND pid <> pg_backend_pid()"):
            assert process.poll() is None and time.monotonic() < deadline, "the copy ended before it was caught"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    assert "interrupted" in stderr and json.loads(stdout)["exit_code"] == 130
    assert fetch(target, "SELECT status, message FROM consolidate.app_copies") == [
        ("interrupted", "interrupted before it committed: nothing was written")]
    assert fetch(target, "SELECT (SELECT count(*) FROM app.workflow_entity), (SELECT count(*) FROM app.execution_entity)") \
        == [(0, 0)]


def test_a_copy_while_the_application_is_connected_is_refused(tmp_path, target):
    """README step 1, stop the application: a session of the role owning the schema (the application's)
    refuses a copy, which would replace rows under it; verifying is allowed."""
    source = app_pair(tmp_path, target, GOOD_ROW)
    with target.connect() as connection:
        connection.execute("CREATE ROLE running_app LOGIN")
        connection.execute("ALTER SCHEMA app OWNER TO running_app")
    try:
        with psycopg.connect(make_conninfo(target.dsn, user="running_app", application_name="n8n-worker")):
            result, report = app_copy(source, target)
            assert result.returncode == 5 and "1 session(s) of n8n-worker" in report["message"], report
            assert "stop it first" in report["message"]
            assert fetch(target, "SELECT count(*) FROM app.workflow_entity") == [(0,)]
            verified, _ = app_copy(source, target, "--verify-only")
            assert verified.returncode == 1  # compared (the schema is empty): not refused
        result, report = app_copy(source, target)
        assert result.returncode == 0, report
    finally:
        with target.connect() as connection:
            connection.execute("ALTER SCHEMA app OWNER TO current_user")
            connection.execute("DROP ROLE running_app")


def test_missing_schema_and_foreign_files_are_usage_errors(tmp_path, target):
    source = app_pair(tmp_path, target, GOOD_ROW)
    result = consolidate("app-copy", str(source), "--schema", "nowhere", "--dsn", target.dsn)
    assert result.returncode == 2 and "schema nowhere does not exist" in result.stderr
    other = make_db(tmp_path / "other.db", "CREATE TABLE memory_entries (key TEXT)")
    result = consolidate("app-copy", str(other), "--schema", "app", "--dsn", target.dsn)
    assert result.returncode == 2 and "neither an n8n nor a Flowise database" in result.stderr
    result = consolidate("app-copy", str(tmp_path / "absent.sqlite"), "--schema", "app", "--dsn", target.dsn)
    assert result.returncode == 3
    result = consolidate("app-copy", str(tmp_path / "app"), "--schema", "app", "--dsn", target.dsn)
    assert result.returncode == 3 and "a folder, not a database file" in result.stderr
    flowise = make_db(tmp_path / "flowise.sqlite", "CREATE TABLE chat_flow (id TEXT PRIMARY KEY)")
    result = consolidate("app-copy", str(flowise), "--schema", "app", "--dsn", target.dsn)
    assert result.returncode == 2 and "schema app is n8n's, and the source is a flowise database" in result.stderr


def test_a_source_column_the_target_lacks_is_refused(tmp_path, target):
    source = app_pair(tmp_path, target, GOOD_ROW)
    with target.connect() as connection:
        connection.execute("ALTER TABLE app.workflow_entity DROP COLUMN weight")
    result, report = app_copy(source, target)
    assert result.returncode == 5
    assert "column workflow_entity.weight holds 1 values but schema app has no such column" in report["message"]


def test_rows_only_in_the_wal_arrive_and_the_source_files_stay_as_they_were(tmp_path, target):
    """An application still holding its database open: the newest rows live only in `-wal`."""
    scratch = app_pair(tmp_path / "scratch", target, GOOD_ROW)
    connection = sqlite3.connect(scratch)
    try:
        connection.execute("PRAGMA journal_mode=WAL").fetchone()
        connection.execute("PRAGMA wal_autocheckpoint=0")
        connection.execute("INSERT INTO workflow_entity (id, active, createdAt) VALUES ('in-wal', 0, '2025-01-01 00:00:00')")
        connection.commit()
        source = tmp_path / "app" / "database.sqlite"
        source.parent.mkdir(parents=True)
        shutil.copyfile(scratch, source)
        shutil.copyfile(f"{scratch}-wal", f"{source}-wal")
    finally:
        connection.close()
    before = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in source.parent.iterdir()}
    result, _ = app_copy(source, target)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert fetch(target, "SELECT id FROM app.workflow_entity ORDER BY id") == [("in-wal",), ("w1",)]
    assert {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in source.parent.iterdir()} == before


def test_a_target_that_changes_what_it_receives_fails_verification_and_keeps_nothing(tmp_path, target):
    """A trigger in the target rewriting a value on its way in: the copy does not verify, so it is rolled back."""
    source = app_pair(tmp_path, target, GOOD_ROW)
    with target.connect() as connection:
        connection.execute("""
            CREATE FUNCTION app.shout() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN NEW.name := upper(NEW.name); RETURN NEW; END $$;
            CREATE TRIGGER shout BEFORE INSERT ON app.workflow_entity FOR EACH ROW EXECUTE FUNCTION app.shout();""")
    result, report = app_copy(source, target)
    assert result.returncode == 1
    assert report["status"] == "mismatch" and "rolled back" in report["message"]
    (differing,) = [t for t in report["tables"] if not t["matches"]]
    assert differing["table"] == "workflow_entity" and differing["differences"] == ["row id='w1': values differ"]
    assert fetch(target, "SELECT count(*) FROM app.workflow_entity") == [(0,)]
    assert fetch(target, "SELECT count(*) FROM app.execution_entity") == [(0,)]
    assert fetch(target, "SELECT status FROM consolidate.app_copies") == [("mismatch",)]
