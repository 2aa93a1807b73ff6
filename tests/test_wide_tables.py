"""Tables with more than 1,000 columns: SQLite caps expression depth at 1000 and result columns at 2000,
PostgreSQL caps a table at 1600 columns. A 1,200-column table loads (by DuckDB, or by the Python reader
when it holds a BLOB), is counted and spot-checked; a 1,700-column one fails its file with a clear
reason naming the file and the table, and every other file still loads.

Real CLI runs against a real PostgreSQL; expected values are read from private copies with plain sqlite3."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import consolidate, fetch

BLOB_COLUMN_FROM_END = 100


def write_wide_file(path: Path, width: int) -> None:
    """Tables `wide` and `wide_blob` of `width` columns (short values and NULLs, so a row fits in a
    PostgreSQL page), `wide_blob` holding one BLOB; and a one-row table `small`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    columns = ", ".join(f"c{i}" for i in range(width))
    connection.execute(f"CREATE TABLE wide ({columns})")
    connection.execute(f"CREATE TABLE wide_blob ({columns})")
    connection.execute("CREATE TABLE small (a TEXT)")
    connection.execute("INSERT INTO small VALUES ('x')")
    rows = [[(r * i) % 10 if i % 3 else (None if i % 2 else str(i % 7)) for i in range(width)] for r in range(3)]
    connection.executemany(f"INSERT INTO wide VALUES ({', '.join('?' * width)})", rows)
    rows[1][width - BLOB_COLUMN_FROM_END] = b"\x00\xff"
    connection.executemany(f"INSERT INTO wide_blob VALUES ({', '.join('?' * width)})", rows)
    connection.commit()
    connection.close()


def expected_rows(path: Path, table: str, scratch: Path) -> list[tuple]:
    """Every row as raw should hold it: rowid, then each value's text (a BLOB as \\x + hex)."""
    scratch.mkdir()
    shutil.copyfile(path, scratch / "copy.db")
    connection = sqlite3.connect(scratch / "copy.db")
    try:
        rows = connection.execute(f"SELECT rowid, * FROM {table} ORDER BY rowid").fetchall()
    finally:
        connection.close()
    def as_raw(value):
        if value is None:
            return None
        return "\\x" + value.hex() if isinstance(value, bytes) else str(value)
    return [(row[0], *map(as_raw, row[1:])) for row in rows]


@pytest.fixture(scope="module")
def wide_run(server_dsn, tmp_path_factory):
    from conftest import fresh_database

    folder = tmp_path_factory.mktemp("wide")
    root = folder / "root"
    write_wide_file(root / "wide-1200.db", 1200)
    write_wide_file(root / "wide-1700.db", 1700)
    small = root / "plain.db"
    connection = sqlite3.connect(small)
    connection.execute("CREATE TABLE notes (body TEXT)")
    connection.executemany("INSERT INTO notes VALUES (?)", [("one",), ("two",)])
    connection.commit()
    connection.close()
    with fresh_database(server_dsn) as target:
        result = consolidate("run", str(root), "--json", target=target, home=folder / "state")
        yield {"target": target, "root": root, "folder": folder, "result": result}


def test_a_1200_column_table_loads_every_value(wide_run):
    target, root = wide_run["target"], wide_run["root"]
    path = str(root / "wide-1200.db")
    for table, reader in (("wide", "duckdb"), ("wide_blob", "python-fallback")):
        expected = expected_rows(root / "wide-1200.db", table, wide_run["folder"] / f"expected-{table}")
        columns = ", ".join(f"c{i}" for i in range(1200))
        assert fetch(target, f"SELECT _source_rowid, {columns} FROM raw_other.{table} WHERE _source_path = %s "
                             "ORDER BY _source_rowid", (path,)) == expected
        [(rows_in_sqlite, rows_loaded, used, notes)] = fetch(
            target, "SELECT rows_in_sqlite, rows_loaded, reader, notes FROM consolidate.load_tables "
                    "WHERE source_path = %s AND source_table = %s", (path, table))
        assert (rows_in_sqlite, rows_loaded, used) == (3, 3, reader)
    assert f"column 'c{1200 - BLOB_COLUMN_FROM_END}' holds a BLOB" in notes


def test_a_1700_column_table_fails_its_file_with_the_reason_and_the_rest_loads(wide_run):
    result, target, root = wide_run["result"], wide_run["target"], wide_run["root"]
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    statuses = {Path(path).name: (status, error) for path, status, error in fetch(
        target, "SELECT source_path, status, error_message FROM consolidate.load_files")}
    assert statuses["wide-1200.db"][0] == "loaded" and statuses["plain.db"][0] == "loaded"
    status, error = statuses["wide-1700.db"]
    assert status == "failed"
    assert "table 'wide' has 1700 columns" in error and "1600" in error
    assert fetch(target, "SELECT count(*) FROM consolidate.load_tables WHERE source_path = %s",
                 (str(root / "wide-1700.db"),)) == [(0,)]
    # The README's failure rule: a failed file leaves no rows, not even those of its loadable tables.
    assert fetch(target, "SELECT count(*) FROM raw_other.small WHERE _source_path = %s",
                 (str(root / "wide-1700.db"),)) == [(0,)]


def test_validation_spot_checks_the_wide_table(wide_run):
    outcome = json.loads(wide_run["result"].stdout)
    files = {Path(file["source_path"]).name: file for file in outcome["validation"]["files"]}
    assert files["wide-1200.db"]["passed"] is True
    assert files["wide-1200.db"]["spot_checked"] == 7 and files["wide-1200.db"]["mismatches"] == []
