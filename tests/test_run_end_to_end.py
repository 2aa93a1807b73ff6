"""`consolidate run` end to end, as a user runs it: a subprocess against a real PostgreSQL.

Every expectation is computed here, independently of the loader and the dbt models, by reading
private copies of the SQLite files with Python's sqlite3 and applying the documented rules.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from test_load import manifest_mismatches

from conftest import consolidate, read_private_copy

PERFORMANCE = "performance-metrics"


def checksums(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def epoch_seconds(value) -> float | None:
    """The documented unit rule: magnitudes of 1e11 and above are milliseconds."""
    if value is None:
        return None
    number = float(value)
    return number / 1000 if abs(number) >= 1e11 else number


def text_seconds(value: str | None) -> float | None:
    if value is None:
        return None
    layout = "%Y-%m-%d %H:%M:%S.%f" if "." in value else "%Y-%m-%d %H:%M:%S"
    return datetime.strptime(value, layout).replace(tzinfo=timezone.utc).timestamp()


def expected_value(raw: str, data_type_hint: str | None = None):
    """The documented value rule: JSON → that JSON; __compressed__+base64 JSON → decoded; pickle → the
    base64 text; anything else → the text as a JSON string."""
    if data_type_hint == "pickle":
        return raw, "pickle"
    if raw.startswith("__compressed__"):
        try:
            return json.loads(base64.b64decode(raw[len("__compressed__"):], validate=True)), "json"
        except ValueError:
            return raw, "text"
    try:
        return json.loads(raw), "json"
    except ValueError:
        return raw, "text"


def memory_versions(files: list[Path], scratch: Path) -> list[dict]:
    """Every memory row of every file, normalised by the documented rules."""
    versions = []
    for path in files:
        tables = {name for (name,) in read_private_copy(
            path, scratch, "SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {name for (_, name, *_) in read_private_copy(path, scratch, "PRAGMA table_info(memory_entries)")} \
            if "memory_entries" in tables else set()
        if "value" in columns:
            rows = read_private_copy(path, scratch, "SELECT rowid, key, namespace, value, updated_at, accessed_at, "
                                     "created_at, access_count, NULL FROM memory_entries")
            timestamp, table = epoch_seconds, "memory_entries"
        elif "content" in columns:
            rows = read_private_copy(path, scratch, "SELECT rowid, key, coalesce(namespace, 'default'), content, "
                                     "updated_at, last_accessed_at, created_at, access_count, NULL FROM memory_entries")
            timestamp, table = epoch_seconds, "memory_entries"
        elif "memory_store" in tables:
            rows = read_private_copy(path, scratch, "SELECT rowid, key, 'extended-memory', value, updated_at, "
                                     "accessed_at, created_at, access_count, type FROM memory_store")
            timestamp, table = text_seconds, "memory_store"
        else:
            continue
        for rowid, key, namespace, value, updated, accessed, created, count, hint in rows:
            versions.append(dict(
                path=str(path), rowid=rowid, key=key, namespace=namespace, raw=value, hint=hint,
                updated=timestamp(updated), accessed=timestamp(accessed), created=timestamp(created),
                access_count=int(count) if count is not None else None, table=table))
    return versions


def winners(versions: list[dict]) -> dict[tuple[str, str], dict]:
    """The documented dedupe rule: latest updated_at, then latest accessed_at, then source order."""
    def rank(v):
        return (v["updated"] is None, -(v["updated"] or 0), v["accessed"] is None, -(v["accessed"] or 0),
                v["path"], v["table"], v["rowid"])
    best: dict[tuple[str, str], dict] = {}
    for version in sorted(versions, key=rank):
        best.setdefault((version["key"], version["namespace"]), version)
    return best


def expected_active_sessions(versions: list[dict], best: dict, files: list[Path], scratch: Path) -> dict:
    """session_id -> (source_path, status, agent_type) by the documented rule: memory winners of namespace
    `sessions` keyed `session:<id>` (status and agentType from the value; activity: the latest of
    updated_at and the versions' latest accessed_at, else the earliest created_at) and rows of the v3
    `sessions` tables (status column, agentType from state; activity: updated_at, else created_at);
    per id the latest activity wins, then the source order (path, table, rowid)."""
    candidates = []
    for (key, namespace), winner in best.items():
        if namespace != "sessions" or not key.startswith("session:") or key == "session:":
            continue
        group = [v for v in versions if (v["key"], v["namespace"]) == (key, namespace)]
        accessed = max((v["accessed"] for v in group if v["accessed"] is not None), default=None)
        created = min((v["created"] for v in group if v["created"] is not None), default=None)
        activity = max((t for t in (winner["updated"], accessed) if t is not None), default=created)
        value, _ = expected_value(winner["raw"], winner["hint"])
        fields = value if isinstance(value, dict) else {}
        candidates.append((key[len("session:"):], activity, winner["path"], winner["table"], winner["rowid"],
                           fields.get("status"), fields.get("agentType")))
    for path in files:
        tables = {name for (name,) in read_private_copy(path, scratch, "SELECT name FROM sqlite_master WHERE type = 'table'")}
        memory_columns = {row[1] for row in read_private_copy(path, scratch, "PRAGMA table_info(memory_entries)")}
        if "sessions" not in tables or "content" not in memory_columns:  # only claude-flow v3 has the table
            continue
        for rowid, session_id, state, status, created, updated in read_private_copy(
                path, scratch, "SELECT rowid, id, state, status, created_at, updated_at FROM sessions"):
            activity = epoch_seconds(updated) if updated is not None else epoch_seconds(created)
            candidates.append((session_id, activity, str(path), "sessions", rowid, status,
                               json.loads(state).get("agentType")))
    chosen: dict[str, tuple] = {}
    for candidate in sorted(candidates, key=lambda c: (c[1] is None, -(c[1] or 0), c[2], c[3], c[4])):
        chosen.setdefault(candidate[0], candidate)
    return {session_id: (c[2], c[5], c[6]) for session_id, c in chosen.items()}


def sqlite_files(run_output: dict) -> list[Path]:
    return [Path(f["source_path"]) for f in run_output["files"] if f["status"] in ("loaded", "unchanged")]


@pytest.fixture(scope="module")
def sample_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample") / "tree"
    result = consolidate("sample", str(root))
    assert result.returncode == 0, result.stderr
    return root


def test_run_over_the_sample_reconciles_and_matches_independent_expectations(sample_tree, target, home, tmp_path):
    before = checksums(sample_tree)
    result = consolidate("run", str(sample_tree), "--json", target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert checksums(sample_tree) == before
    report = json.loads(result.stdout)
    assert report["reconciled"] is True
    assert Path(report["backup"]).is_relative_to(home)
    assert consolidate("backup", "--verify", report["backup"]).returncode == 0
    warned = {Path(w["path"]).name for w in report["warnings"]}
    assert {"ruvector.db", "memory.db-wal"} <= warned

    statuses = [f["status"] for f in report["files"]]
    assert statuses.count("copy") == 1 and "failed" not in statuses

    versions = memory_versions(sqlite_files(report), tmp_path / "scratch")
    best = winners(versions)
    with target.connect() as connection:
        unified = {(k, n): (path, rowid, value, data_type, created, accessed, count)
                   for k, n, path, rowid, value, data_type, created, accessed, count in connection.execute(
                       "SELECT key, namespace, source_path, source_rowid, value, data_type, "
                       "extract(epoch FROM created_at), extract(epoch FROM accessed_at), access_count "
                       "FROM unified_memory").fetchall()}
        metrics = {(k, n): (path, rowid) for k, n, path, rowid in connection.execute(
            "SELECT key, namespace, source_path, source_rowid FROM performance_metrics").fetchall()}
        history = connection.execute("SELECT count(*) FROM unified_memory_history").fetchone()[0]
        sessions = {session_id: (path, status, agent_type) for session_id, path, status, agent_type in
                    connection.execute("SELECT session_id, source_path, status, agent_type FROM active_sessions")}
        session_sources = dict(connection.execute(
            "SELECT source_table, count(*) FROM active_sessions GROUP BY 1").fetchall())

    expected_sessions = expected_active_sessions(versions, best, sqlite_files(report), tmp_path / "sessions")
    assert sessions == expected_sessions
    assert session_sources.get("memory_entries", 0) > 0 and session_sources.get("sessions", 0) > 0  # both feed it

    assert set(unified) == {k for k in best if k[1] != PERFORMANCE}
    assert set(metrics) == {k for k in best if k[1] == PERFORMANCE}
    assert history == len(versions) - len(best)
    for identity, winner in best.items():
        if identity[1] == PERFORMANCE:
            assert metrics[identity] == (winner["path"], winner["rowid"]), identity
            continue
        path, rowid, value, data_type, created, accessed, count = unified[identity]
        assert (path, rowid) == (winner["path"], winner["rowid"]), identity
        assert (value, data_type) == expected_value(winner["raw"], winner["hint"]), identity
        group = [v for v in versions if (v["key"], v["namespace"]) == identity]
        created_values = [v["created"] for v in group if v["created"] is not None]
        if created_values:
            assert float(created) == pytest.approx(min(created_values), abs=1e-3), identity
        accessed_values = [v["accessed"] for v in group if v["accessed"] is not None]
        if accessed_values:  # the winner takes the latest accessed_at of its versions
            assert float(accessed) == pytest.approx(max(accessed_values), abs=1e-3), identity
        else:
            assert accessed is None, identity
        counts = [v["access_count"] for v in group if v["access_count"] is not None]
        if counts:
            assert count == max(counts), identity

    duplicated = next(identity for identity, winner in best.items()
                      if identity[1] != PERFORMANCE and sum(
                          (v["key"], v["namespace"]) == identity for v in versions) > 1)
    traced = consolidate("lineage", duplicated[0], "--namespace", duplicated[1], "--json", target=target, home=home)
    assert traced.returncode == 0, traced.stderr
    lineage = json.loads(traced.stdout)
    expected_sources = sorted((v["path"], v["rowid"]) for v in versions if (v["key"], v["namespace"]) == duplicated)
    assert sorted((v["source_path"], v["source_rowid"]) for v in lineage) == expected_sources
    (winner,) = [v for v in lineage if v["role"] == "winner"]
    assert (winner["source_path"], winner["source_rowid"]) == (best[duplicated]["path"], best[duplicated]["rowid"])


def test_run_over_the_real_databases_reconciles_every_file(realdata, target, home, tmp_path):
    result = consolidate("run", str(realdata), "--json", target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert manifest_mismatches(realdata) == []
    report = json.loads(result.stdout)
    assert report["validation"]["files"] and all(f["passed"] for f in report["validation"]["files"])
    for file in report["files"]:
        path = Path(file["source_path"])
        tables = [name for (name,) in read_private_copy(
            path, tmp_path / "x", "SELECT name FROM sqlite_master WHERE type = 'table'")]
        expected = sum(read_private_copy(path, tmp_path / "x", f'SELECT count(*) FROM "{t}"')[0][0] for t in tables)
        assert (file["rows_in_sqlite"], file["rows_in_raw"]) == (expected, expected), path
        assert file["reconciled"], path
    versions = memory_versions([Path(f["source_path"]) for f in report["files"]], tmp_path / "y")
    with target.connect() as connection:
        represented = connection.execute(
            "SELECT (SELECT count(*) FROM unified_memory) + (SELECT count(*) FROM performance_metrics)"
            " + (SELECT count(*) FROM unified_memory_history)").fetchone()[0]
    assert represented == len(versions)


def test_discover_json_lists_kinds_and_copies(sample_tree):
    result = consolidate("discover", str(sample_tree), "--json")
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)["files"]
    kinds = {f["kind"] for f in files}
    assert {"claude-flow-v2", "claude-flow-v3", "extended-memory", "n8n", "flowise"} <= kinds
    copies = [f for f in files if f["copy_of"]]
    assert len(copies) == 1
    original = next(f for f in files if f["path"] == copies[0]["copy_of"])
    assert (original["sha256"], original["wal_sha256"]) == (copies[0]["sha256"], copies[0]["wal_sha256"])


def test_unreadable_source_exits_3_and_names_it_while_the_rest_loads(tmp_path, target, home, realdata):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "good.db").write_bytes((realdata / "claude-flow/Agentist-Elder__transformers-predictions/memory.db").read_bytes())
    (tree / "broken.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)
    result = consolidate("run", str(tree), "--json", target=target, home=home)
    assert result.returncode == 3, result.stderr[-2000:]
    report = json.loads(result.stdout)
    files = {Path(f["source_path"]).name: f for f in report["files"]}
    assert files["broken.db"]["status"] == "failed" and files["good.db"]["status"] == "loaded"
    assert files["good.db"]["reconciled"] and files["good.db"]["error"] is None
    # the failed file: not reconciled (nothing of it migrated), and why, as load --json and sync --json say
    assert not files["broken.db"]["reconciled"] and not report["reconciled"] and report["exit_code"] == 3
    with target.connect() as connection:
        (message,) = connection.execute(
            "SELECT error_message FROM migration_metadata WHERE source_file = %s", (str(tree / "broken.db"),)).fetchone()
    with pytest.raises(sqlite3.DatabaseError) as refused:  # what SQLite itself says of the file
        read_private_copy(tree / "broken.db", tmp_path / "x", "PRAGMA quick_check")
    assert str(refused.value) in message and files["broken.db"]["error"] == message
    found = consolidate("discover", str(tree), "--json")
    assert found.returncode == 3 and [f["error"] for f in json.loads(found.stdout)["files"]
                                      if f["path"].endswith("broken.db")] == [message]
    # validate names it too: none of its rows is in PostgreSQL, until it loads or is accepted as gone
    checked = consolidate("validate", "--json", target=target, home=home)
    document = json.loads(checked.stdout)
    assert (checked.returncode, document["passed"]) == (1, False), checked.stderr[-2000:]
    assert document["never_loaded"] == [{"source_path": str(tree / "broken.db"), "error": message}]
    assert "never loaded" in consolidate("validate", target=target, home=home).stderr
    # a file that only ever failed can be left out on purpose while still on disk
    assert consolidate("forget", str(tree / "broken.db"), target=target, home=home).returncode == 0
    checked = consolidate("validate", "--json", target=target, home=home)
    assert checked.returncode == 0 and json.loads(checked.stdout)["never_loaded"] == [], checked.stderr[-2000:]


def test_a_path_with_a_line_break_is_one_row_of_the_table(tmp_path):
    folder = tmp_path / "tree" / "new\nline"
    folder.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(folder / "memory.db")) as connection:
        connection.execute("CREATE TABLE t (a)")
    shown = consolidate("discover", str(tmp_path / "tree"), "--home", str(tmp_path / "state"))
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "new\\nline/memory.db" in shown.stdout and "\nline/memory.db" not in shown.stdout.replace("\\n", "")


def test_a_database_without_tables_reconciles_with_nothing_to_lose(tmp_path, target, home):
    tree = tmp_path / "tree"
    tree.mkdir()
    for name, statement in (("no-tables.db", "PRAGMA user_version = 1"), ("empty-table.db", "CREATE TABLE t (a)")):
        with contextlib.closing(sqlite3.connect(tree / name)) as connection:
            connection.execute(statement)
            connection.commit()
    assert read_private_copy(tree / "no-tables.db", tmp_path / "x", "SELECT count(*) FROM sqlite_master") == [(0,)]
    result = consolidate("run", str(tree), "--no-backup", "--json", target=target, home=home)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    files = {Path(f["source_path"]).name: f for f in report["files"]}
    assert {name: (f["status"], f["rows_in_sqlite"], f["rows_in_raw"], f["reconciled"]) for name, f in files.items()} == {
        "no-tables.db": ("loaded", 0, 0, True), "empty-table.db": ("loaded", 0, 0, True)}
    assert report["reconciled"]


def test_build_exits_1_when_raw_no_longer_matches_the_ledger(tmp_path, target, home, realdata):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "memory.db").write_bytes((realdata / "claude-flow/Agentist-Elder__transformers-predictions/memory.db").read_bytes())
    assert consolidate("run", str(tree), "--no-backup", target=target, home=home).returncode == 0
    with target.connect() as connection:
        connection.execute("DELETE FROM raw_claude_flow_v2.memory_entries WHERE _source_rowid = "
                           "(SELECT min(_source_rowid) FROM raw_claude_flow_v2.memory_entries)")
    result = consolidate("build", target=target, home=home)
    assert result.returncode == 1
    assert "assert_ledger_counts_match_raw" in result.stdout + result.stderr


def test_dbt_docs_generate_works_offline(target, home, tmp_path):
    tree = tmp_path / "tree"
    assert consolidate("sample", str(tree)).returncode == 0
    assert consolidate("run", str(tree), "--no-backup", target=target, home=home).returncode == 0
    script = ("import sys; from pathlib import Path; from loader.transform.build import run_dbt; from loader.database import Target; "
              "sys.exit(0 if run_dbt(['docs', 'generate'], Target(sys.argv[1]), Path(sys.argv[2])).success else 1)")
    result = subprocess.run([sys.executable, "-c", script, target.dsn, str(home)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:]
    catalog = json.loads((home / "dbt" / "target" / "catalog.json").read_text())
    assert any(node.endswith(".unified_memory") for node in catalog["nodes"])


def test_rerun_on_unchanged_files_skips_build_and_validation_until_something_changes(tmp_path, target, home):
    tree = tmp_path / "tree"
    assert consolidate("sample", str(tree)).returncode == 0
    first = json.loads(consolidate("run", str(tree), "--no-backup", "--json", target=target, home=home).stdout)
    rerun = consolidate("run", str(tree), "--no-backup", "--json", target=target, home=home)
    again = json.loads(rerun.stdout)
    # dbt's worker, warmed up for a build that was skipped, ends cleanly (loader/transform/dbt_process.py)
    assert "Traceback" not in rerun.stderr and "resource_tracker" not in rerun.stderr, rerun.stderr[-2000:]
    assert first["build"]["skipped"] is False and first["reconciled"]
    assert again["build"]["skipped"] is True and again["reconciled"] and again["validation"] is None
    assert {f["status"] for f in again["files"]} <= {"unchanged", "copy"}

    (database,) = tree.rglob("mcp/claude-flow/.swarm/memory.db")
    with sqlite3.connect(database) as connection:
        connection.execute("INSERT INTO memory_entries (key, value, namespace) VALUES ('new-key', '1', 'default')")
    connection.close()
    changed = json.loads(consolidate("run", str(tree), "--no-backup", "--json", target=target, home=home).stdout)
    assert changed["build"]["skipped"] is False and changed["reconciled"]
    forced = json.loads(consolidate("run", str(tree), "--no-backup", "--rebuild", "--json", target=target, home=home).stdout)
    assert forced["build"]["skipped"] is False and forced["validation"]["files"]
