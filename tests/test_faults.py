"""Faults: `kill -9` at any moment, or PostgreSQL going away, then the same command again, ends in
the same final state as one clean run: no duplicate raw rows, no half-loaded file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from loader.database import Target, embedded_dsn, stop_embedded

from conftest import consolidate, fetch

KILL_AFTER_SECONDS = [0.4, 0.9, 1.5, 2.2, 3.0]


@pytest.fixture(scope="module")
def tree(tmp_path_factory, realdata) -> Path:
    """The sample plus the real claude-flow files: enough files that a load takes a few seconds."""
    root = tmp_path_factory.mktemp("faults") / "tree"
    assert consolidate("sample", str(root / "sample")).returncode == 0
    shutil.copytree(realdata / "claude-flow", root / "real")
    return root


def final_state(target: Target) -> dict[str, list]:
    """What a finished run leaves, without load ids and times (they differ between runs by design)."""
    queries = {
        "unified_memory": "SELECT key, namespace, value::text, data_type, source_path, source_rowid, created_at, "
                          "updated_at, accessed_at, access_count FROM unified_memory",
        "performance_metrics": "SELECT key, namespace, metric_data::text, source_path, source_rowid FROM performance_metrics",
        "history": "SELECT key, namespace, source_path, source_rowid FROM unified_memory_history",
        "current_tables": "SELECT t.source_path, t.source_table, t.rows_in_sqlite, t.rows_loaded "
                          "FROM consolidate.load_tables t JOIN consolidate.current_loads c USING (load_id, source_path)",
    }
    with target.connect() as connection:
        return {name: sorted(connection.execute(query).fetchall()) for name, query in queries.items()}


def duplicate_or_orphan_raw_rows(target: Target) -> list[tuple]:
    """Raw rows of a (file, load, rowid) seen twice, or of a load the ledger does not call loaded."""
    problems = []
    with target.connect() as connection:
        if connection.execute("SELECT to_regclass('consolidate.load_tables')").fetchone()[0] is None:
            return problems  # killed before the ledger existed
        tables = connection.execute(
            "SELECT DISTINCT raw_schema, raw_table FROM consolidate.load_tables").fetchall()
        for schema, table in tables:
            name = psycopg.sql.Identifier(schema, table)
            problems += connection.execute(psycopg.sql.SQL(
                "SELECT _source_path, _load_id, _source_rowid, count(*) FROM {} "
                "GROUP BY 1, 2, 3 HAVING count(*) > 1").format(name)).fetchall()
            problems += connection.execute(psycopg.sql.SQL(
                "SELECT DISTINCT _source_path, _load_id FROM {} r WHERE NOT EXISTS (SELECT 1 FROM "
                "consolidate.load_files f WHERE f.load_id = r._load_id AND f.source_path = r._source_path "
                "AND f.status = 'loaded')").format(name)).fetchall()
    return problems


def start(*arguments: str) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.Popen([sys.executable, "-m", "loader", *arguments], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment)


@pytest.fixture
def clean_state(tree, server_dsn, tmp_path_factory) -> dict[str, list]:
    from conftest import fresh_database
    with fresh_database(server_dsn) as target:
        result = consolidate("run", str(tree), "--no-backup", target=target,
                             home=tmp_path_factory.mktemp("clean"))
        assert result.returncode == 0, result.stderr[-2000:]
        return final_state(target)


@pytest.mark.parametrize("command", ["load", "run"])
def test_kill_9_at_any_moment_then_rerun_gives_the_clean_state(tree, target, home, clean_state, command):
    for delay in KILL_AFTER_SECONDS:
        process = start(command, str(tree), "--no-backup" if command == "run" else "--json",
                        "--dsn", target.dsn, "--home", str(home))
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert duplicate_or_orphan_raw_rows(target) == []
    result = consolidate("run", str(tree), "--no-backup", target=target, home=home)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert duplicate_or_orphan_raw_rows(target) == []
    assert final_state(target) == clean_state
    with target.connect() as connection:
        statuses = dict(connection.execute("SELECT status, count(*) FROM consolidate.loads GROUP BY 1").fetchall())
    assert "running" not in statuses and statuses["completed"] >= 1


def caught_mid_load(target: Target, process: subprocess.Popen) -> bool:
    """Wait until the load has committed some files and is still running; False if it ended first."""
    while process.poll() is None:
        with psycopg.connect(target.dsn, autocommit=True) as connection:
            if connection.execute("SELECT to_regclass('consolidate.loads')").fetchone()[0] is not None and \
                    connection.execute("SELECT EXISTS (SELECT 1 FROM consolidate.loads WHERE status = 'running') "
                                       "AND EXISTS (SELECT 1 FROM consolidate.load_files)").fetchone()[0]:
                return True
        time.sleep(0.01)
    return False


def test_a_load_killed_mid_way_is_marked_interrupted_by_the_next_load(tree, target, home):
    for _ in range(3):  # the load must be caught mid-way; on a fast machine it may end first
        process = start("load", str(tree), "--dsn", target.dsn, "--home", str(home))
        if not caught_mid_load(target, process):
            process.communicate()
            continue
        process.send_signal(signal.SIGKILL)
        process.communicate()
        (dead,) = [row[0] for row in fetch(target, "SELECT load_id FROM consolidate.loads WHERE status = 'running'")]
        result = consolidate("load", str(tree), "--json", target=target, home=home)
        assert result.returncode == 0, result.stderr[-2000:]
        statuses = dict(fetch(target, "SELECT load_id, status FROM consolidate.loads"))
        assert statuses[dead] == "interrupted" and statuses[json.loads(result.stdout)["load_id"]] == "completed"
        assert fetch(target, "SELECT finished_at IS NOT NULL FROM consolidate.loads WHERE load_id = %s",
                     (dead,)) == [(True,)]
        return
    pytest.fail("the load always finished before it could be interrupted")


def test_postgresql_going_away_is_a_clear_error_and_the_rerun_resumes(tree, tmp_path, clean_state):
    for attempt in range(3):  # the load must be caught mid-way; on a fast machine it may end first
        server_home = tmp_path / f"server-{attempt}"
        target = Target(embedded_dsn(server_home))
        home = tmp_path / f"state-{attempt}"
        try:
            process = start("load", str(tree), "--dsn", target.dsn, "--home", str(home))
            if not caught_mid_load(target, process):
                process.communicate()
                continue
            stop_embedded(server_home, mode="immediate")
            _, stderr = process.communicate(timeout=120)
            assert process.returncode == 4, stderr[-2000:]
            assert "PostgreSQL unavailable" in stderr and "Traceback" not in stderr

            target = Target(embedded_dsn(server_home))
            result = consolidate("run", str(tree), "--no-backup", target=target, home=home)
            assert result.returncode == 0, result.stderr[-2000:]
            assert duplicate_or_orphan_raw_rows(target) == []
            assert final_state(target) == clean_state
            return
        finally:
            stop_embedded(server_home)
    pytest.fail("the load always finished before it could be interrupted")
