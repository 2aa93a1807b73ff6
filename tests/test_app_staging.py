"""Typed staging of the application tables analysts query (n8n workflows, executions, credentials without
secrets; Flowise chat flows, chat messages, executions): each column has the type its SQLite CREATE TABLE
declared, on the real n8n and Flowise files. The expected type comes from SQLite's own record of the
declaration (PRAGMA table_info) and SQLite's affinity rules, independently of the sqlglot parse the
loader does."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_runtime import SHARED_APPS

from conftest import consolidate, fetch, read_private_copy

MODELS = {  # model -> (kind, table, columns left out)
    "stg_n8n__workflows": ("n8n", "workflow_entity", set()),
    "stg_n8n__executions": ("n8n", "execution_entity", set()),
    "stg_n8n__credentials": ("n8n", "credentials_entity", {"data"}),
    "stg_flowise__chat_flows": ("flowise", "chat_flow", set()),
    "stg_flowise__chat_messages": ("flowise", "chat_message", set()),
    "stg_flowise__executions": ("flowise", "execution", set()),
}
LINEAGE = ["source_table", "source_path", "source_sha256", "load_id", "source_rowid", "loaded_at"]


def expected_type(declared: str) -> str:
    """SQLite's affinity rules, with the names these applications use for booleans and times."""
    declared = declared.lower()
    if declared.startswith("bool"):
        return "boolean"
    if "int" in declared:
        return "bigint"
    if declared.startswith(("datetime", "timestamp")):
        return "timestamp with time zone"
    if any(word in declared for word in ("real", "floa", "doub")):
        return "double precision"
    return "text"


@pytest.fixture(scope="module")
def staged(realdata, server_dsn, tmp_path_factory):
    from conftest import fresh_database
    roots = [realdata / "n8n", realdata / "flowise", SHARED_APPS / "n8n-1.100.1"]
    files = [path for root in roots for path in sorted(root.rglob("database.sqlite"))]
    home = tmp_path_factory.mktemp("staging-home")
    with fresh_database(server_dsn) as target:
        result = consolidate("run", *map(str, roots), "--no-backup", "--dsn", target.dsn, "--home", str(home))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield target, files


def declared_columns(path: Path, table: str, scratch: Path) -> dict[str, str]:
    return {name: declared for _, name, declared, *_ in
            read_private_copy(path, scratch, f"SELECT * FROM pragma_table_info('{table}')")}


def test_each_column_has_its_declared_type(staged, tmp_path):
    target, files = staged
    for model, (_, table, left_out) in MODELS.items():
        found = fetch(target, "SELECT column_name, data_type FROM information_schema.columns "
                              "WHERE table_schema = 'staging' AND table_name = %s ORDER BY ordinal_position", [model])
        assert found, model
        expected: dict[str, str] = {}
        for path in files:
            expected.update({column: expected_type(declared) for column, declared in
                             declared_columns(path, table, tmp_path / model / path.parent.name).items()
                             if column not in left_out})
        if not expected:  # no file has this table: the model is empty, with its key and lineage
            assert [name for name, _ in found] == ["id", *LINEAGE]
            continue
        assert dict(found[:-len(LINEAGE)]) == expected, model
        assert [name for name, _ in found[-len(LINEAGE):]] == LINEAGE


def test_values_keep_their_meaning(staged, tmp_path):
    target, _ = staged
    source = SHARED_APPS / "n8n-1.100.1" / "database.sqlite"
    expected = read_private_copy(source, tmp_path / "wf", 'SELECT id, active, "createdAt", "triggerCount" '
                                                          "FROM workflow_entity ORDER BY id")
    found = fetch(target, """
        SELECT id, active, to_char("createdAt" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'), "triggerCount"
        FROM staging.stg_n8n__workflows WHERE source_path = %s ORDER BY id""", [str(source)])
    assert found == [(i, bool(active), created, count) for i, active, created, count in expected]


def test_credentials_leave_the_secret_out(staged):
    target, _ = staged
    columns = {name for (name,) in fetch(target, "SELECT column_name FROM information_schema.columns "
                                                 "WHERE table_schema = 'staging' AND table_name = 'stg_n8n__credentials'")}
    assert "data" not in columns and {"id", "name", "type"} <= columns
    assert fetch(target, "SELECT count(*) FROM staging.stg_n8n__credentials") == [(1,)]


def test_the_declared_types_are_in_the_ledger(staged, tmp_path):
    target, files = staged
    recorded = dict(fetch(target, "SELECT source_column, declared_type FROM consolidate.load_columns "
                                  "WHERE source_table = 'execution_entity' AND source_path = %s", [str(files[0])]))
    pragma = declared_columns(files[0], "execution_entity", tmp_path / "pragma")
    assert set(recorded) == set(pragma)
    assert all(recorded[column] for column in pragma if pragma[column])
    # sqlglot's spelling of the same declaration (integer -> INT, varchar(36) -> VARCHAR(36))
    assert recorded["finished"] == "BOOLEAN" and recorded["workflowId"] == "VARCHAR(36)"
