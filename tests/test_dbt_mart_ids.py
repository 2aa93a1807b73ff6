"""The marts' ids, which a first build gives every entry in the ledger (consolidate.entry_ids, the
assign_entry_ids post-hook of int_memory_ranked): unified_memory numbers its rows by (namespace, key),
performance_metrics by key, both from 1 without gaps; and the constraints of the marts' contracts, which
stand in for not_null / unique data tests."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
import yaml

from loader.transform.build import run_dbt

from conftest import consolidate, fetch, v2_file


@pytest.mark.parametrize(("mart", "order"), [
    ("unified_memory", "namespace, key"),
    ("performance_metrics", "key"),
])
def test_mart_ids_number_the_rows_in_their_documented_order(consolidated, mart, order):
    rows = fetch(consolidated, f"SELECT id, row_number() OVER (ORDER BY {order}) FROM {mart}")
    assert rows, f"the sample gives {mart} no rows"
    assert [id_ for id_, _ in rows] == [number for _, number in rows]


# ------------------------------------------------------------------ the contracts' constraints, in place

MARTS = Path(__file__).resolve().parents[1] / "dbt_project" / "models" / "marts"


def declared_model(model: str) -> dict:
    """`model`'s entry in its YAML file (marts/<model>.yml), read here, not from dbt."""
    return next(m for m in yaml.safe_load((MARTS / f"{model}.yml").read_text())["models"] if m["name"] == model)


def declared_not_null(model: str) -> set[str]:
    """The columns of `model` whose contract declares NOT NULL (a not_null or primary_key constraint)."""
    node = declared_model(model)
    return {column["name"] for column in node["columns"]
            if {c["type"] for c in column.get("constraints", [])} & {"not_null", "primary_key"}}


def constraints_check(target, home):
    return run_dbt(["test", "--select", "assert_contract_constraints_in_place"], target, home, quiet=True)


def test_the_marts_hold_their_contracts_constraints_and_the_check_names_a_missing_one(consolidated, tmp_path):
    home = tmp_path / "state"
    for mart in ("unified_memory", "performance_metrics", "unified_memory_history", "migration_metadata"):
        not_null = {name for name, in fetch(consolidated, "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                                                          "AND attnum > 0 AND attnotnull", (f"public.{mart}",))}
        assert declared_not_null(mart) <= not_null, mart
    outcome = constraints_check(consolidated, home)
    assert outcome.success and outcome.passed > 0, outcome.failures

    # a table that lost three of its constraints (as one built before its contract declared them would)
    unique_name, = fetch(consolidated, "SELECT conname FROM pg_constraint WHERE conrelid = 'public.unified_memory'::regclass "
                                       "AND contype = 'u'")[0]
    check_name, check = fetch(consolidated, "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                                            "WHERE conrelid = 'public.performance_metrics'::regclass AND contype = 'c' "
                                            "AND pg_get_constraintdef(oid) LIKE '%%namespace%%'")[0]
    with consolidated.connect() as connection:
        connection.execute("ALTER TABLE public.unified_memory_history ALTER COLUMN flags DROP NOT NULL")
        connection.execute(f'ALTER TABLE public.unified_memory DROP CONSTRAINT "{unique_name}"')
        connection.execute(f'ALTER TABLE public.performance_metrics DROP CONSTRAINT "{check_name}"')
    try:
        outcome = constraints_check(consolidated, home)
        assert not outcome.success and len(outcome.failures) == 1
        assert "assert_contract_constraints_in_place" in outcome.failures[0] and "3 results" in outcome.failures[0]
    finally:
        with consolidated.connect() as connection:
            connection.execute("ALTER TABLE public.unified_memory_history ALTER COLUMN flags SET NOT NULL")
            connection.execute(f'ALTER TABLE public.unified_memory ADD CONSTRAINT "{unique_name}" UNIQUE (key, namespace)')
            connection.execute(f'ALTER TABLE public.performance_metrics ADD CONSTRAINT "{check_name}" {check}')
    assert constraints_check(consolidated, home).success


METRICS_NAMESPACE = "performance-metrics"  # dbt_project.yml: vars.performance_metrics_namespace


@pytest.mark.parametrize(("mart", "column", "value"), [
    ("unified_memory", "namespace", METRICS_NAMESPACE),
    ("performance_metrics", "namespace", "default"),
    ("unified_memory", "id", 0),
    ("performance_metrics", "id", -1),
])
def test_the_marts_refuse_a_row_that_would_repeat_in_the_v2_compatibility_view(consolidated, mart, column, value):
    """compat.memory_entries is unified_memory UNION ALL performance_metrics with negated ids, and has no
    unique tests: its ids and (key, namespace) are unique only while each mart keeps its own namespace
    and positive ids. Triggers off (session_replication_role), so the write path's capture does not
    answer first: the table's own constraints refuse the row."""
    with consolidated.connect() as connection:
        connection.execute("SET session_replication_role = replica")
        with pytest.raises(psycopg.errors.CheckViolation):
            connection.execute(f"UPDATE public.{mart} SET {column} = %s WHERE id = (SELECT min(id) FROM public.{mart})",
                               (value,))
        connection.rollback()
    [(unique_ids, unique_pairs, rows)] = fetch(
        consolidated, "SELECT count(DISTINCT id), count(DISTINCT (key, namespace)), count(*) FROM compat.memory_entries")
    assert unique_ids == unique_pairs == rows


def declared_columns(model: str) -> list[tuple[str, str, str | None]]:
    """(name, type, default expression) of each column `model`'s contract declares, in its order."""
    node = declared_model(model)
    columns = []
    for column in node["columns"]:
        defaults = [c["expression"].split(None, 1)[1] for c in column.get("constraints", [])
                    if c["type"] == "custom" and c["expression"].lower().startswith("default ")]
        # format_type names a pg_catalog type without its schema (metric_value is declared pg_catalog.numeric)
        columns.append((column["name"], column["data_type"].removeprefix("pg_catalog."),
                        defaults[0] if defaults else None))
    return columns


@pytest.mark.parametrize("mart", ["unified_memory", "performance_metrics", "unified_memory_history",
                                  "migration_metadata", "reconciliation"])
def test_a_contract_table_made_rows_first_has_the_declared_columns_types_and_defaults(consolidated, mart):
    # macros/create_table_as.sql makes these tables with CREATE TABLE ... AS and adds the constraints after
    # the rows: each column must still have its declared type, its place and its default
    columns = fetch(consolidated, "SELECT a.attname, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid) "
                                  "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                                  "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                    (f"public.{mart}",))
    assert columns == [tuple(c) for c in declared_columns(mart)]


def test_a_full_build_whose_rows_break_a_constraint_fails_and_keeps_the_marts(tmp_path, target, home):
    # the constraints come after the rows (macros/create_table_as.sql): adding them must still refuse rows
    # that break one, and fail the build with the table it replaces untouched
    at = 1754378470
    v2_file(tmp_path / "tree" / "memory.db", [("alpha", '"a"', "default", at), ("beta", '"b"', "default", at),
                                              ("gamma", '"c"', "notes", at),
                                              ("perf:1", '{"duration": 3}', "performance-metrics", at)])
    assert consolidate("run", str(tmp_path / "tree"), "--no-backup", target=target, home=home).returncode == 0
    before = fetch(target, "SELECT id, namespace, key FROM unified_memory ORDER BY id")
    assert [id_ for id_, _, _ in before] == [1, 2, 3]
    # the ledger gives gamma id 2 (numbered as a performance_metrics id, which 2 is not yet): beta has it too
    with target.connect() as connection:
        connection.execute("UPDATE consolidate.entry_ids SET mart = 'performance_metrics', id = 2 "
                           "WHERE namespace = 'notes' AND key = 'gamma'")
    failed = consolidate("build", "--full-refresh", "--json", target=target, home=home)
    assert failed.returncode == 1, failed.stdout[-2000:] + failed.stderr[-2000:]
    failures = "\n".join(json.loads(failed.stdout)["failures"])
    assert "unified_memory" in failures and "(id)=(2)" in failures, failures
    assert fetch(target, "SELECT id, namespace, key FROM unified_memory ORDER BY id") == before


def test_marts_built_before_their_checks_are_built_again_by_the_next_build(tmp_path, target, home):
    """A table made before its contract declared a check keeps lacking it through incremental builds
    (dbt adds a contract's constraints only when it creates the table): the next build starts from raw,
    passes, and leaves every check in place, the entries and their ids unchanged."""
    at = 1754378470
    v2_file(tmp_path / "tree" / "memory.db", [("alpha", '"a"', "default", at),
                                              ("perf:1", '{"duration": 3}', METRICS_NAMESPACE, at)])
    assert consolidate("run", str(tmp_path / "tree"), "--no-backup", target=target, home=home).returncode == 0
    checks = "SELECT count(*) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c'"
    entries = "SELECT 'u', id, namespace, key FROM unified_memory UNION ALL SELECT 'p', id, namespace, key FROM performance_metrics"
    before = sorted(fetch(target, entries))
    with target.connect() as connection:
        for mart in ("unified_memory", "performance_metrics"):
            for name, in connection.execute("SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass "
                                            "AND contype = 'c'", (f"public.{mart}",)).fetchall():
                connection.execute(f'ALTER TABLE public.{mart} DROP CONSTRAINT "{name}"')
    assert fetch(target, checks, ("public.unified_memory",)) == [(0,)]
    built = consolidate("build", "--json", target=target, home=home)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    assert fetch(target, checks, ("public.unified_memory",)) == [(2,)]
    assert fetch(target, checks, ("public.performance_metrics",)) == [(2,)]
    assert sorted(fetch(target, entries)) == before
