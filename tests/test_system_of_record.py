"""PostgreSQL as the system of record (issue 11): writes made in PostgreSQL are versions that no sync,
run or build loses, ids are given once, and the incremental build equals a full refresh.

Against a real PostgreSQL, real SQLite files and the real CLI / library. Expectations are computed here:
values from the writes the test makes and from private copies of the SQLite files (sqlite3), the ranking
rule by an independent Python model (Model below)."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from test_cutover import entries_changed, entry_rows
from test_sync import PERFORMANCE, T0, SourceFiles, do_sync, v2_file

from loader.database import Target
from loader.serve.client import MemoryClient
from loader.transform.build import build, run_dbt

from conftest import consolidate, fresh_database, read_private_copy, wait_for

MARTS = ("unified_memory", "performance_metrics", "unified_memory_history")
CLIENT_APPLICATION = "consolidate-memory-client"


def marts_snapshot(target: Target) -> dict[str, list[str]]:
    """Every row of the three memory marts (every column, ids included) and of compat.memory_entries."""
    with target.connect() as connection:
        return {relation: sorted(json.dumps(row, sort_keys=True) for (row,) in connection.execute(
                    f"SELECT to_jsonb(t) FROM {relation} AS t"))
                for relation in (*MARTS, "compat.memory_entries")}


def entry(target: Target, key: str, namespace: str) -> dict | None:
    with target.connect() as connection:
        cursor = connection.execute("SELECT * FROM unified_memory WHERE key = %s AND namespace = %s", (key, namespace))
        row = cursor.fetchone()
        return None if row is None else dict(zip([c.name for c in cursor.description], row))


def execute(target: Target, statement: str, parameters=()) -> int:
    with target.connect(autocommit=True) as connection:
        return connection.execute(statement, parameters).rowcount


def full_refresh_models(target: Target, home: Path) -> None:
    """`dbt run --full-refresh` of the memory models and what reads them, without the tests (the whole
    `build --full-refresh` is tested through the CLI above; this keeps the property test's rebuilds short)."""
    outcome = run_dbt(["run", "--full-refresh", "--select", "int_memory_load_changes+"], target, home, quiet=True)
    assert outcome.success, outcome.failures


# ------------------------------------------------------------------------------------ the done-when

@pytest.fixture(scope="module")
def migrated(server_dsn, tmp_path_factory):
    """The sample tree after `consolidate run`: (target, tree, home)."""
    folder = tmp_path_factory.mktemp("system-of-record")
    tree, home = folder / "tree", folder / "state"
    with fresh_database(server_dsn) as target:
        assert consolidate("sample", str(tree)).returncode == 0
        result = consolidate("run", str(tree), "--no-backup", target=target, home=home)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield target, tree, home


def migrated_entries(target: Target, namespace: str, count: int) -> list[tuple[str, str]]:
    """`count` entries of `namespace` that came from SQLite files, never written in PostgreSQL."""
    with target.connect() as connection:
        return connection.execute(
            "SELECT key, namespace FROM unified_memory WHERE namespace = %s AND load_id IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM raw_postgres.memory_writes w WHERE w.key = unified_memory.key "
            "AND w.namespace = unified_memory.namespace) ORDER BY id LIMIT %s", (namespace, count)).fetchall()


def test_writes_in_postgresql_survive_sync_rebuild_and_full_refresh(migrated):
    target, tree, home = migrated
    (set_key, set_ns), (deleted_key, deleted_ns), (compat_key, compat_ns), (compat_gone, compat_gone_ns) = \
        migrated_entries(target, "swarm", 4)
    before_set = entry(target, set_key, set_ns)
    with MemoryClient(target.dsn) as client:
        client.set("sor:new", {"n": 1}, "sor")
        client.set(set_key, ["replaced"], set_ns)
        assert client.delete(deleted_key, deleted_ns) is True
    assert execute(target, "INSERT INTO compat.memory_entries (key, value, namespace) VALUES (%s, %s, %s)",
                   ("sor:compat", '{"c": [1, 2]}', "sor")) == 1
    assert execute(target, "UPDATE compat.memory_entries SET value = %s WHERE key = %s AND namespace = %s",
                   ("plain text now", "sor:compat", "sor")) == 1
    assert execute(target, "UPDATE compat.memory_entries SET value = %s WHERE key = %s AND namespace = %s",
                   ('{"via": "compat"}', compat_key, compat_ns)) == 1
    assert execute(target, "DELETE FROM compat.memory_entries WHERE key = %s AND namespace = %s",
                   (compat_gone, compat_gone_ns)) == 1

    def assert_the_writes_are_there():
        assert entry(target, "sor:new", "sor")["value"] == {"n": 1}
        replaced = entry(target, set_key, set_ns)
        assert (replaced["value"], replaced["id"], replaced["created_at"], replaced["source_db"]) == \
               (["replaced"], before_set["id"], before_set["created_at"], "postgresql")
        assert entry(target, deleted_key, deleted_ns) is None and entry(target, compat_gone, compat_gone_ns) is None
        assert (entry(target, "sor:compat", "sor")["value"], entry(target, "sor:compat", "sor")["data_type"]) == \
               ("plain text now", "text")
        assert entry(target, compat_key, compat_ns)["value"] == {"via": "compat"}
        with target.connect() as connection:
            deleted_history = connection.execute(
                "SELECT deleted, version_rank, source_table FROM unified_memory_history WHERE key = %s "
                "AND namespace = %s ORDER BY version_rank", (deleted_key, deleted_ns)).fetchall()
        assert deleted_history[0] == (True, 1, "memory_writes") and len(deleted_history) >= 2

    assert_the_writes_are_there()
    written = marts_snapshot(target)

    result = consolidate("sync", str(tree), target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert marts_snapshot(target) == written
    result = consolidate("run", str(tree), "--rebuild", "--no-backup", target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]  # validation passes too
    assert marts_snapshot(target) == written
    result = consolidate("build", "--full-refresh", target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert marts_snapshot(target) == written
    assert_the_writes_are_there()

    result = consolidate("lineage", set_key, "--namespace", set_ns, "--json", target=target, home=home)
    versions = json.loads(result.stdout)
    winner = next(v for v in versions if v["role"] == "winner")
    assert (winner["written_by"], winner["via"], winner["value"]) == (CLIENT_APPLICATION, "client", ["replaced"])
    assert any(v["role"] == "superseded" and v["load_id"] for v in versions)
    shown = consolidate("lineage", set_key, "--namespace", set_ns, target=target, home=home).stdout
    assert f"written in PostgreSQL by {CLIENT_APPLICATION} (" in shown


def sqlite_deletes(target: Target) -> list[tuple]:
    with target.connect() as connection:
        return connection.execute(
            "SELECT namespace, key, home_source_path, application_name FROM raw_postgres.memory_writes "
            "WHERE via = 'sqlite delete' ORDER BY write_id").fetchall()


def test_a_delete_in_sqlite_removes_an_entry_a_write_in_postgresql_holds(tmp_path, target, home):
    """A service rolled back to its file deletes an entry in SQLite that a write made in PostgreSQL before
    the file's last load set: the latest change, the delete, wins (the sync records it in the write log).
    Nothing is recorded for a changed row, an INSERT OR REPLACE (a new rowid for the key), an entry no write
    in PostgreSQL holds, a write made since the file's last load (it may be later than the delete) or an
    entry another file's newer row holds. The marts equal a full refresh."""
    root = tmp_path / "tree"
    db = v2_file(root / "app/.swarm/memory.db", [(f"key-{n}", f'{{"n": {n}}}', "default", T0 + n) for n in range(6)]
                 + [("shared", '"from app"', "default", T0)])
    other = v2_file(root / "other/.swarm/memory.db", [("shared", '"from other"', "default", T0)])
    assert consolidate("run", str(root), "--no-backup", target=target, home=home).returncode == 0
    with MemoryClient(target.dsn, source=str(db)) as client:
        for key in ("key-1", "key-3", "key-4", "key-5", "shared"):
            client.set(key, f"{key} set in PostgreSQL")
        client.set("made-in-postgres", "made in PostgreSQL")
    with contextlib.closing(sqlite3.connect(other)) as connection:  # later than the write: the winner
        connection.execute("UPDATE memory_entries SET value = '\"from other, dated 2100\"', updated_at = 4102444800 "
                           "WHERE key = 'shared'")
        connection.commit()
    with contextlib.closing(sqlite3.connect(db)) as connection:  # as a rollback file would hold it
        connection.execute("INSERT INTO memory_entries (key, value, namespace, created_at, updated_at) "
                           "VALUES ('made-in-postgres', 'made in PostgreSQL', 'default', ?, ?)", (T0, T0))
        connection.commit()
    do_sync(root, target, home)
    assert sqlite_deletes(target) == []
    with MemoryClient(target.dsn, source=str(db)) as client:  # after the file's last load
        client.set("key-0", "key-0 set in PostgreSQL")

    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("DELETE FROM memory_entries WHERE key IN ('key-0', 'key-1', 'key-2', 'key-5', 'shared', "
                           "'made-in-postgres')")
        connection.execute("UPDATE memory_entries SET value = '\"changed\"' WHERE key = 'key-4'")
        connection.execute("INSERT OR REPLACE INTO memory_entries (key, value, namespace, created_at, updated_at) "
                           "VALUES ('key-3', '\"replaced\"', 'default', ?, ?)", (T0 + 3, T0 + 3))
        connection.commit()
    do_sync(root, target, home)

    assert sorted(sqlite_deletes(target)) == [("default", "key-1", str(db), "consolidate"),
                                              ("default", "key-5", str(db), "consolidate"),
                                              ("default", "made-in-postgres", str(db), "consolidate")]
    for gone in ("key-1", "key-2", "key-5", "made-in-postgres"):
        assert entry(target, gone, "default") is None, gone
    for kept in ("key-0", "key-3", "key-4"):  # the writes made in PostgreSQL are later than the file's rows
        assert entry(target, kept, "default")["value"] == f"{kept} set in PostgreSQL"
    assert entry(target, "shared", "default")["value"] == "from other, dated 2100"
    shown = consolidate("lineage", "key-1", "--namespace", "default", target=target, home=home)
    assert shown.returncode == 0 and f"deleted in SQLite ({db})" in " ".join(shown.stdout.split())
    incremental = marts_snapshot(target)
    full_refresh_models(target, home)
    assert marts_snapshot(target) == incremental
    # a second sync with nothing changed records nothing more
    do_sync(root, target, home)
    assert len(sqlite_deletes(target)) == 3


def test_a_write_in_flight_while_a_sync_records_a_delete_made_in_sqlite_stays_the_value(tmp_path, target, home):
    """The entry's value is a write made in PostgreSQL before the file's last load; the service deletes it
    in SQLite, then writes it again in PostgreSQL in a transaction still open while a sync loads the file.
    The sync records the delete (it saw the older write as the value), but stamped just after that older
    write: the new write, committed after the load, stays the value."""
    root = tmp_path / "tree"
    db = v2_file(root / "app/.swarm/memory.db", [("key-1", '"from sqlite"', "default", T0),
                                                 ("key-2", '"from sqlite"', "default", T0)])
    assert consolidate("run", str(root), "--no-backup", target=target, home=home).returncode == 0
    with MemoryClient(target.dsn, source=str(db)) as client:
        client.set("key-1", "first write")
    with contextlib.closing(sqlite3.connect(db)) as connection:  # a load after the first write
        connection.execute("UPDATE memory_entries SET value = '\"changed\"' WHERE key = 'key-2'")
        connection.commit()
    do_sync(root, target, home)
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("DELETE FROM memory_entries WHERE key = 'key-1'")
        connection.commit()

    with psycopg.connect(target.dsn) as writer:
        writer.execute("INSERT INTO compat.memory_entries (key, value, namespace) VALUES ('key-1', '\"second write\"', "
                       "'default')")
        syncing = subprocess.Popen([sys.executable, "-m", "loader", "sync", str(root), "--dsn", target.dsn,
                                    "--home", str(home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda: sqlite_deletes(target) == [("default", "key-1", str(db), "consolidate")], 120,
                            step=0.1), "the sync recorded no delete"
            writer.commit()
            out, err = syncing.communicate(timeout=300)
        finally:
            if syncing.poll() is None:
                syncing.kill()
    assert syncing.returncode == 0, out[-2000:] + err[-2000:]
    assert entry(target, "key-1", "default")["value"] == "second write"
    incremental = marts_snapshot(target)
    full_refresh_models(target, home)
    assert marts_snapshot(target) == incremental


def test_a_delete_in_a_cut_over_file_records_nothing_and_is_reported_as_split_brain(tmp_path, target, home):
    """A file cut over to PostgreSQL whose stale service still deletes in SQLite an entry that a write made
    in PostgreSQL before the file's previous load holds: the sync records no delete (the write stays the
    value), while the same change in a file not cut over is recorded. The cut-over file is loaded and
    reported as split brain as documented: the entries it changed since its cutover, of them those written
    in PostgreSQL since the cutover named as written on both sides."""
    root = tmp_path / "tree"
    app = v2_file(root / "app/.swarm/memory.db", [(f"app-{n}", f'{{"n": {n}}}', "default", T0 + n) for n in range(4)])
    other = v2_file(root / "other/.swarm/memory.db",
                    [(f"other-{n}", f'{{"n": {n}}}', "default", T0 + n) for n in range(3)])
    assert consolidate("run", str(root), "--no-backup", target=target, home=home).returncode == 0
    with MemoryClient(target.dsn, source=str(app)) as client:
        client.set("app-1", "app-1 set in PostgreSQL")
    with MemoryClient(target.dsn, source=str(other)) as client:
        client.set("other-1", "other-1 set in PostgreSQL")
    for path, key in ((app, "app-0"), (other, "other-0")):  # a load of each file after the writes
        with contextlib.closing(sqlite3.connect(path)) as connection:
            connection.execute("UPDATE memory_entries SET value = '\"touched\"' WHERE key = ?", (key,))
            connection.commit()
    assert do_sync(root, target, home).split_brain == []
    assert sqlite_deletes(target) == []
    cut = consolidate("cutover", str(app), target=target, home=home)
    assert cut.returncode == 0, cut.stdout[-3000:] + cut.stderr[-3000:]
    at_cutover = entry_rows(app, tmp_path / "at-cutover")
    with MemoryClient(target.dsn, source=str(app)) as client:  # the service writes to PostgreSQL now
        client.set("app-2", "app-2 set in PostgreSQL")
        client.set("made-in-postgres", "made in PostgreSQL")
    written_since_cutover = {("default", "app-2"), ("default", "made-in-postgres")}

    # the stale service deletes in its file; the same deletes in the other file, not cut over
    for path, prefix in ((app, "app"), (other, "other")):
        with contextlib.closing(sqlite3.connect(path)) as connection:
            connection.execute("DELETE FROM memory_entries WHERE key IN (?, ?)", (f"{prefix}-1", f"{prefix}-2"))
            connection.commit()
    report = do_sync(root, target, home)

    # only the file not cut over records its delete of the entry a write before its previous load holds
    assert sqlite_deletes(target) == [("default", "other-1", str(other), "consolidate")]
    assert entry(target, "other-1", "default") is None and entry(target, "other-2", "default") is None
    for kept in ("app-1", "app-2"):  # no delete recorded: the writes made in PostgreSQL stay the values
        assert entry(target, kept, "default")["value"] == f"{kept} set in PostgreSQL"
    assert entry(target, "app-3", "default")["value"] == {"n": 3}

    changed = entries_changed(at_cutover, entry_rows(app, tmp_path / "after"))
    assert changed == {("default", "app-1"): "deleted", ("default", "app-2"): "deleted"}  # the scenario's own
    (split,) = report.split_brain
    assert (split.source_path, split.sqlite_entries, split.other_rows) == (str(app), len(changed), 0)
    assert [(e["namespace"], e["key"], e["sqlite_change"], e["postgres_writes"]) for e in split.entries] == \
        [(*e, changed[e], 1) for e in sorted(set(changed) & written_since_cutover)]
    assert "written on both sides: default/app-2 (deleted in SQLite, 1 write(s) in PostgreSQL)" in split.message()
    incremental = marts_snapshot(target)
    full_refresh_models(target, home)
    assert marts_snapshot(target) == incremental
    assert do_sync(root, target, home).split_brain == [] and len(sqlite_deletes(target)) == 1


def test_dml_on_unified_memory_is_captured_and_mistakes_are_refused(migrated):
    target, _tree, home = migrated
    (updated_key, ns), (touched_key, _), (deleted_key, _) = migrated_entries(target, "coordination", 3)
    touched_before = entry(target, touched_key, ns)

    execute(target, "INSERT INTO unified_memory (key, namespace, value) VALUES ('dml:new', 'dml', '{\"d\": 1}')")
    execute(target, "UPDATE unified_memory SET value = '\"dml-updated\"' WHERE key = %s AND namespace = %s",
            (updated_key, ns))
    execute(target, "UPDATE unified_memory SET access_count = coalesce(access_count, 0) + 5 "
                    "WHERE key = %s AND namespace = %s", (touched_key, ns))
    execute(target, "DELETE FROM unified_memory WHERE key = %s AND namespace = %s", (deleted_key, ns))

    new = entry(target, "dml:new", "dml")
    assert (new["value"], new["data_type"], new["source_db"]) == ({"d": 1}, "json", "postgresql") and new["id"]
    assert entry(target, updated_key, ns)["value"] == "dml-updated"
    assert entry(target, updated_key, ns)["data_type"] == "text"
    touched = entry(target, touched_key, ns)
    assert touched["access_count"] == (touched_before["access_count"] or 0) + 5
    assert {c: touched[c] for c in ("value", "updated_at", "source_path")} == \
           {c: touched_before[c] for c in ("value", "updated_at", "source_path")}
    assert entry(target, deleted_key, ns) is None
    with target.connect() as connection:
        logged = connection.execute(
            "SELECT key, operation FROM raw_postgres.memory_writes WHERE via = 'public.unified_memory' "
            "ORDER BY write_id").fetchall()
    assert logged == [("dml:new", "upsert"), (updated_key, "upsert"), (deleted_key, "delete")]

    refused = [
        ("UPDATE unified_memory SET id = id + 1000000 WHERE key = %s", "cannot change"),
        ("UPDATE unified_memory SET source_path = 'elsewhere' WHERE key = %s", "computed by consolidate"),
        ("DELETE FROM unified_memory_history WHERE key = %s", "derived from the versions"),
        ("UPDATE intermediate.int_memory_ranked SET value = 'null' WHERE key = %s", "derived from the versions"),
        ("UPDATE raw_postgres.memory_writes SET value = 'null' WHERE key = %s", "append-only"),
    ]
    for statement, message in refused:
        with pytest.raises(psycopg.Error, match=message):
            execute(target, statement, (updated_key,))
    with pytest.raises(psycopg.Error, match="derived from the versions"):
        execute(target, "TRUNCATE unified_memory")

    captured = marts_snapshot(target)
    result = consolidate("build", "--full-refresh", target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert marts_snapshot(target) == captured


def test_dml_on_a_mart_waiting_on_a_concurrent_write_of_its_entry_is_applied(migrated):
    """An UPDATE or DELETE on unified_memory or performance_metrics that finds its row locked by another
    write of the same entry waits for it, then is applied to the entry as that write left it: the write
    path replaces the row in place, so the statement follows it (a row deleted and inserted again would
    make it do nothing, and report success)."""
    target, _tree, _home = migrated
    statements = [
        ("dml-race", "updated", "UPDATE unified_memory SET value = '\"second\"' WHERE namespace = 'dml-race' AND key = %s"),
        ("dml-race", "deleted", "DELETE FROM unified_memory WHERE namespace = 'dml-race' AND key = %s"),
        ("performance-metrics", "metric",
         "UPDATE performance_metrics SET metric_data = '\"second\"' WHERE namespace = 'performance-metrics' AND key = %s"),
    ]
    write = ("SELECT consolidate.write_memory_entry('public', 'test', 'upsert', %s, %s, array['value'], "
             "p_value => %s::jsonb)")
    with psycopg.connect(target.dsn, autocommit=True) as first, psycopg.connect(target.dsn, autocommit=True) as second:
        for namespace, key, statement in statements:
            first.execute(write, (namespace, key, '"initial"'))
            with first.transaction():
                first.execute(write, (namespace, key, '"first"'))
                waiting = threading.Thread(target=second.execute, args=(statement, (key,)))
                waiting.start()
                assert wait_for(lambda: blocked_backends(first) == 1, 10, step=0.05), statement
            waiting.join(timeout=30)
            assert not waiting.is_alive()
            logged = first.execute("SELECT operation, value FROM raw_postgres.memory_writes WHERE namespace = %s "
                                   "AND key = %s ORDER BY write_id DESC LIMIT 1", (namespace, key)).fetchone()
            if key == "deleted":
                assert logged == ("delete", None) and entry(target, key, namespace) is None
            elif key == "metric":
                assert logged == ("upsert", "second") and first.execute(
                    "SELECT metric_data FROM performance_metrics WHERE key = %s", (key,)).fetchone() == ("second",)
            else:
                assert logged == ("upsert", "second") and entry(target, key, namespace)["value"] == "second"


def blocked_backends(connection: psycopg.Connection) -> int:
    """The other sessions of this database waiting for a lock."""
    return connection.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                              "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()").fetchone()[0]


def test_a_read_through_the_client_never_deadlocks_with_dml_on_the_mart_row(migrated):
    """An UPDATE on unified_memory locks the entry's row, then its trigger takes the entry's lock; a read
    through the client takes the entry's lock, then records the access on the row. The read leaves a
    locked row to the statement holding it (which recomputes it, this access included): both go through,
    where the read used to wait for the row and the two deadlocked."""
    target, _tree, _home = migrated
    ((key, ns),) = migrated_entries(target, "command-history", 1)
    before = entry(target, key, ns)
    read: list = []
    with psycopg.connect(target.dsn) as updating, MemoryClient(target.dsn) as client:
        updating.execute("SELECT 1 FROM unified_memory WHERE namespace = %s AND key = %s FOR UPDATE", (ns, key))
        reader = threading.Thread(target=lambda: read.append(client.get(key, ns)))
        reader.start()
        reader.join(timeout=20)
        assert not reader.is_alive() and read == [before["value"]]  # it did not wait for the row
        updating.execute("UPDATE unified_memory SET value = '\"after the read\"' WHERE namespace = %s AND key = %s",
                         (ns, key))
        updating.commit()
    after = entry(target, key, ns)
    assert after["value"] == "after the read" and after["access_count"] == (before["access_count"] or 0) + 1


def test_a_read_through_the_client_is_counted_and_kept_by_a_full_refresh(migrated):
    target, _tree, home = migrated
    ((key, ns),) = migrated_entries(target, "command-history", 1)
    before = entry(target, key, ns)
    with MemoryClient(target.dsn) as client:
        assert client.get(key, ns) == before["value"]
        assert client.get(key, ns) == before["value"]
    read = entry(target, key, ns)
    assert read["access_count"] == (before["access_count"] or 0) + 2 and read["accessed_at"] > before["accessed_at"]
    assert before["accessed_at"] is not None  # (the namespace's rows all have one)
    assert read["updated_at"] == before["updated_at"]
    assert run_dbt(["build", "--full-refresh", "--select", "int_memory_ranked+", "int_memory_load_changes+"], target, home,
                   quiet=True).success
    assert entry(target, key, ns) == read


# ------------------------------------------------------------------------------------------- ids

def ids(target: Target) -> dict[tuple[str, str], int]:
    with target.connect() as connection:
        return {(n, k): i for i, k, n in connection.execute(
            "SELECT id, key, namespace FROM unified_memory UNION ALL "
            "SELECT -id, key, namespace FROM performance_metrics")}


def test_ids_are_given_once_and_a_full_refresh_keeps_them(tmp_path, target, home):
    root = tmp_path / "tree"
    db = v2_file(root / "a/memory.db", [("m", '"1"', "default", T0), ("k", '"2"', "default", T0),
                                        ("p", '{"duration": 3}', PERFORMANCE, T0), ("b", '"3"', "zeta", T0)])
    do_sync(root, target, home)
    first = ids(target)
    # a first build numbers each mart's entries by (namespace, key), as the marts always did
    assert first == {("default", "k"): 1, ("default", "m"): 2, ("zeta", "b"): 3, (PERFORMANCE, "p"): -1}

    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("INSERT INTO memory_entries (key, value, namespace, created_at, updated_at, accessed_at) "
                           "VALUES ('a', '\"first in order\"', 'aaa', ?, ?, ?)", (T0,) * 3)
        connection.execute("DELETE FROM memory_entries WHERE key = 'k'")
        connection.commit()
    do_sync(root, target, home)
    second = ids(target)
    assert second == {("default", "m"): 2, ("zeta", "b"): 3, (PERFORMANCE, "p"): -1, ("aaa", "a"): 4}

    with MemoryClient(target.dsn) as client:
        client.set("k", "back", "default")  # a deleted entry comes back with its id
        client.set("new", "from the client", "aaa")
    third = ids(target)
    assert third == {**second, ("default", "k"): 1, ("aaa", "new"): 5}
    assert build(target, home, quiet=True, full_refresh=True).success
    assert ids(target) == third


# ------------------------------------------------------------------------------ the property test

def epoch_time(value) -> datetime | None:
    """The staging rule for epoch columns: |x| >= 1e11 is milliseconds."""
    if value is None:
        return None
    number = float(value)
    return datetime.fromtimestamp(number / 1000 if abs(number) >= 1e11 else number, timezone.utc)


def normalized(text: str | None) -> tuple[object, str]:
    """The value rule for the test's values: JSON text -> that JSON, anything else -> the text."""
    if text is None:
        return None, "json"
    try:
        return json.loads(text), "json"
    except ValueError:
        return text, "text"


def staged_metadata(text: str | None, v3_fields: str | None):
    """Staging's metadata: the JSON (or the text as a JSON string); v3 rows add their own fields under
    claude_flow_v3 (tags parsed when JSON)."""
    metadata = None if text is None else normalized(text)[0]
    if v3_fields is None:
        return metadata
    fields = json.loads(v3_fields)
    fields["tags"] = None if fields["tags"] is None else normalized(fields["tags"])[0]
    return {**(metadata or {}), "claude_flow_v3": fields}


@dataclass(frozen=True)
class Version:
    key: str
    namespace: str
    value: object
    data_type: str | None
    created: datetime | None
    updated: datetime | None
    accessed: datetime | None
    count: int | None
    expires: datetime | None = None
    ttl: int | None = None
    metadata: object = None
    path: str | None = None
    table: str = "memory_writes"
    rowid: int | None = None
    write_id: int | None = None
    deleted: bool = False
    written: datetime | None = None  # a write's written_at

    def rank(self) -> tuple:
        """Ascending = the winner first: latest updated_at, a write made in PostgreSQL (the latest write)
        first, latest accessed_at, then source order."""
        def newest(moment):
            return (moment is None, -(moment.timestamp() if moment else 0))
        return (*newest(self.updated), self.write_id is None, -(self.write_id or 0), *newest(self.accessed),
                self.path or "", self.table, self.rowid)


NOW = "now()"  # an expected field that is the time of the write: checked against a window


class Model:
    """The documented rule, computed in Python from the SQLite rows as of the last sync and the writes
    this test made in PostgreSQL."""

    def __init__(self, files: SourceFiles, scratch: Path):
        self.files, self.scratch = files, scratch
        self.synced: list[Version] = []
        self.writes: list[Version] = []
        self.ids: dict[tuple[str, str], int] = {}

    def sqlite_versions(self) -> list[Version]:
        versions = []
        for path, kind in self.files.kinds.items():
            if kind == "v2":
                query = ("SELECT rowid, key, coalesce(namespace, 'default'), value, metadata, created_at, updated_at, "
                         "accessed_at, access_count, expires_at, ttl, NULL FROM memory_entries")
            else:
                query = ("SELECT rowid, key, coalesce(namespace, 'default'), content, metadata, created_at, updated_at, "
                         "last_accessed_at, access_count, expires_at, NULL, json_object('id', id, 'type', type, "
                         "'tags', tags, 'status', status, 'owner_id', owner_id, 'embedding_model', embedding_model, "
                         "'embedding_dimensions', embedding_dimensions) FROM memory_entries")
            for rowid, key, ns, text, metadata, created, updated, accessed, count, expires, ttl, v3_fields in \
                    read_private_copy(path, self.scratch, query):
                value, data_type = normalized(text)
                versions.append(Version(key, ns, value, data_type, epoch_time(created), epoch_time(updated),
                                        epoch_time(accessed), count, epoch_time(expires), ttl,
                                        staged_metadata(metadata, v3_fields),
                                        path=str(path), table="memory_entries", rowid=rowid))
        return versions

    def versions(self) -> dict[tuple[str, str], list[Version]]:
        by_entry: dict[tuple[str, str], list[Version]] = {}
        for version in self.synced + self.writes:
            by_entry.setdefault((version.namespace, version.key), []).append(version)
        return {entry: sorted(versions, key=Version.rank) for entry, versions in by_entry.items()}

    def give_ids(self, entries) -> None:
        for mart in ("performance_metrics", "unified_memory"):
            new = sorted(e for e in entries if e not in self.ids and (e[0] == PERFORMANCE) == (mart != "unified_memory"))
            highest = max([i for e, i in self.ids.items() if (e[0] == PERFORMANCE) == (mart != "unified_memory")],
                          default=0)
            self.ids.update({e: highest + n for n, e in enumerate(new, 1)})

    def synced_now(self, recorded_deletes: list[Version] = (), previous_loads: dict[str, datetime] | None = None) -> None:
        """After a sync: the files' rows now, and the deletes the sync recorded. A file that no longer holds
        an entry it held, whose value is a write made in PostgreSQL before the file's previous load began
        (`previous_loads`: path -> when), deleted it in SQLite after that write: the sync records the
        delete in the write log (`recorded_deletes`, read from it for their time and id)."""
        held_before = {(v.path, v.namespace, v.key) for v in self.synced}
        winners = {entry: versions[0] for entry, versions in self.versions().items()}
        self.synced = self.sqlite_versions()
        held_now = {(v.path, v.namespace, v.key) for v in self.synced}
        deleted_by = {}
        for path, namespace, key in held_before - held_now:
            winner = winners.get((namespace, key))
            if (winner is not None and winner.write_id is not None and not winner.deleted
                    and winner.written < (previous_loads or {})[path]):
                deleted_by.setdefault((namespace, key), set()).add(path)
        assert {(d.namespace, d.key) for d in recorded_deletes} == set(deleted_by), (recorded_deletes, deleted_by)
        assert all(d.path in deleted_by[(d.namespace, d.key)] for d in recorded_deletes)
        # stamped just after the write it deletes: any write made since outranks it
        assert all(d.updated == winners[(d.namespace, d.key)].updated + timedelta(microseconds=1)
                   for d in recorded_deletes)
        self.writes += [replace(d, path=None) for d in recorded_deletes]
        self.give_ids(self.versions())

    def state(self, entry: tuple[str, str]) -> dict | None:
        """The entry's winner and aggregates, as the marts hold them."""
        versions = self.versions().get(entry)
        if not versions:
            return None
        winner = versions[0]
        def present(values):
            return [v for v in values if v is not None]
        return {"winner": winner, "versions": versions,
                "created": min(present([v.created for v in versions]), default=None),
                "accessed": max(present([v.accessed for v in versions]), default=None),
                "count": max(present([v.count for v in versions]), default=None)}

    def expected_write(self, operation: str, entry: tuple[str, str], given: dict, started: datetime) -> dict | None:
        """The write-log row a write that started after `started` must produce (NOW where it is the time
        of the write), or None when nothing is written (a delete of an entry without a value). Its
        updated_at is the one given, else the time of the write, raised to one microsecond after the
        entry's current one (every write moves it strictly forward: the cache's version)."""
        state = self.state(entry)
        has_value = state is not None and not state["winner"].deleted
        requested = given.get("updated", NOW)
        current = state["winner"].updated if state else None
        just_after = current + timedelta(microseconds=1) if current is not None else None
        later = just_after is not None and (just_after > started if requested == NOW else just_after > requested)
        updated = just_after if later else requested
        if operation == "delete":
            return {"updated": updated, "deleted": True} if has_value else None
        winner = state["winner"] if has_value else None
        kept = {"metadata": winner.metadata if winner else None, "expires": winner.expires if winner else None,
                "ttl": winner.ttl if winner else None,
                "created": state["created"] if state and state["created"] else NOW,
                "accessed": state["accessed"] if state else NOW,  # an entry never read stays so
                "count": state["count"] if state and state["count"] is not None else 0}
        return {**kept, **given, "updated": updated, "deleted": False}

    def wrote(self, row: Version) -> None:
        self.writes.append(row)
        self.give_ids({(row.namespace, row.key)})

    def marts(self) -> dict[str, set]:
        unified, metrics, history = set(), set(), set()
        for (ns, key), versions in self.versions().items():
            state = self.state((ns, key))
            winner = versions[0]
            if not winner.deleted:
                if ns == PERFORMANCE:
                    metrics.add((self.ids[(ns, key)], key, dumps(winner.value), winner.table, winner.rowid))
                else:
                    unified.add((self.ids[(ns, key)], ns, key, dumps(winner.value), winner.data_type,
                                 state["created"], winner.updated, state["accessed"], state["count"],
                                 winner.expires, len(versions), winner.table, winner.rowid))
            for rank, version in enumerate(versions, 1):
                if rank > 1 or version.deleted:
                    history.add((ns, key, version.table, version.rowid, rank, version.deleted, version.updated,
                                 dumps(version.value), winner.table, winner.rowid))
        return {"unified_memory": unified, "performance_metrics": metrics, "unified_memory_history": history}


def dumps(value) -> str:
    return json.dumps(value, sort_keys=True)


def actual_marts(target: Target) -> dict[str, set]:
    with target.connect() as connection:
        return {
            "unified_memory": {(i, n, k, dumps(v), d, c, u, a, ac, e, vc, t, r) for i, n, k, v, d, c, u, a, ac, e, vc, t, r
                               in connection.execute(
                "SELECT id, namespace, key, value, data_type, created_at, updated_at, accessed_at, access_count, "
                "expires_at, version_count, source_table, source_rowid FROM unified_memory")},
            "performance_metrics": {(i, k, dumps(v), t, r) for i, k, v, t, r in connection.execute(
                "SELECT id, key, metric_data, source_table, source_rowid FROM performance_metrics")},
            "unified_memory_history": {(n, k, t, r, vr, d, u, dumps(v), wt, wr) for n, k, t, r, vr, d, u, v, wt, wr
                                       in connection.execute(
                "SELECT namespace, key, source_table, source_rowid, version_rank, deleted, updated_at, value, "
                "winner_source_table, winner_source_rowid FROM unified_memory_history")},
        }


class FutureDatedFiles(SourceFiles):
    """SourceFiles whose rows are sometimes dated 2100: a source clock ahead of PostgreSQL's."""

    def moment(self, path: Path) -> int:
        seconds = super().moment(path)
        if self.rng.random() < 0.15:
            seconds = seconds // 1000 if seconds > 1e11 else seconds
            seconds += 4_102_444_800 - T0
            return seconds * 1000 if self.kinds[path] == "v3" else seconds
        return seconds


@dataclass
class Writer:
    """Writes made in PostgreSQL at random (client set / delete, compat.memory_entries INSERT / UPDATE /
    DELETE), each checked against the model's expectation of its write-log row."""

    target: Target
    client: MemoryClient
    model: Model
    rng: random.Random
    done: list[str] = field(default_factory=list)

    def server_clock(self) -> datetime:
        with self.target.connect() as connection:
            return connection.execute("SELECT clock_timestamp()").fetchone()[0]

    def last_write(self) -> tuple | None:
        with self.target.connect() as connection:
            return connection.execute(
                "SELECT write_id, operation, value, data_type, metadata, created_at, updated_at, accessed_at, "
                "expires_at, access_count, ttl, written_at FROM raw_postgres.memory_writes "
                "ORDER BY write_id DESC LIMIT 1").fetchone()

    def value(self):
        return self.rng.choice([{"pg": self.rng.randint(0, 99)}, f"pg text {self.rng.randint(0, 99)}",
                                [self.rng.randint(0, 9)], self.rng.randint(0, 9)])

    def step(self) -> None:
        entry = (self.rng.choice(SourceFiles.NAMESPACES), self.rng.choice((*SourceFiles.KEYS, "pg-only-0", "pg-only-1")))
        operation = self.rng.choice(["set", "delete", "compat insert", "compat insert dated", "compat update",
                                     "compat delete"])
        value = self.value()
        text = value if isinstance(value, str) else json.dumps(value)
        given, kind = {}, "upsert"
        before, lo = self.last_write(), self.server_clock()
        ns, key = entry
        if operation == "set":
            self.client.set(key, value, ns)
            given = {"value": value, "data_type": "text" if isinstance(value, str) else "json",
                     "expires": None, "ttl": None}
        elif operation == "delete":
            self.client.delete(key, ns)
            kind = "delete"
        elif operation.startswith("compat insert"):
            dated = T0 + 50 if operation.endswith("dated") else None
            execute(self.target, "INSERT INTO compat.memory_entries (key, value, namespace, updated_at) "
                                 "VALUES (%s, %s, %s, %s)", (key, text, ns, dated))
            given = {"value": normalized(text)[0], "data_type": normalized(text)[1], "metadata": None,
                     "expires": None, "ttl": None, **({"updated": epoch_time(dated)} if dated else {})}
        elif operation == "compat update":
            changed = execute(self.target, "UPDATE compat.memory_entries SET value = %s WHERE key = %s AND namespace = %s",
                              (text, key, ns))
            state = self.model.state(entry)
            assert changed == (1 if state and not state["winner"].deleted else 0), (entry, operation)
            given = {"value": normalized(text)[0], "data_type": normalized(text)[1]}
            if not changed:
                kind = None
        else:
            execute(self.target, "DELETE FROM compat.memory_entries WHERE key = %s AND namespace = %s", (key, ns))
            kind = "delete"
        hi = self.server_clock()
        self.done.append(f"{operation} {ns}/{key}")
        expected = self.model.expected_write(kind, entry, given, lo) if kind else None
        after = self.last_write()
        if expected is None:
            assert after == before, (self.done, "nothing should have been written")
            return
        assert after != before, (self.done, "a write was expected")
        write_id, operation_done, *fields, written = after
        got = dict(zip(["value", "data_type", "metadata", "created", "updated", "accessed", "expires", "count",
                        "ttl"], fields))
        assert operation_done == ("delete" if expected["deleted"] else "upsert")
        for name, want in expected.items():
            if name == "deleted" or (expected["deleted"] and name != "updated"):
                continue
            if want == NOW:
                assert lo <= got[name] <= hi, (self.done, name, got[name], lo, hi)
            else:
                assert got[name] == want, (self.done, name, got[name], want)
        self.model.wrote(Version(key, ns, got["value"], got["data_type"], got["created"], got["updated"],
                                 got["accessed"], got["count"], got["expires"], got["ttl"], got["metadata"],
                                 rowid=write_id, write_id=write_id, deleted=expected["deleted"], written=written))


def current_load_starts(target: Target) -> dict[str, datetime]:
    """When each file's current load began."""
    with target.connect() as connection:
        return dict(connection.execute("SELECT c.source_path, f.started_at FROM consolidate.current_loads AS c "
                                       "JOIN consolidate.load_files AS f USING (load_id, source_path)").fetchall())


def recorded_deletes(target: Target, after: int) -> list[Version]:
    """The deletes made in SQLite that syncs recorded in the write log after write `after` (path: the file)."""
    with target.connect() as connection:
        return [Version(key, namespace, None, None, None, updated, None, None, path=path, rowid=write_id,
                        write_id=write_id, deleted=True)
                for write_id, namespace, key, updated, path in connection.execute(
                    "SELECT write_id, namespace, key, updated_at, home_source_path FROM raw_postgres.memory_writes "
                    "WHERE via = 'sqlite delete' AND write_id > %s ORDER BY write_id", (after,))]


# seed 3 deletes in SQLite an entry whose newest write made in PostgreSQL is a value (the sync records it)
@pytest.mark.parametrize("seed", [5, 29, 3])
def test_random_sqlite_changes_and_postgresql_writes_equal_the_model_and_a_full_refresh(seed, tmp_path, target, home):
    rng = random.Random(seed)
    root = tmp_path / "tree"
    files = FutureDatedFiles(root, rng)
    model = Model(files, tmp_path / "scratch")
    try:
        do_sync(root, target, home)
        model.synced_now()
        with MemoryClient(target.dsn, pool_size=1) as client:
            writer = Writer(target, client, model, rng)
            for step in range(4):
                operations = files.step()
                for _ in range(rng.randint(1, 3)):
                    writer.step()
                if rng.random() < 0.75:
                    last = max((w.write_id for w in model.writes), default=0)
                    previous_loads = current_load_starts(target)
                    do_sync(root, target, home)
                    model.synced_now(recorded_deletes(target, last), previous_loads)
                else:  # a build without a load: the writes are already applied, nothing changes
                    assert build(target, home, quiet=True).success
                context = (seed, step, operations, writer.done)
                assert actual_marts(target) == model.marts(), context
                incremental = marts_snapshot(target)
                full_refresh_models(target, home)
                assert marts_snapshot(target) == incremental, context
        assert model.writes and any(v.deleted for v in model.writes), writer.done
        assert seed != 3 or recorded_deletes(target, 0), "seed 3 no longer deletes in SQLite what PostgreSQL set"
    finally:
        files.close()
