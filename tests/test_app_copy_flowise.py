"""The Flowise databases of shared/realdata into schemas built by Flowise's own PostgreSQL migrations.

Flowise itself does not start here (README: `flowise start` exits at once without building anything),
so each schema is built by the published package's migrations, run as Flowise runs them at start
(tests/apps/flowise_migrate.js), as its own role. A file whose migrations are exactly those a Flowise
version ships for SQLite must copy and verify into that version's schema; into any other version's it
must be refused with the version message, writing nothing. Expectations come from sqlite3 on private
copies and from the packages' own migration lists.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from app_runtime import (
    FLOWISE_DIR,
    app_database,
    flowise_build_schema,
    flowise_entities,
    flowise_migrations,
    flowise_versions,
    require_installed,
)

from conftest import consolidate, read_private_copy

VERSIONS = ("3.0.1", "2.2.3")  # .ci/install-flowise


def realdata_files(realdata: Path) -> list[Path]:
    return sorted((realdata / "flowise").glob("*/database.sqlite"))


@pytest.fixture(scope="module")
def installed():
    require_installed(FLOWISE_DIR, "Flowise's migrations", ".ci/install-flowise")
    assert set(VERSIONS) <= set(flowise_versions())
    return {version: flowise_migrations(version, "sqlite") for version in VERSIONS}


@pytest.fixture(scope="module")
def schemas(server_dsn, installed):
    """One database per Flowise version, its schema built by that version's own migrations."""
    with app_database(server_dsn, "flowise") as newer, app_database(server_dsn, "flowise") as older:
        for database, version in ((newer, VERSIONS[0]), (older, VERSIONS[1])):
            flowise_build_schema(database, version)
        yield {VERSIONS[0]: newer, VERSIONS[1]: older}


def state(database) -> dict[str, list]:
    tables = [name for (name,) in database.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'flowise' ORDER BY 1")]
    return {table: sorted(row[0] for row in database.fetch(f'SELECT t::text FROM flowise."{table}" AS t'))
            for table in tables}


def test_every_realdata_flowise_file_copies_into_its_version_or_is_refused(realdata, installed, schemas, tmp_path):
    files = realdata_files(realdata)
    assert files, "shared/realdata has Flowise databases"
    matched = set()
    for source in files:
        names = sorted(name for (name,) in read_private_copy(source, tmp_path / "m", "SELECT name FROM migrations"))
        for version, database in schemas.items():
            before = state(database)
            result = consolidate("app-copy", str(source), "--schema", "flowise", "--dsn", database.admin.dsn,
                                 "--json", "--replace")
            report = json.loads(result.stdout)
            if names == sorted(installed[version]):
                matched.add(source)
                assert result.returncode == 0, (source, version, result.stdout[-3000:], result.stderr[-2000:])
                assert report["status"] == "verified" and all(t["matches"] for t in report["tables"])
                check_rows(source, database, tmp_path / "rows")
                assert_flowise_sees_the_same(source, database, version, tmp_path / "entities")
            else:
                assert result.returncode == 5, (source, version, result.stdout[-3000:])
                assert "flowise versions differ" in report["message"]
                assert state(database) == before, "a refused copy writes nothing"
    assert matched == set(files), "every realdata Flowise file has its version's schema here"


def assert_flowise_sees_the_same(source: Path, database, version: str, scratch: Path) -> None:
    """Flowise's own entities (its server's typeorm layer) read the same rows from PostgreSQL as from SQLite."""
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / "database.sqlite"
    shutil.copyfile(source, copy)  # realdata Flowise files have no -wal (journal mode delete)
    assert not source.with_name(source.name + "-wal").exists()
    from_sqlite = flowise_entities(version, sqlite_copy=copy)
    assert any(from_sqlite.values()), "the file holds rows Flowise reads"
    assert flowise_entities(version, database=database) == from_sqlite


def check_rows(source: Path, database, scratch: Path) -> None:
    """Every copied table holds the SQLite row count; typed values keep their meaning; credential blobs
    are the exact bytes."""
    tables = [name for (name,) in read_private_copy(
        source, scratch / "t", "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' "
        "AND name NOT IN ('migrations')")]
    in_target = {name for (name,) in database.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'flowise'")}
    for table in tables:
        (count,), = read_private_copy(source, scratch / table, f'SELECT count(*) FROM "{table}"')
        if table in in_target:
            assert database.fetch(f'SELECT count(*) FROM flowise."{table}"')[0][0] == count, table
        else:
            assert count == 0, f"{table} has rows but no table in Flowise's schema"
    flows = read_private_copy(source, scratch / "f", 'SELECT id, "createdDate", deployed, "flowData" FROM chat_flow')
    found = database.fetch("""SELECT id::text, to_char("createdDate", 'YYYY-MM-DD HH24:MI:SS'), deployed, "flowData"
                              FROM flowise.chat_flow""")
    assert sorted(found) == sorted((i, created, None if deployed is None else bool(deployed), data)
                                   for i, created, deployed, data in flows)
    credentials = read_private_copy(source, scratch / "c", 'SELECT id, "encryptedData" FROM credential')
    assert sorted(database.fetch('SELECT id::text, "encryptedData" FROM flowise.credential')) == sorted(credentials)


def test_login_sessions_are_not_copied_and_do_not_refuse_the_copy(realdata, installed, schemas, tmp_path):
    """Flowise 3's SQLite file keeps its login sessions in login_sessions (connect-sqlite3); on PostgreSQL
    Flowise keeps them in public.login_sessions, outside its schema. A file with a live session copies, the
    sessions left behind and said so (it was refused: a table with no counterpart)."""
    version = VERSIONS[0]
    (source,) = [path for path in realdata_files(realdata) if sorted(
        name for (name,) in read_private_copy(path, tmp_path / "m", "SELECT name FROM migrations")) == sorted(installed[version])]
    copy = tmp_path / "with-session" / "database.sqlite"
    copy.parent.mkdir()
    shutil.copyfile(source, copy)
    with sqlite3.connect(copy) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS login_sessions (sid PRIMARY KEY, expired, sess)")
        connection.execute("INSERT INTO login_sessions VALUES ('sid1', 1999999999000, '{\"cookie\": {}}')")
    connection.close()
    result = consolidate("app-copy", str(copy), "--schema", "flowise", "--dsn", schemas[version].admin.dsn,
                         "--json", "--replace")
    report = json.loads(result.stdout)
    assert result.returncode == 0, report.get("message")
    (sessions,) = [t for t in report["tables"] if t["table"] == "login_sessions"]
    assert sessions["action"] == "skipped" and sessions["source_rows"] == 1 and "sign in again" in sessions["note"]
