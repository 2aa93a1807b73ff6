"""A 100k smoke run of bench/run: it must complete, and every system must have loaded every generated
row. Times are printed by bench/run, never asserted here."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import generate  # noqa: E402


def test_generator_is_deterministic_and_shaped_like_the_real_files(tmp_path):
    first = generate.generate(tmp_path / "a", 3_200, files=4, seed=9, jobs=1, quiet=True)
    second = generate.generate(tmp_path / "b", 3_200, files=4, seed=9, jobs=2, quiet=True)
    assert generate.fingerprint(tmp_path / "a") == generate.fingerprint(tmp_path / "b")
    assert {k: v for k, v in first.items() if k != "seconds"} == {k: v for k, v in second.items() if k != "seconds"}

    rows = []
    for f in first["file_list"]:
        with sqlite3.connect(tmp_path / "a" / f["path"]) as connection:
            assert connection.execute("SELECT count(*) FROM memory_entries").fetchone()[0] == 800
            rows += connection.execute("SELECT key, namespace, value FROM memory_entries").fetchall()
    assert len(rows) == first["rows"] == 3_200
    share = sum(1 for _, namespace, _ in rows if namespace == "performance-metrics") / len(rows)
    assert 0.15 < share < 0.21
    assert any(value.startswith("__compressed__") for _, _, value in rows)
    assert any(value.startswith("# ") for _, namespace, value in rows if namespace == "default")
    keys = [(key, namespace) for key, namespace, _ in rows]
    repeated = len(keys) - len(set(keys))
    assert repeated == first["duplicate_rows"] + first["files"] - 1   # + command-metrics-summary per file
    assert 0.01 < first["duplicate_rows"] / len(rows) < 0.05


def test_bench_run_100k_loads_every_row(tmp_path, server_dsn):
    pgloader = shutil.which("pgloader")
    if not pgloader and os.environ.get("CI"):
        pytest.fail("pgloader is not installed (apt-get install -y pgloader)")
    results = tmp_path / "results.json"
    command = [str(REPO / "bench" / "run"), "--rows", "100k", "--out", str(tmp_path / "out"), "--dsn", server_dsn,
               "--no-markdown", "--json", str(results), "--skip-backup-run", "--skip-rerun",
               "--sync-rounds", "2", "--unserved-rounds", "1",
               "--db-prefix", "smoke_" + uuid.uuid4().hex[:8]]
    if not pgloader:
        command.append("--skip-pgloader")
    environment = {**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parent.parent)}
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    report = json.loads(results.read_text())
    corpus = report["corpus"]
    assert corpus["rows"] == 100_000 and corpus["files"] == 16
    measured = {m["name"]: m for m in report["measured"]}
    assert all(m["exit_code"] == 0 for m in measured.values()), measured

    load = measured["consolidate load"]
    assert load["checks"]["raw_rows"] == corpus["rows"]
    assert load["statuses"] == {"loaded": 16}
    again = measured["consolidate load (re-run, unchanged)"]
    assert again["statuses"] == {"unchanged": 16} and again["checks"]["raw_rows"] == corpus["rows"]

    run = measured["consolidate run --no-backup"]["checks"]
    assert run["raw_rows"] == corpus["rows"]
    assert run["public.unified_memory"] + run["public.performance_metrics"] == corpus["keys_expected"]
    assert run["public.unified_memory_history"] == corpus["rows"] - corpus["keys_expected"]
    assert "build" in measured["consolidate run --no-backup"]["phases"]
    # the cold build's slowest statements, read from dbt's log: the full build creates int_memory_ranked
    statements = measured["consolidate run --no-backup"]["dbt_statements"]
    assert ["consolidate.int_memory_ranked", "create table intermediate.int_memory_ranked as ..."] in \
        [statement[:2] for statement in statements]
    assert [s[2] for s in statements] == sorted((s[2] for s in statements), reverse=True)
    assert "Slowest statements of the cold `run`'s build" in finished.stdout

    for form in ("binary", "csv"):
        assert measured[f"floor ({form} COPY)"]["checks"]["rows"] == corpus["rows"]
    assert measured["DuckDB ATTACH + CREATE TABLE AS (anchor)"]["checks"]["rows"] == corpus["rows"]
    for name in ("consolidate sync (one row changed + one client write)",
                 "consolidate sync (one row changed + one client write), round 2",
                 "consolidate sync without the dbt server (one row changed + one client write), round 1"):
        synced = measured[name]
        assert synced["checks"]["synced_row_in_marts"] and synced["checks"]["client_write_in_marts"], synced
        assert synced["checks"]["raw_rows_added"] == 1, synced   # the changed row, not its file again
    watched = measured["consolidate sync --watch, one cycle (one row changed + one client write)"]
    assert watched["checks"]["synced_row_in_marts"] and watched["checks"]["client_write_in_marts"], watched
    assert watched["checks"]["cycle"] > watched["checks"]["first_cycle"] and watched["wall"] > 0
    assert {"get (PostgreSQL, no Redis)", "set"} <= set(report["client"])
    if pgloader:
        loaded = measured["pgloader"]["checks"]
        assert loaded["tables"] == corpus["files"]
        assert loaded["rows"] == corpus["rows"]
        assert loaded["per_file"] == [corpus["rows"] // corpus["files"]] * corpus["files"]
    assert "| consolidate load |" in finished.stdout
    # the dbt server the bench's commands left ended with the bench (its runtime folder removed)
    assert not list((tmp_path / "out").glob("run-*/runtime"))


def test_the_generators_copy_of_the_v2_schema_is_the_fixtures():
    """bench/generate.py copies V2_DDL so it runs without the package; the copy must not drift."""
    from bench.generate import V2_INDEX, V2_TABLE
    from loader.fixtures.claude_flow_v2 import V2_DDL

    def words(ddl: str) -> list[str]:
        return [statement.split() for statement in ddl.replace(";", "\n;").split(";") if statement.strip()]

    assert words(V2_TABLE + ";" + V2_INDEX) == words(V2_DDL)
