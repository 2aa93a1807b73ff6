"""The staging parse and the gathering of current versions under parallel query: a server whose planner
prefers parallel plans (a tuned server, here forced by zero parallel costs) must build the same marts, and
the parse must run in parallel workers without catching an exception (no process may start a
subtransaction while a parallel query runs, the leader included).

A claude-flow v2 file whose values take every path of the parse (compressed documents with good and bad
base64, bad UTF-8, long texts with few or many brackets, nested near and past the depth limit) is
consolidated by the real CLI; each value's expected data_type and flags follow from how it was built."""

from __future__ import annotations

import base64
import json

import pytest
from psycopg import sql

from conftest import consolidate, fetch, fresh_database, v2_file

LIMIT = 512  # json_max_depth in dbt_project/macros/create_udfs.sql


def compressed_bytes(payload: bytes) -> str:
    return "__compressed__" + base64.b64encode(payload).decode()


LONG_STRING = "x" * 12_000  # longer than the 10 kB fast path of the default 2 MB stack
# key -> (value, expected data_type, expected flag or None)
CASES = {
    "compressed-json": (compressed_bytes(b'{"a": [1, 2]}'), "json", None),
    "compressed-4-byte-utf8": (compressed_bytes('{"e": "\U0001F600 \u00e9"}'.encode()), "json", None),
    "compressed-with-newlines": ("__compressed__" + "eyJh\nIjog\r\nMX0=", "json", None),
    "compressed-not-json": (compressed_bytes(b"not json"), "text", "invalid_compressed:value"),
    "compressed-bad-symbol": ("__compressed__***", "text", "invalid_compressed:value"),
    "compressed-no-padding": ("__compressed__eyJhIjoxfQ", "text", "invalid_compressed:value"),
    "compressed-padding-inside": ("__compressed__MQ==MQ==", "text", "invalid_compressed:value"),
    "compressed-padding-after-a-full-group": ("__compressed__MTIz=", "text", "invalid_compressed:value"),
    "compressed-overlong-utf8": (compressed_bytes(b'"\xc0\xae"'), "text", "invalid_compressed:value"),
    "compressed-surrogate": (compressed_bytes(b'"\xed\xa0\x80"'), "text", "invalid_compressed:value"),
    "compressed-beyond-unicode": (compressed_bytes(b'"\xf4\x90\x80\x80"'), "text", "invalid_compressed:value"),
    "compressed-truncated-utf8": (compressed_bytes(b'"\xe2\x82"'), "text", "invalid_compressed:value"),
    "compressed-nul": (compressed_bytes(b'1\x00'), "text", "invalid_compressed:value"),
    "long-string": (json.dumps(LONG_STRING), "json", None),
    "long-text": (LONG_STRING, "text", None),
    "long-many-shallow-brackets": (json.dumps([{"n": [n]} for n in range(700)]), "json", None),
    "long-at-the-limit": ("[" * LIMIT + json.dumps(LONG_STRING) + "]" * LIMIT, "json", None),
    "long-past-the-limit": ("[" * (LIMIT + 1) + json.dumps(LONG_STRING) + "]" * (LIMIT + 1), "text",
                            "json_too_deep:value"),
    "long-very-deep": ("[" * 8000 + "]" * 8000, "text", "json_too_deep:value"),
    "long-very-deep-unclosed": ("[" * 12_000, "text", "json_too_deep:value"),
    "long-brackets-in-a-string": (json.dumps("[" * 12_000), "json", None),
    "short-past-the-limit": ("[" * (LIMIT + 1) + "]" * (LIMIT + 1), "text", "json_too_deep:value"),
    "nan": ('{"a": NaN}', "unsupported_json", "json_rejected_by_postgres:value"),
    "plain": ('{"plain": true}', "json", None),
}
PARALLEL_FIRST = {"parallel_setup_cost": "0", "parallel_tuple_cost": "0", "min_parallel_table_scan_size": "0"}


@pytest.fixture(scope="module")
def parallel_run(server_dsn, tmp_path_factory):
    folder = tmp_path_factory.mktemp("parallel")
    v2_file(folder / "root" / ".swarm" / "memory.db",
            [(key, value, "default", 1754378470) for key, (value, _, _) in CASES.items()])
    with fresh_database(server_dsn) as target:
        with target.connect() as connection:
            connection.autocommit = True
            database = connection.info.dbname
            for setting, value in PARALLEL_FIRST.items():
                connection.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(database), sql.Identifier(setting), sql.Literal(value)))
        result = consolidate("run", str(folder / "root"), "--json", target=target, home=folder / "state")
        yield target, result


def test_the_run_passes_on_a_server_that_prefers_parallel_plans(parallel_run):
    _, result = parallel_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "subtransaction" not in result.stdout + result.stderr
    assert json.loads(result.stdout)["reconciled"] is True


def test_every_value_takes_its_documented_type_and_flag(parallel_run):
    target, _ = parallel_run
    rows = {key: (data_type, flags) for key, data_type, flags in fetch(
        target, "SELECT key, data_type, flags FROM unified_memory")}
    assert set(rows) == set(CASES)
    for key, (_, data_type, flag) in CASES.items():
        assert rows[key] == (data_type, [flag] if flag else []), key


def test_decoded_and_parsed_values_are_the_documents(parallel_run):
    target, _ = parallel_run
    values = dict(fetch(target, "SELECT key, value::text FROM unified_memory WHERE data_type = 'json'"))
    assert json.loads(values["compressed-4-byte-utf8"]) == {"e": "\U0001F600 \u00e9"}
    assert json.loads(values["compressed-with-newlines"]) == {"a": 1}
    assert json.loads(values["long-string"]) == LONG_STRING
    assert json.loads(values["long-many-shallow-brackets"]) == [{"n": [n]} for n in range(700)]
    nested = json.loads(values["long-at-the-limit"])
    for _ in range(LIMIT):
        [nested] = nested
    assert nested == LONG_STRING


def test_the_staging_parse_runs_in_parallel_workers(parallel_run):
    """Without this, the tests above would pass on a serial plan and prove nothing about parallel mode.
    Before PostgreSQL 16 (no pg_input_is_valid) the parse catches exceptions, so it must stay serial."""
    target, _ = parallel_run
    [(version,)] = fetch(target, "SELECT current_setting('server_version_num')::int")
    plan = "\n".join(row[0] for row in fetch(
        target, "EXPLAIN (ANALYZE, COSTS OFF) SELECT count(*) FROM staging.stg_claude_flow_v2__memory_entries"
                " WHERE data_type IS NOT NULL"))
    functions = dict(fetch(target, "SELECT proname, proparallel FROM pg_proc "
                                   "WHERE pronamespace = 'consolidate'::regnamespace"))
    assert functions["try_jsonb_strict"] == "u"  # it catches exceptions: never in a parallel query
    parse = {functions[name] for name in ("try_jsonb", "try_shallow_jsonb", "try_decode_compressed",
                                          "json_too_deep", "json_nested_beyond_limit", "is_python_json")}
    if version >= 160000:
        assert parse == {"s"}
        assert "Parallel Seq Scan" in plan and "Workers Launched: 0" not in plan, plan
    else:
        assert parse == {"u"}
        assert "Parallel" not in plan, plan


@pytest.mark.parametrize("model", ["stg_claude_flow_v2__memory_entries", "stg_claude_flow_v3__memory_entries",
                                   "stg_extended_memory__memory_store"])
def test_every_step_of_staging_runs_in_the_workers(parallel_run, model):
    """Not only the parse: the value's kind, the normalized columns and the flags are computed below the
    Gather, so the leader only collects rows (an OFFSET 0 fence or a subquery over the row would keep
    those steps in the leader)."""
    target, _ = parallel_run
    [(version,)] = fetch(target, "SELECT current_setting('server_version_num')::int")
    if version < 160000:
        pytest.skip("the parse catches exceptions before PostgreSQL 16, so it runs serially")
    plan = [row[0] for row in fetch(target, f"EXPLAIN (COSTS OFF) SELECT * FROM staging.{model}")]
    assert plan[0].strip().startswith("Gather"), "\n".join(plan)
    assert not any("SubPlan" in line for line in plan), "\n".join(plan)
    # and the steps are still fenced (macros/memory_staging.sql: OFFSET NULL), so each parse runs once per row
    for step in ("parsed", "classified"):
        assert any(line.strip().startswith(f"->  Subquery Scan on {step}") for line in plan), "\n".join(plan)


def test_the_current_versions_are_gathered_in_the_workers(parallel_run):
    """int_memory_versions joins each file's current parts and drops retired rows below a Gather, which
    leaves the ranking free to sort every version in the workers too. Joining the ledger's view directly
    (a recursive CTE, whose scan runs only in the leader) kept all of it in the leader."""
    target, _ = parallel_run
    [(version,)] = fetch(target, "SELECT current_setting('server_version_num')::int")
    if version < 160000:
        pytest.skip("the parse catches exceptions before PostgreSQL 16, so it runs serially")
    [(parallel,)] = fetch(target, "SELECT proparallel FROM pg_proc WHERE oid = "
                                  "'consolidate.current_load_parts_scan'::regproc")
    assert parallel == "s"
    plan = [row[0] for row in fetch(target, "EXPLAIN (COSTS OFF) SELECT * FROM intermediate.int_memory_versions")]
    text = "\n".join(plan)
    assert "CTE Scan" not in text, text
    [parts] = [number for number, line in enumerate(plan) if "Function Scan on current_load_parts_scan" in line]
    gathers = [number for number, line in enumerate(plan[:parts]) if line.lstrip(" ->").startswith("Gather")]
    indent = [len(line) - len(line.lstrip(" ->")) for line in plan]
    # below a Gather: every line from the Gather down to the scan is indented deeper than the Gather
    assert any(all(indent[line] > indent[gather] for line in range(gather + 1, parts + 1)) for gather in gathers), text
