"""`consolidate validate` (loader/verify/) against a real PostgreSQL, after a real `consolidate run`.

Expected values are computed here from private copies of the SQLite files (Python's sqlite3) and the
documented rules, never taken from the loader's or the validator's output.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from psycopg.rows import dict_row

from loader.fixtures.claude_flow_v2 import V2_DDL
from loader.load.secret_policy import existing_policy
from loader.serve.client import MemoryClient
from loader.sources.snapshot import SQLITE_HEADER
from loader.verify.results import ValidationError
from loader.verify.rules import epoch_timestamp, normalized_value, text_timestamp
from loader.verify.validate import validate

from conftest import consolidate, read_private_copy, v2_file

EVERY_ROW = 100_000
BROKEN_JSON = '{"truncated": '


def run_ok(root: Path, target, home: Path, *options: str) -> None:
    result = consolidate("run", str(root), *options, target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


# ------------------------------------------------------------------------ independent expectations

def sqlite_main_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file() and path.read_bytes()[:16] == SQLITE_HEADER)


def identity(path: Path) -> tuple[str, str | None]:
    wal = path.with_name(path.name + "-wal")
    return (hashlib.sha256(path.read_bytes()).hexdigest(),
            hashlib.sha256(wal.read_bytes()).hexdigest() if wal.exists() else None)


def table_counts(path: Path, scratch: Path) -> dict[str, int]:
    names = [name for (name,) in read_private_copy(
        path, scratch, "SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE '%WITHOUT ROWID%'")]
    return {name: read_private_copy(path, scratch, f'SELECT count(*) FROM "{name}"')[0][0] for name in names}


MEMORY_TABLE_VALUES = {  # (table, value column, storage type column) of each memory layout
    "value": ("memory_entries", "value", None),
    "content": ("memory_entries", "content", None),
    "memory_store": ("memory_store", "value", "type"),
}
# Epoch-second columns of each memory layout (claude-flow v2's): a magnitude >= 1e11 there is milliseconds.
SECONDS_COLUMNS = {"value": ("created_at", "updated_at", "accessed_at", "expires_at")}


def memory_values(path: Path, scratch: Path) -> list[tuple[str | None, str | None, int]] | None:
    """Every memory value of the file as (text, storage type, 1 when a seconds column holds epoch
    milliseconds else 0), or None when it has no memory table."""
    tables = {name for (name,) in read_private_copy(path, scratch, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    columns = {row[1] for row in read_private_copy(path, scratch, "PRAGMA table_info(memory_entries)")}
    name = next((name for name in ("content", "value") if name in columns), None)
    if name is None and "memory_store" in tables:
        name = "memory_store"
    if name is None:
        return None
    table, value, storage = MEMORY_TABLE_VALUES[name]
    milliseconds = " OR ".join(f"abs({column}) >= 1e11" for column in SECONDS_COLUMNS.get(name, ())) or "0"
    return read_private_copy(path, scratch, f"SELECT {value}, {storage or 'NULL'}, {milliseconds} FROM {table}")


def flagged(text: str | None, storage_type: str | None, milliseconds_in_seconds: int) -> bool:
    """Whether staging flags the row, for the problems the sample holds: a JSON document or
    __compressed__ payload that does not parse, and epoch milliseconds in a v2 seconds column (the
    sample's deliberate trap). Its rows have no other problem (no text in INTEGER columns, no NULL
    timestamps, no BLOBs)."""
    return looks_like_failed_json(text, storage_type) or bool(milliseconds_in_seconds)


def looks_like_failed_json(text: str | None, storage_type: str | None) -> bool:
    if text is None or storage_type == "pickle" or not text.lstrip().startswith(("{", "[", '"', "__compressed__")):
        return False
    try:
        if text.startswith("__compressed__"):
            json.loads(base64.b64decode(text[len("__compressed__"):], validate=True))
        else:
            json.loads(text)
    except ValueError:
        return True
    return False


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def add_row(path: Path, statement: str, parameters=()) -> None:
    """Write to a database in place (our own copy: on purpose)."""
    connection = sqlite3.connect(path)
    try:
        connection.execute(statement, parameters)
        connection.commit()
    finally:
        connection.close()


def add_table_of_every_storage_class(path: Path) -> None:
    """An `other` database whose values are REAL, BLOB, INTEGER, TEXT and NULL, in typed and untyped columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    try:
        connection.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY, measured REAL, payload BLOB, anything)")
        connection.executemany("INSERT INTO readings (measured, payload, anything) VALUES (?, ?, ?)", [
            (0.1, b"bytes", 1e20), (1 / 3, "text in a blob column", 3.0), (123456789012345678.0, b"", None),
            (-0.0, None, "42"), (1754378470.5, b"{\"a\": 1}", 2**62)])
        connection.commit()
    finally:
        connection.close()


@pytest.fixture
def sample_tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    result = consolidate("sample", str(root))
    assert result.returncode == 0, result.stderr
    return root / "opt" / "sutazaiapp"


def stored_files(target, run_id: str) -> dict[str, dict]:
    with target.connect() as connection, connection.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute("SELECT * FROM consolidate.validation_files WHERE run_id = %s", [run_id]).fetchall()
    return {row["source_path"]: row for row in rows}


# ----------------------------------------------------------------------------------------- tests

def test_a_consolidated_sample_validates_and_the_results_are_queryable(sample_tree, target, home, tmp_path,
                                                                       monkeypatch):
    monkeypatch.delenv("CONSOLIDATE_SECRET_KEY", raising=False)
    broken = sample_tree / "mcp" / "claude-flow" / ".swarm" / "memory.db"
    add_row(broken, "INSERT INTO memory_entries (key, value, namespace) VALUES ('broken:1', ?, 'default')",
            [BROKEN_JSON])
    add_table_of_every_storage_class(sample_tree / "misc" / "readings.db")
    run_ok(sample_tree, target, home)
    (backup_dir,) = (home / "backups").iterdir()

    report = validate(target, sample_size=EVERY_ROW, seed=1, backup_dir=backup_dir,
                      secret_policy=existing_policy(home))

    assert report.passed, [(f.source_path, f.problems, f.mismatches[:3]) for f in report.files]
    by_path = {file.source_path: file for file in report.files}
    groups: dict[tuple, list[Path]] = {}
    for path in sqlite_main_files(sample_tree):
        groups.setdefault(identity(path), []).append(path)
    assert len(by_path) == len(groups)  # byte-identical copies are loaded (and validated) once
    for paths in groups.values():
        (path,) = [p for p in paths if str(p) in by_path]
        file = by_path[str(path)]
        counts = table_counts(path, tmp_path / "scratch")
        assert (file.rows_in_sqlite, file.rows_in_raw, file.spot_checked) == (sum(counts.values()),) * 3, path
        assert (file.checksum_status, file.backup_checksum_status) == ("unchanged", "matches"), path
        values = memory_values(path, tmp_path / "scratch")
        if values is None:
            assert (file.kept, file.superseded, file.moved, file.flagged) == (None,) * 4, path
        else:
            assert file.kept + file.superseded + file.moved == len(values), path
            assert file.flagged == sum(flagged(*value) for value in values), path
    assert by_path[str(broken)].flagged == 1
    assert by_path[str(sample_tree / "misc" / "readings.db")].kind == "other"

    stored = stored_files(target, report.run_id)
    assert set(stored) == set(by_path)
    assert all(row["passed"] and row["spot_mismatches"] == 0 and row["mismatch_details"] == [] for row in stored.values())
    assert {path: row["spot_checked"] for path, row in stored.items()} == {
        path: file.spot_checked for path, file in by_path.items()}
    with target.connect() as connection:
        run = connection.execute("SELECT passed, sample_size, seed FROM consolidate.validation_runs "
                                 "WHERE run_id = %s", [report.run_id]).fetchone()
    assert run == (True, EVERY_ROW, 1)

    # The backup's manifest no longer matching a file's loaded bytes fails that file only.
    manifest_path = backup_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    altered = next(entry for entry in manifest["files"] if entry["path"] == str(broken))
    altered["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    again = validate(target, sample_size=0, backup_dir=backup_dir)
    failed = [file for file in again.files if not file.passed]
    assert [(f.source_path, f.backup_checksum_status) for f in failed] == [(str(broken), "differs")]
    assert not again.passed

    # The backup's files themselves: one deleted, one with a byte flipped (each its manifest entry intact)
    # fail their files, named; a folder holding the manifest alone fails every file it lists.
    entries = [entry for entry in json.loads(manifest_path.read_text())["files"]
               if entry["status"] == "backed-up" and entry["path"] != str(broken)]
    deleted, flipped = entries[0], entries[1]
    (backup_dir / deleted["backup"]).unlink()
    damaged = bytearray((backup_dir / flipped["backup"]).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (backup_dir / flipped["backup"]).write_bytes(bytes(damaged))
    third = validate(target, sample_size=0, backup_dir=backup_dir)
    problems = {f.source_path: f.problems for f in third.files if not f.passed}
    assert set(problems) == {str(broken), deleted["path"], flipped["path"]}, problems
    assert any(f"{deleted['backup']}: missing" in problem for problem in problems[deleted["path"]])
    assert any(f"{flipped['backup']}: sha256" in problem for problem in problems[flipped["path"]])
    manifest_only = tmp_path / "manifest-only"
    manifest_only.mkdir()
    shutil.copyfile(manifest_path, manifest_only / "manifest.json")
    fourth = validate(target, sample_size=0, backup_dir=manifest_only)
    backed_up = {entry["path"] for entry in json.loads(manifest_path.read_text())["files"]
                 if entry["status"] == "backed-up"}
    assert {f.source_path for f in fourth.files if f.backup_checksum_status == "differs"} == backed_up
    assert not fourth.passed


def test_tampered_marts_and_raw_and_changed_or_missing_sources_are_named(sample_tree, target, home, tmp_path):
    run_ok(sample_tree, target, home, "--no-backup")
    memory_file = sample_tree / "mcp" / "ruv-swarm" / ".swarm" / "memory.db"
    n8n_file = sample_tree / "data" / "n8n" / "database.sqlite"
    flowise_file = sample_tree / "data" / "flowise" / "database.sqlite"
    changed_file = sample_tree / "mcp" / "task-master" / ".swarm" / "memory.db"
    missing_file = sample_tree / "mcp" / "claude-flow" / ".swarm" / "memory.db"

    # the shortest JSON value of the memory file whose row won (is in unified_memory), read from SQLite
    with target.connect() as connection:
        kept = {rowid for (rowid,) in connection.execute(
            "SELECT source_rowid FROM unified_memory WHERE source_path = %s", [str(memory_file)])}
    rows = read_private_copy(memory_file, tmp_path / "x", "SELECT rowid, value FROM memory_entries")
    tampered_rowid, original_value = min(((rowid, value) for rowid, value in rows if rowid in kept and is_json(value)),
                                         key=lambda row: len(row[1]))
    workflow_rowid, workflow_name = read_private_copy(
        n8n_file, tmp_path / "x", "SELECT rowid, name FROM workflow_entity ORDER BY rowid LIMIT 1")[0]
    (deleted_rowid,) = read_private_copy(flowise_file, tmp_path / "x", "SELECT min(rowid) FROM chat_message")[0]
    flowise_rows = sum(table_counts(flowise_file, tmp_path / "x").values())

    with target.connect() as connection:
        # DML on unified_memory is a write (the write path keeps it as a version): tamper past the
        # triggers, as a corruption would
        connection.execute("SET LOCAL session_replication_role = replica")
        connection.execute("UPDATE unified_memory SET value = '\"tampered\"' WHERE source_path = %s "
                           "AND source_rowid = %s", [str(memory_file), tampered_rowid])
        connection.execute("UPDATE raw_n8n.workflow_entity SET name = 'tampered' WHERE _source_path = %s "
                           "AND _source_rowid = %s", [str(n8n_file), workflow_rowid])
        connection.execute("DELETE FROM raw_flowise.chat_message WHERE _source_path = %s AND _source_rowid = %s",
                           [str(flowise_file), deleted_rowid])
    add_row(changed_file, "INSERT INTO memory_entries (key, value) VALUES ('added:after-load', '1')")
    missing_file.unlink()

    report = validate(target, sample_size=EVERY_ROW, seed=7)

    by_path = {file.source_path: file for file in report.files}
    memory = by_path[str(memory_file)]
    ((where, field, expected, actual),) = [(m.against, m.field, m.expected, m.actual) for m in memory.mismatches]
    assert (where, field, actual) == ("unified_memory", "value", '"tampered"')
    assert json.loads(expected) == json.loads(original_value)

    n8n = by_path[str(n8n_file)]
    assert [(m.source_table, m.source_rowid, m.field, m.expected, m.actual) for m in n8n.mismatches] == [
        ("workflow_entity", workflow_rowid, "name", json.dumps(workflow_name, ensure_ascii=False), '"tampered"')]

    flowise = by_path[str(flowise_file)]
    assert flowise.rows_in_raw == flowise_rows - 1
    assert [(m.source_table, m.source_rowid, m.field, m.actual) for m in flowise.mismatches] == [
        ("chat_message", deleted_rowid, "row", "0 rows")]
    assert any("chat_message" in problem for problem in flowise.problems)

    changed, missing = by_path[str(changed_file)], by_path[str(missing_file)]
    assert (changed.checksum_status, changed.spot_checked) == ("changed", 0)
    assert any("changed on disk since its load" in problem for problem in changed.problems)
    assert (missing.checksum_status, missing.spot_checked) == ("missing", 0)

    failed = {path for path, file in by_path.items() if not file.passed}
    assert failed == {str(memory_file), str(n8n_file), str(flowise_file), str(changed_file), str(missing_file)}
    assert not report.passed

    stored = stored_files(target, report.run_id)
    assert {path for path, row in stored.items() if not row["passed"]} == failed
    assert [(d["source_rowid"], d["against"], d["field"]) for d in stored[str(memory_file)]["mismatch_details"]] == [
        (tampered_rowid, "unified_memory", "value")]
    assert stored[str(changed_file)]["checksum_status"] == "changed"


def test_real_databases_validate_every_row_and_hashed_secrets_need_the_key(realdata, target, home, tmp_path,
                                                                           monkeypatch):
    monkeypatch.delenv("CONSOLIDATE_SECRET_KEY", raising=False)
    chosen = ["claude-flow/ChrisRoyse__myclaudeflowsetup/memory.db",  # rows only in the -wal
              "claude-flow/ApexSlayer43__apex-os/memory.db",  # claude-flow v3
              "claude-flow/Cornjebus__junie/memory.db",  # v2 with many performance metrics
              "flowise/Peeragogy__Peeragogy_ChatBot/database.sqlite"]  # hashed secrets
    root = tmp_path / "real"
    for relative in chosen:
        for suffix in ("", "-wal"):
            source = realdata / (relative + suffix)
            if source.exists():
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, root / (relative + suffix))
    run_ok(root, target, home, "--no-backup")
    policy = existing_policy(home)

    report = validate(target, sample_size=EVERY_ROW, seed=3, secret_policy=policy)

    assert report.passed, [(f.source_path, f.problems, f.mismatches[:3]) for f in report.files]
    assert sorted(file.source_path for file in report.files) == sorted(str(root / relative) for relative in chosen)
    for file in report.files:
        counts = table_counts(Path(file.source_path), tmp_path / "scratch")
        assert (file.rows_in_sqlite, file.rows_in_raw, file.spot_checked) == (sum(counts.values()),) * 3

    flowise = root / chosen[-1]
    (credential_rowid,) = read_private_copy(flowise, tmp_path / "x", "SELECT min(rowid) FROM credential")[0]
    with target.connect() as connection:
        connection.execute('UPDATE raw_flowise.credential SET "encryptedData" = %s WHERE _source_rowid = %s',
                           ["hmac-sha256:" + "0" * 64, credential_rowid])
    with_key = validate(target, sample_size=EVERY_ROW, seed=3, secret_policy=policy)
    without_key = validate(target, sample_size=EVERY_ROW, seed=3)
    (tampered,) = [f for f in with_key.files if not f.passed]
    assert [(m.source_table, m.source_rowid, m.field) for m in tampered.mismatches] == [
        ("credential", credential_rowid, "encryptedData")]
    assert without_key.passed  # the hash's shape is right; only the key can tell it is not the value's


def test_a_utf16_database_validates_its_blobs_as_their_bytes(tmp_path, target, home):
    """In a UTF-16 database a BLOB is loaded as its bytes; the spot check reads it so too (SQLite's CAST
    would read the bytes as UTF-16 text)."""
    path = tmp_path / "tree" / ".swarm" / "memory.db"
    path.parent.mkdir(parents=True)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA encoding = 'UTF-16le'")
    connection.executescript(V2_DDL)
    connection.execute("INSERT INTO memory_entries (key, value, updated_at) VALUES ('blob', x'00d800dc', 1754834448)")
    connection.execute("INSERT INTO memory_entries (key, value, updated_at) VALUES ('text', 'plain ü', 1754834448)")
    connection.commit()
    connection.close()
    assert read_private_copy(path, tmp_path / "x", "PRAGMA encoding") == [("UTF-16le",)]
    result = consolidate("run", str(tmp_path / "tree"), "--no-backup", "--json", target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (file,) = json.loads(result.stdout)["validation"]["files"]
    assert file["spot_checked"] == file["rows_in_sqlite"] >= 2 and file["mismatches"] == [] and file["passed"]


def test_validate_refuses_a_database_nothing_was_loaded_into(target):
    with pytest.raises(ValidationError, match="not found"):
        validate(target)


@pytest.mark.parametrize(("raw", "storage_type", "expected_json", "data_type"), [
    ('{"a": [1, 2]}', None, '{"a": [1, 2]}', "json"),
    ("42", None, "42", "json"),
    ('"42"', None, '"42"', "json"),
    (None, None, "null", "json"),
    ("hello world, not JSON", None, '"hello world, not JSON"', "text"),
    ("__compressed__eyJzZXNzaW9uSWQiOiJzMSJ9", None, '{"sessionId": "s1"}', "json"),
    ("__compressed__cGxhaW4=", None, '"__compressed__cGxhaW4="', "text"),
    ("__compressed__//79", None, '"__compressed__//79"', "text"),
    ('"\\u0000"', None, '"\\"\\\\u0000\\""', "unsupported_json"),
    ("1e1000000", None, '"1e1000000"', "unsupported_json"),
    ("NaN", None, '"NaN"', "unsupported_json"),
    ("12345678", "pickle", '"12345678"', "pickle"),
])
def test_value_rule_matches_the_documented_cases(raw, storage_type, expected_json, data_type):
    value, kind = normalized_value(raw, storage_type)
    assert (value, kind) == (json.loads(expected_json), data_type)


def as_datetime(epoch_seconds: Decimal | None) -> datetime | None:
    if epoch_seconds is None:
        return None
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(epoch_seconds * 1_000_000))


UTC = timezone.utc


@pytest.mark.parametrize(("text", "expected"), [
    ("1754378470", datetime(2025, 8, 5, 7, 21, 10, tzinfo=UTC)),
    ("1762578862860", datetime(2025, 11, 8, 5, 14, 22, 860000, tzinfo=UTC)),  # milliseconds by magnitude
    ("1754378470.5", datetime(2025, 8, 5, 7, 21, 10, 500000, tzinfo=UTC)),
    ("-1", datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("yesterday", None), ("100000000000000", None), ("", None)])
def test_epoch_rule_reads_seconds_and_milliseconds_by_magnitude(text, expected):
    assert as_datetime(epoch_timestamp(text)) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-08-01 20:01:03", datetime(2025, 8, 1, 20, 1, 3, tzinfo=UTC)),
    ("2025-08-01 20:01:03.449123", datetime(2025, 8, 1, 20, 1, 3, 449123, tzinfo=UTC)),
    ("2025-08-01T20:01:03.5", datetime(2025, 8, 1, 20, 1, 3, 500000, tzinfo=UTC)),
    ("2025-08-01 20:01:03+02:00", datetime(2025, 8, 1, 18, 1, 3, tzinfo=UTC)),
    ("2024-02-29 23:59:59", datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)),
    ("2025-02-31 10:00:00", None), ("2025-13-01 10:00:00", None), ("0000-01-01 00:00:00", None),
    ("garbage", None)])
def test_text_timestamps_are_naive_utc_and_impossible_dates_are_null(text, expected):
    assert as_datetime(text_timestamp(text)) == expected


def test_validate_says_when_writes_in_postgresql_came_after_the_counts_it_reports(tmp_path, target, home):
    """kept / superseded / moved come from the reconciliation mart, which builds count: a write in
    PostgreSQL that beats a file's row moves it from kept to superseded at once in the marts, and in those
    counts at the next build. validate names the files such writes touched since; the build recounts."""
    root = tmp_path / "tree"
    a = v2_file(root / "a" / "memory.db", [(f"k{n}", f'"a{n}"', "default", 1_750_000_000 + n) for n in range(4)])
    v2_file(root / "b" / "memory.db", [("other", '"b"', "default", 1_750_000_000)])
    assert consolidate("run", str(root), "--no-backup", target=target, home=home).returncode == 0
    rows_of_a = len(read_private_copy(a, tmp_path / "copy", "SELECT key FROM memory_entries"))

    def file_a(result) -> dict:
        (found,) = [f for f in json.loads(result.stdout)["files"] if f["source_path"] == str(a)]
        return found

    with MemoryClient(target.dsn) as client:
        client.set("k1", {"written": "in postgresql"})  # newer than a's row: a's row loses
        client.set("brand-new", 1)  # no file has a row of it
    checked = consolidate("validate", "--json", target=target, home=home)
    assert checked.returncode == 0, checked.stderr
    assert (file_a(checked)["kept"], file_a(checked)["written_since_counted"]) == (rows_of_a, 1)
    assert [f["written_since_counted"] for f in json.loads(checked.stdout)["files"] if f["source_path"] != str(a)] == [0]
    told = consolidate("validate", target=target, home=home)
    assert "`consolidate build` recounts" in " ".join(told.stderr.split()) and "a/memory.db" in told.stderr

    assert consolidate("build", target=target, home=home).returncode == 0
    recounted = consolidate("validate", "--json", target=target, home=home)
    assert (file_a(recounted)["kept"], file_a(recounted)["superseded"], file_a(recounted)["written_since_counted"]) \
        == (rows_of_a - 1, 1, 0)
    assert "recounts" not in consolidate("validate", target=target, home=home).stderr
