"""Load: every table of every file reaches raw with lineage; per-file transactions; sources untouched."""

from __future__ import annotations

import csv
import hashlib
import shutil
import sqlite3
from pathlib import Path

from psycopg import sql

from loader.discover import discover
from loader.load import load
from loader.secret_policy import SecretPolicy
from conftest import read_private_copy

WAL_ROWS_FILE = "claude-flow/ChrisRoyse__myclaudeflowsetup/memory.db"


def run_load(roots: list[Path], target, **kwargs):
    return load(discover(roots), target, [str(r) for r in roots], SecretPolicy(key=b"test key"), **kwargs)


def raw_count(target, schema: str, table: str, source_path: Path) -> int:
    with target.connect() as connection:
        return connection.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE _source_path = %s").format(sql.Identifier(schema, table)),
            (str(source_path),)).fetchone()[0]


def manifest_mismatches(realdata: Path) -> list[str]:
    with open(realdata / "MANIFEST.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [row["path"] for row in rows
            if hashlib.sha256((realdata / row["path"]).read_bytes()).hexdigest() != row["sha256"]]


def test_every_table_of_every_real_file_arrives_with_its_row_count(realdata, target, tmp_path):
    outcome = run_load([realdata], target)
    assert not outcome.failed
    assert manifest_mismatches(realdata) == []
    for file in outcome.files:
        assert file.status == "loaded"
        tables = read_private_copy(file.source.path, tmp_path / "expect",
                                   "SELECT name FROM sqlite_master WHERE type = 'table'")
        for (table,) in tables:
            expected = read_private_copy(file.source.path, tmp_path / "expect",
                                         f'SELECT count(*) FROM "{table}"')[0][0]
            schema = {"claude-flow-v2": "raw_claude_flow_v2", "claude-flow-v3": "raw_claude_flow_v3",
                      "n8n": "raw_n8n", "flowise": "raw_flowise"}[file.source.kind]
            assert raw_count(target, schema, table, file.source.path) == expected, (file.source.path, table)


def test_rows_that_live_only_in_the_wal_arrive(realdata, target, tmp_path):
    source = realdata / WAL_ROWS_FILE
    main_only = tmp_path / "main-only.db"
    shutil.copyfile(source, main_only)
    rows_in_main_file = sqlite3.connect(main_only).execute("SELECT count(*) FROM memory_entries").fetchone()[0]
    rows_with_wal = read_private_copy(source, tmp_path / "x", "SELECT count(*) FROM memory_entries")[0][0]
    assert rows_with_wal > rows_in_main_file
    run_load([source.parent], target)
    assert raw_count(target, "raw_claude_flow_v2", "memory_entries", source) == rows_with_wal
    assert manifest_mismatches(realdata) == []


def test_values_round_trip_exactly_with_lineage(realdata, target, tmp_path):
    source = realdata / "claude-flow/Coldaine__PersonalParakeet/memory.db"
    expected = read_private_copy(
        source, tmp_path / "x", "SELECT rowid, key, value, namespace, metadata, CAST(created_at AS TEXT) FROM memory_entries")
    outcome = run_load([source.parent], target)
    with target.connect() as connection:
        loaded = connection.execute(
            "SELECT _source_rowid, key, value, namespace, metadata, created_at, _load_id, _source_sha256 "
            "FROM raw_claude_flow_v2.memory_entries").fetchall()
    assert sorted(row[:6] for row in loaded) == sorted(expected)
    assert {row[6] for row in loaded} == {outcome.load_id}
    assert {row[7] for row in loaded} == {hashlib.sha256(source.read_bytes()).hexdigest()}


def test_unchanged_file_is_skipped_and_changed_file_reloaded(tmp_path, realdata, target):
    folder = tmp_path / "tree"
    folder.mkdir()
    database = folder / "memory.db"
    shutil.copyfile(realdata / "claude-flow/00greena__emoji-monogram-generator/memory.db", database)
    first = run_load([folder], target)
    second = run_load([folder], target)
    assert [f.status for f in second.files] == ["unchanged"]
    with sqlite3.connect(database) as connection:
        connection.execute("INSERT INTO memory_entries (key, value, namespace) VALUES ('k', 'v', 'n')")
    connection.close()
    third = run_load([folder], target)
    assert [f.status for f in third.files] == ["loaded"]
    with target.connect() as connection:
        per_load = dict(connection.execute(
            "SELECT _load_id, count(*) FROM raw_claude_flow_v2.memory_entries GROUP BY 1").fetchall())
        current = connection.execute("SELECT load_id FROM consolidate.current_loads").fetchall()
    assert per_load[third.load_id] == per_load[first.load_id] + 1
    assert current == [(third.load_id,)]


def test_each_file_is_committed_as_soon_as_it_is_loaded(realdata, target):
    """What a `kill -9` cannot take back: every file reported done is already visible to others."""
    seen_by_another_session = []

    def look(outcome):
        with target.connect() as other:
            seen_by_another_session.append(other.execute(
                "SELECT status FROM consolidate.load_files WHERE source_path = %s",
                (str(outcome.source.path),)).fetchall())
    run_load([realdata / "claude-flow"], target, on_file=look)
    assert seen_by_another_session and all(rows == [("loaded",)] for rows in seen_by_another_session)
