"""Load: every table of every file reaches raw with lineage; per-file transactions; sources untouched."""

from __future__ import annotations

import csv
import hashlib
import shutil
import sqlite3
from pathlib import Path

from psycopg import sql

from loader.load.load import load
from loader.load.secret_policy import SecretPolicy
from loader.sources.discover import discover

from conftest import make_db, read_private_copy

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


def test_unchanged_file_is_skipped_and_a_changed_file_stores_only_its_new_rows(tmp_path, realdata, target):
    folder = tmp_path / "tree"
    folder.mkdir()
    database = folder / "memory.db"
    shutil.copyfile(realdata / "claude-flow/00greena__emoji-monogram-generator/memory.db", database)
    first = run_load([folder], target)
    second = run_load([folder], target)
    assert [f.status for f in second.files] == ["unchanged"]

    def counts_in_sqlite() -> dict[str, int]:  # the file's tables (sqlite_sequence too), counted by sqlite3
        names = read_private_copy(database, tmp_path / "copy", "SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name: read_private_copy(database, tmp_path / "copy", f'SELECT count(*) FROM "{name}"')[0][0]
                for (name,) in names}

    # an unchanged file reports the rows its current load holds, and that it stored none
    (unchanged,) = second.files
    assert unchanged.tables == counts_in_sqlite() and sum(unchanged.tables.values()) > 0
    assert (unchanged.rows_in_sqlite, unchanged.rows_loaded, unchanged.rows_stored) \
        == (sum(counts_in_sqlite().values()), sum(counts_in_sqlite().values()), 0)
    with sqlite3.connect(database) as connection:
        connection.execute("INSERT INTO memory_entries (key, value, namespace) VALUES ('k', 'v', 'n')")
    connection.close()
    third = run_load([folder], target)
    assert [f.status for f in third.files] == ["loaded"]
    (after_change,) = run_load([folder], target).files  # unchanged since the change load: the file's rows now
    assert (after_change.status, after_change.tables, after_change.rows_stored) == ("unchanged", counts_in_sqlite(), 0)
    with target.connect() as connection:
        per_load = dict(connection.execute(
            "SELECT _load_id, count(*) FROM raw_claude_flow_v2.memory_entries GROUP BY 1").fetchall())
        current = connection.execute("SELECT load_id, delta_of FROM consolidate.current_loads "
                                     "JOIN consolidate.load_files USING (load_id, source_path)").fetchall()
    # a row-level change load (loader/load/delta.py): the new row only, on top of the first load
    assert per_load[third.load_id] == 1
    assert current == [(third.load_id, first.load_id)]


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


# ------------------------------------------------------------ two files at a time, direct and through CSV

def ledger_readers(target) -> dict[tuple[str, str], tuple[str, str | None]]:
    with target.connect() as connection:
        return {(Path(path).name, table): (reader, notes) for path, table, reader, notes in connection.execute(
            "SELECT source_path, source_table, reader, notes FROM consolidate.load_tables")}


def test_files_loading_at_once_that_need_the_same_new_raw_table_get_every_column(tmp_path, target):
    """Six files, loaded two at a time, each with its own columns of a table no raw schema has yet:
    whichever creates it, the others add their columns, and every row arrives under its column."""
    folder = tmp_path / "tree"
    for number in range(6):
        make_db(folder / f"app{number}.db", f"CREATE TABLE things (shared TEXT, only_in_{number} TEXT)",
                      ("INSERT INTO things VALUES (?, ?)", [(f"s{number}-{row}", f"v{row}") for row in range(50)]))
    outcome = run_load([folder], target, jobs=2)
    assert [f.status for f in outcome.files] == ["loaded"] * 6
    with target.connect() as connection:
        for number in range(6):
            rows = connection.execute(
                sql.SQL("SELECT shared, {} FROM raw_other.things WHERE _source_path = %s ORDER BY _source_rowid").format(
                    sql.Identifier(f"only_in_{number}")), [str(folder / f"app{number}.db")]).fetchall()
            assert rows == [(f"s{number}-{row}", f"v{row}") for row in range(50)]
    assert {reader for reader, _ in ledger_readers(target).values()} == {"duckdb"}


def test_one_worker_and_two_load_the_same_rows(realdata, server_dsn):
    from conftest import fresh_database
    contents = []
    for jobs in (1, 2):
        with fresh_database(server_dsn) as database:
            run_load([realdata / "claude-flow"], database, jobs=jobs)
            with database.connect() as connection:
                contents.append(sorted(connection.execute(
                    "SELECT _source_path, _source_rowid, md5(t::text) FROM ("
                    "SELECT id, key, value, namespace, metadata, created_at, updated_at, accessed_at, access_count, "
                    "ttl, expires_at, _source_path, _source_rowid, _source_sha256 FROM raw_claude_flow_v2.memory_entries) AS t"
                ).fetchall()))
    assert contents[0] and contents[0] == contents[1]


def test_text_postgresql_refuses_sends_the_file_through_csv_and_names_the_value(tmp_path, target):
    """The direct path leaves text to PostgreSQL; invalid UTF-8 makes it roll the file back, and the
    file goes through CSV, where the fallback stores that value as hex and the ledger says why."""
    folder = tmp_path / "tree"
    database = make_db(folder / "mixed.db", "CREATE TABLE good (body TEXT)",
                             ("INSERT INTO good VALUES (?)", [("fine",), ("also fine",)]),
                             "CREATE TABLE bad (body TEXT)",
                             ("INSERT INTO bad VALUES (CAST(? AS TEXT))", [(b"ok",), (b"ab\xffcd",)]))
    outcome = run_load([folder], target)
    assert [f.status for f in outcome.files] == ["loaded"]
    readers = ledger_readers(target)
    assert readers[("mixed.db", "bad")][0] == "python-fallback"
    assert "not valid UTF-8" in readers[("mixed.db", "bad")][1] and "rowid 2" in readers[("mixed.db", "bad")][1]
    assert readers[("mixed.db", "good")][0] == "duckdb"
    assert "the direct path failed" in readers[("mixed.db", "good")][1]
    with target.connect() as connection:
        assert connection.execute("SELECT body, _binary_columns FROM raw_other.bad ORDER BY _source_rowid").fetchall() == \
            [("ok", None), ("\\x" + b"ab\xffcd".hex(), ["body"])]
    assert sqlite3.connect(database).execute("SELECT count(*) FROM bad").fetchone()[0] == 2


def test_a_failed_attach_never_shows_the_password(server_dsn):
    import pytest
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from loader.load.duckdb_postgres import AttachFailed, attach_postgres
    from loader.sources.sqlite_reader import duckdb_session
    params = conninfo_to_dict(server_dsn)
    params.update(password="pw-never-shown-4711", dbname="no_such_database_here")
    duck = duckdb_session()
    with pytest.raises(AttachFailed) as failure:
        attach_postgres(duck, make_conninfo(**params))
    assert "no_such_database_here" in str(failure.value) and "pw-never-shown-4711" not in str(failure.value)
    duck.close()


def test_discovery_takes_unchanged_files_from_the_ledger_and_reads_changed_ones(tmp_path):
    from loader.ledger import KnownFile
    folder = tmp_path / "tree"
    same = make_db(folder / "same.db", "CREATE TABLE memory_store (k TEXT)", "INSERT INTO memory_store VALUES ('a')")
    changed = make_db(folder / "changed.db", "CREATE TABLE memory_store (k TEXT)")
    first = {f.path.name: f for f in discover([folder]).files}
    # what a ledger would say; the counts differ from the files' so that using them shows
    known = {str(same): KnownFile(first["same.db"].sha256, first["same.db"].wal_sha256, "extended-memory",
                                  {"memory_store": 41}),
             str(changed): KnownFile("0" * 64, None, "extended-memory", {"memory_store": 41})}
    found = {f.path.name: f for f in discover([folder], known=known).files}
    assert found["same.db"].tables == {"memory_store": 41}
    assert found["changed.db"].tables == {"memory_store": 0} and found["changed.db"].kind == "extended-memory"


def test_the_tables_a_load_fills_have_planner_statistics_when_it_returns(tmp_path, target):
    folder = tmp_path / "tree"
    make_db(folder / "one.db", "CREATE TABLE filled (v TEXT)", ("INSERT INTO filled VALUES (?)", [("x",)] * 10),
            "CREATE TABLE empty (v TEXT)")
    run_load([folder], target)
    with target.connect() as connection:
        analyzed = dict(connection.execute(
            "SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables "
            "WHERE schemaname = 'raw_other'").fetchall())
    assert analyzed == {"filled": True, "empty": False}


def test_discovery_keeps_its_private_copies_for_the_load_which_removes_them(tmp_path, target):
    folder, copies = tmp_path / "tree", tmp_path / "copies"
    copies.mkdir()
    sources = [make_db(folder / f"app{n}.db", "CREATE TABLE things (v TEXT)",
                       ("INSERT INTO things VALUES (?)", [(str(row),) for row in range(n + 3)])) for n in range(2)]
    found = discover([folder], keep_copies_in=copies)
    for file in found.files:
        assert file.snapshot is not None and file.snapshot.path.is_relative_to(copies)
        assert file.snapshot.sha256 == hashlib.sha256(file.path.read_bytes()).hexdigest()
    outcome = load(found, target, [str(folder)], SecretPolicy(key=b"test key"))
    assert [f.status for f in outcome.files] == ["loaded", "loaded"]
    assert list(copies.iterdir()) == []
    for source in sources:
        assert raw_count(target, "raw_other", "things", source) == \
            sqlite3.connect(source).execute("SELECT count(*) FROM things").fetchone()[0]
