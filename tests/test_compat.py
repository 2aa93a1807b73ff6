"""Compatibility views: an application of each source shape reads back, from PostgreSQL, the rows it
wrote to SQLite (expectations read from the SQLite files with Python's sqlite3)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from test_rollback import entry_of, opened_copy, typed_rows

from loader.serve.client import MemoryClient

from conftest import consolidate, fetch, read_private_copy, v2_file

EXTENDED_MEMORY = "opt/sutazaiapp/data/mcp/extended-memory/extended_memory.db"
V3_FILE = "opt/sutazaiapp/backend/.swarm/memory.db"
REAL_V3 = "claude-flow/ApexSlayer43__apex-os/memory.db"  # a real v3 file: ids like entry_1774538919018_vgv4t4
V3_VIEW = "compat_claude_flow_v3.memory_entries"


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


VIEWS = ["compat.memory_entries", "compat_claude_flow_v3.memory_entries", "compat_extended_memory.memory_store",
         "public.active_sessions", "public.my_report"]


def test_views_on_the_marts_outlive_a_full_refresh_of_them(migrated, target, home):
    """A full refresh swaps each mart in; the views built on them (the compatibility views, active_sessions, a
    user's own) are re-pointed at the new table in the same transaction, with their INSTEAD OF triggers, and
    are never missing: after a full refresh of one mart alone (their own models not rebuilt) and after a
    whole one, they read the new tables, take writes, and a sync builds over them."""
    with psycopg.connect(target.dsn, autocommit=True) as connection:
        connection.execute("CREATE VIEW public.my_report WITH (security_barrier = true) AS "
                           "SELECT key, value FROM public.unified_memory")
    dbt = ["dbt", "--dsn", target.dsn, "--home", str(home), "--"]
    for command in ([*dbt, "run", "--full-refresh", "--select", "unified_memory", "int_memory_ranked"],
                    ["build", "--full-refresh", "--dsn", target.dsn, "--home", str(home)]):
        result = consolidate(*command)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        with psycopg.connect(target.dsn, autocommit=True) as connection:
            found = [connection.execute("SELECT to_regclass(%s)::text", (view,)).fetchone()[0] for view in VIEWS]
            assert found == [view.removeprefix("public.") for view in VIEWS], command
            counts = connection.execute("SELECT (SELECT count(*) FROM public.my_report), "
                                        "(SELECT count(*) FROM public.unified_memory)").fetchone()
            assert counts[0] == counts[1] > 0
            assert connection.execute("SELECT reloptions FROM pg_class WHERE oid = 'public.my_report'::regclass"
                                      ).fetchone() == (["security_barrier=true"],)
            connection.execute("INSERT INTO compat.memory_entries (key, value, namespace) VALUES (%s, '1', 'views')",
                               (command[0],))
    assert [row[0] for row in fetch(target, "SELECT key FROM unified_memory WHERE namespace = 'views' ORDER BY key")] \
           == ["build", "dbt"]
    synced = consolidate("sync", str(migrated), target=target, home=home)
    assert synced.returncode == 0, synced.stdout[-3000:] + synced.stderr[-3000:]


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
                          "JOIN unified_memory u USING (namespace, key) WHERE u.created_at IS NOT NULL")
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
    (pickled, other_pickled), = fetch(target, "SELECT min(key), max(key) FROM compat_extended_memory.memory_store "
                                              "WHERE type = 'pickle'")
    pickled_text, = fetch(target, "SELECT value FROM compat_extended_memory.memory_store WHERE key = %s", (pickled,))[0]
    with MemoryClient(target.dsn, track_access=False) as memory:
        # a pickle read and written back unchanged stays a pickle; another string is a str
        memory.set(pickled, memory.get(pickled, "extended-memory"), "extended-memory", ttl=60)
        memory.set(other_pickled, memory.get(other_pickled, "extended-memory") + "=", "extended-memory")
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
                int_key: ("true", "bool"), pickled: (pickled_text, "pickle")}
    view = {key: (value, kind) for key, value, kind in fetch(
        target, "SELECT key, value, type FROM compat_extended_memory.memory_store WHERE key = ANY(%s)",
        (list(expected),))}
    assert view == expected
    assert fetch(target, "SELECT type FROM compat_extended_memory.memory_store WHERE key = %s", (other_pickled,)) == \
        [("str",)]
    with psycopg.connect(target.dsn, autocommit=True) as connection:  # a type asked for is the type written
        connection.execute("UPDATE compat_extended_memory.memory_store SET type = 'str' WHERE key = %s", (pickled,))
    assert fetch(target, "SELECT value, type FROM compat_extended_memory.memory_store WHERE key = %s", (pickled,)) == \
        [(json.dumps(pickled_text), "str")]
    kept = dict(fetch(target, "SELECT key, metadata -> 'extended_memory' ->> 'type' FROM unified_memory "
                              "WHERE namespace = 'extended-memory' AND key = ANY(%s)", (list(expected),)))
    assert (kept["compat:float-given"], kept["compat:str-given-a-dict"], kept[int_key]) == ("float", "str", "int")


# -- the v3 view's ids: an application addresses its rows by the ids its file gave them

def writable_copy(source: Path, destination: Path) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
    destination.chmod(0o644)
    return destination


def file_rows(path: Path, folder: Path) -> list[tuple]:
    """(id, namespace, key, content) of a v3 file's memory_entries, read with sqlite3 from a private copy."""
    return read_private_copy(path, folder, "SELECT id, coalesce(namespace, 'default'), key, content "
                                           "FROM memory_entries ORDER BY id")


@pytest.fixture
def v3_app(tmp_path, target, home, realdata) -> dict:
    """A tree with a private copy of the real v3 file and a v2 file, run; the v3 file's rows."""
    tree = tmp_path / "tree"
    v3 = writable_copy(realdata / REAL_V3, tree / "apex-os" / ".swarm" / "memory.db")
    v2_file(tree / "other" / ".swarm" / "memory.db", [("from-v2", '"a v2 value"', "default", 1700000000)])
    result = consolidate("run", str(tree), "--no-backup", target=target, home=home)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = file_rows(v3, tmp_path / "expected")
    assert len(rows) > 2 and all(row_id.startswith("entry_") for row_id, *_ in rows)
    return {"file": v3, "rows": rows}


def view_by_id(target, entry_id: str) -> list[tuple]:
    return fetch(target, f"SELECT namespace, key, content FROM {V3_VIEW} WHERE id = %s ORDER BY key", (entry_id,))


def mart_value(target, namespace: str, key: str) -> list[tuple]:
    return fetch(target, "SELECT value #>> '{}' FROM unified_memory WHERE namespace = %s AND key = %s", (namespace, key))


def test_the_v3_view_shows_each_file_row_by_its_own_id(v3_app, target):
    view = {(namespace, key): entry_id for entry_id, namespace, key in fetch(
        target, f"SELECT id, namespace, key FROM {V3_VIEW}")}
    for entry_id, namespace, key, _ in v3_app["rows"]:
        assert view[(namespace, key)] == entry_id, key
    # an entry of a v2 file has no v3 id: the marts' `unified-<id>`
    ((mart_id,),) = fetch(target, "SELECT id FROM unified_memory WHERE key = 'from-v2'")
    assert view[("default", "from-v2")] == f"unified-{mart_id}"


def test_a_v3_application_reads_updates_and_deletes_its_rows_by_their_ids(v3_app, target):
    (updated_id, namespace, key, content), (deleted_id, deleted_namespace, deleted_key, _) = v3_app["rows"][:2]
    ((found_namespace, found_key, found_content),) = view_by_id(target, updated_id)
    assert (found_namespace, found_key) == (namespace, key) and same_value(found_content, content)
    with target.connect() as connection:
        assert connection.execute(f"UPDATE {V3_VIEW} SET content = 'changed by id' WHERE id = %s",
                                  (updated_id,)).rowcount == 1
        connection.commit()
    assert mart_value(target, namespace, key) == [("changed by id",)]
    assert fetch(target, "SELECT count(*) FROM unified_memory WHERE value #>> '{}' = 'changed by id'") == [(1,)]
    assert view_by_id(target, updated_id) == [(namespace, key, "changed by id")]
    # a write of the view's other fields, and one of its metadata through the client: the id stays
    with target.connect() as connection:
        assert connection.execute(f"UPDATE {V3_VIEW} SET metadata = '{{\"note\": 1}}', tags = '[\"t\"]', "
                                  "status = 'archived' WHERE id = %s", (updated_id,)).rowcount == 1
        connection.commit()
    assert fetch(target, f"SELECT key, metadata, tags, status FROM {V3_VIEW} WHERE id = %s", (updated_id,)) == \
        [(key, '{"note": 1}', '["t"]', "archived")]
    client = MemoryClient(target.dsn)
    try:
        client.set(key, "set by the client", namespace, metadata={"client": True})
    finally:
        client.close()
    assert fetch(target, f"SELECT key, content, metadata FROM {V3_VIEW} WHERE id = %s", (updated_id,)) == \
        [(key, "set by the client", '{"client": true}')]
    # a delete by id: that entry, and only it
    with target.connect() as connection:
        assert connection.execute(f"DELETE FROM {V3_VIEW} WHERE id = %s", (deleted_id,)).rowcount == 1
        assert connection.execute(f"UPDATE {V3_VIEW} SET content = 'x' WHERE id = 'entry_no_such'").rowcount == 0
        connection.commit()
    assert mart_value(target, deleted_namespace, deleted_key) == [] and view_by_id(target, deleted_id) == []
    assert fetch(target, f"SELECT count(*) FROM {V3_VIEW} WHERE id LIKE 'entry\\_%%'") == [(len(v3_app["rows"]) - 1,)]


def test_entries_made_in_postgresql_have_the_id_the_view_gives_them_and_rollback_agrees(v3_app, target, tmp_path):
    """An entry created in PostgreSQL is `unified-<id>`, unless an INSERT through the v3 view gave it a v3
    id (not one of the marts' `unified-<n>`); a rollback of the file writes its new rows with the view's
    id (but `unified-<id>` for one whose v3 id another row of the file holds: v3's primary key). The view
    refuses to give an entry an id another entry has; the client's metadata can."""
    taken_id = v3_app["rows"][2][0]
    client = MemoryClient(target.dsn, source=v3_app["file"])
    try:
        for key in ("made-by-the-client", "given-an-id", "given-a-taken-id"):
            client.set(key, {"made": key}, "rollback-test")
    finally:
        client.close()
    with target.connect() as connection:
        for entry_id, key in (("entry_1800000000000_given", "given-an-id"),
                              ("entry_1800000000001_new", "new-by-the-app"), (None, "new-without-an-id"),
                              ("unified-1", "new-with-a-marts-id")):
            connection.execute(f"INSERT INTO {V3_VIEW} (id, key, namespace, content) VALUES (%s, %s, 'rollback-test', %s)",
                               (entry_id, key, f"inserted {key}"))
        connection.commit()
    # an id another entry has is refused, as v3's primary key refuses it: nothing written
    _, file_namespace, file_key, _ = v3_app["rows"][2]
    with target.connect() as connection, pytest.raises(psycopg.errors.UniqueViolation,
                                                      match=f"is the id of another entry .*'{file_key}'"):
        connection.execute(f"INSERT INTO {V3_VIEW} (id, key, namespace, content) VALUES (%s, 'given-a-taken-id', "
                           "'rollback-test', 'inserted given-a-taken-id')", (taken_id,))
    assert fetch(target, "SELECT count(*) FROM raw_postgres.memory_writes WHERE value #>> '{}' = %s",
                 ("inserted given-a-taken-id",)) == [(0,)]
    # a metadata naming claude_flow_v3 written through the client is taken as given: it can repeat an id
    client = MemoryClient(target.dsn, source=v3_app["file"])
    try:
        client.set("given-a-taken-id", {"made": "again"}, "rollback-test", metadata={"claude_flow_v3": {"id": taken_id}})
    finally:
        client.close()
    view = {key: (entry_id, mart_id) for key, entry_id, mart_id in fetch(
        target, f"SELECT v.key, v.id, u.id FROM {V3_VIEW} AS v JOIN unified_memory AS u USING (namespace, key) "
                "WHERE namespace = 'rollback-test'")}
    for key in ("made-by-the-client", "new-without-an-id", "new-with-a-marts-id"):
        assert view[key][0] == f"unified-{view[key][1]}", key
    assert view["given-an-id"][0] == "entry_1800000000000_given"
    assert view_by_id(target, "entry_1800000000001_new") == [("rollback-test", "new-by-the-app", "inserted new-by-the-app")]
    with target.connect() as connection:
        assert connection.execute(f"UPDATE {V3_VIEW} SET content = 'again' WHERE id = 'entry_1800000000001_new'").rowcount == 1
        connection.commit()
    assert view_by_id(target, "entry_1800000000001_new") == [("rollback-test", "new-by-the-app", "again")]
    assert {(namespace, key) for namespace, key, _ in view_by_id(target, taken_id)} == \
        {(file_namespace, file_key), ("rollback-test", "given-a-taken-id")}

    destination = tmp_path / "rollback" / "memory.db"
    destination.parent.mkdir()
    result = consolidate("rollback", str(v3_app["file"]), "--to", str(destination), "--json",
                         target=target, home=tmp_path / "state")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    connection = sqlite3.connect(destination)
    try:
        written = dict(connection.execute("SELECT key, id FROM memory_entries WHERE namespace = 'rollback-test'"))
    finally:
        connection.close()
    assert written == {"made-by-the-client": view["made-by-the-client"][0],
                       "given-an-id": "entry_1800000000000_given",
                       "given-a-taken-id": f"unified-{view['given-a-taken-id'][1]}"}


def test_the_v3_view_refuses_what_v3s_table_refuses_and_rollback_names_an_entry_the_table_refuses(
        v3_app, target, tmp_path):
    """type and status outside claude-flow v3's CHECKs are refused by the view (a rollback could not write
    them); a value that reaches PostgreSQL otherwise (the client's metadata) fails the rollback naming the
    entry, nothing written."""
    entry_id = v3_app["rows"][0][0]
    for statement, parameters, words in (
            (f"INSERT INTO {V3_VIEW} (id, key, namespace, content, type) VALUES ('entry_x', 'odd', 'n', '1', 'bogus')",
             (), "type 'bogus' is not one of claude-flow v3's"),
            (f"UPDATE {V3_VIEW} SET status = 'purged' WHERE id = %s", (entry_id,), "status 'purged' is not one of")):
        with target.connect() as connection, pytest.raises(psycopg.errors.CheckViolation, match=words):
            connection.execute(statement, parameters)
    # a NULL where the application's table has NOT NULL (the marts would keep it as JSON null), in each view
    for statement, parameters, column in (
            (f"INSERT INTO {V3_VIEW} (key, namespace, content) VALUES ('null-content', 'n', NULL)", (), "content"),
            (f"UPDATE {V3_VIEW} SET content = NULL WHERE id = %s", (entry_id,), "content"),
            ("INSERT INTO compat.memory_entries (key, namespace, value) VALUES ('null-value', 'n', NULL)", (), "value"),
            ("INSERT INTO compat_extended_memory.memory_store (key, value, type) VALUES ('null-value', NULL, 'str')",
             (), "value")):
        with target.connect() as connection, pytest.raises(psycopg.errors.NotNullViolation, match=f"{column} cannot be NULL"):
            connection.execute(statement, parameters)
    # extended-memory's text times: one that is not a time is refused, not taken as "now"
    with target.connect() as connection, pytest.raises(psycopg.errors.InvalidDatetimeFormat, match="'yesterday-ish' is not a time"):
        connection.execute("INSERT INTO compat_extended_memory.memory_store (key, value, type, updated_at) "
                           "VALUES ('null-bad-time', '1', 'int', 'yesterday-ish')")
    assert fetch(target, "SELECT count(*) FROM raw_postgres.memory_writes WHERE key LIKE 'null-%%'") == [(0,)]
    with target.connect() as connection:  # allowed values and an update leaving them as they are pass
        connection.execute(f"UPDATE {V3_VIEW} SET status = 'archived', type = 'episodic' WHERE id = %s", (entry_id,))
        connection.execute(f"UPDATE {V3_VIEW} SET content = 'kept type' WHERE id = %s", (entry_id,))
    assert fetch(target, f"SELECT type, status, content FROM {V3_VIEW} WHERE id = %s", (entry_id,)) == \
        [("episodic", "archived", "kept type")]
    assert fetch(target, "SELECT count(*) FROM raw_postgres.memory_writes WHERE key = 'odd'") == [(0,)]

    client = MemoryClient(target.dsn, source=v3_app["file"])
    try:
        client.set("odd-type", "a value", "rollback-test", metadata={"claude_flow_v3": {"type": "bogus"}})
    finally:
        client.close()
    destination = tmp_path / "rollback" / "memory.db"
    destination.parent.mkdir()
    result = consolidate("rollback", str(v3_app["file"]), "--to", str(destination), "--json",
                         target=target, home=tmp_path / "state")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    error = json.loads(result.stdout)["error"]
    assert "CHECK constraint failed" in error and "'rollback-test'" in error and "'odd-type'" in error, error
    assert "type='bogus'" in error and not destination.exists()


def test_an_existing_entry_given_a_new_id_through_the_v3_view_has_it_in_the_rollback(v3_app, target, tmp_path):
    """An INSERT through the v3 view that gives an entry of the file a new v3 id (v3 writes with INSERT OR
    REPLACE and ids it generates) changes the id the view shows it by, and the rollback of the file writes
    that entry's row with it. The view refuses an id another entry has (v3's primary key); a metadata
    naming claude_flow_v3 written through the client is taken as given, and can give one: the rollback
    then writes every entry the view's id where the file's rows can hold it (two rows that trade ids
    included), else `unified-<id>`, as for a new row. Every row no write touched is the source's, byte for
    byte."""
    rows = v3_app["rows"]  # (id, namespace, key, content), by id
    renewed, kept, updated, taking, first, second = rows[:6]
    taken_id = rows[6][0]
    given = {renewed: "entry_1800000000002_renewed", kept: None}
    with target.connect() as connection:
        for (_, namespace, key, _), entry_id in given.items():
            connection.execute(f"INSERT INTO {V3_VIEW} (id, key, namespace, content) VALUES (%s, %s, %s, %s)",
                               (entry_id, key, namespace, f"inserted again {key}"))
        assert connection.execute(f"UPDATE {V3_VIEW} SET content = 'updated by id' WHERE id = %s",
                                  (updated[0],)).rowcount == 1
        connection.commit()
    for entry_id in (taken_id, given[renewed]):  # another row's own id, and the id just given
        with target.connect() as connection, pytest.raises(psycopg.errors.UniqueViolation, match="another entry"):
            connection.execute(f"INSERT INTO {V3_VIEW} (id, key, namespace, content) VALUES (%s, %s, %s, 'taken')",
                               (entry_id, taking[2], taking[1]))
    # an entry re-written with its own id passes (v3's INSERT OR REPLACE of its row)
    with target.connect() as connection:
        connection.execute(f"INSERT INTO {V3_VIEW} (id, key, namespace, content) VALUES (%s, %s, %s, %s)",
                           (given[renewed], renewed[2], renewed[1], f"inserted again {renewed[2]}"))
        connection.commit()
    client_given = {taking: taken_id, first: second[0], second: first[0]}
    client = MemoryClient(target.dsn)
    try:
        for (_, namespace, key, _), entry_id in client_given.items():
            client.set(key, f"set again {key}", namespace, metadata={"claude_flow_v3": {"id": entry_id}})
    finally:
        client.close()
    view = {(namespace, key): (entry_id, mart_id) for namespace, key, entry_id, mart_id in fetch(
        target, f"SELECT v.namespace, v.key, v.id, u.id FROM {V3_VIEW} AS v JOIN unified_memory AS u "
                "USING (namespace, key)")}
    # the view shows each entry by the id last given to it, else by the id its file gave it
    expected_view = {(namespace, key): entry_id for entry_id, namespace, key, _ in rows}
    expected_view.update({(namespace, key): entry_id or own_id
                          for (own_id, namespace, key, _), entry_id in (*given.items(), *client_given.items())})
    assert {entry: view[entry][0] for entry in expected_view} == expected_view

    destination = tmp_path / "rollback" / "memory.db"
    destination.parent.mkdir()
    result = consolidate("rollback", str(v3_app["file"]), "--to", str(destination), "--json",
                         target=target, home=tmp_path / "state")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    source = typed_rows(opened_copy(v3_app["file"], tmp_path / "source"), "memory_entries")
    written = typed_rows(opened_copy(destination, tmp_path / "written"), "memory_entries")

    touched = {(namespace, key) for _, namespace, key, _ in (*given, *client_given, updated)}
    assert sorted((e["namespace"], e["key"]) for e in report["changed"]) == sorted(touched)
    assert {r: row for r, row in written.items() if entry_of(row) not in touched} == \
        {r: row for r, row in source.items() if entry_of(row) not in touched}
    assert set(written) == set(source)  # each entry in its own row
    taking_entry = (taking[1], taking[2])
    assert {entry_of(row): row["id"][1] for row in written.values()} == \
        {**expected_view, taking_entry: f"unified-{view[taking_entry][1]}"}
    for rowid, row in written.items():  # what PostgreSQL does not hold stays the row's own
        assert row["embedding"] == source[rowid]["embedding"], rowid


def test_two_files_with_one_v3_id_under_different_keys_build_and_both_rows_match_it(tmp_path, target, home, realdata):
    tree = tmp_path / "tree"
    first = writable_copy(realdata / REAL_V3, tree / "first" / ".swarm" / "memory.db")
    second = writable_copy(first, tree / "second" / ".swarm" / "memory.db")
    entry_id, namespace, key, _ = file_rows(first, tmp_path / "expected")[0]
    with sqlite3.connect(second) as connection:
        connection.execute("UPDATE memory_entries SET key = key || '-copy' WHERE id = ?", (entry_id,))
    connection.close()
    result = consolidate("run", str(tree), "--no-backup", target=target, home=home)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert {(n, k) for n, k, _ in view_by_id(target, entry_id)} == {(namespace, key), (namespace, key + "-copy")}
    # each may still be written with its own id (v3's INSERT OR REPLACE of its row); another entry may not take it
    with target.connect() as connection:
        for own_key in (key, key + "-copy"):
            connection.execute(f"INSERT INTO {V3_VIEW} (id, key, namespace, content) VALUES (%s, %s, %s, %s)",
                               (entry_id, own_key, namespace, f"rewritten {own_key}"))
        connection.commit()
    assert sorted(view_by_id(target, entry_id)) == [(namespace, key, f"rewritten {key}"),
                                                    (namespace, key + "-copy", f"rewritten {key}-copy")]
    with target.connect() as connection, pytest.raises(psycopg.errors.UniqueViolation, match="another entry"):
        connection.execute(f"INSERT INTO {V3_VIEW} (id, key, namespace, content) VALUES (%s, 'a-third', %s, 'x')",
                           (entry_id, namespace))


def test_a_lookup_by_id_through_the_v3_view_uses_the_index_on_its_expression(consolidated):
    """The index on unified_memory over the view's id expression serves `WHERE id = ...` of a read, an
    UPDATE and a DELETE (with sequential scans disabled the planner keeps only the plans an index makes
    possible: a Seq Scan means the index does not serve the expression), and it is not unique."""
    ((definition,),) = fetch(consolidated, "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' "
                                           "AND indexname = 'unified_memory_v3_id_idx'")
    assert "UNIQUE" not in definition.upper() and "claude_flow_v3" in definition
    with consolidated.connect() as connection:
        connection.execute("SET LOCAL enable_seqscan = off")
        for statement in (f"SELECT * FROM {V3_VIEW} WHERE id = %s", f"UPDATE {V3_VIEW} SET content = 'x' WHERE id = %s",
                          f"DELETE FROM {V3_VIEW} WHERE id = %s"):
            for entry_id in ("entry_1774538919018_vgv4t4", "unified-1"):
                plan = "\n".join(line for (line,) in connection.execute("EXPLAIN " + statement, (entry_id,)))
                assert "unified_memory_v3_id_idx" in plan and "Seq Scan" not in plan, plan
        connection.rollback()
