"""Promises of the README that no other test kept: the options and commands around a run (--schema,
--backup-to, load --force, db url / db stop, consolidate dbt, build --json), what each exit code
means (4 with PostgreSQL down from the start, 6 for a lineage key that is not there, sync --watch
exiting with its last cycle's code), and a rerun after a failed build. Every command runs as a user
runs it (a separate process); expectations come from sqlite3 on the source files and plain SQL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from loader.database import Target

import conftest
from conftest import AMBIENT_SETTINGS, consolidate, fetch, free_port

T0 = 1_750_000_000  # epoch seconds


def v2_file(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A claude-flow v2 memory.db with rows (key, value, namespace), updated one second apart."""
    return conftest.v2_file(path, [(key, value, namespace, T0 + offset)
                                   for offset, (key, value, namespace) in enumerate(rows)])


def small_tree(root: Path) -> Path:
    v2_file(root / "a" / "memory.db", [("alpha", '"a"', "default"), ("beta", '{"n": 1}', "default"),
                                      ("perf:1", '{"duration": 3}', "performance-metrics")])
    v2_file(root / "b" / "memory.db", [("gamma", "plain text", "notes"), ("alpha", '"newer"', "default")])
    return root


def sqlite_rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute("SELECT count(*) FROM memory_entries").fetchone()[0]


def relation(target: Target, schema: str, name: str) -> str | None:
    return fetch(target, "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))::text", (schema, name))[0][0]


# ----------------------------------------------------------------------------- --schema, --backup-to

def test_schema_puts_the_marts_outside_public_and_backup_to_holds_a_verified_backup(tmp_path, target, home):
    tree = small_tree(tmp_path / "tree")
    backups = tmp_path / "backups" / "before-migration"
    result = consolidate("run", str(tree), "--schema", "marts", "--backup-to", str(backups), "--json",
                         target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["reconciled"] and report["backup"] == str(backups)
    assert report["validation"]["marts_schema"] == "marts"

    for mart in ("unified_memory", "performance_metrics", "unified_memory_history", "active_sessions",
                 "migration_metadata", "reconciliation"):
        assert relation(target, "marts", mart) == f"marts.{mart}", mart
        assert relation(target, "public", mart) is None, mart
    assert dict(fetch(target, "SELECT key, value #>> '{}' FROM marts.unified_memory WHERE namespace = 'default'")) \
        == {"alpha": "newer", "beta": '{"n": 1}'}

    manifest = json.loads((backups / "manifest.json").read_text())
    assert sorted(Path(f["path"]) for f in manifest["files"]) == sorted(tree.rglob("memory.db"))
    verified = consolidate("backup", "--verify", str(backups), "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["exit_code"] == 0, verified.stderr[-2000:]

    validated = consolidate("validate", "--schema", "marts", "--backup", str(backups), "--json",
                            target=target, home=home)
    assert validated.returncode == 0, validated.stderr[-2000:]
    assert {f["backup_checksum_status"] for f in json.loads(validated.stdout)["files"]} == {"matches"}


# ---------------------------------------------------------------------------------------- load --force

def test_load_force_reloads_unchanged_files_as_their_new_current_load(tmp_path, target, home):
    tree = small_tree(tmp_path / "tree")
    files = sorted(tree.rglob("memory.db"))
    runs = [json.loads(consolidate("load", str(tree), *extra, "--json", target=target, home=home).stdout)
            for extra in ((), (), ("--force",))]
    statuses = [sorted(f["status"] for f in run["files"]) for run in runs]
    assert statuses == [["loaded", "loaded"], ["unchanged", "unchanged"], ["loaded", "loaded"]]

    forced = runs[2]["load_id"]
    assert dict(fetch(target, "SELECT source_path, load_id FROM consolidate.current_loads")) \
        == {str(path): forced for path in files}
    for path in files:  # raw keeps the first load's rows and holds the forced load's complete
        by_load = dict(fetch(target, "SELECT _load_id, count(*) FROM raw_claude_flow_v2.memory_entries "
                                     "WHERE _source_path = %s GROUP BY 1", (str(path),)))
        assert by_load == {runs[0]["load_id"]: sqlite_rows(path), forced: sqlite_rows(path)}, path


# ------------------------------------------------------------------------------------- db url / stop

def test_db_url_starts_the_embedded_postgresql_and_db_stop_stops_it(tmp_path):
    home = tmp_path / "state"
    url = consolidate("db", "url", "--home", str(home))
    assert url.returncode == 0, url.stderr
    dsn = url.stdout.strip()
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
    assert (home / "pgdata" / "postmaster.pid").exists()

    stopped = consolidate("db", "stop", "--home", str(home))
    assert stopped.returncode == 0 and "stopped" in stopped.stderr
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=5).close()
    again = consolidate("db", "stop", "--home", str(home))
    assert again.returncode == 0 and "not running" in again.stderr


def test_db_stop_leaves_a_server_that_died_down_and_db_url_starts_it_again(tmp_path):
    home = tmp_path / "state"
    pid_file = home / "pgdata" / "postmaster.pid"
    dsn = consolidate("db", "url", "--home", str(home)).stdout.strip()
    left_behind = pid_file.read_text()
    postmaster = int(left_behind.split()[0])
    os.kill(postmaster, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{postmaster}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)  # until init reaps it: pg_ctl takes a zombie for a server still running

    stopped = consolidate("db", "stop", "--home", str(home))
    assert stopped.returncode == 0 and "not running" in stopped.stderr, stopped.stderr
    # not started only to be stopped again: that would have written its own postmaster.pid, then removed it
    assert pid_file.read_text() == left_behind
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=5).close()

    dsn = consolidate("db", "url", "--home", str(home)).stdout.strip()
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
    assert consolidate("db", "stop", "--home", str(home)).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="root reads a folder pg_ctl's user may not (CI runs as root)")
def test_db_stop_that_pg_ctl_cannot_do_is_exit_4_with_its_reason(tmp_path):
    pgdata = tmp_path / "state" / "pgdata"
    pgdata.mkdir(parents=True)
    (pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n")
    pgdata.chmod(0)
    try:
        stopped = consolidate("db", "stop", "--home", str(tmp_path / "state"))
    finally:
        pgdata.chmod(0o700)
    assert stopped.returncode == 4, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert f"could not stop the embedded PostgreSQL in {pgdata}" in stopped.stderr
    assert "Permission denied" in stopped.stderr


def server_settings(dsn, *names):
    with psycopg.connect(dsn) as connection:
        return tuple(connection.execute(f"SHOW {name}").fetchone()[0] for name in names)


def test_a_new_embedded_server_gets_minimal_wal_and_an_existing_one_keeps_its_settings(tmp_path):
    home = tmp_path / "state"
    dsn = consolidate("db", "url", "--home", str(home)).stdout.strip()
    assert server_settings(dsn, "wal_level", "max_wal_senders") == ("minimal", "0")

    # an operator's choice (or an earlier version's folder) stays: the settings are applied once, at initdb
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("ALTER SYSTEM SET wal_level = 'replica'")
        connection.execute("ALTER SYSTEM SET max_wal_senders = '10'")
    assert consolidate("db", "stop", "--home", str(home)).returncode == 0
    dsn = consolidate("db", "url", "--home", str(home)).stdout.strip()
    assert server_settings(dsn, "wal_level", "max_wal_senders") == ("replica", "10")
    assert consolidate("db", "stop", "--home", str(home)).returncode == 0


# ------------------------------------------------------------------------------------------ exit 4

@pytest.mark.parametrize("command", [("load", "TREE"), ("run", "TREE", "--no-backup"), ("sync", "TREE"),
                                     ("status",), ("validate",), ("lineage", "alpha"), ("build",)])
def test_postgresql_down_from_the_start_exits_4_without_a_traceback(tmp_path, command):
    tree = small_tree(tmp_path / "tree")
    before = {path: path.read_bytes() for path in tree.rglob("*") if path.is_file()}
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=5"
    arguments = [str(tree) if part == "TREE" else part for part in command]
    result = consolidate(*arguments, "--dsn", dsn, "--home", str(tmp_path / "state"))
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    assert "PostgreSQL unavailable" in result.stderr and "Traceback" not in result.stderr
    assert {path: path.read_bytes() for path in tree.rglob("*") if path.is_file()} == before


# ------------------------------------------------------------- a failed build, then the same run again

def set_gamma_aside(target: Target) -> None:
    """raw no longer holds what the ledger counted for key 'gamma': a build's tests fail."""
    with target.connect() as connection:
        connection.execute("CREATE TABLE public.kept_aside AS SELECT * FROM raw_claude_flow_v2.memory_entries "
                           "WHERE key = 'gamma'")
        connection.execute("DELETE FROM raw_claude_flow_v2.memory_entries WHERE key = 'gamma'")


def put_gamma_back(target: Target) -> None:
    with target.connect() as connection:
        connection.execute("INSERT INTO raw_claude_flow_v2.memory_entries SELECT * FROM public.kept_aside")


def test_a_rerun_after_a_failed_build_builds_again_and_passes(tmp_path, target, home):
    tree = small_tree(tmp_path / "tree")
    first = consolidate("run", str(tree), "--no-backup", "--json", target=target, home=home)
    assert first.returncode == 0, first.stderr[-2000:]

    # raw no longer holds what the ledger counted: the build's tests fail (nothing on disk changed, so
    # only --rebuild builds)
    set_gamma_aside(target)
    failed = consolidate("run", str(tree), "--no-backup", "--rebuild", "--json", target=target, home=home)
    assert failed.returncode == 1, failed.stderr[-2000:]
    report = json.loads(failed.stdout)
    assert not report["build"]["success"] and not report["build"]["skipped"] and not report["reconciled"]
    assert any("assert_ledger_counts_match_raw" in failure for failure in report["build"]["failures"])

    # the same run again, without --rebuild: the last build failed, so it builds and validates again
    put_gamma_back(target)
    again = consolidate("run", str(tree), "--no-backup", "--json", target=target, home=home)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    report = json.loads(again.stdout)
    assert report["build"]["success"] and not report["build"]["skipped"] and report["validation"]["passed"]
    assert fetch(target, "SELECT value #>> '{}' FROM unified_memory WHERE key = 'gamma'") == [("plain text",)]

    # now the marts are current: the next run skips build and validation
    current = json.loads(consolidate("run", str(tree), "--no-backup", "--json", target=target, home=home).stdout)
    assert current["build"]["skipped"] and current["reconciled"]


def test_a_run_after_a_failed_build_command_builds_again(tmp_path, target, home):
    """A `consolidate build` that failed after the last passing `run` leaves marts no test passed: the next
    `run` on unchanged files builds and validates again instead of calling them current."""
    tree = small_tree(tmp_path / "tree")
    assert consolidate("run", str(tree), "--no-backup", target=target, home=home).returncode == 0
    set_gamma_aside(target)
    failed = consolidate("build", "--full-refresh", "--json", target=target, home=home)
    assert failed.returncode == 1, failed.stdout[-2000:] + failed.stderr[-2000:]

    put_gamma_back(target)
    again = consolidate("run", str(tree), "--no-backup", "--json", target=target, home=home)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    report = json.loads(again.stdout)
    assert not report["build"]["skipped"] and report["build"]["success"] and report["validation"]["passed"]
    assert fetch(target, "SELECT value #>> '{}' FROM unified_memory WHERE key = 'gamma'") == [("plain text",)]


# ---------------------------------------------------------------- build --json, consolidate dbt, lineage

def test_build_json_dbt_passthrough_and_lineage_exit_codes(tmp_path, target, home):
    tree = small_tree(tmp_path / "tree")
    assert consolidate("load", str(tree), target=target, home=home).returncode == 0
    not_built = consolidate("lineage", "alpha", target=target, home=home)
    assert not_built.returncode == 2 and "build first" in not_built.stderr

    built = consolidate("build", "--json", target=target, home=home)
    assert built.returncode == 0, built.stderr[-2000:]
    outcome = json.loads(built.stdout)
    assert outcome["success"] and outcome["passed"] > 0 and outcome["failures"] == []
    # models and tests that passed: not the hooks and exposures run_results.json also lists
    results = json.loads((home / "dbt" / "target" / "run_results.json").read_text())["results"]
    nodes = [r for r in results if not r["unique_id"].startswith("operation.")]
    assert len(nodes) < len(results) and outcome["not_run"] == outcome["warned"] == 0
    assert {r["status"] for r in nodes} == {"success", "pass", "no-op"}  # no-op: the exposures
    assert outcome["passed"] == sum(r["status"] in ("success", "pass") for r in nodes)

    def dbt(*arguments: str):
        return consolidate("dbt", "--dsn", target.dsn, "--home", str(home), "--", *arguments)

    tested = dbt("test", "--select", "unified_memory")
    assert tested.returncode == 0, tested.stdout[-2000:]
    results = json.loads((home / "dbt" / "target" / "run_results.json").read_text())["results"]
    tests = [r for r in results if r["unique_id"].startswith("test.")]  # the rest: the on-run-start hook
    assert tests and all(r["status"] == "pass" for r in tests)
    fresh = dbt("source", "freshness", "--select", "source:consolidate.load_files")
    assert fresh.returncode == 0, fresh.stdout[-2000:]
    sources = json.loads((home / "dbt" / "target" / "sources.json").read_text())
    assert [r["status"] for r in sources["results"]] == ["pass"]
    unknown = dbt("no-such-command")
    assert unknown.returncode == 2 and "No such command 'no-such-command'" in unknown.stderr
    version = dbt("--version")  # dbt's options without a command take none of the project's
    assert version.returncode == 0 and "installed: 1.11." in version.stdout, version.stderr[-2000:]
    plain = consolidate("build", target=target, home=home)
    assert plain.returncode == 0 and "build passed" in plain.stdout  # the outcome on stdout, dbt's progress not

    found = consolidate("lineage", "alpha", "--json", target=target, home=home)
    assert found.returncode == 0 and {v["role"] for v in json.loads(found.stdout)} == {"winner", "superseded"}
    missing = consolidate("lineage", "no-such-key", "--json", target=target, home=home)
    assert missing.returncode == 6 and json.loads(missing.stdout) == [] and "no entry with key" in missing.stderr
    elsewhere = consolidate("lineage", "alpha", "--schema", "no_such_schema", target=target, home=home)
    assert elsewhere.returncode == 2 and "no_such_schema.unified_memory" in elsewhere.stderr, elsewhere.stderr

    # debug, which takes no --target-path (consolidate must not add one), and clean: HOME's artifacts only
    debugged = dbt("debug")
    assert debugged.returncode == 0 and "All checks passed" in debugged.stdout, debugged.stdout[-2000:] + debugged.stderr
    cleaned = dbt("clean")
    assert cleaned.returncode == 0 and not (home / "dbt" / "target").exists() and not (home / "dbt" / "logs").exists()
    assert str(home / "dbt" / "target") in cleaned.stderr.replace("\n", "") and "project" not in cleaned.stderr

    # run-operation: its results name macros, not nodes
    operation = dbt("run-operation", "create_udfs")
    assert operation.returncode == 0 and "Traceback" not in operation.stderr, operation.stderr[-2000:]
    results = json.loads((home / "dbt" / "target" / "run_results.json").read_text())["results"]
    assert [(r["unique_id"], r["status"]) for r in results] == [("macro.consolidate.create_udfs", "success")]

    # freshness counts files loaded or checked, not loads that failed: a week-old load with a failure since
    with target.connect() as connection:
        connection.execute("UPDATE consolidate.load_files SET completed_at = completed_at - interval '9 days', "
                           "started_at = started_at - interval '9 days'")
        connection.execute("UPDATE consolidate.load_files SET status = 'failed', completed_at = now() "
                           "WHERE source_path = (SELECT max(source_path) FROM consolidate.load_files)")
    stale = dbt("source", "freshness", "--select", "source:consolidate.load_files")
    sources = json.loads((home / "dbt" / "target" / "sources.json").read_text())
    assert stale.returncode == 1 and [r["status"] for r in sources["results"]] == ["error"], stale.stdout[-2000:]


def test_dbt_connects_as_the_dsn_says_with_what_libpq_fills_in_and_the_dsns_other_settings(target, home):
    """dbt's profile is filled from the DSN as libpq resolves it: a database left to PGDATABASE is that
    database (not "postgres"), and settings the profile has no field for (options, sslmode) reach dbt."""
    params = conninfo_to_dict(target.dsn)
    database = params.pop("dbname")
    dsn = make_conninfo(**params, options="-c work_mem=7MB -c lock_timeout=4321", sslmode="disable")
    environment = {k: v for k, v in os.environ.items() if k not in AMBIENT_SETTINGS}
    shown = subprocess.run(
        [sys.executable, "-m", "loader", "dbt", "--dsn", dsn, "--home", str(home), "--", "show", "--output",
         "json", "--inline", "select current_database() as db, current_setting('work_mem') as work_mem, "
         "current_setting('lock_timeout') as lock_timeout, current_user as role"],
        capture_output=True, text=True, env={**environment, "PGDATABASE": database}, timeout=600)
    assert shown.returncode == 0, shown.stdout[-2000:] + shown.stderr[-2000:]
    expected_role = fetch(target, "SELECT current_user")[0][0]
    row = json.loads(shown.stdout[shown.stdout.index("{"):shown.stdout.rindex("}") + 1])["show"][0]
    assert row == {"db": database, "work_mem": "7MB", "lock_timeout": "4321ms", "role": expected_role}


# ------------------------------------------------------------------------------ sync --watch exit code

def test_sync_watch_exits_with_the_code_of_its_last_cycle_that_did_something(tmp_path, target, home):
    tree = small_tree(tmp_path / "tree")
    (tree / "broken.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)
    environment = {k: v for k, v in os.environ.items() if k not in AMBIENT_SETTINGS}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "loader", "sync", str(tree), "--watch", "0.2", "--no-build", "--json",
         "--dsn", target.dsn, "--home", str(home)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not fetch(target, "SELECT to_regclass('consolidate.loads')")[0][0]:
            time.sleep(0.5)
        while time.monotonic() < deadline and not fetch(
                target, "SELECT count(*) FROM consolidate.loads WHERE status <> 'running'")[0][0]:
            time.sleep(0.5)
        time.sleep(1)  # a few idle cycles after the first
    finally:
        watcher.send_signal(signal.SIGINT)
        stdout, stderr = watcher.communicate(timeout=120)
    cycles = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert cycles and cycles[0]["exit_code"] == 3 and not cycles[0]["idle"]
    assert all(cycle["idle"] for cycle in cycles[1:])
    assert watcher.returncode == 3, stderr[-2000:]


# ------------------------------------------------------- a mistyped root, roots run one by one, warnings

@pytest.mark.parametrize("command", [["discover"], ["load"], ["run"], ["sync"], ["backup", "--to", "OUT"],
                                     ["archive", "--to", "OUT"]])
def test_a_root_that_does_not_exist_is_a_usage_error(tmp_path, command):
    missing = tmp_path / "no-such-folder"
    arguments = [str(tmp_path / "out") if part == "OUT" else part for part in command]
    result = consolidate(arguments[0], str(missing), *arguments[1:], "--home", str(tmp_path / "state"))
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    message = " ".join(result.stderr.replace("│", " ").split())  # the error box wraps long paths
    assert "does not exist" in message and "Traceback" not in message, message
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()


@pytest.mark.parametrize("command, words", [
    (["backup", "ROOT", "--verify", "ROOT"], "--verify DIR takes no ROOT"),
    (["backup", "ROOT"], "give ROOT... --to DIR"),
    (["archive", "ROOT", "--relocate"], "--relocate goes with --verify"),
    (["archive", "ROOT"], "give ROOT... --to DIR"),
    (["app-copy", "ROOT/memory.db", "--schema", "n8n", "--replace", "--verify-only"], "takes no --replace"),
    # what typer finds as it parses the command line
    (["run", "ROOT/no-such-folder"], "does not exist"),
    (["validate", "--sample", "-1"], "--sample"),
    (["lineage", "key", "--schema", "bad-name"], "not a plain identifier"),
    (["sync", "ROOT", "--watch", "often"], "--watch"),
])
def test_a_usage_error_gives_json_one_document(tmp_path, command, words):
    root = small_tree(tmp_path / "tree")
    arguments = [part.replace("ROOT", str(root / "a")) for part in command]
    result = consolidate(*arguments, "--json", "--home", str(tmp_path / "state"))
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    document = json.loads(result.stdout)
    shown = " ".join(result.stderr.replace("│", " ").split())
    assert document["exit_code"] == 2 and words in document["error"] and words in shown, shown


def test_a_backup_refused_by_run_gives_json_one_document(tmp_path, target, home):
    tree = small_tree(tmp_path / "tree")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "someone-elses.txt").write_text("not a backup")
    result = consolidate("run", str(tree), "--backup-to", str(taken), "--json", target=target, home=home)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    document = json.loads(result.stdout)
    assert document["exit_code"] == 2 and document["error"].startswith("backup refused")
    assert fetch(target, "SELECT count(*) FROM pg_tables WHERE schemaname LIKE 'raw%%'") == [(0,)]  # nothing loaded
    # the same run again into the backup it made: refused, saying what run can do (it has no --overwrite)
    first = consolidate("run", str(tree), "--backup-to", str(tmp_path / "kept"), target=target, home=home)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    again = consolidate("run", str(tree), "--backup-to", str(tmp_path / "kept"), target=target, home=home)
    message = " ".join(again.stderr.split())
    assert again.returncode == 2 and "already holds a backup" in message and "--overwrite" not in message, message
    assert "leave --backup-to out" in message and "--no-backup" in message


def test_roots_run_one_by_one_each_validate_against_their_own_backup(tmp_path, target, home):
    """The ledger holds the files of every root loaded before; a `run` over another root backs up that
    root only, and its files alone are checked against that backup."""
    tree = small_tree(tmp_path / "tree")
    first = consolidate("run", str(tree / "a"), "--backup-to", str(tmp_path / "backup-a"), "--json",
                        target=target, home=home)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    second = consolidate("run", str(tree / "b"), "--backup-to", str(tmp_path / "backup-b"), "--json",
                         target=target, home=home)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert json.loads(second.stdout)["exit_code"] == 0
    statuses = {f["source_path"]: f["backup_checksum_status"] for f in json.loads(second.stdout)["validation"]["files"]}
    assert statuses == {str(tree / "a" / "memory.db"): None, str(tree / "b" / "memory.db"): "matches"}
    outside = {f["source_path"]: f["outside_backup"] for f in json.loads(second.stdout)["validation"]["files"]}
    assert outside == {str(tree / "a" / "memory.db"): True, str(tree / "b" / "memory.db"): False}
    # validate with that backup names the file it could not check against it, and passes
    checked = consolidate("validate", "--backup", str(tmp_path / "backup-b"), target=target, home=home)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    note = " ".join(checked.stderr.split())
    assert "1 file(s) lie under none of the roots the backup" in note and "a/memory.db" in note, note


def test_sync_and_archive_show_what_discovery_warned_of(tmp_path, target, home):
    tree = small_tree(tmp_path / "tree")
    (tree / "notes.db").write_bytes(b"not a database, whatever its name")
    assert consolidate("run", str(tree), "--no-backup", target=target, home=home).returncode == 0
    synced = consolidate("sync", str(tree), target=target, home=home)
    assert synced.returncode == 0, synced.stdout[-2000:] + synced.stderr[-2000:]
    assert "warning:" in synced.stderr and str(tree / "notes.db") in synced.stderr.replace("\n", "")
    archived = consolidate("archive", str(tree), "--to", str(tmp_path / "archive"), "--json", target=target, home=home)
    assert archived.returncode == 0, archived.stdout[-2000:] + archived.stderr[-2000:]
    assert str(tree / "notes.db") in [w["path"] for w in json.loads(archived.stdout)["warnings"]]
    assert json.loads(archived.stdout)["exit_code"] == archived.returncode


# ----------------------------------------------------------------------------------------------- --help

COMMANDS = ["discover", "load", "backup", "build", "dbt", "run", "sync", "forget", "cutover", "rollback", "sample",
            "lineage", "validate", "status", "archive", "app-copy", ["db", "url"], ["db", "env"], ["db", "stop"],
            ["cache", "warm"], ["cache", "stats"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) if isinstance(c, list) else c)
def test_every_commands_help_has_an_example_and_breaks_no_sentence(command):
    """Each paragraph of a help text is wrapped to the terminal, not broken where the docstring's line
    ended (typer keeps the later paragraphs' line breaks)."""
    words = command if isinstance(command, list) else [command]
    shown = subprocess.run([sys.executable, "-m", "loader", *words, "--help"], capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "3000", "TERM": "dumb"}, timeout=60)
    assert shown.returncode == 0, shown.stderr[-2000:]
    description = "\n".join(line.strip() for line in shown.stdout.split("╭")[0].splitlines())
    paragraphs = [p.strip() for p in description.split("\n\n") if p.strip()][1:]  # after the usage line
    assert any(p.startswith("Example:") for p in paragraphs), description
    for paragraph in paragraphs:
        lines = paragraph.splitlines()
        assert len(lines) == 1 or all(line.strip().startswith("Example:") for line in lines), paragraph


def test_every_json_document_carries_the_exit_code_the_command_exits_with(tmp_path, target, home):
    """discover, backup, load and build with --json: `exit_code` in the document is the process's
    (3 for a tree with a damaged database, which fails its file but not the build)."""
    tree = small_tree(tmp_path / "tree")
    (tree / "broken.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)
    expected = {("discover", str(tree)): 3, ("backup", str(tree), "--to", str(tmp_path / "backup")): 3,
                ("load", str(tree)): 3, ("build",): 0}
    for arguments, code in expected.items():
        database = () if arguments[0] in ("discover", "backup") else ("--dsn", target.dsn)
        result = consolidate(*arguments, "--json", *database, "--home", str(home))
        assert (result.returncode, json.loads(result.stdout)["exit_code"]) == (code, code), result.stderr[-2000:]
