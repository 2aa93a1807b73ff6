"""The ledger's versions: a ledger made by release 0.1.0 is upgraded in place, and the upgrade keeps
every row it held.

tests/data/ledger-0.1.0.sql.gz is a pg_dump (--inserts, schemas consolidate and raw_*) of a database
that commit 02cbf05 (release 0.1.0, before ledger versions) made with

    CONSOLIDATE_SECRET_KEY=fixture-key-0123456789
    python -m loader sample /tmp/restructure_old/SAMPLEROOT
    python -m loader run /tmp/restructure_old/SAMPLEROOT --no-backup
    python -m loader sync /tmp/restructure_old/SAMPLEROOT --no-build

so it holds the tables of all four places that release created ledger tables in (load, sync, run's
builds, validate). The sample is deterministic, so writing it again gives the same bytes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from loader import ledger
from loader.fixtures.sample import write_sample

from conftest import consolidate, fetch

DUMP = Path(__file__).parent / "data" / "ledger-0.1.0.sql.gz"
DUMPED_ROOT = "/tmp/restructure_old/SAMPLEROOT"
KEY = "fixture-key-0123456789"
LEDGER_TABLES = ("loads", "load_files", "load_tables", "load_columns", "load_changes", "deleted_rows", "builds",
                 "validation_runs", "validation_files")


def restore_release_0_1_0(target, root: Path) -> None:
    """The dumped database, its source paths moved from where it was made to `root`."""
    script = gzip.decompress(DUMP.read_bytes()).decode("utf-8").replace(DUMPED_ROOT, str(root))
    with target.connect(autocommit=True) as connection:
        connection.execute(script)


def row_counts(target) -> dict[str, int]:
    return {name: fetch(target, f"SELECT count(*) FROM consolidate.{name}")[0][0] for name in LEDGER_TABLES}


def test_a_ledger_of_release_0_1_0_is_upgraded_in_place_and_keeps_its_rows(target, home, tmp_path):
    root = tmp_path / "SAMPLEROOT"
    write_sample(root)
    restore_release_0_1_0(target, root)
    before = row_counts(target)
    current_before = dict(fetch(target, "SELECT source_path, load_id FROM consolidate.current_loads"))
    assert fetch(target, "SELECT to_regclass('consolidate.schema_version')") == [(None,)]
    assert before["loads"] == 2 and before["load_changes"] > 0 and before["validation_files"] > 0

    home.mkdir(parents=True)
    (home / "secret.key").write_text(KEY)  # the key the dumped loads hashed secrets with
    result = consolidate("run", str(root), "--no-backup", "--json", target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)

    versions = fetch(target, "SELECT version, tool_version FROM consolidate.schema_version ORDER BY version")
    assert [number for number, _ in versions] == list(range(1, len(ledger.MIGRATIONS) + 1))
    # the same bytes: nothing reloaded, the dumped loads stay current and every row is kept
    assert {row["status"] for row in report["files"]} == {"unchanged", "copy"}
    assert dict(fetch(target, "SELECT source_path, load_id FROM consolidate.current_loads")) == current_before
    after = row_counts(target)
    assert after["loads"] == before["loads"] + 1
    assert after["load_files"] == before["load_files"] + len(report["files"])
    for name in ("load_tables", "load_columns", "load_changes", "deleted_rows"):
        assert after[name] == before[name], name
    assert after["validation_runs"] == before["validation_runs"] + 1 and report["validation"]["passed"]

    status = consolidate("status", "--json", target=target, home=home)
    assert status.returncode == 0, status.stderr
    assert {f["source_path"] for f in json.loads(status.stdout)["files"]} >= set(current_before)


def test_ensure_applies_each_migration_once_and_refuses_a_newer_ledger(target):
    with target.connect(autocommit=True) as connection:
        assert ledger.version(connection) == 0
        assert ledger.ensure(connection) == len(ledger.MIGRATIONS)
        assert ledger.ensure(connection) == len(ledger.MIGRATIONS)
        rows = connection.execute("SELECT version FROM consolidate.schema_version ORDER BY version").fetchall()
        assert [version for (version,) in rows] == list(range(1, len(ledger.MIGRATIONS) + 1))
        for name in LEDGER_TABLES:
            assert ledger.relation_exists(connection, ledger.LEDGER_SCHEMA, name), name
        connection.execute("INSERT INTO consolidate.schema_version (version, tool_version) VALUES (%s, 'later')",
                           (len(ledger.MIGRATIONS) + 1,))
        with pytest.raises(ledger.LedgerTooNew, match="upgrade consolidate"):
            ledger.ensure(connection)


def test_every_command_refuses_a_newer_ledger_as_a_usage_error(target, home, tmp_path):
    """A ledger a later release wrote: exit 2 and one line naming it (a JSON document with --json), no
    traceback, nothing written."""
    with target.connect(autocommit=True) as connection:
        ledger.ensure(connection)
        connection.execute("INSERT INTO consolidate.schema_version (version, tool_version) VALUES (%s, 'later')",
                           (len(ledger.MIGRATIONS) + 1,))
    write_sample(tmp_path / "tree")
    # (sync --no-build: a building sync forks dbt's warm-up first, whose output test_dbt_process checks)
    for command in (["sync", str(tmp_path / "tree"), "--json", "--no-build"], ["load", str(tmp_path / "tree"), "--json"],
                    ["build"]):
        result = consolidate(*command, target=target, home=home)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (command, result.stderr[-2000:])
        assert "newer than this consolidate" in result.stderr, result.stderr
        if "--json" in command:
            assert json.loads(result.stdout)["exit_code"] == 2
    assert fetch(target, "SELECT count(*) FROM consolidate.loads") == [(0,)]
