"""Real n8n 1.100.1 on PostgreSQL, after `consolidate app-copy`, sees what it saw on SQLite.

n8n builds its own schema (one CLI command on an empty schema, as its own role); app-copy fills it from
a private copy of the SQLite database n8n 1.100.1 wrote; then n8n itself exports the workflows and the
decrypted credentials, which must equal what it exported from SQLite. Expectations come from the
shared exports and from sqlite3 on private copies, never from app-copy's own report.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psycopg
import pytest
from app_runtime import SHARED_APPS, app_database, n8n, n8n_export, require_installed

from conftest import REALDATA, consolidate, read_private_copy

FIXTURE = SHARED_APPS / "n8n-1.100.1"
SOURCE = FIXTURE / "database.sqlite"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def app_copy(database, source: Path, *options: str):
    result = consolidate("app-copy", str(source), "--schema", database.schema, "--dsn", database.admin.dsn,
                         "--json", *options)
    report = json.loads(result.stdout) if result.stdout.strip().startswith("{") else None
    return result, report


def schema_state(database) -> dict[str, list]:
    """Every row of every table of the schema, as text (to prove nothing was written)."""
    tables = [name for (name,) in database.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", [database.schema])]
    return {table: sorted(row[0] for row in database.fetch(f'SELECT t::text FROM {database.schema}."{table}" AS t'))
            for table in tables}


def without_updated_at(items: list[dict]) -> list[dict]:
    """n8n may rewrite updatedAt of rows it touches; everything else must be equal."""
    return [{k: v for k, v in item.items() if k != "updatedAt"} for item in items]


def sqlite_rows(source: Path, scratch: Path, query: str) -> list[tuple]:
    return read_private_copy(source, scratch, query)


@pytest.fixture(scope="module")
def copied(server_dsn, tmp_path_factory):
    """A schema n8n built, a refused newer source, then the fixture database copied into it."""
    require_installed(SOURCE, "the n8n 1.100.1 fixture database", "shared/apps")
    home = tmp_path_factory.mktemp("n8n-home")
    with app_database(server_dsn, "n8n", database_privileges="CONNECT, CREATE") as database:
        built = n8n(database, home, "export:workflow", "--all", f"--output={home / 'empty.json'}")
        migrations = database.fetch("SELECT count(*) FROM n8n.migrations")[0][0]
        assert migrations > 0, built.stdout[-3000:] + built.stderr[-3000:]
        first_start = schema_state(database)
        shell_owner = database.fetch('SELECT id::text FROM n8n."user"')

        newer = REALDATA / "n8n" / "sutazai__sutazaiapp" / "database.sqlite"
        refused = app_copy(database, newer) if newer.exists() else None
        after_refusal = schema_state(database)

        source_sha256 = sha256(SOURCE)
        result, report = app_copy(database, SOURCE)
        yield {"database": database, "home": home, "result": result, "report": report,
               "first_start": first_start, "refused": refused, "after_refusal": after_refusal,
               "source_sha256": source_sha256, "newer": newer,
               "shell_owner": shell_owner}


def test_copy_verifies_every_table(copied):
    result, report = copied["result"], copied["report"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert report["status"] == "verified"
    assert all(table["matches"] for table in report["tables"])
    assert report["tables"], "every table is reported"


def test_real_n8n_on_postgresql_exports_what_it_exported_from_sqlite(copied):
    database, home = copied["database"], copied["home"]
    workflows = n8n_export(database, home, "workflow")
    credentials = n8n_export(database, home, "credentials", "--decrypted")
    expected_workflows = json.loads((FIXTURE / "export-workflows.json").read_text())
    expected_credentials = json.loads((FIXTURE / "export-credentials-decrypted.json").read_text())
    key = lambda item: item["id"]  # noqa: E731
    assert without_updated_at(sorted(workflows, key=key)) == without_updated_at(sorted(expected_workflows, key=key))
    assert without_updated_at(sorted(credentials, key=key)) == without_updated_at(sorted(expected_credentials, key=key))
    assert any(item["data"] for item in credentials), "the credential decrypts with n8n's key"


def test_counts_and_secret_blob_match_sqlite(copied, tmp_path):
    database, report = copied["database"], copied["report"]
    for table in report["tables"]:
        if table["source_rows"] is None or table["action"] == "skipped":
            continue
        (expected,) = sqlite_rows(SOURCE, tmp_path / table["table"], f'SELECT count(*) FROM "{table["table"]}"')[0]
        assert database.fetch(f'SELECT count(*) FROM n8n."{table["table"]}"')[0][0] == expected, table["table"]
    blobs = sqlite_rows(SOURCE, tmp_path / "blobs", "SELECT id, data FROM credentials_entity ORDER BY id")
    assert database.fetch("SELECT id, data FROM n8n.credentials_entity ORDER BY id") == blobs


def test_typed_values_keep_their_meaning(copied, tmp_path):
    """Timestamps are the SQLite UTC text, unshifted; booleans are 0/1; JSON text is kept verbatim."""
    database = copied["database"]
    expected = sqlite_rows(SOURCE, tmp_path / "wf",
                           'SELECT id, "createdAt", active, nodes FROM workflow_entity ORDER BY id')
    found = database.fetch(
        "SELECT id, to_char(\"createdAt\" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'), active, nodes::text "
        "FROM n8n.workflow_entity ORDER BY id")
    assert found == [(id_, created, bool(active), nodes) for id_, created, active, nodes in expected]


def test_first_start_rows_replaced_by_the_sources(copied, tmp_path):
    database, report = copied["database"], copied["report"]
    source_users = sqlite_rows(SOURCE, tmp_path / "u", "SELECT id FROM user")
    assert database.fetch('SELECT id::text FROM n8n."user"') == source_users != copied["shell_owner"]
    replaced = {item["table"] for item in report["replaced_first_start_rows"]}
    expected = {table for table, rows in copied["first_start"].items() if rows and table != "migrations"}
    assert replaced == expected == {"settings", "user", "project", "project_relation"}


def test_the_n8n_role_reaches_only_its_own_schema(copied):
    database = copied["database"]
    with psycopg.connect(database.role_dsn) as connection:
        assert connection.execute("SELECT count(*) FROM workflow_entity").fetchone()[0] == 2
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            connection.execute("SELECT count(*) FROM consolidate.app_copies")


def test_ledger_row(copied):
    database, report = copied["database"], copied["report"]
    ledger = database.fetch("SELECT status, mode, application, target_schema, source_sha256 "
                            "FROM consolidate.app_copies WHERE copy_id = %s", [report["copy_id"]])
    assert ledger == [("verified", "copy", "n8n", "n8n", copied["source_sha256"])]


def test_newer_source_is_refused_before_anything_is_written(copied, tmp_path):
    if copied["refused"] is None:
        pytest.skip("no newer n8n database in realdata")
    result, report = copied["refused"]
    newest_source = sqlite_rows(copied["newer"], tmp_path / "m",
                                "SELECT name FROM migrations ORDER BY timestamp DESC LIMIT 1")[0][0]
    newest_target = copied["database"].fetch("SELECT name FROM n8n.migrations ORDER BY timestamp DESC LIMIT 1")[0][0]
    assert result.returncode == 5, result.stderr[-2000:]
    assert report["status"] == "refused"
    assert "versions differ" in report["message"]
    assert newest_source in report["message"] and newest_target in report["message"]
    assert "start that newer version once" in report["message"]
    assert copied["after_refusal"] == copied["first_start"], "a refused copy writes nothing"


def test_second_copy_is_refused_unless_replace(copied):
    database = copied["database"]
    before = schema_state(database)
    result, report = app_copy(database, SOURCE)
    assert result.returncode == 5 and "already holds n8n data" in report["message"]
    assert schema_state(database) == before
    result, report = app_copy(database, SOURCE, "--replace")
    assert result.returncode == 0, result.stderr[-2000:]
    assert schema_state(database) == before  # the same rows again


def test_a_value_changed_in_the_target_is_caught(copied):
    database = copied["database"]
    (workflow_id, name), *_ = database.fetch("SELECT id, name FROM n8n.workflow_entity ORDER BY id")
    with database.admin.connect() as connection:
        connection.execute("UPDATE n8n.workflow_entity SET name = name || '!' WHERE id = %s", [workflow_id])
    try:
        result, report = app_copy(database, SOURCE, "--verify-only")
        assert result.returncode == 1
        (differing,) = [t for t in report["tables"] if not t["matches"]]
        assert differing["table"] == "workflow_entity"
        assert differing["differences"] == [f"row id={workflow_id!r}: values differ"]
    finally:
        with database.admin.connect() as connection:
            connection.execute("UPDATE n8n.workflow_entity SET name = %s WHERE id = %s", [name, workflow_id])
    result, report = app_copy(database, SOURCE, "--verify-only")
    assert result.returncode == 0, result.stderr[-2000:]
    # it compared what the copy copied, and says it wrote nothing
    assert report["copied_rows"] == 0 and report["compared_rows"] == copied["report"]["copied_rows"] > 0
    assert report["replaced_first_start_rows"] == [] and not any(
        "replaced" in (table["note"] or "") for table in report["tables"])
    text = consolidate("app-copy", str(SOURCE), "--schema", database.schema, "--dsn", database.admin.dsn,
                       "--verify-only")
    assert text.returncode == 0 and "replaced" not in text.stderr, text.stderr[-2000:]
    assert f"{report['compared_rows']:,} source rows compared, nothing written" in " ".join(text.stderr.split())


def test_the_source_file_is_unchanged(copied):
    assert sha256(SOURCE) == copied["source_sha256"]
    assert not SOURCE.with_name(SOURCE.name + "-wal").exists()
    assert not SOURCE.with_name(SOURCE.name + "-journal").exists()
