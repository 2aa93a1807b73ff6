"""Compatibility views: an application of each source shape reads back, from PostgreSQL, the rows it
wrote to SQLite (expectations read from the SQLite files with Python's sqlite3)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from loader.serve.client import MemoryClient

from conftest import consolidate, fetch, read_private_copy

EXTENDED_MEMORY = "opt/sutazaiapp/data/mcp/extended-memory/extended_memory.db"
V3_FILE = "opt/sutazaiapp/backend/.swarm/memory.db"


@pytest.fixture
def migrated(tmp_path, target, home) -> Path:
    tree = tmp_path / "tree"
    assert consolidate("sample", str(tree)).returncode == 0
    result = consolidate("run", str(tree), "--no-backup", target=target, home=home)
    assert result.returncode == 0, result.stderr[-2000:]
    return tree


def same_value(stored: str, original: str) -> bool:
    try:
        return json.loads(stored) == json.loads(original)
    except ValueError:
        return stored == original


def naive_utc(text: str) -> datetime:
    layout = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
    return datetime.strptime(text, layout)


def test_extended_memory_reads_back_its_memory_store(migrated, target, tmp_path):
    expected = read_private_copy(migrated / EXTENDED_MEMORY, tmp_path / "x",
                                 "SELECT key, value, type, created_at, access_count FROM memory_store")
    view = {key: rest for key, *rest in fetch(
        target, "SELECT key, value, type, created_at, access_count FROM compat_extended_memory.memory_store")}
    assert set(view) == {key for key, *_ in expected}
    for key, value, kind, created_at, access_count in expected:
        stored_value, stored_kind, stored_created, stored_count = view[key]
        assert same_value(stored_value, value) and stored_kind == kind, key
        assert naive_utc(stored_created) == naive_utc(created_at), key
        assert stored_count == access_count, key


def test_v3_application_reads_back_its_entries_in_milliseconds(migrated, target, tmp_path):
    rows = read_private_copy(migrated / V3_FILE, tmp_path / "x",
                             "SELECT key, coalesce(namespace, 'default'), content, type, status, created_at "
                             "FROM memory_entries WHERE coalesce(namespace, 'default') <> 'performance-metrics'")
    view = {(key, namespace): rest for key, namespace, *rest in fetch(
        target, "SELECT key, namespace, content, type, status, created_at FROM compat_claude_flow_v3.memory_entries")}
    own_winners = {(key, namespace) for key, namespace in fetch(
        target, "SELECT key, namespace FROM unified_memory WHERE source_path LIKE %s", (f"%{V3_FILE}",))}
    checked = 0
    for key, namespace, content, kind, status, created_at in rows:
        if (key, namespace) not in own_winners:
            continue  # a newer version from another file won: its content is checked elsewhere
        stored_content, stored_kind, stored_status, stored_created = view[(key, namespace)]
        assert same_value(stored_content, content) and (stored_kind, stored_status) == (kind, status), key
        assert stored_created <= int(created_at), key  # the earliest created_at of the entry's versions
        checked += 1
    assert checked > 0
    (count,) = fetch(target, "SELECT count(*) FROM compat_claude_flow_v3.memory_entries")[0]
    assert count == fetch(target, "SELECT count(*) FROM unified_memory")[0][0]


def test_v3_created_at_is_epoch_milliseconds_of_the_unified_timestamp(migrated, target):
    pairs = fetch(target, "SELECT c.created_at, u.created_at FROM compat_claude_flow_v3.memory_entries c "
                          "JOIN unified_memory u ON c.id = 'unified-' || u.id WHERE u.created_at IS NOT NULL")
    assert pairs
    for milliseconds, timestamp in pairs:
        assert milliseconds == int(timestamp.astimezone(timezone.utc).timestamp() * 1000)


@pytest.mark.parametrize("column", ["key", "value", "type"])
def test_a_null_in_any_column_of_the_views_not_null_test_fails_it(migrated, target, home, column):
    """not_null_columns checks its columns in one pass; a NULL in any one of them fails it (the view is
    redefined here to give one: built from unified_memory's contract, it cannot)."""
    (definition,) = fetch(target, "SELECT pg_get_viewdef('compat_extended_memory.memory_store'::regclass)")[0]
    (victim,) = fetch(target, "SELECT min(key) FROM compat_extended_memory.memory_store")[0]
    columns = [name for (name,) in fetch(
        target, "SELECT attname FROM pg_attribute WHERE attrelid = 'compat_extended_memory.memory_store'::regclass "
                "AND attnum > 0 ORDER BY attnum")]
    outputs = sql.SQL(", ").join(
        sql.SQL("CASE WHEN key = {} THEN NULL ELSE {name} END AS {name}").format(victim, name=sql.Identifier(name))
        if name == column else sql.Identifier(name) for name in columns)
    with target.connect() as connection:
        connection.execute(sql.SQL("CREATE OR REPLACE VIEW compat_extended_memory.memory_store AS "
                                   "SELECT {} FROM ({}) AS original").format(
            outputs, sql.SQL(definition.rstrip().rstrip(";"))))
        connection.commit()
    tested = consolidate("dbt", "--dsn", target.dsn, "--home", str(home),
                         "--", "test", "--select", "not_null_memory_store")
    assert tested.returncode == 1, tested.stdout[-2000:]
    assert "FAIL 1 not_null_memory_store" in tested.stdout, tested.stdout[-2000:]


def test_extended_memory_type_is_the_kept_type_when_it_fits_the_value_else_named_from_it(migrated, target):
    """The view's `type`: the application's own (kept in the metadata, from the file or from a write
    through the view) when it fits the value now held, else the Python type of that value; a write
    through the view keeps the type it gives in the metadata and reads back the value as JSON text (a non-JSON text as a JSON string)."""
    (int_key,) = fetch(target, "SELECT min(key) FROM compat_extended_memory.memory_store WHERE type = 'int'")[0]
    with MemoryClient(target.dsn, track_access=False) as memory:
        memory.set("compat:new-bool", True, "extended-memory")
        memory.set("compat:new-none", None, "extended-memory")
        memory.set("compat:new-dict", {"a": [1]}, "extended-memory")
    with psycopg.connect(target.dsn, autocommit=True) as connection:
        connection.execute("INSERT INTO compat_extended_memory.memory_store (key, value, type) VALUES "
                           "('compat:float-given', '2', 'float'), ('compat:str-given-a-dict', '{\"a\": 1}', 'str'), "
                           "('compat:plain', 'not json', 'str'), ('compat:pickle', 'gAR9lC4=', 'pickle'), "
                           "('compat:no-type', '[true]', NULL)")
        connection.execute("UPDATE compat_extended_memory.memory_store SET value = 'true' WHERE key = %s", (int_key,))

    expected = {"compat:new-bool": ("true", "bool"), "compat:new-none": ("null", "none"),
                "compat:new-dict": ('{"a": [1]}', "dict"), "compat:float-given": ("2", "float"),
                "compat:str-given-a-dict": ('{"a": 1}', "dict"), "compat:plain": ('"not json"', "str"),
                "compat:pickle": ("gAR9lC4=", "pickle"), "compat:no-type": ("[true]", "list"),
                int_key: ("true", "bool")}
    view = {key: (value, kind) for key, value, kind in fetch(
        target, "SELECT key, value, type FROM compat_extended_memory.memory_store WHERE key = ANY(%s)",
        (list(expected),))}
    assert view == expected
    kept = dict(fetch(target, "SELECT key, metadata -> 'extended_memory' ->> 'type' FROM unified_memory "
                              "WHERE namespace = 'extended-memory' AND key = ANY(%s)", (list(expected),)))
    assert (kept["compat:float-given"], kept["compat:str-given-a-dict"], kept[int_key]) == ("float", "str", "int")
