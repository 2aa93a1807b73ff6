"""loader.serve.client.MemoryClient and the compat view `compat.memory_entries`, against a real PostgreSQL
holding the marts built by `consolidate run` over the sample tree (run as a user runs it: the CLI as a
subprocess). Expectations are read from the tables with plain SQL, never through the client."""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from loader.database import Target
from loader.serve.client import MemoryClient

from conftest import fetch, new_key

PERFORMANCE = "performance-metrics"
LIVE = "(expires_at IS NULL OR expires_at > now())"


@pytest.fixture
def client(consolidated):
    with MemoryClient(consolidated.dsn, pool_size=2) as memory:
        yield memory


def row_of(target: Target, key: str, namespace: str) -> dict | None:
    with target.connect() as connection:
        cursor = connection.execute("SELECT * FROM unified_memory WHERE key = %s AND namespace = %s",
                                    (key, namespace))
        row = cursor.fetchone()
        return None if row is None else dict(zip([c.name for c in cursor.description], row))


def test_get_returns_every_live_consolidated_value(consolidated, client):
    live = fetch(consolidated, f"SELECT key, namespace, value FROM unified_memory WHERE {LIVE}")
    assert len(live) > 400
    assert {(k, n): client.get(k, n) for k, n, _ in live} == {(k, n): v for k, n, v in live}


def test_get_returns_none_for_expired_and_absent_entries(consolidated, client):
    expired = fetch(consolidated, "SELECT key, namespace FROM unified_memory WHERE expires_at <= now()")
    assert expired, "the sample has expired entries"
    assert [client.get(k, n) for k, n in expired] == [None] * len(expired)
    assert client.get("no such key", "default") is None


def test_get_counts_the_access_in_postgresql(consolidated, client):
    key, namespace, count = fetch(consolidated, f"SELECT key, namespace, coalesce(access_count, 0) "
                                                f"FROM unified_memory WHERE {LIVE} ORDER BY id LIMIT 1")[0]
    client.get(key, namespace)
    row = row_of(consolidated, key, namespace)
    assert row["access_count"] == count + 1
    assert datetime.now(timezone.utc) - row["accessed_at"] < timedelta(minutes=1)


@pytest.mark.parametrize("value, data_type", [
    ({"status": "idle", "agents": [1, 2.5, None, True]}, "json"),
    ([1, "two"], "json"),
    (42, "json"),
    ("plain text, even '{\"looks\": \"like json\"}'", "text"),
])
def test_set_inserts_a_new_entry_with_its_data_type_and_a_fresh_id(consolidated, client, value, data_type):
    key = new_key("insert")
    (highest_id,) = fetch(consolidated, "SELECT max(id) FROM unified_memory")[0]
    client.set(key, value, "client-tests", metadata={"by": "test"})

    row = row_of(consolidated, key, "client-tests")
    assert (row["value"], row["data_type"], row["metadata"]) == (value, data_type, {"by": "test"})
    assert row["id"] > highest_id
    assert (row["source_db"], row["source_path"], row["expires_at"], row["ttl"]) == ("postgresql", None, None, None)
    assert client.get(key, "client-tests") == value


def test_set_with_ttl_sets_expires_at_from_now(consolidated, client):
    key = new_key("ttl")
    client.set(key, {"n": 1}, ttl=600)
    row = row_of(consolidated, key, "default")
    assert row["ttl"] == 600
    assert row["expires_at"] - row["updated_at"] == timedelta(seconds=600)
    assert client.get(key) == {"n": 1}


def test_set_replaces_a_consolidated_entry_in_place(consolidated, client):
    key, namespace = fetch(consolidated, "SELECT key, namespace FROM unified_memory "
                                         "WHERE metadata IS NOT NULL AND expires_at IS NULL ORDER BY id LIMIT 1")[0]
    before = row_of(consolidated, key, namespace)
    client.set(key, ["replaced"], namespace)
    after = row_of(consolidated, key, namespace)
    assert after["value"] == ["replaced"] and after["updated_at"] > before["updated_at"]
    assert {c: after[c] for c in ("id", "created_at", "metadata")} == \
           {c: before[c] for c in ("id", "created_at", "metadata")}
    assert (after["source_db"], after["source_path"], after["load_id"]) == ("postgresql", None, None)
    assert client.get(key, namespace) == ["replaced"]


def test_set_rejects_values_that_are_not_json_and_bad_ttls(client):
    with pytest.raises(TypeError):
        client.set(new_key("bytes"), b"raw bytes")
    with pytest.raises(ValueError):
        client.set(new_key("nan"), float("nan"))
    with pytest.raises(ValueError):
        client.set(new_key("ttl"), 1, ttl=0)


def test_concurrent_writers_get_distinct_ids(consolidated):
    keys = [new_key("concurrent") for _ in range(40)]
    with MemoryClient(consolidated.dsn, pool_size=4) as first, MemoryClient(consolidated.dsn, pool_size=4) as second:
        with ThreadPoolExecutor(max_workers=8) as workers:
            list(workers.map(lambda pair: pair[1].set(pair[0], pair[0]),
                             [(key, (first, second)[i % 2]) for i, key in enumerate(keys)]))
    ids = [row_of(consolidated, key, "default")["id"] for key in keys]
    assert len(set(ids)) == len(keys)


def test_search_finds_live_keys_by_literal_prefix(consolidated, client):
    rows = fetch(consolidated, f"SELECT namespace, key, {LIVE} FROM unified_memory")
    expected = sorted((n, k) for n, k, live in rows if live and k.startswith("agent"))
    expired = {(n, k) for n, k, live in rows if not live and k.startswith("agent")}
    assert expired, "the sample has expired agent* entries"

    found = client.search("agent", limit=10_000)
    assert found == expected
    assert client.search("agent", limit=3) == expected[:3]
    assert client.search("agent", namespace="swarm", limit=10_000) == [e for e in expected if e[0] == "swarm"]


def test_search_takes_like_wildcards_literally(client):
    stem = new_key("wild")
    client.set(stem + "_%x", 1, "wildcards")
    client.set(stem + "ab", 2, "wildcards")
    assert [e.key for e in client.search(stem + "_%", "wildcards")] == [stem + "_%x"]


def test_delete_removes_the_entry_once(consolidated, client):
    key = new_key("delete")
    client.set(key, "bye", "client-tests")
    assert client.delete(key, "client-tests") is True
    assert row_of(consolidated, key, "client-tests") is None
    assert client.get(key, "client-tests") is None
    assert client.delete(key, "client-tests") is False


def test_client_writes_show_in_the_compat_view_as_v2_stored_them(consolidated, client):
    key = new_key("compat")
    client.set(key, "a plain string", "client-tests")
    client.set(key + ":json", {"a": [1, 2]}, "client-tests")
    values = dict(fetch(consolidated, "SELECT key, value FROM compat.memory_entries WHERE namespace = 'client-tests' "
                                      "AND key IN (%s, %s)", (key, key + ":json")))
    assert values == {key: "a plain string", key + ":json": '{"a": [1, 2]}'}


# -- the compat view -------------------------------------------------------------------------------

V2_COLUMNS = [("id", "bigint"), ("key", "text"), ("value", "text"), ("namespace", "text"), ("metadata", "text"),
              ("created_at", "bigint"), ("updated_at", "bigint"), ("accessed_at", "bigint"),
              ("access_count", "integer"), ("ttl", "integer"), ("expires_at", "bigint")]
TIMES = ("created_at", "updated_at", "accessed_at", "expires_at")


def epoch(moment: datetime | None) -> int | None:
    return None if moment is None else math.floor(moment.timestamp())


def as_v2_text(value, data_type: str) -> str:
    """json -> the JSON text (parsed back for comparison), text/pickle -> the string itself."""
    return value if data_type in ("text", "pickle") else json.dumps(value)


def compat_rows(target: Target) -> dict[tuple[str, str], dict]:
    with target.connect() as connection:
        cursor = connection.execute("SELECT * FROM compat.memory_entries")
        names = [c.name for c in cursor.description]
        return {(r["key"], r["namespace"]): r for r in (dict(zip(names, row)) for row in cursor)}


def expected_v2(target: Target) -> dict[tuple[str, str], dict]:
    """unified_memory rows, and performance_metrics rows with the times of their winning version."""
    unified = fetch(target, "SELECT key, namespace, value, data_type, metadata, created_at, updated_at, accessed_at, "
                            "expires_at, access_count, ttl FROM unified_memory")
    metrics = fetch(target, "SELECT m.key, m.namespace, m.metric_data, w.data_type, w.metadata, w.first_created_at, "
                            "w.updated_at, w.last_accessed_at, w.expires_at, w.max_access_count, w.ttl "
                            "FROM performance_metrics m JOIN intermediate.int_memory_ranked w "
                            "ON w.is_winner AND w.key = m.key AND w.namespace = m.namespace")
    expected = {}
    for key, namespace, value, data_type, metadata, *times, access_count, ttl in unified + metrics:
        expected[(key, namespace)] = dict(
            value=as_v2_text(value, data_type), data_type=data_type,
            metadata=metadata, access_count=access_count, ttl=ttl,
            **{name: epoch(moment) for name, moment in zip(TIMES, times)})
    return expected


def test_compat_view_has_the_v2_columns(consolidated):
    columns = fetch(consolidated, "SELECT column_name, data_type FROM information_schema.columns "
                                  "WHERE table_schema = 'compat' AND table_name = 'memory_entries' ORDER BY ordinal_position")
    assert columns == V2_COLUMNS


def test_compat_view_holds_every_unified_and_performance_row(consolidated):
    (unified,), = fetch(consolidated, "SELECT count(*) FROM unified_memory")
    (metrics,), = fetch(consolidated, "SELECT count(*) FROM performance_metrics")
    rows = compat_rows(consolidated)
    assert metrics > 0
    assert len(rows) == unified + metrics
    assert len({r["id"] for r in rows.values()}) == len(rows)


def test_compat_view_rows_match_the_marts_in_v2_shape(consolidated):
    expected = expected_v2(consolidated)
    actual = compat_rows(consolidated)
    assert set(actual) == set(expected)
    for identity, want in expected.items():
        got = actual[identity]
        if want["data_type"] == "json":
            assert json.loads(got["value"]) == json.loads(want["value"]), identity
        else:
            assert got["value"] == want["value"], identity
        assert (None if got["metadata"] is None else json.loads(got["metadata"])) == want["metadata"], identity
        assert {name: got[name] for name in (*TIMES, "access_count", "ttl")} == \
               {name: want[name] for name in (*TIMES, "access_count", "ttl")}, identity
    assert any(namespace == PERFORMANCE for _, namespace in actual)
    assert {want["data_type"] for want in expected.values()} == {"json", "text", "pickle"}


def test_a_read_aborted_as_a_deadlock_with_a_table_swap_is_read_again(consolidated, client):
    """A read that records its access reads the mart, then locks the entry; a full refresh swapping the mart
    in holds that lock first and then waits for the table (as here, by hand). PostgreSQL aborts the read, which
    waited first, as a deadlock; the client reads again once the swap is done, and `get` returns the value."""
    key, namespace, value = fetch(consolidated, f"SELECT key, namespace, value FROM unified_memory WHERE {LIVE} "
                                                "ORDER BY id LIMIT 1")[0]
    deadlocks = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    (before,), = fetch(consolidated, deadlocks)
    got = {}
    with psycopg.connect(consolidated.dsn) as swap:
        swap.execute("SELECT pg_advisory_xact_lock(hashtext('consolidate.marts'), hashtext('unified_memory'))")
        reader = threading.Thread(target=lambda: got.setdefault("value", client.get(key, namespace)))
        reader.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        deadline = time.monotonic() + 10
        while swap.execute(waiting).fetchone()[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        swap.execute("LOCK TABLE unified_memory IN ACCESS EXCLUSIVE MODE")  # the read holds it: the cycle
        swap.commit()
    reader.join(30)
    assert got == {"value": value}
    (after,), = fetch(consolidated, deadlocks)
    assert after > before  # the read was aborted once, and read again
