"""`consolidate sync`: discover → load → change detection → dbt build, against real PostgreSQL, real
SQLite files and real dbt. Expectations about changes are computed here from private copies of the
SQLite files (Python's sqlite3), independently of the loader."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from loader import ledger
from loader.database import Target
from loader.fixtures.claude_flow_v2 import V2_DDL
from loader.fixtures.claude_flow_v3 import V3_DDL
from loader.fixtures.sample import MCP_TASK_MASTER, N8N, write_sample
from loader.load.load import load
from loader.load.secret_policy import SecretPolicy
from loader.operate.archive import archive
from loader.operate.change_detection import FileSync
from loader.pipeline import SyncReport, sync, watch
from loader.serve.client import MemoryClient
from loader.sources.discover import discover
from loader.transform.build import build, run_dbt
from loader.verify.lineage import versions

from conftest import AMBIENT_SETTINGS, fetch, fresh_database, read_private_copy, v2_file, write

KEY = b"sync test key"
POLICY = SecretPolicy(key=KEY)
T0 = 1_750_000_000  # epoch seconds
PERFORMANCE = "performance-metrics"
# Columns that name a load or its time: they differ between an incremental and a fresh database.
LOAD_COLUMNS = {"id", "load_id", "winner_load_id", "loaded_at", "source_sha256"}
MARTS = ("unified_memory", "performance_metrics", "unified_memory_history")


# ------------------------------------------------------------------------------------------ helpers

def do_sync(root: Path, target: Target, home: Path, **kwargs):
    report = sync([root], target, home, policy=POLICY, **kwargs)
    assert not report.failed, [f.error for f in report.failed]
    assert report.build is None or report.build.success, report.build.failures
    return report


def unified(target: Target) -> dict[tuple[str, str], object]:
    with target.connect() as connection:
        return {(k, n): v for k, n, v in connection.execute("SELECT key, namespace, value FROM unified_memory")}


def cli_command(*arguments: str, target=None, home: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment a `consolidate` subprocess runs with (the test's own target and
    secret key, never the caller's DATABASE_URL)."""
    command = [sys.executable, "-m", "loader", *arguments]
    if target is not None:
        command += ["--dsn", target.dsn]
    if home is not None:
        command += ["--home", str(home)]
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environment["CONSOLIDATE_SECRET_KEY"] = KEY.decode()
    return command, environment


def consolidate(*arguments: str, target=None, home: Path | None = None, **kwargs):
    command, environment = cli_command(*arguments, target=target, home=home)
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600, **kwargs)


def mart_rows(target: Target, table: str) -> list[tuple]:
    """The mart's content: every column but ids, load ids and load times, rows sorted."""
    with target.connect() as connection:
        columns = [name for (name,) in connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = %s ORDER BY column_name", (table,)) if name not in LOAD_COLUMNS]
        rows = connection.execute(sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table))).fetchall()
    return sorted(tuple(json.dumps(value, sort_keys=True, default=str) for value in row) for row in rows)


def load_changes(target: Target, load_id: str, source_path: Path) -> dict[str, tuple[int, int, int, int]]:
    """table -> (inserted, updated, deleted, unchanged) recorded for this load of the file."""
    with target.connect() as connection:
        rows = connection.execute(
            "SELECT source_table, inserted, updated, deleted, unchanged FROM consolidate.load_changes "
            "WHERE load_id = %s AND source_path = %s", (load_id, str(source_path))).fetchall()
    return {table: tuple(counts) for table, *counts in rows}


# --------------------------------------------------------------------------------- the done-when

def test_a_sync_after_an_insert_and_an_update_shows_both_in_unified_memory(tmp_path, target, home):
    root = tmp_path / "tree"
    db = v2_file(root / "app/.swarm/memory.db", [
        ("alpha", '{"v": 1}', "default", T0), ("beta", '"old"', "default", T0)])
    first = do_sync(root, target, home)
    assert first.totals["loaded"] == 1 and unified(target) == {("alpha", "default"): {"v": 1},
                                                              ("beta", "default"): "old"}
    write(db, "INSERT INTO memory_entries (key, value, namespace, created_at, updated_at, accessed_at) "
              "VALUES ('gamma', '{\"v\": 3}', 'default', ?, ?, ?)", (T0 + 60,) * 3)
    write(db, "UPDATE memory_entries SET value = '\"new\"', updated_at = ? WHERE key = 'beta'", (T0 + 60,))

    report = do_sync(root, target, home)

    assert unified(target) == {("alpha", "default"): {"v": 1}, ("beta", "default"): "new",
                               ("gamma", "default"): {"v": 3}}
    (file,) = report.files
    assert (file.status, file.previous_load_id) == ("loaded", first.load_id)
    changes = load_changes(target, report.load_id, db)
    assert changes["memory_entries"] == (1, 1, 0, 1)  # inserted, updated, deleted, unchanged
    memory = next(t for t in file.tables if t.source_table == "memory_entries")
    assert (memory.inserted, memory.updated, memory.deleted) == (1, 1, 0)
    assert report.to_json()["files"][0]["inserted"] >= 1

    again = do_sync(root, target, home, build=False)
    assert [f.status for f in again.files] == ["unchanged"] and again.totals["rows"] == file.rows
    assert load_changes(target, again.load_id, db) == {}


def test_a_file_synced_under_another_root_keeps_the_label_of_its_first_load(tmp_path, target, home):
    """source_db is the path relative to the root a sync is given; a file synced later under its own
    folder (one service's sync) keeps the label its first load gave it, in the ledger and in the marts; a new
    file whose label another file has, or names the end of another file's path too, gets a longer end of its
    path: the one that names it alone."""
    root = tmp_path / "tree"
    db = v2_file(root / "svc-a/.swarm/memory.db", [("alpha", '{"v": 1}', "default", T0)])
    do_sync(root, target, home)
    write(db, "INSERT INTO memory_entries (key, value, namespace, created_at, updated_at, accessed_at) "
              "VALUES ('beta', '2', 'default', ?, ?, ?)", (T0 + 60,) * 3)

    report = do_sync(root / "svc-a", target, home)

    assert [f.source_db for f in report.files] == ["svc-a/.swarm/memory.db"]  # as the sync reports it too
    with target.connect() as connection:
        labels = connection.execute("SELECT DISTINCT source_db FROM consolidate.load_files").fetchall()
        marts = connection.execute("SELECT DISTINCT source_db FROM unified_memory").fetchall()
    assert labels == marts == [("svc-a/.swarm/memory.db",)]

    # two new files, each first synced under its own folder: `.swarm/memory.db` (relative to that folder) ends
    # svc-a's path too, and then the other's, so each gets the end of its path that is its own; a sync of the
    # whole tree keeps all three
    for name in ("svc-b", "svc-c"):
        v2_file(root / name / ".swarm/memory.db", [(f"{name}-key", '1', "default", T0)])
        do_sync(root / name, target, home)
    do_sync(root, target, home)
    expected = {f"{name}-key": label for name, label in (("alpha", "svc-a/.swarm/memory.db"),
                                                           ("svc-b", "svc-b/.swarm/memory.db"),
                                                           ("svc-c", "svc-c/.swarm/memory.db"))}
    with target.connect() as connection:
        by_key = dict(connection.execute("SELECT key, source_db FROM unified_memory WHERE key <> 'beta'"))
    assert by_key == {key.replace("alpha-key", "alpha"): label for key, label in expected.items()}


def test_files_of_several_roots_get_labels_that_name_them_alone(tmp_path, target, home):
    """Each of two roots holds `.swarm/memory.db`; a later root holds `a/.swarm/memory.db` too. No label is the
    end of another file's path: a label names one file (it named the later one as the earlier's)."""
    two, later = tmp_path / "two", tmp_path / "later"
    for folder in (two / "a", two / "b", later / "a"):
        v2_file(folder / ".swarm/memory.db", [(f"{folder.parent.name}-{folder.name}", "1", "default", T0)])
    report = sync([two / "a", two / "b"], target, home, policy=POLICY, build=False)
    assert sorted(f.source_db for f in report.files) == ["a/.swarm/memory.db", "b/.swarm/memory.db"]
    report = sync([later], target, home, policy=POLICY, build=False)
    assert [f.source_db for f in report.files] == ["later/a/.swarm/memory.db"]  # not the earlier a's label


def test_a_copy_that_appears_later_under_a_path_sorting_first_is_the_copy_and_loads_nothing(tmp_path, target, home):
    """The file already loaded stays the original; a byte-identical copy found later is listed as its copy,
    even when its path sorts first, so the same rows are never current twice; archive agrees."""
    root = tmp_path / "tree"
    original = v2_file(root / "b" / "memory.db", [("alpha", '{"v": 1}', "default", T0),
                                                 ("beta", '"two"', "default", T0 + 1)])
    do_sync(root, target, home)
    raw_before = fetch(target, "SELECT count(*) FROM raw_claude_flow_v2.memory_entries")[0][0]
    copy = root / "a" / "memory.db"
    copy.parent.mkdir()
    copy.write_bytes(original.read_bytes())

    report = do_sync(root, target, home)

    by_path = {f.source_path: f.status for f in report.files}
    assert by_path == {str(copy): "copy", str(original): "unchanged"}
    assert fetch(target, "SELECT source_path FROM consolidate.current_loads") == [(str(original),)]
    assert fetch(target, "SELECT count(*) FROM raw_claude_flow_v2.memory_entries")[0][0] == raw_before
    assert fetch(target, "SELECT count(*) FROM unified_memory_history") == [(0,)]
    assert fetch(target, "SELECT DISTINCT source_path FROM unified_memory") == [(str(original),)]

    archived = {Path(entry.path): entry.copy_of for entry in archive(target, [root], tmp_path / "archives").archived}
    assert archived == {original: None, copy: str(original)}


def v2_file_allowing_null_keys(path: Path, key: str | None) -> Path:
    """A v2 memory.db whose key column has no NOT NULL (a loose schema), with one row of `key`."""
    path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.executescript(V2_DDL.replace("key TEXT NOT NULL", "key TEXT"))
        connection.execute("INSERT INTO memory_entries (key, value, updated_at) VALUES (?, '1', ?)", (key, T0))
        connection.commit()
    return path


def test_a_change_that_adds_a_row_the_marts_cannot_key_fails_that_file_and_the_rest_builds(tmp_path, target, home):
    """A NULL key arriving in a change load: the file fails naming the row, its previous load stays current
    (its entries stay in the marts), another file's change is built."""
    root = tmp_path / "tree"
    loose = v2_file_allowing_null_keys(root / "loose" / "memory.db", "kept")
    compressible = "repeat " * 1000  # 7,000 bytes that PostgreSQL compresses to fit an index: kept
    other = v2_file(root / "other" / "memory.db", [("alpha", '"1"', "default", T0), (compressible, '"3"', "default", T0)])
    do_sync(root, target, home)
    write(loose, "INSERT INTO memory_entries (key, value, updated_at) VALUES (NULL, '2', ?)", (T0 + 1,))
    write(other, "INSERT INTO memory_entries (key, value, namespace, updated_at) VALUES ('beta', '2', 'default', ?)",
          (T0 + 1,))
    (null_rowid,) = read_private_copy(loose, tmp_path / "x", "SELECT rowid FROM memory_entries WHERE key IS NULL")[0]

    report = sync([root], target, home, policy=POLICY)

    (failed,) = report.failed
    assert failed.source_path == str(loose)
    assert f"table memory_entries rowid {null_rowid}: its key is NULL" in failed.error
    assert report.build is not None and report.build.success, report.build.failures
    assert unified(target) == {("kept", "default"): 1, ("alpha", "default"): "1", ("beta", "default"): 2,
                               (compressible, "default"): "3"}


def test_a_run_whose_only_new_file_fails_says_the_marts_are_current_but_not_that_nothing_happened(
        tmp_path, target, home):
    root = tmp_path / "tree"
    v2_file(root / "app" / "memory.db", [("alpha", '"1"', "default", T0)])
    assert consolidate("run", str(root), "--no-backup", target=target, home=home).returncode == 0
    v2_file_allowing_null_keys(root / "loose" / "memory.db", None)
    ran = consolidate("run", str(root), "--no-backup", target=target, home=home)
    assert ran.returncode == 3 and "not counting the 1 file(s) that could not be loaded" in ran.stderr, ran.stderr
    assert "its key is NULL" in ran.stderr


def test_the_scoped_tests_of_an_incremental_build_still_fail_on_a_wrong_mart_row(tmp_path, target, home):
    root = tmp_path / "tree"
    db = v2_file(root / "memory.db", [(f"k{i}", f'"v{i}"', "default", T0 + i) for i in range(3)])
    do_sync(root, target, home)
    write(db, "UPDATE memory_entries SET value = '\"changed\"', updated_at = ? WHERE key = 'k1'", (T0 + 60,))
    do_sync(root, target, home)  # incremental: its heavy tests check the changed entry k1 only, and pass
    heavy = ("assert_flags_reach_the_marts", "assert_raw_memory_rows_represented_once")

    def run_heavy_tests(*, scoped: bool) -> set[str]:
        """The heavy tests that failed; checks they ran scoped (or over everything) as expected."""
        outcome = run_dbt(["test", "--select", *heavy], target, home, quiet=True)
        compiled = next((home / "dbt" / "target" / "compiled").rglob("assert_flags_reach_the_marts.sql"))
        assert ("with entries as" in compiled.read_text()) == scoped
        return {name for name in heavy if any(name in failure for failure in outcome.failures)}

    def tamper(statement: str) -> None:
        with target.connect() as connection:
            connection.execute("SET LOCAL session_replication_role = replica")  # past the triggers
            connection.execute(statement)

    assert run_heavy_tests(scoped=True) == set()
    # a known flag that k1's winning version does not carry
    tamper("UPDATE unified_memory SET flags = '{malformed_json:value}' WHERE key = 'k1'")
    assert run_heavy_tests(scoped=True) == {"assert_flags_reach_the_marts"}
    tamper("UPDATE unified_memory SET flags = '{}' WHERE key = 'k1'")
    assert run_heavy_tests(scoped=False) == set()  # after a failed run: everything, and it passes again
    tamper("DELETE FROM unified_memory WHERE key = 'k1'")
    assert run_heavy_tests(scoped=True) == set(heavy)


def test_a_build_after_one_that_built_only_int_memory_ranked_recomputes_the_marts(tmp_path, target, home):
    """A dbt invocation that built int_memory_ranked but not the marts (a selection), then one that built
    no memory model (source freshness): the next build recomputes the marts from raw. An incremental one
    recomputes only the entries that changed since int_memory_ranked was built, and would keep the marts'
    old rows."""
    root = tmp_path / "tree"
    db = v2_file(root / "memory.db", [(f"k{i}", f'"v{i}"', "default", T0 + i) for i in range(3)])
    do_sync(root, target, home)
    write(db, "UPDATE memory_entries SET value = '\"changed\"', updated_at = ? WHERE key = 'k1'", (T0 + 60,))
    do_sync(root, target, home, build=False)
    partial = run_dbt(["run", "--select", "+int_memory_ranked"], target, home, quiet=True)
    assert partial.success  # and it says, at its end, what it left behind
    assert len(partial.warnings) == 1 and "built only some of the memory models" in partial.warnings[0]
    assert run_dbt(["source", "freshness"], target, home, quiet=True).warnings == []
    with target.connect() as connection:
        recorded = [state for (state,) in connection.execute(
            "SELECT memory_models FROM consolidate.memory_builds ORDER BY started_at DESC LIMIT 3")]
    assert recorded == ["none", "some", "all"]
    assert unified(target)[("k1", "default")] == "v1"  # the marts were left behind
    # dbt's own incremental build says so (consolidate build decides a full refresh instead)
    warned = run_dbt(["build", "--select", "reconciliation"], target, home, quiet=True).warnings
    assert len(warned) == 1 and "`consolidate build`" in warned[0]

    assert build(target, home, quiet=True).success
    assert unified(target)[("k1", "default")] == "changed"
    assert run_dbt(["build", "--select", "reconciliation"], target, home, quiet=True).warnings == []


def test_the_tests_check_everything_after_a_build_that_left_the_marts_untested(tmp_path, target, home):
    """A run that built only int_memory_ranked (no test), then a passing test of something else: the next
    tests check every entry, not only what changed since (the marts are as no passing test left them)."""
    root = tmp_path / "tree"
    db = v2_file(root / "memory.db", [(f"k{i}", f'"v{i}"', "default", T0 + i) for i in range(3)])
    do_sync(root, target, home)
    write(db, "UPDATE memory_entries SET value = '\"changed\"', updated_at = ? WHERE key = 'k1'", (T0 + 60,))
    do_sync(root, target, home)  # incremental, tested: the tests after it may check what changed since

    def scoped() -> bool:
        assert run_dbt(["test", "--select", "assert_flags_reach_the_marts"], target, home, quiet=True).success
        compiled = next((home / "dbt" / "target" / "compiled").rglob("assert_flags_reach_the_marts.sql"))
        return "with entries as" in compiled.read_text()

    assert scoped()
    assert run_dbt(["run", "--select", "int_memory_ranked"], target, home, quiet=True).success
    assert run_dbt(["test", "--select", "assert_ledger_counts_match_raw"], target, home, quiet=True).success
    assert not scoped()
    for step in (1, 2):  # a full refresh (after that run), then an incremental build: tested, both
        write(db, "UPDATE memory_entries SET value = ?, updated_at = ? WHERE key = 'k2'", (f'"{step}"', T0 + 90 + step))
        do_sync(root, target, home)
    assert scoped()

    # a `dbt run` of memory models killed before its end leaves its row as on-run-start wrote it (no outcome,
    # memory_models NULL); a passing test of something else after it does not make the marts tested
    with target.connect() as connection:
        connection.execute("INSERT INTO consolidate.memory_builds (invocation_id, marts_schema, write_watermark) "
                           "VALUES ('killed-run', 'public', 0)")
        assert not ledger.memory_models_left_whole(connection, "public")  # the builds: a full refresh next
    assert run_dbt(["test", "--select", "assert_ledger_counts_match_raw"], target, home, quiet=True).success
    assert not scoped()
    for step in (3, 4):  # a full refresh, then an incremental build
        write(db, "UPDATE memory_entries SET value = ?, updated_at = ? WHERE key = 'k2'", (f'"{step}"', T0 + 90 + step))
        do_sync(root, target, home)
    with target.connect() as connection:
        assert ledger.memory_models_left_whole(connection, "public")
    assert scoped()
    # asked for, the tests check every entry all the same
    assert run_dbt(["test", "--select", "assert_flags_reach_the_marts", "--vars", "{test_every_entry: true}"],
                   target, home, quiet=True).success
    compiled = next((home / "dbt" / "target" / "compiled").rglob("assert_flags_reach_the_marts.sql"))
    assert "with entries as" not in compiled.read_text()


def nodes_built(home: Path) -> tuple[set[str], set[str]]:
    """The models and the tests the last build under `home` ran (run_results.json), by name."""
    results = json.loads((home / "dbt" / "target" / "run_results.json").read_text())["results"]
    models = {r["unique_id"].split(".")[-1] for r in results if r["unique_id"].startswith("model.")}
    tests = {r["unique_id"].split(".")[2] for r in results if r["unique_id"].startswith("test.")}
    return models, tests


def reconciliation_rows(target: Target) -> dict[str, tuple]:
    with target.connect() as connection:
        return {path: tuple(rest) for path, *rest in connection.execute(
            "SELECT source_path, load_id, rows_in_sqlite, rows_in_raw, kept, superseded, moved, flagged, reconciled "
            "FROM reconciliation")}


def indexes(connection) -> set[str]:
    return {name for (name,) in connection.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}


def test_a_sync_builds_what_its_changes_affect_and_recounts_the_files_they_touch(tmp_path, target, home):
    root = tmp_path / "tree"
    write_sample(root)
    do_sync(root, target, home)  # the first build: every node
    with target.connect() as connection:
        # the views' models: those named as their views, and the compatibility views (named by alias)
        views = {name for (name,) in connection.execute("SELECT table_name FROM information_schema.views")}
        views |= {"memory_entries_v2", "memory_entries_v3", "memory_store"}
        # an entry of one file the client writes over; another file gets a changed row
        key, namespace, written_over = connection.execute(
            "SELECT key, namespace, source_path FROM unified_memory WHERE source_path LIKE '%%/.swarm/memory.db' "
            "AND source_path <> %s ORDER BY key LIMIT 1", (str(root / MCP_TASK_MASTER),)).fetchone()
    models, tests = nodes_built(home)
    assert {"stg_n8n__workflows", "memory_entries_v3", "stg_claude_flow_v2__memory_entries"} <= models & views
    before = reconciliation_rows(target)
    # the recount reads those two marts by these indexes; a database built before them gets them at its next
    # build, incremental as it is
    source_file_indexes = {"performance_metrics_source_file_idx", "unified_memory_history_source_file_idx"}
    with target.connect() as connection:
        assert source_file_indexes <= indexes(connection)
        for name in source_file_indexes:
            connection.execute(f"DROP INDEX public.{name}")

    with MemoryClient(target.dsn, pool_size=1) as client:
        client.set(key, {"written": "through the client"}, namespace)
    write(root / MCP_TASK_MASTER, "UPDATE memory_entries SET value = '\"changed\"', updated_at = updated_at + 1 "
                                  "WHERE rowid = (SELECT min(rowid) FROM memory_entries)")
    do_sync(root, target, home)

    models, tests = nodes_built(home)
    with target.connect() as connection:
        assert source_file_indexes <= indexes(connection)
    # the views are this project's already; nothing reads an n8n or Flowise source that changed
    assert not models & views and not {name for name in models | tests if "n8n" in name or "flowise" in name}
    assert {"int_memory_ranked", "unified_memory", "unified_memory_history", "reconciliation"} <= models
    assert {"not_null_memory_entries_v3", "not_null_memory_entries_v2", "assert_reconciliation_balances",
            "assert_raw_memory_rows_represented_once"} <= tests
    # reconciliation recounted the changed file (a new load) and the file the client wrote over (one of its
    # rows is superseded now), and nothing else
    after = reconciliation_rows(target)
    task_master = str(root / MCP_TASK_MASTER)
    assert after[written_over][3:5] == (before[written_over][3] - 1, before[written_over][4] + 1)  # kept, superseded
    assert after[task_master][0] != before[task_master][0]  # its new load
    assert {path: row for path, row in after.items() if path not in (written_over, task_master)} == \
        {path: row for path, row in before.items() if path not in (written_over, task_master)}
    assert all(row[-1] for row in after.values())

    # what a full recount gives
    assert build(target, home, quiet=True, full_refresh=True).success
    assert reconciliation_rows(target) == after

    # a build that left reconciliation out while a winner moved between two files: no later build's changed
    # entries show that move, so the next build counts every file again
    with target.connect() as connection:
        key, namespace, loser = connection.execute(
            "SELECT key, namespace, source_path FROM unified_memory_history WHERE source_path LIKE '%%/.swarm/memory.db' "
            "AND winner_source_path LIKE '%%/.swarm/memory.db' AND source_path <> winner_source_path "
            "AND NOT deleted ORDER BY key LIMIT 1").fetchone()
    write(Path(loser), "UPDATE memory_entries SET updated_at = updated_at + 100000000 "
                       "WHERE key = ? AND coalesce(namespace, 'default') = ?", (key, namespace))
    do_sync(root, target, home, build=False)
    assert run_dbt(["build", "--exclude", "reconciliation", "assert_reconciliation_balances", "test_type:unit"],
                   target, home, quiet=True).success
    do_sync(root, target, home)
    counted = reconciliation_rows(target)
    assert build(target, home, quiet=True, full_refresh=True).success
    assert reconciliation_rows(target) == counted
    # after full builds the marts' constraints have their own names, not dbt's `<model>__dbt_tmp_...`:
    # they are what a refused write reports
    with target.connect() as connection:
        names = {name for (name,) in connection.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid IN ('unified_memory'::regclass, "
            "'performance_metrics'::regclass, 'unified_memory_history'::regclass, 'reconciliation'::regclass)")}
    assert {"unified_memory_pkey", "unified_memory_key_namespace_key", "performance_metrics_pkey",
            "unified_memory_history_pkey", "reconciliation_pkey"} <= names
    assert not [name for name in names if "dbt_tmp" in name]

    # everything is built again after a load of an application file (its views are compiled from the
    # types its tables declare), after a memory file brought a new column (staging selects columns by
    # name), and when the last complete build was compiled from something else (another project)
    def sync_after(change) -> set[str]:
        change()
        do_sync(root, target, home)
        return nodes_built(home)[0]

    def touch_memory_file() -> None:
        write(root / MCP_TASK_MASTER, "UPDATE memory_entries SET updated_at = updated_at + 1 "
                                      "WHERE rowid = (SELECT min(rowid) FROM memory_entries)")

    def another_project() -> None:
        touch_memory_file()
        with target.connect() as connection:
            connection.execute("UPDATE consolidate.memory_builds SET compiled_from = 'another project'")

    everything = {"stg_n8n__workflows", "stg_flowise__chat_flows", "memory_entries_v3", "int_memory_versions"}
    assert everything <= sync_after(
        lambda: write(root / N8N, "UPDATE workflow_entity SET name = name || ' (renamed)' WHERE rowid = 1"))
    assert not sync_after(touch_memory_file) & views

    def app_file_loaded_without_a_build() -> None:  # by `sync --no-build` (or `load`) since the last build
        write(root / N8N, "UPDATE workflow_entity SET name = name || ' (again)' WHERE rowid = 1")
        do_sync(root, target, home, build=False)
        touch_memory_file()

    assert everything <= sync_after(app_file_loaded_without_a_build)
    assert not sync_after(touch_memory_file) & views
    assert everything <= sync_after(lambda: write(root / MCP_TASK_MASTER, "ALTER TABLE memory_entries ADD COLUMN extra"))
    assert not sync_after(touch_memory_file) & views
    assert everything <= sync_after(another_project)
    assert not sync_after(touch_memory_file) & views


def test_a_deletion_is_recorded_and_leaves_the_marts_but_not_raw(tmp_path, target, home):
    root = tmp_path / "tree"
    db = v2_file(root / "memory.db", [(f"k{i}", f'"v{i}"', "default", T0 + i) for i in range(3)])
    first = do_sync(root, target, home)
    (rowid,) = read_private_copy(db, tmp_path / "x", "SELECT rowid FROM memory_entries WHERE key = 'k1'")[0]
    write(db, "DELETE FROM memory_entries WHERE key = 'k1'")

    report = do_sync(root, target, home)

    assert report.totals["deleted"] == 1
    assert ("k1", "default") not in unified(target) and ("k0", "default") in unified(target)
    with target.connect() as connection:
        recorded = connection.execute(
            "SELECT load_id, source_table, source_rowid, previous_load_id FROM consolidate.deleted_rows").fetchall()
        in_raw = connection.execute(
            "SELECT _load_id, value FROM raw_claude_flow_v2.memory_entries WHERE key = 'k1'").fetchall()
    assert recorded == [(report.load_id, "memory_entries", rowid, first.load_id)]
    assert in_raw == [(first.load_id, '"v1"')]
    roles = {(v.load_id, v.role, v.retired_by) for v in versions(target, "k1")}
    assert roles == {(first.load_id, "deleted in a later load", report.load_id)}


def test_changes_of_loads_made_outside_sync_are_caught_up_and_rows_without_rowid_compare_by_content(
        tmp_path, target, home):
    root = tmp_path / "tree"
    root.mkdir()
    db = root / "other.db"
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("CREATE TABLE pairs (a TEXT PRIMARY KEY, b TEXT) WITHOUT ROWID")
        connection.executemany("INSERT INTO pairs VALUES (?, ?)", [("x", "1"), ("y", "2"), ("z", None)])
        connection.commit()
    first = load(discover([root]), target, [str(root)], POLICY)  # like `consolidate load`
    write(db, "UPDATE pairs SET b = '' WHERE a = 'z'")  # NULL -> '' is a change

    report = do_sync(root, target, home, build=False)

    assert report.caught_up == 1
    assert load_changes(target, first.load_id, db) == {"pairs": (3, 0, 0, 0)}
    assert load_changes(target, report.load_id, db) == {"pairs": (1, 0, 1, 2)}
    with target.connect() as connection:
        (deleted,) = connection.execute("SELECT source_rowid, row_md5 FROM consolidate.deleted_rows").fetchall()
        # the documented digest: md5 of the row of every raw column but the lineage naming the load
        content = sql.SQL(", ").join(sql.Identifier(name) for (name,) in connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'raw_other' "
            "AND table_name = 'pairs' AND column_name <> ALL (%s) ORDER BY ordinal_position",
            (["_load_id", "_source_path", "_source_sha256", "_source_rowid", "_loaded_at"],)))
        matching = connection.execute(sql.SQL(
            "SELECT a FROM raw_other.pairs WHERE _load_id = %s AND md5(ROW({})::text) = %s").format(content),
            (first.load_id, deleted[1])).fetchall()
    assert deleted[0] is None and matching == [("z",)]


# ------------------------------------------------------------------------------ the property test

class SourceFiles:
    """Claude-flow files under `root` changed at random: inserts, updates, upserts (INSERT OR REPLACE:
    a new rowid), deletes, on keys shared across files; some files switch to WAL mode and keep a writer
    connection open, so their newest rows live only in the -wal file."""

    KEYS = tuple(f"key-{i}" for i in range(8))
    NAMESPACES = ("default", "sessions", PERFORMANCE)

    def __init__(self, root: Path, rng: random.Random):
        self.rng = rng
        self.kinds = {root / "a/.swarm/memory.db": "v2", root / "b/.swarm/memory.db": "v2",
                      root / "c/memory.db": "v2", root / "backend/.swarm/memory.db": "v3"}
        self.writers: dict[Path, sqlite3.Connection] = {}
        for path, kind in self.kinds.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(sqlite3.connect(path)) as connection:
                connection.executescript(V2_DDL if kind == "v2" else V3_DDL)
            for _ in range(3):
                self.insert(path)
        self.to_wal(next(iter(self.kinds)))

    @contextlib.contextmanager
    def connection(self, path: Path):
        if path in self.writers:
            yield self.writers[path]
            self.writers[path].commit()
            return
        with contextlib.closing(sqlite3.connect(path)) as connection:
            yield connection
            connection.commit()

    def close(self) -> None:
        for connection in self.writers.values():
            connection.close()
        self.writers.clear()

    def value(self, namespace: str) -> str:
        if namespace == PERFORMANCE:
            return json.dumps({"duration": self.rng.randint(1, 500), "timestamp": T0 + self.rng.randint(0, 9)})
        return self.rng.choice([json.dumps({"n": self.rng.randint(0, 99)}), f"text {self.rng.randint(0, 99)}",
                                str(self.rng.randint(0, 9))])

    def moment(self, path: Path) -> int:
        """Few distinct instants, so equal updated_at / accessed_at across files happen."""
        seconds = T0 + 100 * self.rng.randint(0, 5)
        return seconds * 1000 if self.kinds[path] == "v3" else seconds

    def rows(self, path: Path) -> list[tuple]:
        with self.connection(path) as connection:
            namespace = "coalesce(namespace, 'default')" if self.kinds[path] == "v3" else "namespace"
            return connection.execute(f"SELECT rowid, key, {namespace} FROM memory_entries").fetchall()

    def insert(self, path: Path, replace: bool = False) -> str:
        taken = {(k, n) for _, k, n in self.rows(path)}
        free = [(k, n) for k in self.KEYS for n in self.NAMESPACES if (k, n) not in taken]
        if replace and taken:
            key, namespace = self.rng.choice(sorted(taken))
        elif free:
            key, namespace = self.rng.choice(free)
        else:
            return "full"
        at, seen = self.moment(path), self.moment(path)
        count, metadata = self.rng.randint(0, 9), self.rng.choice([None, '{"m": 1}'])
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        with self.connection(path) as connection:
            if self.kinds[path] == "v2":
                connection.execute(
                    f"{verb} INTO memory_entries (key, value, namespace, metadata, created_at, updated_at, "
                    "accessed_at, access_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, self.value(namespace), namespace, metadata, at, at, seen, count))
            else:
                connection.execute(
                    "INSERT INTO memory_entries (id, key, namespace, content, metadata, created_at, updated_at, "
                    "last_accessed_at, access_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (uuid.UUID(int=self.rng.getrandbits(128)).hex, key, namespace, self.value(namespace),
                     metadata, at, at, seen, count))
        return "upsert" if replace else "insert"

    def update(self, path: Path) -> str:
        rows = self.rows(path)
        if not rows:
            return self.insert(path)
        rowid, _, namespace = self.rng.choice(rows)
        value_column, seen_column = ("value", "accessed_at") if self.kinds[path] == "v2" else \
            ("content", "last_accessed_at")
        with self.connection(path) as connection:
            connection.execute(
                f"UPDATE memory_entries SET {value_column} = ?, updated_at = ?, {seen_column} = ?, "
                "access_count = access_count + 1 WHERE rowid = ?",
                (self.value(namespace), self.moment(path), self.moment(path), rowid))
        return "update"

    def delete(self, path: Path) -> str:
        rows = self.rows(path)
        if not rows:
            return self.insert(path)
        with self.connection(path) as connection:
            connection.execute("DELETE FROM memory_entries WHERE rowid = ?", (self.rng.choice(rows)[0],))
        return "delete"

    def to_wal(self, path: Path) -> str:
        """WAL mode with a writer that stays open and never checkpoints: later writes stay in -wal."""
        if path in self.writers:
            self.writers.pop(path).close()  # the last connection closing checkpoints the WAL
            return "checkpoint"
        writer = sqlite3.connect(path)
        writer.execute("PRAGMA journal_mode = WAL")
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        self.writers[path] = writer
        return "wal"

    def step(self) -> list[str]:
        done = []
        for _ in range(self.rng.randint(2, 5)):
            path = self.rng.choice(list(self.kinds))
            operation = self.rng.choices(["insert", "update", "delete", "upsert", "wal"], [3, 3, 2, 1, 1])[0]
            if operation == "upsert" and self.kinds[path] == "v3":
                operation = "update"
            done.append({"insert": self.insert, "update": self.update, "delete": self.delete,
                         "upsert": lambda p: self.insert(p, replace=True), "wal": self.to_wal}[operation](path))
        return done


def table_rows(path: Path, scratch: Path) -> dict[str, dict[int, tuple]]:
    """Every table's rows by rowid, from a private copy (main file + -wal)."""
    tables = [name for (name,) in read_private_copy(path, scratch, "SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {table: {row[0]: row[1:] for row in read_private_copy(path, scratch, f'SELECT rowid, * FROM "{table}"')}
            for table in tables}


def expected_changes(before: dict, after: dict) -> dict[str, tuple[int, int, int, int]]:
    changes = {}
    for table in before.keys() | after.keys():
        old, new = before.get(table, {}), after.get(table, {})
        common = old.keys() & new.keys()
        updated = sum(old[rowid] != new[rowid] for rowid in common)
        changes[table] = (len(new.keys() - old.keys()), updated, len(old.keys() - new.keys()), len(common) - updated)
    return changes


@pytest.mark.parametrize("seed", [11, 23, 37])
def test_random_changes_synced_step_by_step_equal_a_full_rebuild(seed, tmp_path, target, home, server_dsn):
    rng = random.Random(seed)
    root = tmp_path / "tree"
    files = SourceFiles(root, rng)
    try:
        do_sync(root, target, home)
        seen = {path: table_rows(path, tmp_path / "scratch") for path in files.kinds}
        operations, totals, synced_wal_rows = [], {"inserted": 0, "updated": 0, "deleted": 0}, 0
        for _ in range(4):
            operations += files.step()
            synced_wal_rows += sum(path.with_name(path.name + "-wal").exists() and
                                   path.with_name(path.name + "-wal").stat().st_size > 0 for path in files.kinds)
            report = do_sync(root, target, home)
            for file in report.files:
                path = Path(file.source_path)
                now = table_rows(path, tmp_path / "scratch")
                if file.status == "loaded":
                    assert load_changes(target, report.load_id, path) == expected_changes(seen[path], now), \
                        (path, operations)
                else:
                    assert (file.status, now) == ("unchanged", seen[path]), (path, operations)
                seen[path] = now
            for name in totals:
                totals[name] += report.totals[name]
        assert synced_wal_rows and all(totals.values()), (totals, operations)

        with fresh_database(server_dsn) as fresh:
            rebuilt = load(discover([root]), fresh, [str(root)], POLICY)
            assert not rebuilt.failed
            assert build(fresh, tmp_path / "fresh-home", quiet=True).success
            for mart in (*MARTS, "reconciliation"):
                assert mart_rows(target, mart) == mart_rows(fresh, mart), (mart, operations)
        assert mart_rows(target, "unified_memory") and mart_rows(target, "unified_memory_history")
    finally:
        files.close()


# ------------------------------------------------------------------------------------------ the CLI

def test_sync_command_json_reports_changes_and_exit_code(tmp_path, target, home):
    root = tmp_path / "tree"
    db = v2_file(root / "memory.db", [("alpha", '"a"', "default", T0)])
    result = consolidate("sync", str(root), "--json", "--no-build", target=target, home=home)
    assert result.returncode == 0, result.stderr[-2000:]
    first = json.loads(result.stdout)
    assert (first["exit_code"], first["build"], first["totals"]["loaded"]) == (0, None, 1)
    assert memory_table(first)["inserted"] == 1
    write(db, "UPDATE memory_entries SET value = '\"b\"', updated_at = ? WHERE key = 'alpha'", (T0 + 1,))
    result = consolidate("sync", str(root), "--json", target=target, home=home)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["build"]["success"] and memory_table(report)["updated"] == 1
    assert unified(target) == {("alpha", "default"): "b"}
    build_log = (home / "dbt" / "logs" / "dbt.log").read_text().split("=" * 30)[-1]
    assert "[info ]" in build_log and "PASS=" in build_log and "[debug]" not in build_log  # not every statement


def test_a_sync_waits_for_no_reader_of_the_marts(tmp_path, target, home):
    """An incremental build changes the marts' rows, not their definitions: a transaction that read every
    mart and the compatibility view and stays open (a long query, a pg_dump) does not make a sync wait for
    it, so the sync never queues the marts' later readers behind an ACCESS EXCLUSIVE lock either."""
    root = tmp_path / "tree"
    db = v2_file(root / "app/.swarm/memory.db", [
        ("alpha", '{"v": 1}', "default", T0), ("cpu", '{"load": 1}', PERFORMANCE, T0)])
    do_sync(root, target, home)
    write(db, "UPDATE memory_entries SET value = '{\"v\": 2}', updated_at = ? WHERE key = 'alpha'", (T0 + 60,))
    write(db, "UPDATE memory_entries SET value = '{\"load\": 2}', updated_at = ? WHERE key = 'cpu'", (T0 + 60,))
    command, environment = cli_command("sync", str(root), target=target, home=home)

    waiting: list[tuple] = []
    with psycopg.connect(target.dsn) as reader, psycopg.connect(target.dsn, autocommit=True) as monitor:
        for relation in (*MARTS, "compat.memory_entries"):
            reader.execute(f"SELECT count(*) FROM {relation}")
        syncing = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=environment)
        while syncing.poll() is None and not waiting:
            waiting = monitor.execute("SELECT pid, query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                                      (reader.info.backend_pid,)).fetchall()
            time.sleep(0.05)
        reader.rollback()   # lets a waiting sync go on
        out, err = syncing.communicate(timeout=300)

    assert not waiting, waiting
    assert syncing.returncode == 0, out[-2000:] + err[-2000:]
    assert unified(target) == {("alpha", "default"): {"v": 2}}
    with target.connect() as connection:
        assert connection.execute("SELECT metric_data FROM performance_metrics").fetchall() == [({"load": 2},)]


def memory_table(report: dict) -> dict:
    (file,) = report["files"]
    return next(t for t in file["tables"] if t["source_table"] == "memory_entries")


def test_watch_cycles_that_find_nothing_changed_write_nothing(tmp_path, target, home):
    root = tmp_path / "tree"
    db = v2_file(root / "memory.db", [("alpha", '"a"', "default", T0)])
    stop, reports = threading.Event(), []

    def on_cycle(report):
        reports.append(report)
        if len(reports) == 2:
            write(db, "DELETE FROM memory_entries")
        if len(reports) == 4:
            stop.set()

    last = watch([root], target, home, 0.05, on_cycle, build=False, stop=stop)

    assert [(r.cycle, r.idle) for r in reports] == [(1, False), (2, True), (3, False), (4, True)]
    assert last is reports[2] and last.totals["deleted"] == 1 and "no change" in reports[3].status_line()
    assert [r.to_json()["checked"] for r in reports] == [1, 1, 1, 1]  # an idle cycle's line too (its totals: 0)
    with target.connect() as connection:
        assert connection.execute("SELECT count(*) FROM consolidate.loads").fetchone()[0] == 2


def test_a_watch_cycle_whose_build_failed_is_synced_again_though_no_file_changed(tmp_path, target, home):
    """A build that failed (a worker killed, a deadlock, here a table it reads renamed away) leaves PostgreSQL
    behind its files: the next cycle syncs again instead of finding every file as the last one left it."""
    root = tmp_path / "tree"
    db = v2_file(root / "memory.db", [("alpha", '"a"', "default", T0)])
    do_sync(root, target, home)
    write(db, "UPDATE memory_entries SET value = '\"b\"', updated_at = ? WHERE key = 'alpha'", (T0 + 60,))
    with target.connect() as connection:
        connection.execute("ALTER TABLE raw_postgres.memory_accesses RENAME TO renamed_away")
    stop, reports = threading.Event(), []

    def on_cycle(report):
        reports.append(report)
        if len(reports) == 1:
            with target.connect() as connection:
                connection.execute("ALTER TABLE raw_postgres.renamed_away RENAME TO memory_accesses")
        if len(reports) == 3:
            stop.set()

    watch([root], target, home, 0.05, on_cycle, stop=stop)

    assert [(r.idle, r.build is not None and r.build.success) for r in reports] == \
        [(False, False), (False, True), (True, False)]
    assert unified(target) == {("alpha", "default"): "b"}


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except psycopg.errors.UndefinedTable:
            pass  # the first build has not made the marts yet
        time.sleep(0.5)
    raise AssertionError(f"waited {seconds}s for {what}")


def test_watch_syncs_a_changed_file_and_stops_cleanly_on_sigint(tmp_path, target, home):
    root = tmp_path / "tree"
    db = v2_file(root / "memory.db", [("alpha", '"first"', "default", T0)])
    command = [sys.executable, "-m", "loader", "sync", str(root), "--dsn", target.dsn, "--home", str(home),
               "--watch", "1"]
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environment["CONSOLIDATE_SECRET_KEY"] = KEY.decode()
    watcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    try:
        wait_for(lambda: unified(target).get(("alpha", "default")) == "first", 60, "the first sync")
        write(db, "UPDATE memory_entries SET value = '\"second\"', updated_at = ? WHERE key = 'alpha'", (T0 + 5,))
        write(db, "INSERT INTO memory_entries (key, value, namespace, created_at, updated_at, accessed_at) "
                  "VALUES ('beta', '\"new\"', 'default', ?, ?, ?)", (T0 + 5,) * 3)
        wait_for(lambda: unified(target) == {("alpha", "default"): "second", ("beta", "default"): "new"}, 30,
                 "the watcher to sync the change")
    finally:
        watcher.send_signal(signal.SIGINT)
        stdout, stderr = watcher.communicate(timeout=120)
    assert watcher.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr + stdout
    lines = [line for line in stdout.splitlines() if " loaded " in line]
    assert len(lines) >= 2 and "+1 ~1 -0" in lines[-1], stdout


def test_an_invocation_counts_as_complete_only_when_it_builds_every_model():
    from loader.transform.build import builds_every_node, dbt_subcommand, selects_every_model

    # dbt's global options may stand before its command, one of them with a value that is not a command
    assert dbt_subcommand(["--log-level", "debug", "build", "--select", "x"]) == "build"
    assert dbt_subcommand(["--no-use-colors", "--vars", "{a: 1}", "clean"]) == "clean"
    assert dbt_subcommand(["--log-level=info", "--quiet"]) is None
    assert builds_every_node(["build"]) and builds_every_node(["--log-level", "debug", "build", "--full-refresh"])
    assert builds_every_node(["--no-use-colors", "build", "--exclude", "test_type:unit"])
    for command in (["run"], ["test"], ["--log-level", "debug", "run"], ["--target", "elsewhere", "build"],
                    ["build", "--select", "unified_memory"], ["--quiet"], []):
        assert not builds_every_node(command), command

    assert selects_every_model([]) and selects_every_model(["--full-refresh", "--no-write-json"])
    assert selects_every_model(["--exclude", "test_type:unit"]) and selects_every_model(["--exclude=test_type:unit"])
    assert selects_every_model(["--threads", "4", "--exclude", "test_type:unit", "--full-refresh"])
    assert selects_every_model(["--no-write-json", "--log-level-file", "info"])
    for arguments in (["--select", "unified_memory"], ["-s", "x"], ["--select=x"], ["--selector", "nightly"],
                      ["--exclude", "test_type:unit", "source:raw_n8n+"], ["--exclude=stg_n8n__workflows"],
                      ["--resource-type", "test"], ["--empty"], ["--vars", "{sessions_namespace: x}"],
                      ["--target", "elsewhere"]):
        assert not selects_every_model(arguments), arguments


def test_the_status_line_counts_files_gone_missing_archived_or_forgotten():
    files = [FileSync(f"/srv/{status}-{n}.db", f"{status}-{n}.db", "claude-flow-v2", status)
             for status, count in (("unchanged", 2), ("missing", 1), ("archived", 3), ("forgotten", 1)) for n in range(count)]
    line = SyncReport(started_at=datetime.now(timezone.utc), files=files).status_line()
    assert "2 unchanged" in line and ", 1 missing, 3 archived, 1 forgotten" in line, line


def test_a_sync_waits_for_a_build_running_on_the_database_then_builds_its_change(tmp_path, target, home):
    """Two builds at once would replace the same models (one failing on the other's tables): a sync whose
    build finds another dbt build running (here: its lock held) says so and waits, then builds its change."""
    tree = tmp_path / "tree"
    db = tree / "app" / ".swarm" / "memory.db"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as connection:
        connection.executescript(V2_DDL)
        connection.execute("INSERT INTO memory_entries (key, value, namespace) VALUES ('k', '\"one\"', 'default')")
    connection.close()
    ran = subprocess.run([sys.executable, "-m", "loader", "run", str(tree), "--no-backup", "--dsn", target.dsn,
                          "--home", str(home)], capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-2000:]
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE memory_entries SET value = '\"two\"', updated_at = updated_at + 10 WHERE key = 'k'")
    connection.close()

    ranked_table = "SELECT to_regclass('intermediate.int_memory_ranked')::oid"
    (ranked_before,) = fetch(target, ranked_table)
    environment = {k: v for k, v in os.environ.items() if k not in AMBIENT_SETTINGS}
    with psycopg.connect(target.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext('consolidate.dbt'))")
        # a build running: its on-run-start recorded it, not passed yet (a sync deciding now would rebuild all)
        holder.execute("INSERT INTO consolidate.memory_builds (invocation_id, marts_schema, write_watermark) "
                       "VALUES ('running-elsewhere', 'public', 0)")
        syncing = subprocess.Popen([sys.executable, "-m", "loader", "sync", str(tree), "--dsn", target.dsn,
                                    "--home", str(home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=environment)
        try:
            wait_for(lambda: fetch(target, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                           "AND NOT granted")[0][0] > 0, 120, "the sync waiting for the dbt lock")
            assert syncing.poll() is None
            assert fetch(target, "SELECT value #>> '{}' FROM unified_memory WHERE key = 'k'") == [("one",)]
        finally:
            holder.execute("DELETE FROM consolidate.memory_builds WHERE invocation_id = 'running-elsewhere'")
            holder.execute("SELECT pg_advisory_unlock(hashtext('consolidate.dbt'))")
        stdout, stderr = syncing.communicate(timeout=600)
    assert syncing.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert "waiting for another build" in stderr
    assert fetch(target, "SELECT value #>> '{}' FROM unified_memory WHERE key = 'k'") == [("two",)]
    assert fetch(target, ranked_table) == [ranked_before]  # decided after the wait: incremental, not a rebuild
