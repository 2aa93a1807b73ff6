"""`consolidate run` over the hostile corpus (tests/hostile_corpus.py), end to end, as a user runs it.

One run (a subprocess against a real PostgreSQL) is shared by the tests of this module; each test
checks one promise of issue 3: the run says which SQLite sources it could not read and why (exit code
3, never a traceback), every good row is migrated, every dirty row is loaded with its problem named in
`flags` and its original recoverable, reconciliation holds exactly, every dbt test passes, validation
passes, and no source byte changes. Expectations come from the corpus description and from private
copies of the files read with Python's sqlite3, never from the loader's or dbt's own output.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg import sql
from psycopg.rows import dict_row

from loader.database import Target

from conftest import consolidate, fresh_database, read_private_copy
from hostile_corpus import (
    FAILED,
    LOADED,
    WARNING,
    HostileCorpus,
    MemoryRow,
    is_binary,
    sqlite_text,
    write_hostile_corpus,
)

RAW_SCHEMAS = {"claude-flow-v2": "raw_claude_flow_v2", "claude-flow-v3": "raw_claude_flow_v3",
               "extended-memory": "raw_extended_memory", "other": "raw_other"}
MARTS = ("unified_memory", "performance_metrics", "unified_memory_history")
VALUE_COLUMNS = {"memory_entries": ("value", "content"), "memory_store": ("value",)}


@dataclass
class HostileRun:
    corpus: HostileCorpus
    target: Target
    returncode: int
    stdout: str
    stderr: str
    before: dict[str, str]
    after: dict[str, str]
    scratch: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def file_checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under root (a file appearing or disappearing shows too)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hostile(server_dsn, tmp_path_factory) -> HostileRun:
    folder = tmp_path_factory.mktemp("hostile")
    corpus = write_hostile_corpus(folder / "corpus")
    before = file_checksums(corpus.root)
    with fresh_database(server_dsn) as target:
        result = consolidate("run", str(corpus.root), target=target, home=folder / "state", timeout=1200)
        yield HostileRun(corpus, target, result.returncode, result.stdout, result.stderr, before,
                         file_checksums(corpus.root), folder / "scratch")


def fetch(target: Target, query, parameters=()) -> list[dict]:
    with target.connect() as connection, connection.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query, parameters).fetchall()


def current_load(run: HostileRun, path: Path) -> dict | None:
    rows = fetch(run.target, "SELECT load_id, kind FROM consolidate.current_loads WHERE source_path = %s", [str(path)])
    return rows[0] if rows else None


def raw_table(run: HostileRun, path: Path, table: str) -> tuple[str, str]:
    (row,) = fetch(run.target, "SELECT t.raw_schema, t.raw_table FROM consolidate.load_tables t "
                   "JOIN consolidate.current_loads c USING (load_id, source_path) "
                   "WHERE t.source_path = %s AND t.source_table = %s", [str(path), table])
    return row["raw_schema"], row["raw_table"]


def raw_row(run: HostileRun, path: Path, table: str, rowid: int) -> dict:
    schema, name = raw_table(run, path, table)
    rows = fetch(run.target, sql.SQL("SELECT r.* FROM {} r JOIN consolidate.current_loads c "
                                     "ON r._load_id = c.load_id AND r._source_path = c.source_path "
                                     "WHERE r._source_path = %s AND r._source_rowid = %s").format(
        sql.Identifier(schema, name)), [str(path), rowid])
    assert len(rows) == 1, (path, table, rowid, rows)
    return rows[0]


def flat(text: str) -> str:
    """Output without whitespace: Rich wraps long lines anywhere when not on a terminal."""
    return "".join(text.split())


def original_in_raw(original: str | bytes | None) -> str | None:
    """What raw holds for an original: its text, or `\\x` + hex of its bytes."""
    return "\\x" + original.hex() if isinstance(original, bytes) else original


def recovered(raw_text: str | None, binary: bool) -> str | bytes | None:
    if raw_text is None or not binary:
        return raw_text
    assert raw_text.startswith("\\x"), raw_text
    return bytes.fromhex(raw_text[2:])


def mart_rows(run: HostileRun) -> dict[tuple[str, str, int], list[dict]]:
    """Every row of the three memory marts by (source_path, source_table, source_rowid), with its mart."""
    found: dict[tuple[str, str, int], list[dict]] = {}
    for mart in MARTS:
        value = "metric_data" if mart == "performance_metrics" else "value"
        for row in fetch(run.target, sql.SQL(
                "SELECT m.source_path, m.source_table, m.source_rowid, m.key, m.namespace, m.flags, "
                "m.{value} #>> '{{}}' AS value_text, jsonb_typeof(m.{value}) AS value_type, "
                "{raw_value} AS raw_value FROM {mart} m JOIN consolidate.current_loads c "
                "ON m.load_id = c.load_id AND m.source_path = c.source_path").format(
                value=sql.Identifier(value), mart=sql.Identifier(mart),
                raw_value=sql.SQL("m.raw_value") if mart == "unified_memory_history" else sql.SQL("NULL"))):
            found.setdefault((row["source_path"], row["source_table"], row["source_rowid"]), []).append(
                {**row, "mart": mart})
    return found


def ranked_data_types(run: HostileRun) -> dict[tuple[str, str, int], str]:
    return {(r["source_path"], r["source_table"], r["source_rowid"]): r["data_type"] for r in fetch(
        run.target, "SELECT source_path, source_table, source_rowid, data_type FROM intermediate.int_memory_ranked")}


# ---------------------------------------------------------------------------------- the run itself

def test_the_run_exits_3_without_a_traceback(hostile):
    assert "Traceback" not in hostile.stdout and "Traceback" not in hostile.stderr, hostile.output[-5000:]
    assert hostile.returncode == 3, hostile.output[-5000:]


def test_every_broken_file_is_named_with_its_reason(hostile):
    """`could not load <path>: <reason>` for each unreadable source, `warning: <path>: <reason>` for a
    non-SQLite file or an orphan WAL (the backup's own messages do not count)."""
    output = flat(hostile.stderr).lower()
    for expected in hostile.corpus.failed + hostile.corpus.warnings:
        prefix = "couldnotload" if expected.status == FAILED else "warning:"
        named = prefix + flat(str(expected.path)).lower() + ":"
        assert named in output, (f"{expected.path} is not named", hostile.stderr[-3000:])
        assert any(flat(expected.reason) in part[:400] for part in output.split(named)[1:]), (
            f"{expected.path}: '{expected.reason}' not printed with it", hostile.stderr[-3000:])
    for expected in hostile.corpus.failed:
        recorded = fetch(hostile.target, "SELECT status, error_message FROM migration_metadata WHERE source_file = %s",
                         [str(expected.path)])
        assert [r["status"] for r in recorded] == ["failed"], (expected.path, recorded)
        assert expected.reason in recorded[0]["error_message"].lower(), recorded
    for expected in hostile.corpus.warnings:
        assert fetch(hostile.target, "SELECT 1 FROM migration_metadata WHERE source_file = %s",
                     [str(expected.path)]) == [], f"{expected.path} is a warning, not a source"


def test_every_loadable_file_is_loaded_as_its_kind(hostile):
    for expected in hostile.corpus.loaded:
        load = current_load(hostile, expected.path)
        failure = fetch(hostile.target, "SELECT error_message FROM consolidate.load_files WHERE source_path = %s "
                        "AND status = 'failed'", [str(expected.path)])
        assert load is not None, (expected.path, expected.needs, failure)
        assert load["kind"] == expected.kind, expected.path


def test_the_dbt_build_passes(hostile):
    # dbt's progress is on stderr with the command's own (stdout: the results)
    assert re.search(r"Done\. PASS=\d+ WARN=\d+ ERROR=0 SKIP=0", hostile.stderr), hostile.stderr[-5000:]
    assert "PASS=" not in hostile.stdout
    assert "failed:" not in hostile.stderr, hostile.stderr[-5000:]


def test_no_source_byte_changes(hostile):
    assert hostile.after == hostile.before


# ------------------------------------------------------------------------------------------- rows

def test_every_row_of_every_loaded_file_is_in_raw(hostile):
    for expected in hostile.corpus.loaded:
        tables = [name for (name,) in read_private_copy(
            expected.path, hostile.scratch, "SELECT name FROM sqlite_master WHERE type = 'table'")]
        counts = {name: read_private_copy(expected.path, hostile.scratch,
                                          'SELECT count(*) FROM "' + name.replace('"', '""') + '"')[0][0]
                  for name in tables}
        assert counts == expected.tables, expected.path
        ledger = {r["source_table"]: (r["rows_in_sqlite"], r["rows_loaded"]) for r in fetch(
            hostile.target, "SELECT t.source_table, t.rows_in_sqlite, t.rows_loaded FROM consolidate.load_tables t "
            "JOIN consolidate.current_loads c USING (load_id, source_path) WHERE t.source_path = %s",
            [str(expected.path)])}
        assert ledger == {name: (count, count) for name, count in counts.items()}, expected.path
        for name, count in counts.items():
            schema, table = raw_table(hostile, expected.path, name)
            (row,) = fetch(hostile.target, sql.SQL(
                "SELECT count(*) AS n FROM {} r JOIN consolidate.current_loads c "
                "ON r._load_id = c.load_id AND r._source_path = c.source_path WHERE r._source_path = %s").format(
                sql.Identifier(schema, table)), [str(expected.path)])
            assert row["n"] == count, (expected.path, name)


def test_reconciliation_is_exact_for_every_memory_file_and_counts_its_flagged_rows(hostile):
    memory_files = {row.path for row in hostile.corpus.memory_rows}
    for path in memory_files:
        rows = [row for row in hostile.corpus.memory_rows if row.path == path]
        (reconciliation,) = fetch(hostile.target, "SELECT * FROM reconciliation WHERE source_path = %s", [str(path)])
        assert (reconciliation["rows_in_sqlite"], reconciliation["rows_in_raw"]) == (len(rows), len(rows)), path
        represented = reconciliation["kept"] + reconciliation["superseded"] + reconciliation["moved"]
        assert represented == len(rows) and reconciliation["reconciled"], (path, reconciliation)
        assert reconciliation["flagged"] == sum(bool(row.flags) for row in rows), path


def test_every_memory_row_is_in_exactly_one_mart_with_its_flags_and_data_type(hostile):
    marts = mart_rows(hostile)
    data_types = ranked_data_types(hostile)
    for row in hostile.corpus.memory_rows:
        identity = (str(row.path), row.table, row.rowid)
        found = marts.get(identity, [])
        assert len(found) == 1, (row.key, identity, found)
        assert set(found[0]["flags"]) == row.flags, (row.key, identity, found[0]["flags"])
        assert data_types[identity] == row.data_type, (row.key, identity)
        key_in_raw = original_in_raw(sqlite_text(row.columns["key"]))
        assert (found[0]["key"], found[0]["namespace"]) == (key_in_raw, row.namespace), identity


def test_flagged_rows_keep_their_originals(hostile):
    marts = mart_rows(hostile)
    checked = 0
    for flagged in hostile.corpus.flagged:
        raw = raw_row(hostile, flagged.path, flagged.table, flagged.rowid)
        binary = isinstance(flagged.original, bytes)
        # raw keeps the original: its text, or `\x` + hex of its exact bytes, listed in _binary_columns
        assert raw[flagged.column] == original_in_raw(flagged.original), flagged
        assert recovered(raw[flagged.column], binary) == flagged.original, flagged
        assert (flagged.column in (raw["_binary_columns"] or [])) == binary, (flagged, raw["_binary_columns"])
        # a flagged value: the marts' value is the original text (or its hex) as a JSON string
        if flagged.column in VALUE_COLUMNS[flagged.table]:
            (mart,) = marts[(str(flagged.path), flagged.table, flagged.rowid)]
            assert mart["value_type"] == "string", flagged
            assert recovered(mart["value_text"], binary) == flagged.original, flagged
            if mart["mart"] == "unified_memory_history":
                assert recovered(mart["raw_value"], binary) == flagged.original, flagged
        checked += 1
    assert checked == len(hostile.corpus.flagged) and checked >= 50


def test_values_and_odd_keys_arrive_exactly(hostile):
    """Keys with newlines, tabs, emoji, combining characters stay distinct and exact; values of several
    MB arrive whole; every value is the documented normalization of its original."""
    marts = mart_rows(hostile)
    for row in hostile.corpus.memory_rows:
        (mart,) = marts[(str(row.path), row.table, row.rowid)]
        original = sqlite_text(row.value)
        if row.data_type == "json":
            document = original[len("__compressed__"):] if original.startswith("__compressed__") else None
            expected = json.loads(base64.b64decode(document) if document is not None else original)
            assert json.loads(json_text(hostile, row, mart["mart"])) == expected, row.key
        else:
            assert mart["value_type"] == "string", row.key
            assert recovered(mart["value_text"], row.data_type == "binary") == original, row.key
    odd_keys = {"line one\nline two", "tab\tseparated\tkey", "emoji 🧠🚀 key", "cafe\u0301", "caf\u00e9",
                "zero\u200bwidth\u200djoiner", "  spaced  ", "\u05e9\u05dc\u05d5\u05dd rtl"}
    stored = {r["key"] for r in fetch(hostile.target, "SELECT key FROM unified_memory")}
    assert odd_keys <= stored
    big = [row for row in hostile.corpus.memory_rows if str(row.key).startswith("big:")]
    assert len(big) == 2 and all(len(row.value) > 2_000_000 for row in big)


def json_text(run: HostileRun, row: MemoryRow, mart: str) -> str:
    column = "metric_data" if mart == "performance_metrics" else "value"
    (found,) = fetch(run.target, sql.SQL("SELECT {}::text AS v FROM {} WHERE source_path = %s AND source_table = %s "
                                         "AND source_rowid = %s").format(sql.Identifier(column), sql.Identifier(mart)),
                     [str(row.path), row.table, row.rowid])
    return found["v"]


def test_text_in_integer_real_and_datetime_columns_is_kept(hostile):
    path = hostile.corpus.root / "apps/typed-text.db"
    for expected in hostile.corpus.typed_text_rows:
        raw = raw_row(hostile, path, "measurements", int(expected[0]))
        assert (raw["id"], raw["reading"], raw["ratio"], raw["taken"]) == expected


def test_hostile_identifiers_are_loaded_under_distinct_recorded_names(hostile):
    path = hostile.corpus.root / "apps/odd-names.db"
    raw_names = {}
    for table in hostile.corpus.odd_tables:
        schema, name = raw_table(hostile, path, table.name)
        assert schema == RAW_SCHEMAS["other"] and len(name.encode()) <= 63, table.name
        raw_names[table.name] = name
        columns = {r["source_column"]: r["raw_column"] for r in fetch(
            hostile.target, "SELECT l.source_column, l.raw_column FROM consolidate.load_columns l "
            "JOIN consolidate.current_loads c USING (load_id, source_path) "
            "WHERE l.source_path = %s AND l.source_table = %s", [str(path), table.name])}
        assert set(columns) == set(table.columns), table.name
        assert len(set(columns.values())) == len(columns), (table.name, columns)
        assert all(len(c.encode()) <= 63 for c in columns.values()), columns
        stored = fetch(hostile.target, sql.SQL("SELECT {} FROM {} ORDER BY _source_rowid").format(
            sql.SQL(", ").join(sql.Identifier(columns[c]) for c in table.columns), sql.Identifier(schema, name)))
        assert [tuple(r.values()) for r in stored] == [tuple(sqlite_text(v) for v in row) for row in table.rows], \
            table.name
    assert len(set(raw_names.values())) == len(raw_names), raw_names


# ------------------------------------------------------------------------------------- validation

def test_validation_passes_every_loaded_file_counts_the_flagged_rows_and_names_the_failed_ones(hostile):
    runs = fetch(hostile.target, "SELECT run_id, passed FROM consolidate.validation_runs ORDER BY started_at DESC")
    assert runs, "validation did not run"
    files = {r["source_path"]: r for r in fetch(
        hostile.target, "SELECT * FROM consolidate.validation_files WHERE run_id = %s", [runs[0]["run_id"]])}
    assert set(files) == {str(f.path) for f in hostile.corpus.loaded}
    for path, row in files.items():
        assert row["passed"], (path, row["problems"], row["mismatch_details"][:3])
        rows = [r for r in hostile.corpus.memory_rows if str(r.path) == path]
        if rows:
            assert row["flagged"] == sum(bool(r.flags) for r in rows), path
    # the files that failed to load fail the validation as a whole: none of their rows is in PostgreSQL
    assert hostile.corpus.failed and runs[0]["passed"] is False
    shown = hostile.stderr.replace("\n", "")
    assert all(f"{f.path}: never loaded" in shown for f in hostile.corpus.failed), hostile.stderr[-3000:]


def test_the_corpus_covers_every_case(hostile):
    """The corpus itself: every flag staging knows is expected somewhere, every broken-file case is there."""
    corpus = hostile.corpus
    problems = {flag.split(":")[0] for row in corpus.memory_rows for flag in row.flags}
    assert problems == {"non_numeric_integer", "non_integer_number", "unparsable_timestamp", "null_timestamp",
                        "milliseconds_in_seconds_column", "seconds_in_milliseconds_column",
                        "json_rejected_by_postgres", "malformed_json", "invalid_compressed", "binary_value"}
    assert {row.data_type for row in corpus.memory_rows} == {"json", "text", "pickle", "binary", "unsupported_json"}
    binary_kinds = {("blob" if type(v) is bytes else "text") for row in corpus.memory_rows
                    for v in row.columns.values() if is_binary(v)}
    assert binary_kinds == {"blob", "text"}
    statuses = {f.path.name: f.status for f in corpus.files}
    assert statuses["corrupt.db"] == statuses["truncated.db"] == FAILED
    assert statuses["not-sqlite.db"] == statuses["memory.db-wal"] == WARNING
    assert sum(f.status == LOADED for f in corpus.files) == 8
