"""Row-level change loads (loader/load/delta.py): a changed memory file's new load stores only the rows that
changed, and everything that reads a file's current rows (the marts, a full refresh, validation) sees the
same state as a full reload would give. Real PostgreSQL, real SQLite files, real dbt; the expected changes
are computed here with sqlite3 from private copies of the file before and after, independently of the
loader."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from test_system_of_record import full_refresh_models, marts_snapshot

from loader.database import Target
from loader.load.secret_policy import SecretPolicy
from loader.pipeline import run, sync, validate
from loader.transform.build import run_dbt

from conftest import NUMBERED_T0, change, consolidate, numbered_v2_file, read_private_copy, rows_by_rowid

POLICY = SecretPolicy(key=b"delta test key")
T0 = NUMBERED_T0
RAW = "raw_claude_flow_v2.memory_entries"


def expected_changes(before: dict[int, tuple], after: dict[int, tuple]) -> tuple[int, int, int]:
    inserted = len(after.keys() - before.keys())
    updated = sum(before[rowid] != after[rowid] for rowid in before.keys() & after.keys())
    deleted = len(before.keys() - after.keys())
    return inserted, updated, deleted


def one(target: Target, query: str, parameters=()):
    with target.connect() as connection:
        return connection.execute(query, parameters).fetchone()


def check_against_full_refresh(target: Target, home: Path) -> None:
    """The incrementally kept marts equal a rebuild from raw and the write log (ids included)."""
    incremental = marts_snapshot(target)
    full_refresh_models(target, home)
    assert marts_snapshot(target) == incremental


def test_a_changed_file_stores_only_its_changed_rows_and_the_marts_equal_a_full_refresh(tmp_path, target, home):
    root, copies = tmp_path / "tree", tmp_path / "copies"
    copies.mkdir()
    db = numbered_v2_file(root / "app/.swarm/memory.db", 200)
    first = run([root], target, home, backup_to=None, quiet=True)
    assert first.reconciled
    raw_before = one(target, f"SELECT count(*) FROM {RAW}")[0]
    before = rows_by_rowid(db, copies)

    change(db,
           ("UPDATE memory_entries SET value = '{\"n\": \"changed\"}', updated_at = ? WHERE key = 'key-7'", (T0 + 999,)),
           ("DELETE FROM memory_entries WHERE key IN ('key-8', 'key-10')",),
           ("INSERT INTO memory_entries (key, value, namespace, created_at, updated_at) VALUES ('new', '1', 'default', ?, ?)",
            (T0 + 999, T0 + 999)),
           ("INSERT OR REPLACE INTO memory_entries (key, value, namespace, created_at, updated_at) "
            "VALUES ('key-20', '\"replaced\"', 'performance-metrics', ?, ?)", (T0 + 999, T0 + 999)))
    after = rows_by_rowid(db, copies)
    inserted, updated, deleted = expected_changes(before, after)
    assert (inserted, updated, deleted) == (2, 1, 3)  # INSERT OR REPLACE: a new rowid, the old one deleted

    report = sync([root], target, home, policy=POLICY, quiet=True)

    assert report.build.success, report.build.failures
    (file,) = report.files
    assert (file.inserted, file.updated, file.deleted) == (inserted, updated, deleted)
    load_id = report.load_id
    assert one(target, "SELECT delta_of FROM consolidate.load_files WHERE load_id = %s", (load_id,))[0] == first.loaded.load_id
    # raw grew by the changed rows only; the changed and deleted rows of the first load are retired
    assert one(target, f"SELECT count(*) FROM {RAW}")[0] - raw_before == inserted + updated
    # sqlite_sequence changed too (AUTOINCREMENT): its one row is stored again, the old one retired
    assert one(target, "SELECT count(*) FROM raw_claude_flow_v2.sqlite_sequence WHERE _load_id = %s", (load_id,))[0] == 1
    assert one(target, "SELECT count(*) FROM consolidate.retired_rows WHERE load_id = %s "
                       "AND source_table = 'memory_entries'", (load_id,))[0] == updated + deleted
    assert one(target, "SELECT rows_loaded, rows_unchanged FROM consolidate.load_tables WHERE load_id = %s "
                       "AND source_table = 'memory_entries'", (load_id,)) == (len(after), len(after) - inserted - updated)
    # the marts hold the file's current state: as many entries as (key, namespace) pairs in the file now
    with contextlib.closing(sqlite3.connect(copies / "copy-1.db")) as connection:
        pairs = connection.execute("SELECT count(DISTINCT key || char(31) || namespace) FROM memory_entries").fetchone()[0]
    marts = one(target, "SELECT (SELECT count(*) FROM unified_memory) + (SELECT count(*) FROM performance_metrics)")[0]
    assert marts == pairs
    assert one(target, "SELECT value FROM unified_memory WHERE key = 'key-7'")[0] == {"n": "changed"}
    assert one(target, "SELECT count(*) FROM unified_memory WHERE key IN ('key-8', 'key-10')")[0] == 0
    validation = validate(target, home, sample_size=1000, seed=1)
    assert validation.passed, validation.to_json()
    check_against_full_refresh(target, home)


def test_a_change_load_reports_the_rows_it_stored_beside_the_files_rows(tmp_path, target, home):
    root, copies = tmp_path / "tree", tmp_path / "copies"
    copies.mkdir()
    db = numbered_v2_file(root / "app/.swarm/memory.db", 80)
    assert run([root], target, home, backup_to=None, quiet=True).reconciled
    before = {table: read_private_copy(db, copies, f"SELECT rowid, * FROM {table}") for table in tables_of(db, copies)}
    change(db, ("UPDATE memory_entries SET value = '\"new\"', updated_at = ? WHERE key = 'key-5'", (T0 + 900,)),
           ("INSERT INTO memory_entries (key, value, namespace, created_at, updated_at) VALUES ('added', '2', 'default', ?, ?)",
            (T0 + 900, T0 + 900)))
    after = {table: read_private_copy(db, copies, f"SELECT rowid, * FROM {table}") for table in tables_of(db, copies)}
    stored = sum(len(set(after[table]) - set(before.get(table, []))) for table in after)  # new or changed rows
    assert stored >= 2

    loaded = consolidate("load", str(root), "--json", target=target, home=home)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    (file,) = json.loads(loaded.stdout)["files"]
    assert (file["rows_loaded"], file["rows_stored"]) == (sum(map(len, after.values())), stored)
    change(db, ("DELETE FROM memory_entries WHERE key = 'key-6'",),
           ("UPDATE memory_entries SET value = '\"again\"', updated_at = ? WHERE key = 'key-7'", (T0 + 901,)))
    again = consolidate("load", str(root), target=target, home=home)  # one changed row; the progress line says so
    assert again.returncode == 0 and f"{sum(map(len, after.values())) - 1:,} rows, 1 of them changed and stored" \
        in again.stderr, again.stderr


def test_a_change_load_through_the_python_reader_reports_the_rows_it_stored(tmp_path, target, home):
    """The same count on the CSV path (a table with a BLOB goes through the Python reader): the rows the
    load stored are the rows that changed, the file's rows are all of them."""
    root = tmp_path / "tree"
    db = numbered_v2_file(root / "app/.swarm/memory.db", 30)
    change(db, ("UPDATE memory_entries SET value = ? WHERE key = 'key-3'", (b"\x00\xffbinary",)))
    assert run([root], target, home, backup_to=None, quiet=True).reconciled
    assert one(target, "SELECT reader FROM consolidate.load_tables WHERE source_table = 'memory_entries'")[0] != "duckdb"
    change(db, ("UPDATE memory_entries SET value = '\"changed\"', updated_at = ? WHERE key = 'key-9'", (T0 + 500,)))
    rows = sum(len(read_private_copy(db, tmp_path / "read", f"SELECT rowid FROM {table}"))
               for table in tables_of(db, tmp_path / "names"))

    loaded = consolidate("load", str(root), "--json", target=target, home=home)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    (file,) = json.loads(loaded.stdout)["files"]
    assert (file["rows_loaded"], file["rows_stored"]) == (rows, 1)


def tables_of(db: Path, copies: Path) -> list[str]:
    return [name for (name,) in read_private_copy(db, copies, "SELECT name FROM sqlite_master WHERE type = 'table'")]


def test_two_change_loads_in_a_row_without_a_build_between_chain_and_equal_a_full_refresh(tmp_path, target, home):
    root, copies = tmp_path / "tree", tmp_path / "copies"
    copies.mkdir()
    db = numbered_v2_file(root / "app/.swarm/memory.db", 50)
    run([root], target, home, backup_to=None, quiet=True)
    change(db, ("UPDATE memory_entries SET value = '\"one\"', updated_at = ? WHERE key = 'key-3'", (T0 + 500,)))
    first = sync([root], target, home, policy=POLICY, build=False)
    # the row changed by the first change load changes again, another is deleted, before any build
    change(db, ("UPDATE memory_entries SET value = '\"two\"', updated_at = ? WHERE key = 'key-3'", (T0 + 600,)),
           ("DELETE FROM memory_entries WHERE key = 'key-4'",))
    second = sync([root], target, home, policy=POLICY, quiet=True)

    assert second.build.success, second.build.failures
    assert one(target, "SELECT delta_of FROM consolidate.load_files WHERE load_id = %s", (second.load_id,))[0] == first.load_id
    assert one(target, "SELECT count(*) FROM consolidate.current_load_parts")[0] == 3
    assert one(target, "SELECT value FROM unified_memory WHERE key = 'key-3'")[0] == "two"
    assert one(target, "SELECT count(*) FROM unified_memory WHERE key = 'key-4'")[0] == 0
    validation = validate(target, home, sample_size=1000, seed=2)
    assert validation.passed, validation.to_json()
    check_against_full_refresh(target, home)


def test_a_file_whose_tables_changed_shape_is_loaded_in_full_and_compared_with_its_whole_state(
        tmp_path, target, home):
    root = tmp_path / "tree"
    db = numbered_v2_file(root / "app/.swarm/memory.db", 20)
    run([root], target, home, backup_to=None, quiet=True)
    change(db, ("UPDATE memory_entries SET value = '\"two\"', updated_at = ? WHERE key = 'key-2'", (T0 + 500,)))
    assert sync([root], target, home, policy=POLICY, quiet=True).files[0].updated == 1  # a change load
    change(db, ("ALTER TABLE memory_entries ADD COLUMN extra TEXT",),
           ("UPDATE memory_entries SET extra = 'x' WHERE key = 'key-1'",))

    report = sync([root], target, home, policy=POLICY, quiet=True)

    assert report.build.success, report.build.failures
    assert one(target, "SELECT delta_of FROM consolidate.load_files WHERE load_id = %s", (report.load_id,))[0] is None
    assert one(target, f"SELECT count(*) FROM {RAW} WHERE _load_id = %s", (report.load_id,))[0] == 20
    # compared with the file's whole previous state (the change load and the first load's other rows)
    (file,) = report.files
    assert (file.inserted, file.updated, file.deleted) == (0, 1, 0)
    assert one(target, "SELECT value FROM unified_memory WHERE key = 'key-2'")[0] == "two"
    check_against_full_refresh(target, home)


def test_generic_tests_of_an_incremental_build_check_the_changed_entries_and_still_fail(tmp_path, target, home):
    root = tmp_path / "tree"
    db = numbered_v2_file(root / "app/.swarm/memory.db", 30)
    run([root], target, home, backup_to=None, quiet=True)
    change(db, ("UPDATE memory_entries SET value = '\"seven\"', updated_at = ? WHERE key = 'key-7'", (T0 + 500,)))
    assert sync([root], target, home, policy=POLICY, quiet=True).build.success
    compiled = [path.read_text() for path in (home / "dbt" / "target" / "run").rglob("accepted_values_unified_memory_*.sql")]
    assert compiled and all("int_memory_changed_keys" in text for text in compiled)  # scoped to the changed entries

    # a changed entry's mart row goes bad behind the write path's back: the scoped tests still see it
    with target.connect() as connection:
        connection.execute("SET LOCAL consolidate.maintaining_marts = 'on'")
        connection.execute("UPDATE unified_memory SET data_type = 'bogus' WHERE key = 'key-7'")
    outcome = run_dbt(["test", "--select", "unified_memory"], target, home, quiet=True)
    assert not outcome.success
    assert any("accepted_values_unified_memory" in failure for failure in outcome.failures), outcome.failures


def test_duckdb_and_postgresql_compare_a_change_load_alike(tmp_path, target, home, monkeypatch):
    """Two identical files take the same changes; one is compared by DuckDB before anything travels (the
    direct path), the other, forced through CSV, by PostgreSQL after the whole snapshot is in raw. Both
    record the same changes as sqlite3 counts them, retire and store the same rows, and give deleted rows
    the same digest: across two change loads in a row, NULL against '', unchanged rewrites and non-ASCII
    text that stays the same."""
    import duckdb

    from loader.load import load as load_module

    root, copies = tmp_path / "tree", tmp_path / "copies"
    copies.mkdir()
    files = {path: numbered_v2_file(root / path / ".swarm/memory.db", 40) for path in ("direct", "csv")}
    for path, db in files.items():  # not copies of each other (a copy is not loaded), in a row no step changes
        change(db, ("UPDATE memory_entries SET value = ? WHERE key = 'key-30'", (path,)))
    direct_load = load_module.load_directly

    def csv_for_one_file(context, plans, ddl, record, outcome):
        if record.source_path == str(files["csv"]):
            raise duckdb.Error("forced by the test: through CSV")
        return direct_load(context, plans, ddl, record, outcome)

    monkeypatch.setattr(load_module, "load_directly", csv_for_one_file)
    sync([root], target, home, policy=POLICY, build=False)
    steps = [
        [("UPDATE memory_entries SET value = 'ünïcode ✓', updated_at = ? WHERE key = 'key-1'", (T0 + 900,)),
         ("UPDATE memory_entries SET metadata = '' WHERE key = 'key-2'",),  # NULL -> '' is a change
         # left alone by the next step, so compared unchanged there: non-ASCII, text that looks like the digest's
         ("UPDATE memory_entries SET value = 'naïve — 東京', metadata = 'v1:nn' WHERE key = 'key-5'",),
         ("UPDATE memory_entries SET value = value WHERE key = 'key-3'",),  # rewritten the same: unchanged
         ("DELETE FROM memory_entries WHERE key IN ('key-4', 'key-39')",),
         ("INSERT INTO memory_entries (key, value, namespace, created_at, updated_at) VALUES ('new', '', 'x', 1, 1)",),
         ("INSERT OR REPLACE INTO memory_entries (key, value, namespace, created_at, updated_at) "
          "VALUES ('key-6', '\"replaced\"', 'default', 2, 2)",)],
        [("UPDATE memory_entries SET value = 'again', updated_at = ? WHERE key = 'key-1'", (T0 + 950,)),
         ("UPDATE memory_entries SET metadata = NULL WHERE key = 'key-2'",),
         ("DELETE FROM memory_entries WHERE key = 'new'",)],
    ]
    for statements in steps:
        before = {path: rows_by_rowid(db, copies) for path, db in files.items()}
        for db in files.values():
            change(db, *statements)
        after = {path: rows_by_rowid(db, copies) for path, db in files.items()}
        report = sync([root], target, home, policy=POLICY, build=False)

        recorded = {}
        with target.connect() as connection:
            for path, db in files.items():
                parameters = (report.load_id, str(db))
                counts = connection.execute(
                    "SELECT inserted, updated, deleted, unchanged FROM consolidate.load_changes "
                    "WHERE load_id = %s AND source_path = %s AND source_table = 'memory_entries'", parameters).fetchone()
                assert counts[:3] == expected_changes(before[path], after[path]), path
                assert counts[3] == len(after[path]) - counts[0] - counts[1], path
                notes = connection.execute(
                    "SELECT notes FROM consolidate.load_tables WHERE load_id = %s AND source_path = %s "
                    "AND source_table = 'memory_entries'", parameters).fetchone()[0]
                assert (notes is not None and "through CSV" in notes) == (path == "csv"), notes
                recorded[path] = (
                    counts,
                    connection.execute("SELECT source_table, source_rowid FROM consolidate.retired_rows "
                                       "WHERE load_id = %s AND source_path = %s ORDER BY 1, 2", parameters).fetchall(),
                    connection.execute("SELECT source_table, source_rowid, row_md5 FROM consolidate.deleted_rows "
                                       "WHERE load_id = %s AND source_path = %s ORDER BY 1, 2", parameters).fetchall(),
                    connection.execute(f"SELECT _source_rowid, key, value, namespace, metadata FROM {RAW} "
                                       "WHERE _load_id = %s AND _source_path = %s ORDER BY 1", parameters).fetchall())
        assert recorded["direct"] == recorded["csv"]
        counts, retired, deleted, stored = recorded["direct"]
        assert sum(table == "memory_entries" for table, _ in retired) == counts[1] + counts[2]
        assert len(deleted) == counts[2] and len(stored) == counts[0] + counts[1]
