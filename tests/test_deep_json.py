"""Values nested 1,500 to 5,000 levels deep: PostgreSQL's jsonb takes them, Python's json does not. The
row is loaded, kept as a JSON string of its text and flagged `json_too_deep:<column>` (staging and
validate's own rules agree), and nothing else stops: run, validate, a second run, the client and the
cache all work, without a traceback.

A claude-flow v2 file with such rows among normal ones, consolidated by the real CLI into a real
PostgreSQL; the expected values, types and flags follow from how each row was built (its depth is known)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import redis

from loader.fixtures.claude_flow_v2 import V2_DDL
from loader.serve.cache import Cache, cache_key
from loader.serve.client import MemoryClient, warm_cache

from conftest import consolidate, fetch

NORMAL = {f"normal-{n}": json.dumps({"n": n, "list": [n, [n]]}) for n in range(6)}
# key -> (value text, whether it nests deeper than 512 levels)
DEEP = {
    "array-3000": ("[" * 3000 + "]" * 3000, True),
    "object-2000": ('{"a":' * 2000 + "1" + "}" * 2000, True),
    "array-5000": ("[" * 5000 + "1" + "]" * 5000, True),
    "mixed-1500": ('[{"k":' * 750 + '"x"' + "}]" * 750, True),
    "unclosed-4000": ("[" * 4000, True),
    "exactly-512": ("[" * 512 + "]" * 512, False),
    "just-513": ("[" * 513 + "]" * 513, True),
    "brackets-in-a-string": ('["' + "[" * 3000 + '"]', False),
}
DEEP_METADATA_KEY = "normal-with-deep-metadata"
DEEP_METADATA = '{"m":' * 1000 + "null" + "}" * 1000


def write_v2_file(path: Path) -> None:
    path.parent.mkdir(parents=True)
    connection = sqlite3.connect(path)
    connection.executescript(V2_DDL)
    rows = [(key, value, None) for key, value in NORMAL.items()]
    rows += [(key, value, None) for key, (value, _) in DEEP.items()]
    rows.append((DEEP_METADATA_KEY, '{"fine": true}', DEEP_METADATA))
    connection.executemany(
        "INSERT INTO memory_entries (key, value, metadata, created_at, updated_at) VALUES (?, ?, ?, 1754378470, 1754378470)",
        rows)
    connection.commit()
    connection.close()


def rows_in_sqlite(path: Path, scratch: Path) -> int:
    scratch.mkdir()
    shutil.copyfile(path, scratch / "copy.db")
    connection = sqlite3.connect(scratch / "copy.db")
    try:
        return connection.execute("SELECT count(*) FROM memory_entries").fetchone()[0]
    finally:
        connection.close()


@pytest.fixture(scope="module")
def deep_run(server_dsn, tmp_path_factory):
    """The file consolidated by `consolidate run` (twice), with both runs' results."""
    from conftest import fresh_database

    folder = tmp_path_factory.mktemp("deep")
    database = folder / "root" / ".swarm" / "memory.db"
    write_v2_file(database)
    with fresh_database(server_dsn) as target:
        first = consolidate("run", str(folder / "root"), "--json", target=target, home=folder / "state")
        second = consolidate("run", str(folder / "root"), "--rebuild", "--json", target=target,
                             home=folder / "state")
        yield {"target": target, "database": database, "first": first, "second": second, "folder": folder}


def test_run_loads_every_row_flags_the_deep_ones_and_exits_0(deep_run):
    for run in (deep_run["first"], deep_run["second"]):
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "Traceback" not in run.stderr
        outcome = json.loads(run.stdout)
        assert outcome["reconciled"] is True
        assert outcome["validation"] is not None
    expected = rows_in_sqlite(deep_run["database"], deep_run["folder"] / "count")
    assert expected == len(NORMAL) + len(DEEP) + 1
    rows = {key: (value, data_type, flags) for key, value, data_type, flags in fetch(
        deep_run["target"], "SELECT key, value::text, data_type, flags FROM unified_memory")}
    assert len(rows) == expected
    assert fetch(deep_run["target"], "SELECT kept, superseded, moved, reconciled FROM reconciliation") == [
        (expected, 0, 0, True)]
    for key, (text, too_deep) in DEEP.items():
        value, data_type, flags = rows[key]
        if too_deep:
            assert (json.loads(value), data_type, flags) == (text, "text", ["json_too_deep:value"]), key
        else:
            assert (value.replace(" ", ""), data_type, flags) == (text, "json", []), key
    for key, text in NORMAL.items():
        assert (json.loads(rows[key][0]), rows[key][1], rows[key][2]) == (json.loads(text), "json", []), key
    assert rows[DEEP_METADATA_KEY][1:] == ("json", ["json_too_deep:metadata"])
    assert fetch(deep_run["target"], "SELECT metadata #>> '{}' FROM unified_memory WHERE key = %s",
                 (DEEP_METADATA_KEY,)) == [(DEEP_METADATA,)]


def test_validate_spot_checks_every_row_including_the_deep_ones(deep_run):
    result = consolidate("validate", "--sample", "100", "--json", target=deep_run["target"],
                         home=deep_run["folder"] / "state")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [file] = json.loads(result.stdout)["files"]
    assert file["spot_checked"] >= len(NORMAL) + len(DEEP) + 1
    assert file["mismatches"] == [] and file["flagged"] == sum(deep for _, deep in DEEP.values()) + 1


def test_the_client_reads_deep_values_as_their_text(deep_run):
    target = deep_run["target"]
    with MemoryClient(target.dsn, pool_size=1) as client:
        assert client.get("array-3000") == DEEP["array-3000"][0]
        assert client.get("normal-1") == json.loads(NORMAL["normal-1"])
        # A deep document written behind the client's back (jsonb takes it) reads as its text too.
        with target.connect() as connection:
            connection.execute("UPDATE unified_memory SET value = %s::jsonb WHERE key = 'normal-2'",
                               (DEEP["array-5000"][0],))
        assert client.get("normal-2").replace(" ", "") == DEEP["array-5000"][0]
        assert client.hottest(100)


@pytest.fixture(scope="module")
def redis_url(redis_server) -> str:
    return redis_server.url


def test_cache_warm_and_reads_through_the_cache_work(deep_run, redis_url):
    target = deep_run["target"]
    redis.Redis.from_url(redis_url).flushdb()
    cache = Cache(redis_url)
    try:
        assert warm_cache(target.dsn, cache, 100) == len(NORMAL) + len(DEEP) + 1
        with MemoryClient(target.dsn, cache=cache, pool_size=1) as client:
            assert client.get("object-2000") == DEEP["object-2000"][0]
            assert client.get("exactly-512") == json.loads(DEEP["exactly-512"][0])
        assert cache.hits == 2
        # Deep JSON text put in Redis by something else reads as its text, never a RecursionError.
        redis.Redis.from_url(redis_url).set(cache_key("default", "array-3000"), "[" * 5000 + "]" * 5000)
        assert cache.lookup("default", "array-3000").value == "[" * 5000 + "]" * 5000
    finally:
        cache.close()
    warmed = consolidate("cache", "warm", "--top", "100", "--redis-url", redis_url, target=target,
                         home=deep_run["folder"] / "state")
    assert warmed.returncode == 0 and "Traceback" not in warmed.stderr, warmed.stderr[-3000:]
