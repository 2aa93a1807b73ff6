"""`status`: the ledger at a glance, and how every file on disk compares with its current load.

The sample tree is written and consolidated by the real CLI (a subprocess against a real PostgreSQL).
Expected counts and checksums are computed here with plain sqlite3 on private copies and hashlib."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from loader.operate.status import CHANGED, MISSING, UNCHANGED, status

from conftest import consolidate, independent_row_count, sha256, write_and_run_sample

N8N = "opt/sutazaiapp/data/n8n/database.sqlite"
EXTENDED_MEMORY = "opt/sutazaiapp/data/mcp/extended-memory/extended_memory.db"


def add_table(path: Path) -> None:
    """Change a rollback-journal database in place (it has no WAL that opening it could fold away)."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("CREATE TABLE added_after_load (note TEXT)")
        connection.commit()
    finally:
        connection.close()


@pytest.fixture
def loaded_sample(tmp_path, target, home) -> tuple[Path, dict]:
    """A sample tree in tmp_path, consolidated into `target` by `consolidate run`; and the run's JSON."""
    root = tmp_path / "tree"
    return root, write_and_run_sample(root, target, home)


def by_path(report) -> dict:
    return {Path(file.source_path): file for file in report.files}


def test_status_lists_every_file_with_independent_counts_and_checksums(loaded_sample, target, tmp_path):
    _, run = loaded_sample
    report = status(target)
    files = by_path(report)
    assert set(files) == {Path(f["source_path"]) for f in run["files"]}
    assert report.message is None
    assert report.last_load.load_id == run["load_id"] and report.last_load.status == "completed"

    expected_rows = 0
    for path, file in files.items():
        if file.status == "copy":
            assert file.current is None and file.on_disk is None and file.seconds_since_sync is None
            continue
        assert file.status == "loaded", path
        rows = independent_row_count(path, tmp_path / "scratch")
        expected_rows += rows
        assert (file.current.rows_in_sqlite, file.current.rows_loaded) == (rows, rows), path
        assert (file.current.sha256, file.current.wal_sha256) == (sha256(path), sha256(path.with_name(path.name + "-wal")))
        assert file.current.load_id == file.last_load_id == run["load_id"]
        assert file.on_disk == UNCHANGED and file.last_failure is None
        assert 0 <= file.seconds_since_sync < 600
    assert [f.status for f in files.values()].count("copy") == 1

    totals = report.totals
    assert (totals.files, totals.rows_in_sqlite, totals.rows_loaded) == (len(files), expected_rows, expected_rows)
    assert (totals.failed_files, totals.changed_files, totals.missing_files) == (0, 0, 0)
    assert json.loads(json.dumps(report.to_json()))["totals"]["files"] == len(files)


def test_status_tells_a_changed_file_and_a_missing_one(loaded_sample, target):
    root, _ = loaded_sample
    add_table(root / N8N)
    (root / EXTENDED_MEMORY).unlink()

    files = by_path(status(target))
    assert files[root / N8N].on_disk == CHANGED
    assert files[root / EXTENDED_MEMORY].on_disk == MISSING
    others = {path: file.on_disk for path, file in files.items()
              if path not in (root / N8N, root / EXTENDED_MEMORY) and file.status != "copy"}
    assert set(others.values()) == {UNCHANGED}
    assert files[root / N8N].status == "loaded"  # the ledger has not seen the change yet
    totals = status(target).totals
    assert (totals.changed_files, totals.missing_files) == (1, 1)


def test_status_shows_the_failure_of_a_corrupt_file(loaded_sample, target, home):
    root, run = loaded_sample
    broken = root / "opt/sutazaiapp/data/broken.db"
    broken.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 32)
    second = consolidate("load", str(root), "--json", target=target, home=home)
    assert second.returncode == 3, second.stdout[-3000:] + second.stderr[-3000:]
    second_load = json.loads(second.stdout)["load_id"]

    report = status(target)
    files = by_path(report)
    failed = files[broken]
    assert (failed.status, failed.current, failed.last_load_id) == ("failed", None, second_load)
    assert failed.last_failure.load_id == second_load
    assert "not a database" in failed.last_failure.error_message
    assert report.last_load.load_id == second_load and report.last_load.status == "failed"
    assert report.totals.failed_files == 1

    unchanged = [file for path, file in files.items() if path != broken and file.status != "copy"]
    assert unchanged and {file.status for file in unchanged} == {"unchanged"}
    for file in unchanged:
        assert file.current.load_id == run["load_id"] and file.last_load_id == second_load
        assert file.last_synced_at > file.current.loaded_at  # checked unchanged by the second load


def test_status_of_a_database_without_a_ledger_is_an_empty_report(target):
    report = status(target)
    assert report.files == [] and report.last_load is None
    assert "no load has run" in report.message
    assert report.to_json()["totals"] == {"files": 0, "rows_in_sqlite": 0, "rows_loaded": 0, "failed_files": 0,
                                          "changed_files": 0, "missing_files": 0, "cut_over_files": 0,
                                          "archived_files": 0, "forgotten_files": 0}
