"""Hostile inputs on the loader side: no row is ever lost silently, every problem is named, the rest
goes on.

Every expectation is computed here from the SQLite files with Python's sqlite3 and the documented
contract (raw_contract's docstring): a value is its text, except a BLOB, TEXT that is not valid UTF-8
or TEXT containing NUL, stored as `\\x` + lowercase hex of its bytes and named in `_binary_columns`;
names longer than 63 bytes become their first bytes + `_` + 8 hex digits of sha256(name).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import sqlite3
import tempfile
import traceback
from pathlib import Path

import pytest
from psycopg import sql

from loader.load import load as load_module
from loader.load.load import load
from loader.load.secret_policy import SecretPolicy
from loader.sources.discover import discover

from conftest import consolidate, fetch, make_db

KEY = b"hostile test key"
LINEAGE = ["_load_id", "_source_path", "_source_sha256", "_source_rowid", "_loaded_at", "_binary_columns"]


# ------------------------------------------------------------------------------------ helpers

def run_load(roots: list[Path], target, **kwargs):
    return load(discover(roots), target, [str(r) for r in roots], SecretPolicy(key=KEY), **kwargs)


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def expected_raw_name(name: str) -> str:
    """The documented mapping, written out again: kept when 1..63 bytes, else prefix + _ + hash."""
    encoded = name.encode()
    if 0 < len(encoded) <= 63:
        return name
    return encoded[:54].decode("utf-8", "ignore") + "_" + hashlib.sha256(encoded).hexdigest()[:8]


def expected_rows(path: Path, table: str, columns: list[str], raw_columns: list[str] | None = None,
                  rowid: str = "rowid") -> dict:
    """{rowid: ([text per column], binary raw columns or None)} from the file, by the contract."""
    raw_columns = raw_columns or columns
    connection = sqlite3.connect(path)
    connection.text_factory = bytes
    selected = ", ".join(f"typeof({q(c)}), CAST({q(c)} AS BLOB)" for c in columns)
    rows = {}
    for row in connection.execute(f"SELECT {rowid}, {selected} FROM {q(table)}"):
        texts, binary = [], []
        for index, raw in enumerate(raw_columns):
            kind, value = row[1 + 2 * index], row[2 + 2 * index]
            if value is None:
                texts.append(None)
                continue
            try:
                text = value.decode("utf-8") if kind != b"blob" and b"\x00" not in value else None
            except UnicodeDecodeError:
                text = None
            if text is None:
                texts.append("\\x" + value.hex())
                binary.append(raw)
            else:
                texts.append(text)
        rows[row[0]] = (texts, binary or None)
    connection.close()
    return rows


def original_bytes(path: Path, table: str, column: str) -> dict:
    connection = sqlite3.connect(path)
    connection.text_factory = bytes
    found = dict(connection.execute(f"SELECT rowid, CAST({q(column)} AS BLOB) FROM {q(table)}"))
    connection.close()
    return found


def raw_rows(target, schema: str, table: str, columns: list[str], source: Path) -> dict:
    """{_source_rowid: ([values], _binary_columns)} of one source file in a raw table."""
    with target.connect() as connection:
        rows = connection.execute(sql.SQL("SELECT _source_rowid, {}, _binary_columns FROM {} WHERE _source_path = %s").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(schema, table)), [str(source)]).fetchall()
    return {row[0]: (list(row[1:-1]), row[-1]) for row in rows}


def ledger_tables(target, source: Path) -> dict:
    return {row[0]: row[1:] for row in fetch(
        target, "SELECT source_table, raw_schema, raw_table, rows_in_sqlite, rows_loaded, reader, notes, rows_with_binary "
                "FROM consolidate.load_tables WHERE source_path = %s", [str(source)])}


def ledger_columns(target, source: Path, table: str) -> dict:
    return dict(fetch(target, "SELECT source_column, raw_column FROM consolidate.load_columns "
                              "WHERE source_path = %s AND source_table = %s", [str(source), table]))


def file_status(target, source: Path) -> tuple:
    return fetch(target, "SELECT status, error_message FROM consolidate.load_files WHERE source_path = %s "
                         "ORDER BY started_at DESC LIMIT 1", [str(source)])[0]


def rows_of_file(target, source: Path) -> int:
    """Rows of this file in every raw table."""
    tables = fetch(target, "SELECT table_schema, table_name FROM information_schema.columns "
                           "WHERE column_name = '_source_path' AND starts_with(table_schema, 'raw_')")
    with target.connect() as connection:
        return sum(connection.execute(sql.SQL("SELECT count(*) FROM {} WHERE _source_path = %s").format(
            sql.Identifier(schema, table)), [str(source)]).fetchone()[0] for schema, table in tables)


def file_state(path: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.parent.iterdir()) if p.name.startswith(path.name) and p.is_file()}


INVALID_UTF8 = {
    "lone continuation": b"a\x80b",
    "bad lead": b"a\xc3(b",
    "overlong": b"\xc0\xaf",
    "surrogate": b"\xed\xa0\x80",
    "beyond U+10FFFF": b"\xf4\x90\x80\x80",
    "truncated": b"abc\xe2\x82",
    "ff": b"\xff",
}


# ------------------------------------------------------------------------- binary values

def test_blobs_invalid_utf8_and_nul_are_kept_as_hex_and_flagged(tmp_path, target):
    rows = [(b"\x00\x01\xfe\xff", "plain", None, 1),
            (b"", "caf\u00e9 \U0001F600", "ok", 2.5),
            (b"valid utf-8 text as a blob", "x", b"NUL \x00 inside", 3)]
    rows += [(None, "row of " + name, value, 4) for name, value in INVALID_UTF8.items()]
    database = make_db(tmp_path / "tree" / "binary.db",
                       "CREATE TABLE things (payload BLOB, label TEXT, body TEXT, n)",
                       ("INSERT INTO things VALUES (?, ?, CAST(? AS TEXT), ?)", rows))
    outcome = run_load([database.parent], target)
    assert [f.status for f in outcome.files] == ["loaded"]

    columns = ["payload", "label", "body", "n"]
    expected = expected_rows(database, "things", columns)
    loaded = raw_rows(target, "raw_other", "things", columns, database)
    assert loaded == expected
    # The originals come back byte for byte from the hex, and exactly those columns are flagged.
    for column in ("payload", "body"):
        index = columns.index(column)
        for rowid, original in original_bytes(database, "things", column).items():
            value, flagged = loaded[rowid][0][index], loaded[rowid][1] or []
            needs_hex = original is not None and (column == "payload" or b"\x00" in original
                                                  or original in INVALID_UTF8.values())
            assert (column in flagged) == needs_hex, (rowid, column)
            if needs_hex:
                assert value.startswith("\\x") and bytes.fromhex(value[2:]) == original
            elif original is not None:
                assert value.encode() == original
    assert loaded[2][1] == ["payload"]  # the empty blob is a value too: '\x'
    assert loaded[2][0][0] == "\\x"
    assert all(flags is None or "label" not in flags for _, flags in loaded.values())

    ((schema, raw_table, in_sqlite, loaded_rows, reader, notes, with_binary),) = ledger_tables(target, database).values()
    assert (schema, raw_table, in_sqlite, loaded_rows, reader) == ("raw_other", "things", 10, 10, "python-fallback")
    assert "'payload' holds a BLOB (first at rowid 1)" in notes
    assert with_binary == sum(1 for _, flags in expected.values() if flags)
    assert outcome.files[0].fallback_tables["things"] == notes


def test_mixed_file_only_the_table_that_needs_it_uses_the_fallback(tmp_path, target):
    database = make_db(tmp_path / "tree" / "mixed.db",
                       "CREATE TABLE clean (k TEXT, v TEXT)",
                       ("INSERT INTO clean VALUES (?, ?)", [("emoji", "\U0001F600"), ("accent", "e\u0301")]),
                       "CREATE TABLE dirty (k TEXT, v)",
                       ("INSERT INTO dirty VALUES (?, ?)", [("text", "fine"), ("bad", b"\xff\xfe")]),
                       "CREATE TABLE also_clean (n INTEGER)",
                       ("INSERT INTO also_clean VALUES (?)", [(1,), (2,)]))
    run_load([database.parent], target)
    tables = ledger_tables(target, database)
    assert {name: row[4] for name, row in tables.items()} == {
        "clean": "duckdb", "also_clean": "duckdb", "dirty": "python-fallback"}
    assert tables["clean"][5] is None and tables["dirty"][6] == 1
    assert "column 'v' holds a BLOB (first at rowid 2)" in tables["dirty"][5]
    for table in ("clean", "dirty"):
        assert raw_rows(target, "raw_other", table, ["k", "v"], database) == \
            expected_rows(database, table, ["k", "v"])


def test_wide_table_is_checked_in_every_column(tmp_path, target):
    columns = [f"c{i}" for i in range(250)]  # more than one group of COLUMNS_PER_CHECK
    row = [f"v{i}" for i in range(250)]
    late = list(row)
    late[237] = "bad \x00 late"
    database = make_db(tmp_path / "tree" / "wide.db", f"CREATE TABLE wide ({', '.join(columns)})",
                       ("INSERT INTO wide VALUES (" + ", ".join("?" * 250) + ")", [row, row, late]))
    run_load([database.parent], target)
    (_, _, _, _, reader, notes, with_binary) = ledger_tables(target, database)["wide"]
    assert (reader, with_binary) == ("python-fallback", 1)
    assert notes.startswith("column 'c237' holds TEXT containing NUL (first at rowid 3)")
    assert raw_rows(target, "raw_other", "wide", columns, database) == expected_rows(database, "wide", columns)


def test_fallback_writes_the_same_text_as_duckdb(tmp_path, target):
    """Numbers, empty strings, NULLs, whitespace: the fallback's text is the fast path's text."""
    values = [(0,), (-1,), (2**63 - 1,), (-2**63,), (1e20,), (0.1,), (1 / 3,), (-0.0,), (1e-7,), (123.0,),
              ("text",), ("",), (None,), ("  ",), ("1e5",), ("007",), ("\U0001F600\n\t",)]
    fast = make_db(tmp_path / "a" / "fast.db", "CREATE TABLE typed (v)", ("INSERT INTO typed VALUES (?)", values))
    slow = tmp_path / "b" / "slow.db"
    slow.parent.mkdir()
    shutil.copyfile(fast, slow)
    make_db(slow, ("INSERT INTO typed VALUES (?)", [(b"blob",)]))
    run_load([fast.parent, slow.parent], target)
    assert ledger_tables(target, fast)["typed"][4] == "duckdb"
    assert ledger_tables(target, slow)["typed"][4] == "python-fallback"
    by_duckdb = raw_rows(target, "raw_other", "typed", ["v"], fast)
    by_python = raw_rows(target, "raw_other", "typed", ["v"], slow)
    assert by_python.pop(len(values) + 1) == (["\\x626c6f62"], ["v"])
    assert by_python == by_duckdb
    assert by_duckdb == expected_rows(fast, "typed", ["v"])


def test_several_megabyte_values_and_odd_keys_round_trip_byte_exactly(tmp_path, target):
    keys = ["line1\nline2", "tab\tsep", "crlf\r\nend", "cr\ronly", "emoji \U0001F600\U0001F469\u200d\U0001F469\u200d\U0001F467",
            "e\u0301 combining", "\u00fc NFC", "u\u0308 NFD", "\u202eRTL", "\x01\x1f control", "\\.", "x\n\\.\ny",
            '"quoted", comma', "back\\slash", "", " spaces ", "\u0000"[:0] + "zero-width\u200b", "\ufeffbom"]
    big_text = "".join(chr(0x20 + (i * 7919) % 0x2F00) + ("\n" if i % 97 == 0 else "") for i in range(1_200_000))
    assert len(big_text.encode()) > 3_000_000
    big_blob = bytes((i * 131) % 256 for i in range(3_000_000))
    clean_rows = [(k, f"value of {k}") for k in keys] + [("big", big_text)]
    clean = make_db(tmp_path / "a" / "clean.db", "CREATE TABLE kv (key TEXT, value TEXT)",
                    ("INSERT INTO kv VALUES (?, ?)", clean_rows))
    dirty = make_db(tmp_path / "b" / "dirty.db", "CREATE TABLE kv (key TEXT, value)",
                    ("INSERT INTO kv VALUES (?, ?)", clean_rows + [("big blob", big_blob)]))
    run_load([clean.parent, dirty.parent], target)
    assert ledger_tables(target, clean)["kv"][4] == "duckdb"
    assert ledger_tables(target, dirty)["kv"][4] == "python-fallback"
    for database in (clean, dirty):
        loaded = raw_rows(target, "raw_other", "kv", ["key", "value"], database)
        assert loaded == expected_rows(database, "kv", ["key", "value"])
        for rowid, key in original_bytes(database, "kv", "key").items():
            assert loaded[rowid][0][0].encode() == key
        values = original_bytes(database, "kv", "value")
        big = next(r for r, (v, _) in loaded.items() if v[0] == "big")
        assert loaded[big][0][1].encode() == values[big] == big_text.encode()
    loaded = raw_rows(target, "raw_other", "kv", ["key", "value"], dirty)
    blob_row = next(r for r, (v, _) in loaded.items() if v[0] == "big blob")
    assert bytes.fromhex(loaded[blob_row][0][1][2:]) == big_blob and loaded[blob_row][1] == ["value"]


def test_without_rowid_utf16_and_hidden_rowid_tables(tmp_path, target):
    database = make_db(tmp_path / "tree" / "odd.db",
                       "CREATE TABLE w (k TEXT PRIMARY KEY, v) WITHOUT ROWID",
                       ("INSERT INTO w VALUES (?, ?)", [("a", b"\x00"), ("b", "text")]),
                       'CREATE TABLE hides (rowid TEXT, oid TEXT, v TEXT)',
                       ("INSERT INTO hides (_rowid_, rowid, oid, v) VALUES (?, ?, ?, ?)",
                        [(10, "not the rowid", "nor this", "x"), (20, "r", "o", "y")]),
                       'CREATE TABLE hides_all (rowid TEXT, _rowid_ TEXT, oid TEXT)',
                       ("INSERT INTO hides_all VALUES (?, ?, ?)", [("a", "b", "c"), ("d", "e", "f")]))
    wide = make_db(tmp_path / "tree" / "utf16.db", "CREATE TABLE t (v TEXT)",
                   ("INSERT INTO t VALUES (?)", [("\U0001F600 \u00e9",), ("ascii",)]), encoding="UTF-16le")
    outcome = run_load([database.parent], target)
    assert [f.status for f in outcome.files] == ["loaded", "loaded"]
    tables = ledger_tables(target, database)
    assert all(row[4] == "python-fallback" for row in tables.values())
    assert fetch(target, "SELECT k, v, _binary_columns, _source_rowid FROM raw_other.w ORDER BY k") == [
        ("a", "\\x00", ["v"], None), ("b", "text", None, None)]
    hides = raw_rows(target, "raw_other", "hides", ["rowid", "oid", "v"], database)
    assert hides == {10: (["not the rowid", "nor this", "x"], None), 20: (["r", "o", "y"], None)}
    assert "rowid hides the rowid" in tables["hides"][5]
    assert fetch(target, "SELECT _source_rowid, rowid FROM raw_other.hides_all ORDER BY 2") == [(None, "a"), (None, "d")]
    assert "_source_rowid is NULL" in tables["hides_all"][5]
    # UTF-16 text is valid text: stored as such (SQLite's UTF-8 of it), read by the fallback.
    texts = dict(sqlite3.connect(wide).execute("SELECT rowid, v FROM t").fetchall())
    assert raw_rows(target, "raw_other", "t", ["v"], wide) == {rowid: ([v], None) for rowid, v in texts.items()}
    assert "UTF-16le" in ledger_tables(target, wide)["t"][5]


def test_hashed_secret_columns_in_the_fallback_match_the_fast_path(tmp_path, target):
    schema = ["CREATE TABLE workflow_entity (id TEXT, name TEXT)",
              "CREATE TABLE credentials_entity (id TEXT, name TEXT, data TEXT, extra)"]
    fast = make_db(tmp_path / "a" / "database.sqlite", *schema,
                   ("INSERT INTO credentials_entity VALUES (?, ?, ?, ?)", [("1", "c", "secret-one", "e")]))
    slow = make_db(tmp_path / "b" / "database.sqlite", *schema,
                   ("INSERT INTO credentials_entity VALUES (?, ?, ?, ?)",
                    [("1", "c", "secret-one", b"\x00blob"), ("2", "d", b"\x00secret-two\xff", None)]))
    run_load([fast.parent, slow.parent], target)
    assert ledger_tables(target, fast)["credentials_entity"][4] == "duckdb"
    assert ledger_tables(target, slow)["credentials_entity"][4] == "python-fallback"
    expected_one = "hmac-sha256:" + hmac.new(KEY, b"secret-one", hashlib.sha256).hexdigest()
    expected_two = "hmac-sha256:" + hmac.new(KEY, b"\x00secret-two\xff", hashlib.sha256).hexdigest()
    assert raw_rows(target, "raw_n8n", "credentials_entity", ["data", "extra"], fast) == {1: ([expected_one, "e"], None)}
    assert raw_rows(target, "raw_n8n", "credentials_entity", ["data", "extra"], slow) == {
        1: ([expected_one, "\\x00626c6f62"], ["extra"]), 2: ([expected_two, None], None)}


# ------------------------------------------------------------------------------ identifiers

LONG_A = "memory_entries_" + "x" * 48 + "_first_variant"   # these two share their first 63 bytes
LONG_B = "memory_entries_" + "x" * 48 + "_second_variant"
MULTIBYTE = "\u00e9" * 30 + "\U0001F600" * 3                # 72 bytes: the cut falls inside a character
HOSTILE_TABLES = ['we"ird; DROP TABLE x; --', "select", "Mixed Case", "it's", "a.b", "[br]", "\u00fcml\u00e4ut \u2713",
                  LONG_A, LONG_B, MULTIBYTE, "", "tab\there"]
HOSTILE_COLUMNS = ["id", 'co"l; --', "select", "Mixed Case", "_load_id", "_binary_columns", "_source_rowid__source",
                   "_source_rowid", LONG_A, LONG_B, MULTIBYTE, "new\nline", "Id2"]


def columns_of(table: str) -> list[str]:
    """The table named "" also has a column named "" (DuckDB cannot quote either: the fallback reads it)."""
    return HOSTILE_COLUMNS + ([""] if table == "" else [])


def test_hostile_identifiers_load_every_row_under_recorded_names(tmp_path, target):
    statements = []
    for number, table in enumerate(HOSTILE_TABLES):
        columns = columns_of(table)
        statements.append(f"CREATE TABLE {q(table)} ({', '.join(q(c) for c in columns)})")
        rows = [[f"{number}:{r}:{c}" for c in columns] for r in range(3)]
        rows[1][0] = b"\xff" if number % 2 else "plain"  # every other table needs the fallback
        statements.append((f"INSERT INTO {q(table)} VALUES ({', '.join('?' * len(columns))})", rows))
    database = make_db(tmp_path / "tree" / "names.db", *statements)
    outcome = run_load([database.parent], target)
    assert [f.status for f in outcome.files] == ["loaded"], outcome.files[0].error

    expected_columns = {
        "id": "id", 'co"l; --': 'co"l; --', "select": "select", "Mixed Case": "Mixed Case",
        "_load_id": "_load_id__source", "_binary_columns": "_binary_columns__source",
        "_source_rowid__source": "_source_rowid__source", "_source_rowid": "_source_rowid__2",
        LONG_A: expected_raw_name(LONG_A), LONG_B: expected_raw_name(LONG_B),
        MULTIBYTE: expected_raw_name(MULTIBYTE), "new\nline": "new\nline", "Id2": "Id2"}
    assert expected_raw_name(LONG_A) != expected_raw_name(LONG_B)
    assert expected_raw_name(MULTIBYTE) == "\u00e9" * 27 + "_" + hashlib.sha256(MULTIBYTE.encode()).hexdigest()[:8]
    assert all(len(name.encode()) <= 63 for name in expected_columns.values())
    tables = ledger_tables(target, database)
    assert set(tables) == set(HOSTILE_TABLES)
    for number, table in enumerate(HOSTILE_TABLES):
        raw_table = expected_raw_name(table)
        schema, recorded, in_sqlite, loaded_rows, reader, _, _ = tables[table]
        assert (schema, recorded, in_sqlite, loaded_rows) == ("raw_other", raw_table, 3, 3)
        assert reader == ("python-fallback" if number % 2 or table == "" else "duckdb"), table
        mapping = dict(expected_columns, **({"": expected_raw_name("")} if table == "" else {}))
        assert ledger_columns(target, database, table) == mapping
        raw_columns = [mapping[c] for c in columns_of(table)]
        assert raw_rows(target, "raw_other", raw_table, raw_columns, database) == \
            expected_rows(database, table, columns_of(table), raw_columns)
    # PostgreSQL truncated nothing: each raw table has exactly the mapped names, lineage included.
    with target.connect() as connection:
        for table in HOSTILE_TABLES:
            names = [row[0] for row in connection.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'raw_other' "
                "AND table_name = %s ORDER BY ordinal_position", [expected_raw_name(table)])]
            assert names == [expected_columns.get(c, expected_raw_name(c)) for c in columns_of(table)] + LINEAGE
        lineage = connection.execute(sql.SQL("SELECT DISTINCT _load_id, _load_id__source FROM {}").format(
            sql.Identifier("raw_other", expected_raw_name(LONG_A)))).fetchall()
    assert {row[0] for row in lineage} == {outcome.load_id}
    assert {row[1] for row in lineage} == {f"{HOSTILE_TABLES.index(LONG_A)}:{r}:_load_id" for r in range(3)}


def test_tables_of_two_files_with_the_same_raw_name_union_by_column_name(tmp_path, target):
    first = make_db(tmp_path / "tree" / "one.db", f"CREATE TABLE {q(LONG_A)} (a, b)", f"INSERT INTO {q(LONG_A)} VALUES (1, 2)")
    second = make_db(tmp_path / "tree" / "two.db", f"CREATE TABLE {q(LONG_A)} (b, c)", f"INSERT INTO {q(LONG_A)} VALUES (3, 4)")
    run_load([first.parent], target)
    with target.connect() as connection:
        rows = connection.execute(sql.SQL("SELECT a, b, c, _source_path FROM {} ORDER BY b").format(
            sql.Identifier("raw_other", expected_raw_name(LONG_A)))).fetchall()
    assert rows == [("1", "2", None, str(first)), (None, "3", "4", str(second))]


# ----------------------------------------------------------------------------- broken files

def good_db(folder: Path, name: str = "good.db") -> Path:
    return make_db(folder / name, "CREATE TABLE notes (body TEXT)", ("INSERT INTO notes VALUES (?)", [(name,)] * 3))


def many_rows_db(path: Path) -> Path:
    return make_db(path, "CREATE TABLE a (x, y)", ("INSERT INTO a VALUES (?, ?)", [(i, "v" * 200) for i in range(3000)]),
                   "CREATE TABLE b (x)", ("INSERT INTO b VALUES (?)", [(i,) for i in range(3000)]))


def test_truncated_database_fails_with_its_reason_and_the_rest_loads(tmp_path, target):
    folder = tmp_path / "tree"
    good = good_db(folder)
    broken = many_rows_db(folder / "truncated.db")
    os.truncate(broken, broken.stat().st_size // 2)
    outcome = run_load([folder], target)
    statuses = {f.source.path.name: (f.status, f.error) for f in outcome.files}
    assert statuses["good.db"] == ("loaded", None)
    assert statuses["truncated.db"][0] == "failed" and "malformed" in statuses["truncated.db"][1]
    assert file_status(target, broken)[0] == "failed"
    assert rows_of_file(target, broken) == 0 and rows_of_file(target, good) == 3


def hide_last_row_of(path: Path, table: str) -> None:
    """Lower the cell count of the table's (single) leaf page: SQLite then sees one row fewer in every
    count and every read alike; only an integrity check notices."""
    connection = sqlite3.connect(path)
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    root = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", [table]).fetchone()[0]
    connection.close()
    with open(path, "r+b") as handle:
        offset = (root - 1) * page_size
        handle.seek(offset)
        header = handle.read(5)
        assert header[0] == 0x0D  # a table leaf page
        handle.seek(offset + 3)
        handle.write((int.from_bytes(header[3:5], "big") - 1).to_bytes(2, "big"))


def test_damage_that_hides_rows_from_counts_fails_the_integrity_check(tmp_path, target):
    folder = tmp_path / "tree"
    good = good_db(folder)
    damaged = make_db(folder / "damaged.db", "CREATE TABLE a (x)",
                      ("INSERT INTO a VALUES (?)", [(f"row {i}",) for i in range(10)]))
    hide_last_row_of(damaged, "a")
    found = discover([folder])
    assert {f.path.name: (f.error, f.tables) for f in found.files}["damaged.db"] == (None, {"a": 9})  # looks fine
    outcome = load(found, target, [str(folder)], SecretPolicy(key=KEY))
    status, error = file_status(target, damaged)
    assert status == "failed" and "quick_check" in error and "Fragmentation" in error
    assert [f.status for f in outcome.files if f.source.path == good] == ["loaded"]
    assert rows_of_file(target, damaged) == 0


def test_file_that_vanishes_between_discovery_and_load(tmp_path, target):
    folder = tmp_path / "tree"
    good = good_db(folder)
    gone = good_db(folder, "gone.db")
    found = discover([folder])
    gone.unlink()
    outcome = load(found, target, [str(folder)], SecretPolicy(key=KEY))
    result = {f.source.path.name: (f.status, f.error) for f in outcome.files}
    assert result["good.db"] == ("loaded", None)
    assert result["gone.db"][0] == "failed" and "no longer exists" in result["gone.db"][1]
    assert file_status(target, gone)[0] == "failed" and rows_of_file(target, good) == 3


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_a_writer_mid_transaction_never_shows_uncommitted_rows(tmp_path, target, journal_mode):
    database = tmp_path / "tree" / "busy.db"
    database.parent.mkdir()
    setup = sqlite3.connect(database, isolation_level=None)
    setup.execute(f"PRAGMA journal_mode = {journal_mode}")
    setup.execute("CREATE TABLE t (x)")
    setup.executemany("INSERT INTO t VALUES (?)", [("committed " + "c" * 100,) for _ in range(1000)])
    committed = file_state(database)
    writer = sqlite3.connect(database, isolation_level=None)
    writer.execute("PRAGMA cache_size = 10")  # spill uncommitted pages into the file / the WAL
    writer.execute("BEGIN IMMEDIATE")
    writer.executemany("INSERT INTO t VALUES (?)", [("uncommitted " + "u" * 1000,) for _ in range(300)])
    writer.execute("UPDATE t SET x = 'changed' WHERE rowid <= 500")
    side = "-journal" if journal_mode == "delete" else "-wal"
    assert database.with_name(database.name + side).stat().st_size > 0  # the writer's pages are on disk
    if journal_mode == "delete":  # uncommitted pages overwrote the main file; the journal holds the originals
        assert file_state(database)[database.name] != committed[database.name]
    before = file_state(database)
    try:
        outcome = run_load([database.parent], target)
        assert file_state(database) == before  # the source was never opened
    finally:
        writer.execute("COMMIT")  # the writer was never disturbed
        writer.close()
        setup.close()
    assert [f.status for f in outcome.files] == ["loaded"]
    assert fetch(target, "SELECT count(*), count(*) FILTER (WHERE starts_with(x, 'committed ')) FROM raw_other.t") == [(1000, 1000)]
    assert sqlite3.connect(database).execute("SELECT count(*) FROM t").fetchone()[0] == 1300


class OpenConnections:
    """A Target whose connections were opened before the process dropped its privileges: each
    `connect` hands out the next one (a load with jobs=1 needs two: its own and its worker's)."""

    def __init__(self, connections, dsn):
        self.connections = list(connections)
        self.dsn = dsn  # DuckDB's attach tries it, fails as nobody, and the worker goes through CSV

    def connect(self, **kwargs):
        return self.connections.pop(0)


def in_child_as_nobody(work, target, connections: int = 2) -> dict:
    """Run `work(target)` in a forked child that connects to PostgreSQL as root and then runs as uid
    65534 (as root, chmod 000 does not stop reads). Returns what `work` returned, or the traceback."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(reader)
            opened = [target.connect(autocommit=True) for _ in range(connections)]
            os.setgid(65534)
            os.setuid(65534)
            payload = {"result": work(OpenConnections(opened, target.dsn))}
        except BaseException:
            payload = {"traceback": traceback.format_exc()}
        with os.fdopen(writer, "w") as handle:
            handle.write(json.dumps(payload, default=str))
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as handle:
        payload = json.loads(handle.read() or '{"traceback": "child died"}')
    os.waitpid(pid, 0)
    assert "traceback" not in payload, payload["traceback"]
    return payload["result"]


def test_unreadable_database_is_named_and_the_rest_loads(target):
    folder = Path(tempfile.mkdtemp(prefix="consolidate-perm-"))  # not under pytest's root-only tmp
    try:
        os.chmod(folder, 0o755)
        good = good_db(folder)
        locked = good_db(folder, "locked.db")
        (folder / "locked-but-not-a-db.txt").write_text("private")
        for path in folder.iterdir():
            os.chmod(path, 0o644)
        os.chmod(locked, 0o000)
        os.chmod(folder / "locked-but-not-a-db.txt", 0o000)

        def work(target_for_child):
            found = discover([folder])
            outcome = load(found, target_for_child, [str(folder)], SecretPolicy(key=KEY), jobs=1)
            return {"files": [(f.source.path.name, f.status, f.error) for f in outcome.files],
                    "warnings": [(w.path.name, w.reason) for w in found.warnings]}

        if os.geteuid() == 0:
            result = in_child_as_nobody(work, target)
        else:
            result = work(target)
    finally:
        shutil.rmtree(folder)
    files = {name: (status, error) for name, status, error in result["files"]}
    assert files["good.db"] == ("loaded", None)
    assert files["locked.db"][0] == "failed" and "Permission denied" in files["locked.db"][1]
    assert [name for name, _ in result["warnings"]] == ["locked-but-not-a-db.txt"]
    assert "cannot be read" in result["warnings"][0][1]
    assert file_status(target, locked)[0] == "failed"
    assert rows_of_file(target, good) == 3 and rows_of_file(target, locked) == 0


def test_fifo_and_directory_named_like_databases_do_not_stop_discovery(tmp_path, target):
    folder = tmp_path / "tree"
    good = good_db(folder / "folder.db")  # a directory named like a database, with a database inside
    os.mkfifo(folder / "pipe.db")           # reading it would block forever
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("discovery blocked"))
    signal.alarm(60)
    try:
        outcome = run_load([folder], target)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert [(f.source.path, f.status) for f in outcome.files] == [(good, "loaded")]


# ----------------------------------------------------------------------- per-file transaction

def test_a_failing_table_leaves_nothing_of_its_file(tmp_path, target):
    folder = tmp_path / "tree"
    good = good_db(folder, "a_good.db")
    bad = make_db(folder / "b_bad.db",
                  "CREATE TABLE aaa (body TEXT)", "INSERT INTO aaa VALUES ('loaded by DuckDB first')",
                  "CREATE TABLE bbb (body)", ("INSERT INTO bbb VALUES (?)", [(b"\x00blob",)]),
                  "CREATE TABLE zzz (body TEXT)", "INSERT INTO zzz VALUES ('boom')")
    with target.connect() as connection:  # a raw table PostgreSQL will refuse the row in
        connection.execute("CREATE SCHEMA raw_other")
        connection.execute("CREATE TABLE raw_other.zzz (body text CONSTRAINT no_boom CHECK (body <> 'boom'))")
    outcome = run_load([folder], target)
    assert [f.status for f in outcome.files] == ["loaded", "failed"]
    assert "'zzz'" in outcome.files[1].error and "no_boom" in outcome.files[1].error
    assert rows_of_file(target, bad) == 0 and rows_of_file(target, good) == 3
    assert fetch(target, "SELECT to_regclass('raw_other.aaa'), to_regclass('raw_other.bbb')") == [(None, None)]
    assert ledger_tables(target, bad) == {}
    assert fetch(target, "SELECT count(*) FROM consolidate.load_columns WHERE source_path = %s", [str(bad)]) == [(0,)]


def test_a_duckdb_path_that_fails_anyway_falls_back_inside_a_savepoint(tmp_path, target, monkeypatch):
    """Were detection to miss a table, PostgreSQL's refusal of what DuckDB wrote (invalid UTF-8, NUL)
    is rolled back to the table's savepoint and the fallback loads it."""
    monkeypatch.setattr(load_module, "needs_fallback", lambda reader, table, check_text=True: None)
    database = make_db(tmp_path / "tree" / "missed.db",
                       "CREATE TABLE clean (v TEXT)", "INSERT INTO clean VALUES ('ok')",
                       "CREATE TABLE invalid (v TEXT)", ("INSERT INTO invalid VALUES (CAST(? AS TEXT))", [(b"a\xffb",)]),
                       "CREATE TABLE nul (v TEXT)", ("INSERT INTO nul VALUES (?)", [("a\x00b",), ("fine",)]))
    outcome = run_load([database.parent], target)
    assert [f.status for f in outcome.files] == ["loaded"], outcome.files[0].error
    tables = ledger_tables(target, database)
    assert tables["clean"][4] == "duckdb"
    for table in ("invalid", "nul"):
        assert tables[table][4] == "python-fallback" and "the DuckDB path failed" in tables[table][5]
        assert raw_rows(target, "raw_other", table, ["v"], database) == expected_rows(database, table, ["v"])


def test_existing_database_gets_the_new_lineage_column_and_ledger_columns(tmp_path, target):
    first = good_db(tmp_path / "one")
    run_load([first.parent], target)
    with target.connect() as connection:  # the shape before this change
        connection.execute("ALTER TABLE raw_other.notes DROP COLUMN _binary_columns")
        connection.execute("ALTER TABLE raw_claude_flow_v2.memory_entries DROP COLUMN _binary_columns")
        connection.execute("DROP TABLE consolidate.load_columns")
        connection.execute("ALTER TABLE consolidate.load_tables DROP COLUMN reader, DROP COLUMN notes, "
                           "DROP COLUMN rows_with_binary")
        connection.execute("DROP TABLE consolidate.schema_version")  # a ledger from before versions
    second = make_db(tmp_path / "two" / "other.db", "CREATE TABLE other (v)", ("INSERT INTO other VALUES (?)", [(b"\x01",)]))
    outcome = run_load([second.parent], target)
    assert [f.status for f in outcome.files] == ["loaded"]
    assert fetch(target, "SELECT count(*) FROM information_schema.columns WHERE column_name = '_binary_columns' "
                         "AND table_schema || '.' || table_name IN ('raw_other.notes', 'raw_claude_flow_v2.memory_entries')") == [(2,)]
    (_, _, _, _, reader, notes, with_binary) = ledger_tables(target, second)["other"]
    assert (reader, with_binary) == ("python-fallback", 1) and "BLOB" in notes
    assert ledger_columns(target, second, "other") == {"v": "v"}


# --------------------------------------------------------------------------------- the CLI

def test_cli_names_every_broken_file_without_a_traceback(tmp_path, target):
    folder = tmp_path / "tree"
    good_db(folder)
    truncated = many_rows_db(folder / "truncated.db")
    os.truncate(truncated, truncated.stat().st_size // 2)
    damaged = make_db(folder / "damaged.db", "CREATE TABLE a (x)", ("INSERT INTO a VALUES (?)", [(i,) for i in range(10)]))
    hide_last_row_of(damaged, "a")
    make_db(folder / "binary.db", "CREATE TABLE b (v)", ("INSERT INTO b VALUES (?)", [(b"\xff\x00",)]))
    (folder / "fake.sqlite").write_bytes(b"not a database" * 10)
    result = consolidate("load", str(folder), target=target, home=tmp_path / "state")
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert "Traceback" not in output
    flat = "".join(result.stderr.split())  # Rich wraps long lines anywhere
    for name, reason in (("truncated.db", "malformed"), ("damaged.db", "quick_check")):
        named = "couldnotload" + "".join(str(folder / name).split()) + ":"
        assert named in flat, result.stderr
        assert reason in flat.split(named, 1)[1].split("couldnotload")[0], result.stderr
    assert "fake.sqlite" in flat and "binary.db" not in flat.split("couldnotload", 1)[1]
    assert file_status(target, folder / "binary.db")[0] == "loaded"
