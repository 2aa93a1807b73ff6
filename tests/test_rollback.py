"""`consolidate rollback SOURCE --to FILE` on real claude-flow files (a v2 file with WAL-only rows and a v3
file), against a real PostgreSQL: after `run` and writes made in PostgreSQL through MemoryClient (a set
of an existing key, a new key tied to SOURCE, a delete), the rollback file has SOURCE's schema and
pragmas, SOURCE's untouched rows byte for byte (types included), PostgreSQL's changes, and consolidates
back to the entries PostgreSQL had. Expectations come from sqlite3 reads of private copies of SOURCE and
plain SQL on the marts, never from the rollback code; SOURCE's bytes never change."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from loader.database import Target
from loader.fixtures.claude_flow_v3 import V3_DDL
from loader.fixtures.extended_memory import EXTENDED_MEMORY_DDL
from loader.pipeline import run, sync
from loader.serve.client import MemoryClient

from conftest import change, consolidate, fetch, fresh_database, numbered_v2_file, read_private_copy

V2 = "claude-flow/ChrisRoyse__myclaudeflowsetup"  # memory.db with rows only in its -wal
V3 = "claude-flow/ApexSlayer43__apex-os"  # memory.db of the v3 schema, with vector_indexes and metadata
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
UNITS = {"v2": timedelta(seconds=1), "v3": timedelta(milliseconds=1)}  # epoch seconds, milliseconds
PRAGMAS = ("user_version", "page_size", "journal_mode", "auto_vacuum", "encoding", "application_id")


def sha256_of_folder(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def opened_copy(source: Path, folder: Path, with_side_files: bool = True) -> sqlite3.Connection:
    """A sqlite3 connection to a private copy of `source` (with its -wal / -journal unless told not to)."""
    folder.mkdir(parents=True)
    shutil.copyfile(source, folder / source.name)
    for suffix in ("-wal", "-journal") if with_side_files else ():
        side = source.with_name(source.name + suffix)
        if side.exists():
            shutil.copyfile(side, folder / side.name)
    return sqlite3.connect(folder / source.name)


def typed_rows(connection: sqlite3.Connection, table: str) -> dict[int, dict[str, tuple]]:
    """rowid -> column -> (typeof, value): every value and its storage class, exactly."""
    columns = [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]
    selected = ", ".join(f'typeof("{c}"), "{c}"' for c in columns)
    return {row[0]: dict(zip(columns, zip(row[1::2], row[2::2])))
            for row in connection.execute(f'SELECT rowid, {selected} FROM "{table}"')}


def entry_of(row: dict[str, tuple]) -> tuple[str, str]:
    """(namespace, key) of a memory_entries row, as staging names it."""
    return (row["namespace"][1] or "default", row["key"][1])


def floor_epoch(moment: datetime | None, unit: timedelta) -> int | None:
    return None if moment is None else (moment - EPOCH) // unit


def schema_of(connection: sqlite3.Connection) -> tuple[set, dict]:
    objects = set(connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
    return objects, {p: connection.execute(f"PRAGMA {p}").fetchone()[0] for p in PRAGMAS}


def postgres_rows(target: Target, query: str, parameters=()) -> list[dict]:
    with target.connect() as connection:
        cursor = connection.execute(query, parameters)
        return [dict(zip([c.name for c in cursor.description], row)) for row in cursor]


def jsonb_text(target: Target, value) -> str:
    """How PostgreSQL's jsonb spells a value (the rollback writes JSON values as the marts hold them)."""
    with target.connect() as connection:
        return connection.execute("SELECT %s::jsonb::text", (json.dumps(value),)).fetchone()[0]


ENTRIES = """
SELECT key, namespace, value, data_type, metadata, created_at, updated_at, accessed_at, expires_at,
       access_count, ttl
FROM (SELECT key, namespace, value, data_type, metadata, created_at, updated_at, accessed_at, expires_at,
             access_count, ttl FROM unified_memory
      UNION ALL
      SELECT m.key, m.namespace, m.metric_data, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
      FROM performance_metrics AS m) AS entries
"""


@pytest.fixture(scope="module")
def migrated(realdata, server_dsn, tmp_path_factory):
    """Private copies of a v2 and a v3 file consolidated by `consolidate run`, then written to through
    MemoryClient: per file a set of an existing key, a new key with source=SOURCE, and a delete."""
    folder = tmp_path_factory.mktemp("rollback")
    tree = folder / "tree"
    sources = {}
    for name, label in ((V2, "v2"), (V3, "v3")):
        shutil.copytree(realdata / name, tree / label)
        for path in (tree / label).iterdir():
            path.chmod(0o644)
            if path.name not in ("memory.db", "memory.db-wal", "memory.db-shm"):
                path.unlink()
        sources[label] = tree / label / "memory.db"
    # a v3 file whose memory_entries is empty (its other tables are not): only what its service creates
    (tree / "v3-empty").mkdir()
    shutil.copyfile(realdata / V3 / "claude_memory.db", tree / "v3-empty/claude_memory.db")
    sources["v3-empty"] = tree / "v3-empty/claude_memory.db"
    checksums = {label: sha256_of_folder(path.parent) for label, path in sources.items()}
    with fresh_database(server_dsn) as target:
        result = consolidate("run", str(tree), "--no-backup", target=target, home=folder / "state")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

        # what each file holds, read from private copies (the WAL-only rows of v2 too)
        v2_all = typed_rows(opened_copy(sources["v2"], folder / "v2-all"), "memory_entries")
        v2_main = typed_rows(opened_copy(sources["v2"], folder / "v2-main", with_side_files=False), "memory_entries")
        wal_only = sorted(set(v2_all) - set(v2_main))
        assert len(wal_only) >= 3, "the v2 file has rows only in its -wal"
        v3_all = typed_rows(opened_copy(sources["v3"], folder / "v3-all"), "memory_entries")
        v3_ids = sorted(v3_all)

        writes = {
            "v2": {"set": entry_of(v2_all[wal_only[0]]), "delete": entry_of(v2_all[wal_only[1]]),
                   "new": ("rollback-test", "created-in-postgresql-v2")},
            "v3": {"set": entry_of(v3_all[v3_ids[0]]), "delete": entry_of(v3_all[v3_ids[1]]),
                   "new": ("rollback-test", "created-in-postgresql-v3")},
        }
        values = {"v2": ("text written in PostgreSQL", {"written": "in postgresql", "n": [1, 2.5]}),
                  "v3": ({"content": "changed", "ok": True}, "a new v3 entry")}
        for label in ("v2", "v3"):
            source = sources[label]
            changed_value, new_value = values[label]
            with MemoryClient(target.dsn, track_access=False, source=str(source)) as memory:
                namespace, key = writes[label]["set"]
                memory.set(key, changed_value, namespace=namespace)
                namespace, key = writes[label]["new"]
                memory.set(key, new_value, namespace=namespace, metadata={"from": "test"})
                namespace, key = writes[label]["delete"]
                assert memory.delete(key, namespace=namespace)
        with MemoryClient(target.dsn, track_access=False, source=str(sources["v3-empty"])) as memory:
            memory.set("created-for-an-empty-file", ["a", "list"], namespace="rollback-test")
        yield {"target": target, "folder": folder, "sources": sources, "checksums": checksums,
               "writes": writes, "values": values, "rows": {"v2": v2_all, "v3": v3_all}, "wal_only": wal_only}


def rollback_file(migrated, label: str) -> tuple[Path, dict]:
    """The rollback of `label`'s source, written once by the CLI; and its JSON report."""
    cache = migrated.setdefault("rollbacks", {})
    if label not in cache:
        destination = migrated["folder"] / f"rollback-{label}" / "memory.db"
        destination.parent.mkdir()
        result = consolidate("rollback", str(migrated["sources"][label]), "--to", str(destination), "--json",
                             target=migrated["target"], home=migrated["folder"] / "state")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        cache[label] = destination, json.loads(result.stdout)
        assert cache[label][1]["exit_code"] == 0
    return cache[label]


@pytest.mark.parametrize("label", ["v2", "v3"])
def test_rollback_keeps_the_schema_and_every_untouched_row_byte_for_byte(migrated, label):
    destination, report = rollback_file(migrated, label)
    source = migrated["sources"][label]
    scratch = migrated["folder"] / f"check-{label}"
    original = opened_copy(source, scratch / "source")
    written = opened_copy(destination, scratch / "rollback")

    assert written.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert schema_of(written) == schema_of(original)
    assert not destination.with_name(destination.name + "-wal").exists()

    writes = migrated["writes"][label]
    touched = {writes["set"], writes["delete"]}
    tables = [name for (name,) in original.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        before, after = typed_rows(original, table), typed_rows(written, table)
        if table == "memory_entries":
            before = {rowid: row for rowid, row in before.items() if entry_of(row) not in touched}
            after = {rowid: row for rowid, row in after.items() if entry_of(row) not in touched | {writes["new"]}}
        elif table == "sqlite_sequence" and label == "v2":
            continue  # the new v2 row moves it on: checked by the next test
        assert after == before, table
    if label == "v2":  # the WAL-only rows PostgreSQL did not change are there, as they were
        assert all(typed_rows(written, "memory_entries")[rowid] == migrated["rows"]["v2"][rowid]
                   for rowid in migrated["wal_only"][2:])
    assert migrated["checksums"][label] == sha256_of_folder(source.parent)
    assert report["unchanged"] == len(migrated["rows"][label]) - 2


SCHEMA_IN_ORDER = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid"


@pytest.mark.parametrize("label", ["v2", "v3", "v3-empty"])
def test_rollback_creates_the_schema_objects_in_the_source_order(migrated, label):
    """sqlite_master lists the objects as the source does (so `sqlite3 .schema` prints the same): the v3
    file's indexes after their own table, not after every table."""
    destination, _ = rollback_file(migrated, label)
    scratch = migrated["folder"] / f"order-{label}"
    original = opened_copy(migrated["sources"][label], scratch / "source").execute(SCHEMA_IN_ORDER).fetchall()
    written = opened_copy(destination, scratch / "rollback").execute(SCHEMA_IN_ORDER).fetchall()
    assert written == original
    if label == "v3":  # a file whose order is not every table first
        types = [row[0] for row in original]
        assert types.index("index") < len(types) - 1 - types[::-1].index("table")


@pytest.mark.parametrize("label", ["v2", "v3"])
def test_rollback_holds_postgresql_changes_new_entries_and_deletes(migrated, label):
    destination, report = rollback_file(migrated, label)
    target, writes = migrated["target"], migrated["writes"][label]
    changed_value, new_value = migrated["values"][label]
    written = opened_copy(destination, migrated["folder"] / f"changes-{label}")
    value_column = {"v2": "value", "v3": "content"}[label]
    unit = UNITS[label]

    def row_of(namespace, key):
        found = written.execute('SELECT rowid AS source_rowid, * FROM memory_entries WHERE namespace = ? AND key = ?',
                                (namespace, key))
        names = [c[0] for c in found.description]
        rows = [dict(zip(names, row)) for row in found]
        assert len(rows) <= 1
        return rows[0] if rows else None

    def expected_text(value):
        return value if isinstance(value, str) else jsonb_text(target, value)

    def marts_row(namespace, key):
        return postgres_rows(target, "SELECT * FROM unified_memory WHERE namespace = %s AND key = %s",
                             (namespace, key))[0]

    # the key set in PostgreSQL: its own row (same rowid and id), PostgreSQL's value and updated_at, the
    # columns PostgreSQL does not hold (v3's embedding) as they were
    namespace, key = writes["set"]
    original = migrated["rows"][label]
    rowid = next(r for r, row in original.items() if entry_of(row) == (namespace, key))
    changed = row_of(namespace, key)
    pg = marts_row(namespace, key)
    assert changed["source_rowid"] == rowid and changed["id"] == original[rowid]["id"][1]
    assert changed[value_column] == expected_text(changed_value)
    assert changed["updated_at"] == floor_epoch(pg["updated_at"], unit) > original[rowid]["updated_at"][1]
    assert changed["created_at"] == original[rowid]["created_at"][1] == floor_epoch(pg["created_at"], unit)
    if label == "v3":
        assert changed["embedding"] == original[rowid]["embedding"][1]
    # the new key tied to the file: a new row
    namespace, key = writes["new"]
    created = row_of(namespace, key)
    pg = marts_row(namespace, key)
    assert created is not None and created[value_column] == expected_text(new_value)
    assert json.loads(created["metadata"]) == {"from": "test"}
    assert created["updated_at"] == floor_epoch(pg["updated_at"], unit)
    if label == "v2":  # the next id after every id the file ever gave (AUTOINCREMENT's sqlite_sequence)
        sequence = opened_copy(migrated["sources"]["v2"], migrated["folder"] / "sequence").execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'memory_entries'").fetchone()[0]
        assert created["id"] == sequence + 1
        assert written.execute("SELECT seq FROM sqlite_sequence").fetchall() == [(sequence + 1,)]
    else:
        assert created["id"] == f"unified-{pg['id']}"
    # the deleted key: gone
    assert row_of(*writes["delete"]) is None
    assert sorted((e["namespace"], e["key"]) for e in report["changed"]) == [writes["set"]]
    assert [e["value_from"] for e in report["changed"]] == ["postgresql"]
    assert sorted((e["namespace"], e["key"]) for e in report["created"]) == [writes["new"]]
    assert sorted((e["namespace"], e["key"]) for e in report["deleted"]) == [writes["delete"]]


@pytest.mark.parametrize("label", ["v2", "v3"])
def test_consolidating_the_rollback_file_gives_postgresql_entries(migrated, label, server_dsn, tmp_path):
    destination, _ = rollback_file(migrated, label)
    source = str(migrated["sources"][label])
    target = migrated["target"]
    unit = UNITS[label]
    home_entries = postgres_rows(target, f"""
        SELECT e.* FROM ({ENTRIES}) AS e
        WHERE (e.namespace, e.key) IN (
            SELECT namespace, key FROM unified_memory WHERE source_path = %(source)s
            UNION SELECT namespace, key FROM performance_metrics WHERE source_path = %(source)s
            UNION SELECT namespace, key FROM raw_postgres.memory_writes WHERE home_source_path = %(source)s)
    """, {"source": source})
    assert len(home_entries) == len(migrated["rows"][label])  # one deleted, one created
    folder = tmp_path / "alone"
    folder.mkdir()
    shutil.copyfile(destination, folder / "memory.db")
    with fresh_database(server_dsn) as fresh:
        result = consolidate("run", str(folder), "--no-backup", target=fresh, home=tmp_path / "state")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        again = postgres_rows(fresh, ENTRIES)

    def comparable(entry: dict) -> tuple:
        metadata = entry["metadata"]
        if isinstance(metadata, dict):
            metadata = {k: v for k, v in metadata.items() if k != "claude_flow_v3"}
        times = tuple(floor_epoch(entry[c], unit) for c in ("created_at", "updated_at", "accessed_at", "expires_at"))
        return (entry["namespace"], entry["key"], json.dumps(entry["value"], sort_keys=True), entry["data_type"],
                json.dumps(metadata, sort_keys=True), times, entry["access_count"], entry["ttl"])

    assert sorted(map(comparable, again)) == sorted(map(comparable, home_entries))
    assert migrated["writes"][label]["delete"] not in {(e["namespace"], e["key"]) for e in again}


def test_rollback_never_replaces_a_file_without_overwrite(migrated, tmp_path):
    existing = tmp_path / "existing.db"
    existing.write_bytes(b"not to be replaced")
    arguments = ("rollback", str(migrated["sources"]["v2"]), "--to", str(existing))
    refused = consolidate(*arguments, target=migrated["target"], home=migrated["folder"] / "state")
    assert refused.returncode == 2 and "exists" in refused.stderr
    assert existing.read_bytes() == b"not to be replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.db"]
    replaced = consolidate(*arguments, "--overwrite", target=migrated["target"], home=migrated["folder"] / "state")
    assert replaced.returncode == 0, replaced.stderr
    assert existing.read_bytes().startswith(b"SQLite format 3\x00")
    onto_source = consolidate("rollback", str(migrated["sources"]["v2"]), "--to", str(migrated["sources"]["v2"]),
                              "--overwrite", target=migrated["target"], home=migrated["folder"] / "state")
    assert onto_source.returncode == 2
    assert migrated["checksums"]["v2"] == sha256_of_folder(migrated["sources"]["v2"].parent)
    # nor another source the ledger loads, even with --overwrite, nor a folder
    onto_other = consolidate("rollback", str(migrated["sources"]["v2"]), "--to", str(migrated["sources"]["v3"]),
                             "--overwrite", "--json", target=migrated["target"], home=migrated["folder"] / "state")
    assert onto_other.returncode == 2 and "never replaces one" in onto_other.stderr, onto_other.stderr[-2000:]
    assert json.loads(onto_other.stdout)["exit_code"] == 2
    assert "Traceback" not in onto_other.stderr
    assert migrated["checksums"]["v3"] == sha256_of_folder(migrated["sources"]["v3"].parent)
    onto_folder = consolidate("rollback", str(migrated["sources"]["v2"]), "--to", str(tmp_path), "--overwrite",
                              target=migrated["target"], home=migrated["folder"] / "state")
    assert onto_folder.returncode == 2 and "is a folder" in onto_folder.stderr, onto_folder.stderr[-2000:]
    assert "Traceback" not in onto_folder.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.db"]
    # a link to nothing: named as such; --overwrite replaces the link, never writes where it pointed
    dangling = tmp_path / "dangling.db"
    dangling.symlink_to(tmp_path / "nowhere" / "gone.db")
    arguments = ("rollback", str(migrated["sources"]["v2"]), "--to", str(dangling))
    onto_link = consolidate(*arguments, target=migrated["target"], home=migrated["folder"] / "state")
    assert onto_link.returncode == 2 and "does not exist" in onto_link.stderr, onto_link.stderr[-2000:]
    assert dangling.is_symlink()
    over_link = consolidate(*arguments, "--overwrite", target=migrated["target"], home=migrated["folder"] / "state")
    assert over_link.returncode == 0, over_link.stderr[-2000:]
    assert not dangling.is_symlink() and dangling.read_bytes().startswith(b"SQLite format 3\x00")
    assert not (tmp_path / "nowhere").exists()


def test_rollback_of_an_extended_memory_file(consolidated, tmp_path):
    """The sample's extended_memory.db (naive UTC text times, a `type` per value, no namespace column)."""
    target = consolidated
    (source,) = [Path(path) for (path,) in fetch(
        target, "SELECT source_path FROM consolidate.current_loads WHERE kind = 'extended-memory'")]
    before = sha256_of_folder(source.parent)
    original = opened_copy(source, tmp_path / "source")
    rows = typed_rows(original, "memory_store")
    by_key = {row["key"][1]: rowid for rowid, row in rows.items()}
    changed_key = next(key for key, rowid in by_key.items() if rows[rowid]["type"][1] == "int")
    deleted_key = next(key for key, rowid in by_key.items() if rows[rowid]["type"][1] == "pickle")
    with MemoryClient(target.dsn, track_access=False, source=source) as memory:
        memory.set(changed_key, "now a string", namespace="extended-memory")
        memory.set("rollback:new", {"a": [1, 2]}, namespace="extended-memory")
        memory.set("rollback:elsewhere", 1, namespace="not-extended-memory")
        memory.set("rollback:expiring", "soon", namespace="extended-memory", ttl=3600)
        memory.set("rollback:described", 7, namespace="extended-memory", metadata={"owner": "me"})
        assert memory.delete(deleted_key, namespace="extended-memory")
    destination = tmp_path / "rolled-back.db"

    result = consolidate("rollback", str(source), "--to", str(destination), "--json", target=target)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    written = opened_copy(destination, tmp_path / "rollback")
    assert written.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert schema_of(written) == schema_of(original)
    assert typed_rows(written, "metadata") == typed_rows(original, "metadata")
    after = typed_rows(written, "memory_store")
    new_keys = (changed_key, "rollback:new", "rollback:expiring", "rollback:described")
    assert {r: row for r, row in after.items() if row["key"][1] not in new_keys} == \
        {r: row for r, row in rows.items() if row["key"][1] not in (changed_key, deleted_key)}
    pg = {key: postgres_rows(target, "SELECT * FROM unified_memory WHERE namespace = 'extended-memory' AND key = %s",
                             (key,))[0] for key in (changed_key, "rollback:new")}

    def naive_utc(moment: datetime) -> str:
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")

    changed = next(row for row in after.values() if row["key"][1] == changed_key)
    own = rows[by_key[changed_key]]
    # JSON text, as the application stores a str (and compat_extended_memory.memory_store gives it)
    assert changed["value"] == ("text", '"now a string"') and changed["type"] == ("text", "str")
    assert changed["updated_at"] == ("text", naive_utc(pg[changed_key]["updated_at"]))
    assert changed["created_at"] == own["created_at"]  # the same instant: the row's own text stays
    created = next(row for row in after.values() if row["key"][1] == "rollback:new")
    assert created["value"] == ("text", jsonb_text(target, {"a": [1, 2]})) and created["type"] == ("text", "dict")
    assert created["created_at"] == ("text", naive_utc(pg["rollback:new"]["created_at"]))
    assert report["skipped"] == [{"namespace": "not-extended-memory", "key": "rollback:elsewhere",
                                  "reason": report["skipped"][0]["reason"]}]
    assert [e["key"] for e in report["deleted"]] == [deleted_key]
    # what memory_store has no column for is named, not dropped silently (the entries themselves are written)
    assert report["fields_not_written"] == [
        {"namespace": "extended-memory", "key": "rollback:described", "fields": ["metadata"]},
        {"namespace": "extended-memory", "key": "rollback:expiring", "fields": ["expires_at"]}]
    assert {row["key"][1] for row in after.values()} >= {"rollback:expiring", "rollback:described"}
    assert sha256_of_folder(source.parent) == before


EXTENDED_MEMORY = "opt/sutazaiapp/data/mcp/extended-memory/extended_memory.db"


def test_extended_memory_types_and_values_agree_between_the_view_and_the_rollback(tmp_path, target, home):
    """extended-memory's `type` names the Python type of the value (none, str, int, float, bool, dict,
    list, pickle): after writes made in PostgreSQL, compat_extended_memory.memory_store shows the type of
    the value now held (not the file row's stale one, never a data_type such as `json`) and the value as
    JSON text, and the rollback file holds the same type and the same value text as the view, a non-JSON
    text written through the view included."""
    tree = tmp_path / "tree"
    assert consolidate("sample", str(tree)).returncode == 0
    built = consolidate("run", str(tree), "--no-backup", target=target, home=home)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    source = tree / EXTENDED_MEMORY
    rows = typed_rows(opened_copy(source, tmp_path / "source"), "memory_store")
    none_key = min(row["key"][1] for row in rows.values() if row["type"][1] == "none")
    str_key = min(row["key"][1] for row in rows.values() if row["type"][1] == "str")
    assert next(row for row in rows.values() if row["key"][1] == none_key)["value"] == ("text", "null")
    # the Python type of each value written: what the extended-memory application would have stored
    expected = {none_key: "dict", "types:new-list": "list", "types:new-int": "int", "types:new-float": "float",
                "types:new-str": "str", str_key: "str"}
    with MemoryClient(target.dsn, track_access=False, source=source) as memory:
        memory.set(none_key, {"changed": True}, "extended-memory")
        memory.set("types:new-list", [1, 2, 3], "extended-memory")
        memory.set("types:new-int", 42, "extended-memory")
        memory.set("types:new-float", 2.5, "extended-memory")
        memory.set("types:new-str", "plain words", "extended-memory")
    with psycopg.connect(target.dsn, autocommit=True) as connection:
        assert connection.execute("UPDATE compat_extended_memory.memory_store SET value = 'hello3' WHERE key = %s",
                                  (str_key,)).rowcount == 1

    view = {key: (value, kind) for key, value, kind in fetch(
        target, "SELECT key, value, type FROM compat_extended_memory.memory_store WHERE key = ANY(%s)",
        (list(expected),))}
    assert {key: kind for key, (_, kind) in view.items()} == expected
    # a str as the application stores it: JSON text, a non-JSON text written through the view too
    assert view[str_key] == ('"hello3"', "str") and view["types:new-str"] == ('"plain words"', "str")
    assert json.loads(view[none_key][0]) == {"changed": True} and json.loads(view["types:new-float"][0]) == 2.5

    destination = tmp_path / "rollback" / "extended_memory.db"
    destination.parent.mkdir()
    result = consolidate("rollback", str(source), "--to", str(destination), "--json", target=target, home=home)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert sorted(e["key"] for e in report["changed"]) == sorted([none_key, str_key])
    assert sorted(e["key"] for e in report["created"]) == sorted(set(expected) - {none_key, str_key})
    written = {row["key"][1]: row for row in typed_rows(opened_copy(destination, tmp_path / "written"),
                                                        "memory_store").values()}
    for key, (value, kind) in view.items():
        assert (written[key]["value"], written[key]["type"]) == (("text", value), ("text", kind)), key


def test_rollback_of_a_v3_file_without_memory_rows_holds_what_its_service_created(migrated):
    destination, report = rollback_file(migrated, "v3-empty")
    source = migrated["sources"]["v3-empty"]
    original = opened_copy(source, migrated["folder"] / "empty-source")
    written = opened_copy(destination, migrated["folder"] / "empty-rollback")
    assert written.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert schema_of(written) == schema_of(original)
    tables = [name for (name,) in original.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert "vector_indexes" in tables and typed_rows(original, "vector_indexes")
    for table in tables:
        if table != "memory_entries":
            assert typed_rows(written, table) == typed_rows(original, table), table
    assert typed_rows(original, "memory_entries") == {}
    (pg,) = postgres_rows(migrated["target"], "SELECT id, updated_at FROM unified_memory WHERE key = %s",
                          ("created-for-an-empty-file",))
    (row,) = written.execute("SELECT id, key, namespace, content, type, status, updated_at FROM memory_entries")
    assert row == (f"unified-{pg['id']}", "created-for-an-empty-file", "rollback-test",
                   jsonb_text(migrated["target"], ["a", "list"]), "semantic", "active",
                   floor_epoch(pg["updated_at"], UNITS["v3"]))
    assert (report["unchanged"], len(report["created"])) == (0, 1)
    assert migrated["checksums"]["v3-empty"] == sha256_of_folder(source.parent)


def test_rollback_after_a_row_level_change_load_gives_back_every_entry(tmp_path, target, home):
    """A sync after a row, an entry deleted and an entry inserted in SQLite makes a row-level change load
    (it stores only the changed rows; the others stay current in the first load): the rollback still
    holds every entry of the file, the untouched rows byte for byte, and PostgreSQL's writes to entries
    whose rows are in the first load."""
    root = tmp_path / "tree"
    db = numbered_v2_file(root / "app/.swarm/memory.db", 30)
    first = run([root], target, home, backup_to=None, quiet=True)
    change(db, ("UPDATE memory_entries SET value = '\"changed in sqlite\"', updated_at = updated_at + 100 "
                "WHERE key = 'key-7'",),
           ("DELETE FROM memory_entries WHERE key = 'key-8'",),
           ("INSERT INTO memory_entries (key, value, namespace, created_at, updated_at) "
            "VALUES ('new in sqlite', '1', 'default', 1750000999, 1750000999)",))
    synced = sync([root], target, home, quiet=True)
    assert synced.build.success, synced.build.failures
    assert fetch(target, "SELECT delta_of FROM consolidate.load_files WHERE load_id = %s",
                 (synced.load_id,)) == [(first.loaded.load_id,)]
    with MemoryClient(target.dsn, track_access=False, source=str(db)) as memory:
        memory.set("key-3", "set in PostgreSQL")  # both rows stayed current in the first load
        assert memory.delete("key-4")
    with psycopg.connect(target.dsn, autocommit=True) as connection:
        # a write made in PostgreSQL that says what the row says: the same value, and a time raised to one
        # microsecond after the row's, the same epoch second
        connection.execute("UPDATE compat.memory_entries SET updated_at = updated_at - 1 "
                           "WHERE key = 'key-6' AND namespace = 'default'")
    assert fetch(target, "SELECT count(*) FROM raw_postgres.memory_writes WHERE key = 'key-6'") == [(1,)]
    original = typed_rows(opened_copy(db, tmp_path / "source"), "memory_entries")
    assert {entry_of(row) for row in original.values()} >= {("default", "key-7"), ("default", "new in sqlite")}
    destination = tmp_path / "rollback" / "memory.db"
    destination.parent.mkdir()

    result = consolidate("rollback", str(db), "--to", str(destination), "--json", target=target, home=home)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    written = typed_rows(opened_copy(destination, tmp_path / "written"), "memory_entries")
    touched = {("default", "key-3"), ("default", "key-4")}
    assert {r: row for r, row in written.items() if entry_of(row) not in touched} == \
        {r: row for r, row in original.items() if entry_of(row) not in touched}
    (changed,) = [row for row in written.values() if entry_of(row) == ("default", "key-3")]
    assert changed["value"] == ("text", "set in PostgreSQL")
    assert ("default", "key-4") not in {entry_of(row) for row in written.values()}
    # key-6's row is byte for byte the source's (above), so it counts as unchanged, not changed
    assert [(e["namespace"], e["key"]) for e in report["changed"]] == [("default", "key-3")]
    assert [(e["namespace"], e["key"]) for e in report["deleted"]] == [("default", "key-4")]
    assert (report["created"], report["unchanged"]) == ([], len(original) - 2)

    # a change load that only deletes stores no row: before the build that follows it, the marts still
    # rank the deleted row, and the rollback is refused
    change(db, ("DELETE FROM memory_entries WHERE key = 'key-9'",))
    deleting = sync([root], target, home, quiet=True, build=False)
    assert fetch(target, "SELECT rows_loaded - rows_unchanged FROM consolidate.load_tables WHERE load_id = %s "
                         "AND source_table = 'memory_entries'", (deleting.load_id,)) == [(0,)]
    refused = consolidate("rollback", str(db), "--to", str(tmp_path / "stale.db"), target=target, home=home)
    assert refused.returncode == 5 and "do not hold its current load" in " ".join(refused.stderr.split())
    assert not (tmp_path / "stale.db").exists()


def test_rollback_writes_rows_before_the_triggers_that_follow_their_table_in_the_source_order(tmp_path, target, home):
    """A file whose memory table has triggers, followed by more tables, an index, sqlite_stat1 and a view
    (the order of a file its application's migrations grew): the rollback lists every object in the
    source's order, and writes each table's rows before the triggers that follow it exist: PostgreSQL's
    change and new entry fire none of them (the audit table is the source's), the other tables' rows and
    statistics are the source's, and sqlite_sequence is the source's but for the new row's id."""
    db = numbered_v2_file(tmp_path / "tree/app/.swarm/memory.db", 8)
    change(db, ("CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, note TEXT)",),
           ("INSERT INTO audit (note) VALUES ('one'), ('two')",),
           ("CREATE TRIGGER memory_updated AFTER UPDATE ON memory_entries "
            "BEGIN INSERT INTO audit (note) VALUES ('updated ' || NEW.key); END",),
           ("CREATE TRIGGER memory_inserted AFTER INSERT ON memory_entries "
            "BEGIN INSERT INTO audit (note) VALUES ('inserted ' || NEW.key); END",),
           ("CREATE TABLE later (x TEXT, y INTEGER)",),
           ("INSERT INTO later VALUES ('a', 1), ('b', 2), ('c', 3)",),
           ("CREATE INDEX later_x ON later (x)",),
           ("ANALYZE",),
           ("CREATE VIEW memory_keys AS SELECT key FROM memory_entries",),
           ("CREATE TABLE last_table (z)",),
           ("INSERT INTO last_table VALUES (zeroblob(3))",))
    run([tmp_path / "tree"], target, home, backup_to=None, quiet=True)
    with MemoryClient(target.dsn, track_access=False, source=str(db)) as memory:
        memory.set("key-1", "set in PostgreSQL")
        memory.set("new in PostgreSQL", {"n": 1})
    destination = tmp_path / "rollback" / "memory.db"
    destination.parent.mkdir()

    result = consolidate("rollback", str(db), "--to", str(destination), "--json", target=target, home=home)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    original = opened_copy(db, tmp_path / "source")
    written = opened_copy(destination, tmp_path / "written")
    schema = original.execute(SCHEMA_IN_ORDER).fetchall()
    assert [row[1] for row in schema if row[0] != "index"] == [
        "memory_entries", "sqlite_sequence", "audit", "memory_updated", "memory_inserted", "later", "sqlite_stat1",
        "memory_keys", "last_table"]  # the scenario's own order
    assert written.execute(SCHEMA_IN_ORDER).fetchall() == schema
    for table in ("audit", "later", "sqlite_stat1", "last_table"):
        assert typed_rows(written, table) == typed_rows(original, table), table
    sequence = dict(original.execute("SELECT name, seq FROM sqlite_sequence"))
    assert typed_rows(written, "sqlite_sequence").keys() == typed_rows(original, "sqlite_sequence").keys()
    assert dict(written.execute("SELECT name, seq FROM sqlite_sequence")) == \
        {**sequence, "memory_entries": sequence["memory_entries"] + 1}
    assert written.execute("SELECT value FROM memory_entries WHERE key = 'key-1'").fetchall() == [("set in PostgreSQL",)]
    assert written.execute("SELECT id FROM memory_entries WHERE key = 'new in PostgreSQL'").fetchall() == \
        [(sequence["memory_entries"] + 1,)]
    assert written.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_client_is_tied_to_its_file_by_the_real_path_and_never_to_an_unknown_one(tmp_path, target, home):
    """`source=` through a symbolic link ties the entries to the file the ledger knows (its real path), so
    the rollback holds them; a path the ledger never loaded is refused before anything is written."""
    root = tmp_path / "tree"
    db = numbered_v2_file(root / "app/.swarm/memory.db", 5)
    run([root], target, home, backup_to=None, quiet=True)
    (tmp_path / "link").symlink_to(root)
    linked = tmp_path / "link" / "app/.swarm/memory.db"

    with MemoryClient(target.dsn, track_access=False, source=str(linked)) as memory:
        memory.set("written through the link", "kept")
    for unknown in (root / "app/.swarm/memroy.db", tmp_path):
        with pytest.raises(ValueError, match="a path at which the ledger has no loaded memory file"):
            MemoryClient(target.dsn, track_access=False, source=str(unknown))

    assert fetch(target, "SELECT DISTINCT home_source_path FROM raw_postgres.memory_writes") == [(str(db),)]
    beside = consolidate("rollback", str(db), "--to", str(db.with_name("rollback.db")), target=target, home=home)
    assert beside.returncode == 2 and "a root the loads read" in beside.stderr  # the next sync would load it
    assert not db.with_name("rollback.db").exists()
    destination = tmp_path / "rollback" / "memory.db"
    destination.parent.mkdir()
    result = consolidate("rollback", str(db), "--to", str(destination), "--json", target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [e["key"] for e in json.loads(result.stdout)["created"]] == ["written through the link"]


def test_a_rollback_is_never_written_where_sync_would_load_it(tmp_path, target, home):
    """FILE inside a root, or beside a file the ledger knows that discovery reached through a link under
    the root (its real folder lies outside the root), is refused: the next sync would load it."""
    outside = tmp_path / "outside"
    db = numbered_v2_file(outside / ".swarm/memory.db", 3)
    root = tmp_path / "tree"
    root.mkdir()
    (root / "app").symlink_to(outside)
    run([root], target, home, backup_to=None, quiet=True)
    assert fetch(target, "SELECT DISTINCT source_path FROM consolidate.load_files") == [(str(db),)]
    for destination in (root / "rollback.db", db.with_name("rollback.db")):
        refused = consolidate("rollback", str(db), "--to", str(destination), target=target, home=home)
        assert refused.returncode == 2 and "the next `sync` would load it" in refused.stderr, refused.stderr
        assert not destination.exists()
    fine = consolidate("rollback", str(db), "--to", str(tmp_path / "rollback.db"), target=target, home=home)
    assert fine.returncode == 0, fine.stdout[-2000:] + fine.stderr[-2000:]


def test_a_rollback_on_marts_an_earlier_version_built_asks_for_a_build(tmp_path, target, home):
    """Rollback reads values through functions a build by this version creates (macros/compat.sql): on
    marts built before them it refuses, saying what to run, and writes nothing."""
    db = numbered_v2_file(tmp_path / "tree" / "app/.swarm/memory.db", 3)
    assert consolidate("run", str(tmp_path / "tree"), "--no-backup", target=target, home=home).returncode == 0
    with psycopg.connect(target.dsn, autocommit=True) as connection:
        connection.execute("DROP FUNCTION consolidate.extended_memory_value(jsonb, text) CASCADE")
    destination = tmp_path / "rollback" / "memory.db"
    destination.parent.mkdir()
    refused = consolidate("rollback", str(db), "--to", str(destination), target=target, home=home)
    assert refused.returncode == 5 and "run `consolidate build` first" in " ".join(refused.stderr.split())
    assert "Traceback" not in refused.stderr and not destination.exists()
    assert consolidate("build", target=target, home=home).returncode == 0
    written = consolidate("rollback", str(db), "--to", str(destination), target=target, home=home)
    assert written.returncode == 0, written.stderr[-2000:]


def test_writes_through_a_view_with_consolidate_source_set_are_rolled_back_to_that_file(tmp_path, target, home):
    """A service that writes through the compatibility views ties its writes to its file with the session
    setting `consolidate.source` (as MemoryClient's source= does): the entries it creates and changes are in
    that file's rollback; a write without the setting is not; a path the ledger has not loaded is refused
    and writes nothing."""
    tree = tmp_path / "tree"
    assert consolidate("sample", str(tree)).returncode == 0
    built = consolidate("run", str(tree), "--no-backup", target=target, home=home)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (source,) = fetch(target, "SELECT source_path FROM consolidate.current_loads WHERE kind = 'claude-flow-v2' "
                              "ORDER BY source_path LIMIT 1")[0]
    rows = typed_rows(opened_copy(Path(source), tmp_path / "source"), "memory_entries")
    namespace, changed_key = entry_of(rows[min(rows)])
    insert = "INSERT INTO compat.memory_entries (key, value, namespace) VALUES (%s, %s, %s)"

    with psycopg.connect(target.dsn, autocommit=True, options=f"-c consolidate.source={source}") as tied:
        tied.execute(insert, ("view:tied", '{"tied": true}', "view-writes"))
        tied.execute("UPDATE compat.memory_entries SET value = %s WHERE key = %s AND namespace = %s",
                     ('{"changed": "through the view"}', changed_key, namespace))
        tied.execute("UPDATE unified_memory SET value = %s WHERE key = %s AND namespace = %s",
                     ('"changed on the mart"', changed_key, namespace))
    # a client without source= takes the setting too; one with source= keeps its own, whatever the setting
    with MemoryClient(f"{target.dsn} options='-c consolidate.source={source}'", track_access=False) as memory:
        memory.set("client:tied", "by the setting", "view-writes")
    with MemoryClient(f"{target.dsn} options='-c consolidate.source=/no/such/file.db'", track_access=False,
                      source=source) as memory:
        memory.set("client:own-source", "by source=", "view-writes")
    with psycopg.connect(target.dsn, autocommit=True) as untied:
        untied.execute(insert, ("view:untied", '"no file"', "view-writes"))
        writes_before = untied.execute("SELECT count(*) FROM raw_postgres.memory_writes").fetchone()[0]
        untied.execute("SET consolidate.source = '/no/such/memory.db'")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=re.escape("consolidate.source is '/no/such/memory.db'")):
            untied.execute(insert, ("view:refused", '"refused"', "view-writes"))
        assert untied.execute("SELECT count(*) FROM raw_postgres.memory_writes").fetchone()[0] == writes_before
    homes = fetch(target, "SELECT key, via, home_source_path FROM raw_postgres.memory_writes ORDER BY write_id")
    assert [(key, home) for key, _, home in homes] == [
        ("view:tied", source), (changed_key, source), (changed_key, source), ("client:tied", source),
        ("client:own-source", source), ("view:untied", None)]
    assert len({via for _, via, _ in homes[:3]}) == 2  # the view's and the mart's write paths

    destination = tmp_path / "rollback" / "memory.db"
    destination.parent.mkdir()
    (tmp_path / "elsewhere").mkdir()
    spelled = tmp_path / "elsewhere" / ".." / "rollback" / "memory.db"
    result = consolidate("rollback", source, "--to", str(spelled), "--json", target=target, home=home)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["written_to"] == str(destination)  # as the ledger records it too: without the `..`
    assert fetch(target, "SELECT written_to FROM consolidate.rollbacks") == [(str(destination),)]
    assert sorted(e["key"] for e in report["created"]) == ["client:own-source", "client:tied", "view:tied"]
    assert changed_key in [e["key"] for e in report["changed"]]  # beside the entries another file's row won
    # each changed entry names where its value comes from: the write made in PostgreSQL, or the file whose
    # row is the marts' winner
    winners = {(namespace, key): path for namespace, key, path in fetch(
        target, "SELECT namespace, key, coalesce(source_path, 'postgresql') FROM unified_memory "
                "UNION ALL SELECT namespace, key, coalesce(source_path, 'postgresql') FROM performance_metrics")}
    value_from = {(e["namespace"], e["key"]): e["value_from"] for e in report["changed"]}
    assert value_from == {name: winners[name] for name in value_from}
    assert value_from[(namespace, changed_key)] == "postgresql" and len(set(value_from.values())) > 1
    written = {row["key"][1]: row for row in typed_rows(opened_copy(destination, tmp_path / "written"),
                                                        "memory_entries").values()}
    assert written["view:tied"]["namespace"] == ("text", "view-writes")
    assert json.loads(written["view:tied"]["value"][1]) == {"tied": True}
    assert written[changed_key]["value"] == ("text", "changed on the mart")
    assert "view:untied" not in written


def test_rollback_of_text_values_that_are_not_utf8(tmp_path, target, home):
    """A TEXT value whose bytes are not UTF-8 (loaded as exact hex, flagged binary_value): the rollback
    writes PostgreSQL's new value over one, keeps another untouched byte for byte, and keeps a third's own
    bytes, as TEXT, when only its metadata changed in PostgreSQL."""
    db = numbered_v2_file(tmp_path / "tree/app/.swarm/memory.db", 4)
    for key in ("bad-set", "bad-kept", "bad-meta"):
        change(db, (f"INSERT INTO memory_entries (key, value, namespace, created_at, updated_at) VALUES "
                    f"('{key}', 'abc' || CAST(x'ff' AS TEXT), 'default', 1750000100, 1750000100)",))
    run([tmp_path / "tree"], target, home, backup_to=None, quiet=True)
    with MemoryClient(target.dsn, track_access=False, source=str(db)) as memory:
        memory.set("bad-set", "fixed")
    with psycopg.connect(target.dsn, autocommit=True) as connection:
        connection.execute("UPDATE compat.memory_entries SET metadata = '{\"m\": 1}' WHERE key = 'bad-meta'")
    destination = tmp_path / "rollback" / "memory.db"
    destination.parent.mkdir()

    result = consolidate("rollback", str(db), "--to", str(destination), "--json", target=target, home=home)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    def by_key(path: Path, folder: Path) -> dict[bytes, tuple]:
        connection = opened_copy(path, folder)
        connection.text_factory = bytes
        return {row[0]: row[1:] for row in connection.execute(
            "SELECT key, typeof(value), value, metadata, updated_at FROM memory_entries")}

    original, written = by_key(db, tmp_path / "source"), by_key(destination, tmp_path / "written")
    assert written[b"bad-set"][:2] == (b"text", b"fixed")
    assert written[b"bad-kept"] == original[b"bad-kept"]
    assert written[b"bad-meta"][:2] == (b"text", b"abc\xff") and json.loads(written[b"bad-meta"][2]) == {"m": 1}
    assert {k: v for k, v in written.items() if not k.startswith(b"bad-")} == \
        {k: v for k, v in original.items() if not k.startswith(b"bad-")}


def test_a_changed_entry_keeps_its_rows_own_bytes_of_the_times_postgresql_did_not_change(tmp_path, target, home):
    """A REAL time and milliseconds in a seconds column (staging reads both): when only the value changed in
    PostgreSQL, the row keeps those times as its own bytes and types; a time changed in PostgreSQL (the
    write's updated_at) is written in the source's units."""
    db = numbered_v2_file(tmp_path / "tree/app/.swarm/memory.db", 2)
    change(db, ("INSERT INTO memory_entries (key, value, namespace, created_at, updated_at, accessed_at) VALUES "
                "('real-time', '1', 'default', 1750000100.5, 1750000100.5, 1750000101.25)",),
           ("INSERT INTO memory_entries (key, value, namespace, created_at, updated_at, accessed_at) VALUES "
            "('ms-in-seconds', '2', 'default', 1750000100000, 1750000100000, 1750000101000)",))
    run([tmp_path / "tree"], target, home, backup_to=None, quiet=True)
    with psycopg.connect(target.dsn, autocommit=True) as connection:
        connection.execute("SELECT set_config('consolidate.source', %s, false)", (str(db),))
        for key in ("real-time", "ms-in-seconds"):
            connection.execute("UPDATE compat.memory_entries SET value = 'changed' WHERE key = %s", (key,))
        (written_at,) = connection.execute(
            "SELECT max(updated_at) FROM raw_postgres.memory_writes WHERE key = 'real-time'").fetchone()
    destination = tmp_path / "rollback" / "memory.db"
    destination.parent.mkdir()

    result = consolidate("rollback", str(db), "--to", str(destination), "--json", target=target, home=home)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    query = ("SELECT key, value, created_at, typeof(created_at), accessed_at, typeof(accessed_at), updated_at "
             "FROM memory_entries WHERE key IN ('real-time', 'ms-in-seconds')")
    original = {row[0]: row[1:] for row in read_private_copy(db, tmp_path / "source", query)}
    written = {row[0]: row[1:] for row in read_private_copy(destination, tmp_path / "written", query)}
    for key in ("real-time", "ms-in-seconds"):
        assert written[key][0] == "changed" and written[key][1:5] == original[key][1:5], (key, written[key])
        assert written[key][5] == int(written_at.timestamp())  # the write's time, in seconds


def test_a_rollback_removes_the_partial_files_rollbacks_killed_before_it_left_and_only_those(tmp_path, target, home):
    db = numbered_v2_file(tmp_path / "tree/app/.swarm/memory.db", 3)
    run([tmp_path / "tree"], target, home, backup_to=None, quiet=True)
    destination = tmp_path / "rollback" / "memory.db"
    destination.parent.mkdir()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(ended.stdout)  # a process that has ended
    host = socket.gethostname()
    killed = destination.with_name(f".memory.db.rollback-{host}-{dead}-0badc0de")
    killed.write_bytes(b"SQLite format 3\x00 partial")
    killed.with_name(killed.name + "-journal").write_bytes(b"journal")
    running = destination.with_name(f".memory.db.rollback-{host}-{os.getpid()}-0badc0de")  # a rollback still writing
    running.write_bytes(b"in progress")
    elsewhere = destination.with_name(f".memory.db.rollback-another-host-{dead}-0badc0de")  # not this host's to judge
    elsewhere.write_bytes(b"in progress elsewhere")

    result = consolidate("rollback", str(db), "--to", str(destination), "--json", target=target, home=home)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(path.name for path in destination.parent.iterdir()) == sorted(
        [destination.name, running.name, elsewhere.name])
    assert any(killed.name in note and str(dead) in note for note in json.loads(result.stdout)["notes"])


def test_rollback_of_a_file_whose_every_load_failed_says_so(tmp_path, target, home):
    good = numbered_v2_file(tmp_path / "tree/good/.swarm/memory.db", 4)
    broken = numbered_v2_file(tmp_path / "tree/broken/.swarm/memory.db", 200)
    broken.write_bytes(broken.read_bytes()[:len(broken.read_bytes()) // 2])  # a file cut short: unreadable
    ran = consolidate("run", str(tmp_path / "tree"), "--no-backup", target=target, home=home)
    assert ran.returncode == 3, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert fetch(target, "SELECT count(*) FROM consolidate.current_loads WHERE source_path = %s",
                 (str(good),)) == [(1,)]

    refused = consolidate("rollback", str(broken), "--to", str(tmp_path / "back.db"), target=target, home=home)

    assert refused.returncode == 5 and "every load of it failed" in " ".join(refused.stderr.split()), refused.stderr
    assert not (tmp_path / "back.db").exists()


def test_a_write_keeps_an_entry_that_was_never_read_unread(tmp_path, target, home):
    """A row whose accessed_at is NULL (never read) and written in PostgreSQL keeps no access time: the
    marts and the rollback say so, as the file did. A new entry is created read, at its write."""
    root = tmp_path / "tree"
    db = numbered_v2_file(root / "app/.swarm/memory.db", 5)
    change(db, ("UPDATE memory_entries SET accessed_at = NULL WHERE key = 'key-1'",))
    assert run([root], target, home, backup_to=None, quiet=True).reconciled
    (read_at,), = read_private_copy(db, tmp_path / "file", "SELECT accessed_at FROM memory_entries WHERE key = 'key-2'")
    with MemoryClient(target.dsn, source=db, track_access=False) as memory:
        memory.set("key-1", "written in postgresql")
        memory.set("brand new", "also")
        assert memory.delete("key-2")  # deleted, then written again: its history keeps its last read
        memory.set("key-2", "again")
    assert fetch(target, "SELECT key, accessed_at IS NULL FROM unified_memory WHERE key IN ('key-1', 'brand new') "
                         "ORDER BY key") == [("brand new", False), ("key-1", True)]
    assert fetch(target, "SELECT accessed_at FROM unified_memory WHERE key = 'key-2'") == \
        [(datetime.fromtimestamp(read_at, timezone.utc),)]
    destination = tmp_path / "rolled-back" / "memory.db"
    destination.parent.mkdir()
    result = consolidate("rollback", str(db), "--to", str(destination), "--json", target=target, home=home)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = dict(read_private_copy(destination, tmp_path / "read",
                                  "SELECT key, accessed_at FROM memory_entries WHERE key IN ('key-1', 'brand new')"))
    assert rows["key-1"] is None and rows["brand new"] is not None


def test_a_changed_entry_keeps_its_rows_own_bytes_of_every_column_postgresql_did_not_change(tmp_path, target, home):
    """A write that changes one column of an entry rewrites that column (and updated_at) only: every other
    column keeps the row's own bytes and SQLite type, whatever spelling PostgreSQL's value has (a
    `__compressed__` value, `1e2`, `-0.0`, `1e400`, metadata that is not JSON or not an object; v3's NULL
    type, status and metadata, tags that are a JSON string; extended-memory text that is not JSON), and a
    value staging could not read (it is flagged) stays the row's, where PostgreSQL holds NULL or a write's
    fill-in (created_at now(), access_count 0), unless a write gave it. The v3 view reads and writes beside entries of a v2 file
    whose metadata is a JSON string (it took the claude_flow_v3 key out of every metadata, a scalar too)."""
    base = 1_750_000_000
    compressed = "__compressed__" + base64.b64encode(b'{"z":1}').decode()
    v2 = numbered_v2_file(tmp_path / "tree/v2/.swarm/memory.db", 1)
    v2_rows = {  # key: (value, metadata, created_at, access_count, ttl, expires_at, accessed_at)
        "compressed": (compressed, None, base, 3, None, None, base),
        "exponent": ("1e2", None, base, 3, None, None, base),
        "negative-zero": ("-0.0", None, base, 3, None, None, base),
        "beyond-double": ("1e400", None, base, 3, None, None, base),
        "text-metadata": ('"v"', "plain text", base, 3, None, None, base),
        "empty-metadata": ('"v"', "", base, 3, None, None, base),
        "array-metadata": ('"v"', "[1,2]", base, 3, None, None, base),
        "blob-metadata": ('"v"', b"\x01\x02", base, 3, None, None, base),
        "unreadable-fields": ('"v"', None, "garbage", 2**40, "abc", "never", "yesterday"),
        "null-fields": ('"v"', None, None, None, 1.5, None, None),
        "given-fields": ('"v"', None, None, None, None, None, None),  # a write gives them: written
    }
    change(v2, *[("INSERT INTO memory_entries (key, value, namespace, metadata, created_at, updated_at, access_count, "
                  "ttl, expires_at, accessed_at) VALUES (?, ?, 'odd', ?, ?, ?, ?, ?, ?, ?)",
                  (key, value, metadata, created, base, count, ttl, expires, accessed))
                 for key, (value, metadata, created, count, ttl, expires, accessed) in v2_rows.items()])
    v3 = tmp_path / "tree/v3/.swarm/memory.db"
    v3.parent.mkdir(parents=True)
    v3_rows = {  # id: (key, type, tags, metadata, status)
        "e1": ("null-metadata", "semantic", None, None, "active"),
        "e2": ("array-metadata", "semantic", None, "[1,2]", "active"),
        "e3": ("text-metadata", "semantic", None, "some text", "active"),
        "e4": ("null-type", None, None, '{"a": 1}', "active"),
        "e5": ("null-status", "semantic", None, '{"a": 1}', None),
        "e6": ("string-tags", "semantic", '"foo"', '{"a": 1}', "active"),
        "e7": ("null-tags", "semantic", "null", '{"a": 1}', "active"),
    }
    with contextlib.closing(sqlite3.connect(v3)) as connection:
        connection.executescript(V3_DDL)
        connection.executemany("INSERT INTO memory_entries (id, key, namespace, content, type, tags, metadata, status, "
                               "created_at, updated_at) VALUES (?, ?, 'odd-v3', '\"v\"', ?, ?, ?, ?, ?, ?)",
                               [(entry_id, *row, base * 1000, base * 1000) for entry_id, row in v3_rows.items()])
        connection.commit()
    extended = tmp_path / "tree/ext/extended_memory.db"
    extended.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(extended)) as connection:
        connection.executescript(EXTENDED_MEMORY_DDL)
        connection.execute("INSERT INTO memory_store VALUES ('not-json', 'not json', 'str', '2025-01-01 00:00:00', "
                           "'2025-01-01 00:00:00', 'garbage', NULL)")
        connection.commit()
    run([tmp_path / "tree"], target, home, backup_to=None, quiet=True)
    value_written = [key for key in v2_rows if v2_rows[key][0] == '"v"']
    with psycopg.connect(target.dsn, autocommit=True) as connection:
        for key in v2_rows:
            column, value = ("value", "changed") if key in value_written else ("metadata", '{"m": 1}')
            connection.execute(f"UPDATE compat.memory_entries SET {column} = %s WHERE namespace = 'odd' AND key = %s",
                               (value, key))
        connection.execute("UPDATE compat.memory_entries SET access_count = 5, created_at = 1700000000 "
                           "WHERE namespace = 'odd' AND key = 'given-fields'")
        connection.execute("UPDATE compat_claude_flow_v3.memory_entries SET content = 'changed' "
                           "WHERE namespace = 'odd-v3'")
        # the view is read beside the v2 file's entries (their metadata a JSON string among them)
        assert connection.execute("SELECT metadata FROM compat_claude_flow_v3.memory_entries "
                                  "WHERE namespace = 'odd' AND key = 'text-metadata'").fetchone() == ('"plain text"',)
        connection.execute("UPDATE compat_extended_memory.memory_store SET updated_at = '2026-01-01 00:00:00' "
                           "WHERE key = 'not-json'")

    def written_and_source(source: Path, table: str, label: str) -> tuple[dict, dict]:
        destination = tmp_path / "rollback" / label / source.name
        destination.parent.mkdir(parents=True)
        result = consolidate("rollback", str(source), "--to", str(destination), "--json", target=target, home=home)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        by_key = {}
        for path, folder in ((destination, "written"), (source, "source")):
            rows = typed_rows(opened_copy(path, tmp_path / label / folder), table)
            by_key[folder] = {row["key"][1]: row for row in rows.values()}
        return by_key["written"], by_key["source"]

    written, source = written_and_source(v2, "memory_entries", "v2")
    assert [written["given-fields"][column] for column in ("access_count", "created_at")] == \
        [("integer", 5), ("integer", 1_700_000_000)]
    for key in v2_rows:
        changed = {"value", "updated_at"} if key in value_written else {"metadata", "updated_at"}
        changed |= {"access_count", "created_at"} if key == "given-fields" else set()
        assert {c: v for c, v in written[key].items() if c not in changed} == \
            {c: v for c, v in source[key].items() if c not in changed}, key
        assert written[key]["value" if key in value_written else "metadata"][1] in ("changed", '{"m": 1}'), key
        assert written[key]["updated_at"][1] > base, key
    written, source = written_and_source(v3, "memory_entries", "v3")
    for _, (key, *_) in v3_rows.items():
        assert written[key]["content"] == ("text", "changed"), key
        assert {c: v for c, v in written[key].items() if c not in ("content", "updated_at")} == \
            {c: v for c, v in source[key].items() if c not in ("content", "updated_at")}, key
    written, source = written_and_source(extended, "memory_store", "extended")
    assert written["not-json"]["updated_at"] == ("text", "2026-01-01 00:00:00.000000")
    assert {c: v for c, v in written["not-json"].items() if c != "updated_at"} == \
        {c: v for c, v in source["not-json"].items() if c != "updated_at"}
