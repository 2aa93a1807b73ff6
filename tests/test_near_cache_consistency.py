"""The near cache (loader.serve.near_cache) against a real PostgreSQL (the sample, consolidated by the CLI, with
the notify triggers installed) and a real redis-server this module starts, stops and restarts on a
loopback port.

The multi-process test runs four processes that write and read random keys through
MemoryClient(near_cache=True, cache=...) while this process kills the invalidation channels in turn;
every operation is logged with its start and end (CLOCK_MONOTONIC, shared by the processes) and the log
is checked afterwards against the rules, computed from the log alone: no value that was never written,
read-your-writes in every process, no value served after another write had returned for longer than
max_staleness, no entry served after its expiry."""

from __future__ import annotations

import bisect
import json
import logging
import multiprocessing
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis

from loader.serve.cache import Cache, cache_key
from loader.serve.client import MemoryClient
from loader.serve.near_cache import (
    LISTENER_APPLICATION_NAME,
    NOT_HELD,
    NOTIFY_CHANNEL,
    NOTIFY_ROWS_PER_TRANSACTION,
    NearCache,
    install_notify_triggers,
)

from conftest import fetch, served_in_process, wait_for

MAX_STALENESS = 0.25          # NearCache's default, the bound the test holds the processes to
LIVE = "(expires_at IS NULL OR expires_at > now())"


@pytest.fixture(scope="module")
def with_triggers(consolidated):
    with consolidated.connect() as connection:
        install_notify_triggers(connection, "public")
    return consolidated


@pytest.fixture
def near(with_triggers, redis_server):
    cache = Cache(redis_server.url)
    with MemoryClient(with_triggers.dsn, cache=cache, near_cache=True, pool_size=2) as client:
        assert client.near_cache.wait_until_serving(10)
        yield client
    cache.close()


def new_namespace() -> str:
    return f"near-{uuid.uuid4().hex[:8]}"


# -- the triggers ------------------------------------------------------------------------------------

@pytest.fixture
def scratch_schema(with_triggers):
    """Empty copies of the two watched tables in a schema of their own, with the triggers installed."""
    schema = f"scratch_{uuid.uuid4().hex[:8]}"
    with with_triggers.connect() as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
        for table in ("unified_memory", "performance_metrics"):
            connection.execute(f"CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)")
        connection.commit()
        install_notify_triggers(connection, schema)
        install_notify_triggers(connection, schema)       # idempotent
    yield schema
    with with_triggers.connect() as connection:
        connection.execute(f"DROP SCHEMA {schema} CASCADE")


def notifications_of(target, statements: list[str]) -> list[dict]:
    """Run the statements in one transaction and return what a listener received."""
    with psycopg.connect(target.dsn, autocommit=True) as listener, target.connect() as writer:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        for statement in statements:
            writer.execute(statement)
        writer.commit()
        listener.execute("SELECT 1")
        return [json.loads(n.payload) for n in listener.notifies(timeout=0.5)]


def insert_rows(schema: str, table: str, rows: list[tuple[int, str, str]]) -> str:
    values = ", ".join(f"({i}, '{key}', '{namespace}', '{{\"v\": {i}}}'::jsonb" +
                       (", 'json', now(), now())" if table == "unified_memory" else ", 'metric', now(), '{}')")
                       for i, key, namespace in rows)
    if table == "unified_memory":
        return f"INSERT INTO {schema}.unified_memory (id, key, namespace, value, data_type, created_at, updated_at) VALUES {values}"
    return f"INSERT INTO {schema}.performance_metrics (id, key, namespace, metric_data, metric_name, \"timestamp\", flags) VALUES {values}"


def test_triggers_notify_each_visible_change_once_per_row(with_triggers, scratch_schema):
    s = scratch_schema
    received = notifications_of(with_triggers, [
        insert_rows(s, "unified_memory", [(1, "a", "ns"), (2, "b", "ns:x")]),
        insert_rows(s, "performance_metrics", [(1, "m", "performance-metrics")]),
    ])
    assert received == [{"schema": s, "namespace": "ns", "key": "a"}, {"schema": s, "namespace": "ns:x", "key": "b"},
                        {"schema": s, "namespace": "performance-metrics", "key": "m"}]

    assert notifications_of(with_triggers, [
        f"UPDATE {s}.unified_memory SET access_count = 7, accessed_at = now()",    # bookkeeping only: silent
        f"UPDATE {s}.performance_metrics SET metric_value = 1",
    ]) == []
    assert notifications_of(with_triggers, [
        f"UPDATE {s}.unified_memory SET value = '[1]' WHERE key = 'a'",
        f"UPDATE {s}.unified_memory SET expires_at = now() WHERE key = 'b'",
        f"UPDATE {s}.performance_metrics SET metric_data = '{{}}'",
    ]) == [{"schema": s, "namespace": "ns", "key": "a"}, {"schema": s, "namespace": "ns:x", "key": "b"},
           {"schema": s, "namespace": "performance-metrics", "key": "m"}]
    # a renamed entry invalidates both its old and its new identity
    assert notifications_of(with_triggers, [f"UPDATE {s}.unified_memory SET key = 'c' WHERE key = 'a'"]) == \
           [{"schema": s, "namespace": "ns", "key": "a"}, {"schema": s, "namespace": "ns", "key": "c"}]
    assert notifications_of(with_triggers, [f"DELETE FROM {s}.unified_memory WHERE key = 'c'"]) == \
           [{"schema": s, "namespace": "ns", "key": "c"}]
    assert notifications_of(with_triggers, [f"TRUNCATE {s}.unified_memory"]) == [{"schema": s, "flush": True}]


def test_triggers_fire_under_replica_role_and_bulk_changes_send_one_flush(with_triggers, scratch_schema):
    s = scratch_schema
    rows = [(i, f"k{i}", "bulk") for i in range(1, NOTIFY_ROWS_PER_TRANSACTION + 301)]
    received = notifications_of(with_triggers, ["SET session_replication_role = replica",
                                                insert_rows(s, "unified_memory", rows)])
    assert received[:NOTIFY_ROWS_PER_TRANSACTION] == \
           [{"schema": s, "namespace": "bulk", "key": key} for _, key, _ in rows[:NOTIFY_ROWS_PER_TRANSACTION]]
    assert received[NOTIFY_ROWS_PER_TRANSACTION:] == [{"schema": s, "flush": True}]

    long_key = "x" * 9000                       # too long for a NOTIFY payload: a flush, and the write works
    assert notifications_of(with_triggers, [insert_rows(s, "unified_memory", [(99_999, long_key, "bulk")])]) == \
           [{"schema": s, "flush": True}]


def test_without_triggers_the_near_cache_stays_bypassed(with_triggers, scratch_schema, caplog):
    with with_triggers.connect() as connection:
        connection.execute(f"DROP TRIGGER consolidate_notify_update ON {scratch_schema}.unified_memory")
        connection.commit()
    caplog.set_level(logging.WARNING, logger="loader.serve.near_cache")
    with NearCache(with_triggers.dsn, schema=scratch_schema) as near:
        assert not near.wait_until_serving(1.0)
        assert near.fill(near.fill_token(), "ns", "k", 1, 1, None, time.monotonic()) is False
        assert near.lookup("ns", "k") is NOT_HELD
        with with_triggers.connect() as connection:
            install_notify_triggers(connection, scratch_schema)
        assert near.wait_until_serving(5.0)
    assert any("run install_notify_triggers" in record.getMessage() for record in caplog.records)


def test_a_table_replaced_under_the_cache_flushes_it(with_triggers, scratch_schema):
    """What a `dbt build` does to a table: a new one under the same name, filled without notifying."""
    s = scratch_schema
    with NearCache(with_triggers.dsn, schema=s) as near:
        assert near.wait_until_serving(10)
        assert near.fill(near.fill_token(), "ns", "k", "before the build", 16, None, time.monotonic())
        with with_triggers.connect() as connection:
            connection.execute(f"ALTER TABLE {s}.unified_memory RENAME TO unified_memory_old")
            connection.execute(f"CREATE TABLE {s}.unified_memory (LIKE {s}.unified_memory_old INCLUDING ALL)")
            install_notify_triggers(connection, s)
        assert wait_for(lambda: near.lookup("ns", "k") is NOT_HELD, MAX_STALENESS)
        assert near.wait_until_serving(5)


# -- one process ----------------------------------------------------------------------------------

def test_second_read_is_served_in_process_and_a_write_elsewhere_invalidates_it(with_triggers, near):
    namespace = new_namespace()
    with MemoryClient(with_triggers.dsn, pool_size=1) as elsewhere:      # no cache, no near cache
        elsewhere.set("k", {"v": 1}, namespace)
        assert near.get("k", namespace) == {"v": 1}
        assert wait_for(lambda: served_in_process(near, "k", namespace))
        assert near.get("k", namespace) == {"v": 1}

        elsewhere.set("k", {"v": 2}, namespace)
        written = time.monotonic()
        assert wait_for(lambda: near.get("k", namespace) == {"v": 2}, MAX_STALENESS)
        assert time.monotonic() - written < MAX_STALENESS

        with with_triggers.connect() as connection:          # a write that bypasses every client
            connection.execute("DELETE FROM unified_memory WHERE namespace = %s", (namespace,))
        assert wait_for(lambda: near.get("k", namespace) is None, MAX_STALENESS)


def test_a_value_held_is_returned_as_a_copy(near):
    namespace = new_namespace()
    near.set("k", {"list": [1, 2]}, namespace)
    assert wait_for(lambda: served_in_process(near, "k", namespace))
    first = near.get("k", namespace)
    first["list"].append(3)
    assert near.get("k", namespace) == {"list": [1, 2]}


def test_expired_entries_are_never_served(near, redis_server):
    namespace = new_namespace()
    written = time.monotonic()
    near.set("k", "short", namespace, ttl=1)
    expired_by = time.monotonic() + 1          # expires_at is the write's now() + 1 s: between the two
    assert wait_for(lambda: served_in_process(near, "k", namespace))
    while (started := time.monotonic()) < expired_by + 0.3:
        value = near.get("k", namespace)
        if started >= expired_by:
            assert value is None, f"served {started - expired_by:.3f} s after it expired"
        elif time.monotonic() < written + 1:
            assert value == "short"
    assert not redis.Redis.from_url(redis_server.url).exists(cache_key(namespace, "k"))


def test_a_performance_metric_expired_through_the_view_is_served_from_no_cache(near, redis_server, with_triggers):
    """performance_metrics holds a metric's value, not its expiry: an expiry written through the view
    changes no row of it, and the write path tells the caches itself."""
    key = f"metric-{uuid.uuid4().hex[:8]}"
    near.set(key, {"duration": 1}, "performance-metrics")
    assert wait_for(lambda: served_in_process(near, key, "performance-metrics"))
    assert redis.Redis.from_url(redis_server.url).exists(cache_key("performance-metrics", key))
    with psycopg.connect(with_triggers.dsn, autocommit=True) as connection:
        connection.execute("UPDATE compat.memory_entries SET expires_at = extract(epoch from now())::bigint - 60 "
                           "WHERE namespace = 'performance-metrics' AND key = %s", (key,))
    expired = time.monotonic()
    assert wait_for(lambda: near.get(key, "performance-metrics") is None, MAX_STALENESS)
    assert time.monotonic() - expired <= MAX_STALENESS + 0.05
    assert not redis.Redis.from_url(redis_server.url).exists(cache_key("performance-metrics", key))


def test_fills_are_void_after_an_invalidation_and_the_cache_is_bounded_in_count_bytes_and_age(with_triggers):
    with NearCache(with_triggers.dsn, max_entries=3, max_bytes=2_000, max_entry_age=0.5) as bounded:
        assert bounded.wait_until_serving(10)
        token = bounded.fill_token()
        bounded.invalidate("ns", "raced")
        assert bounded.fill(token, "ns", "raced", "old", 3, None, time.monotonic()) is False
        assert bounded.fill(bounded.fill_token(), "ns", "raced", "new", 3, None, time.monotonic()) is True

        token = bounded.fill_token()
        for i in range(5):
            assert bounded.fill(token, "lru", f"k{i}", i, 1, None, time.monotonic())
        assert [bounded.lookup("lru", f"k{i}") for i in range(5)] == [NOT_HELD, NOT_HELD, 2, 3, 4]
        bounded.lookup("lru", "k2")                 # k2 becomes the most recently used
        # 1,500 characters + overhead: k3 goes for the count, k4 for the bytes
        assert bounded.fill(token, "lru", "big", "x" * 1_500, 1_500, None, time.monotonic())
        assert bounded.stats()["bytes"] <= 2_000
        assert [bounded.lookup("lru", k) for k in ("k3", "k4", "k2")] == [NOT_HELD, NOT_HELD, 2]
        assert bounded.lookup("lru", "big") == "x" * 1_500
        assert not bounded.fill(token, "lru", "huge", "x" * 3_000, 3_000, None, time.monotonic())

        assert bounded.fill(bounded.fill_token(), "age", "k", 1, 1, None, time.monotonic() - 0.45)
        assert bounded.lookup("age", "k") == 1
        time.sleep(0.06)
        assert bounded.lookup("age", "k") is NOT_HELD          # older than max_entry_age


def test_get_many_matches_postgresql_in_the_order_asked(with_triggers, near):
    rows = fetch(with_triggers, f"SELECT key, value FROM unified_memory WHERE namespace = 'default' AND {LIVE} "
                                "ORDER BY id LIMIT 30")
    expired = fetch(with_triggers, "SELECT key FROM unified_memory WHERE namespace = 'default' "
                                   "AND expires_at <= now() LIMIT 3")
    keys = [key for key, _ in rows] + [key for key, in expired] + ["no such key"]
    random.Random(3).shuffle(keys)
    expected = dict(rows)
    for _ in range(3):                      # PostgreSQL, then Redis, then the near cache
        got = near.get_many(keys + keys[:5], "default")
        assert list(got) == keys
        assert got == {key: expected.get(key) for key in keys}


def test_a_channel_lost_flushes_and_bypasses_until_it_is_back(with_triggers, near, redis_server):
    namespace = new_namespace()
    near.set("k", 1, namespace)
    assert wait_for(lambda: near.get("k", namespace) == 1 and near.near_cache.lookup(namespace, "k") == 1)
    flushes = near.near_cache.flushes
    redis.Redis.from_url(redis_server.url).client_kill_filter(_type="pubsub")
    assert wait_for(lambda: near.near_cache.flushes > flushes, 2)
    assert near.near_cache.wait_until_serving(5)
    assert near.near_cache.lookup(namespace, "k") is NOT_HELD       # refilled from reads, not kept

    with with_triggers.connect() as connection:
        killed = connection.execute("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE application_name = %s AND datname = current_database()) t",
                                    (LISTENER_APPLICATION_NAME,)).fetchone()[0]
    assert killed >= 1
    assert wait_for(lambda: not near.near_cache.serving, 2)
    assert near.near_cache.wait_until_serving(5)
    assert near.get("k", namespace) == 1


# -- several processes -----------------------------------------------------------------------------

KEYS = [f"k{i:02d}" for i in range(12)]
WORKERS = 4


@dataclass(frozen=True)
class Write:
    process: int
    start: float
    end: float
    token: str | None           # None: a delete
    ttl: float | None


def run_worker(index: int, dsn: str, redis_url: str, namespace: str, seed: int, log_path: str,
               ready, go, stop) -> None:
    rng = random.Random(seed)
    cache = Cache(redis_url, timeout=0.2, retry_interval=0.2)
    events = []
    with MemoryClient(dsn, cache=cache, near_cache=True, pool_size=2) as client:
        near = client.near_cache
        ready.put(near.wait_until_serving(20))
        go.wait(60)
        sequence = 0
        while not stop.is_set():
            choice = rng.random()
            key = rng.choice(KEYS)
            if choice < 0.30:
                sequence += 1
                token, ttl = f"{index}:{sequence}", (1 if rng.random() < 0.15 else None)
                start = time.monotonic()
                client.set(key, {"token": token}, namespace, ttl=ttl)
                events.append(("set", key, token, start, time.monotonic(), ttl))
            elif choice < 0.36:
                start = time.monotonic()
                client.delete(key, namespace)
                events.append(("delete", key, None, start, time.monotonic(), None))
            elif choice < 0.42:
                asked = rng.sample(KEYS, 3)
                start = time.monotonic()
                values = client.get_many(asked, namespace)
                end = time.monotonic()
                events += [("read", k, token_of(values[k]), start, end, False) for k in asked]
            else:
                hits = near.hits
                start = time.monotonic()
                value = client.get(key, namespace)
                events.append(("read", key, token_of(value), start, time.monotonic(), near.hits > hits))
            time.sleep(rng.uniform(0, 0.003))
        events.append(("stats", None, json.dumps(near.stats()), 0, 0, None))
    Path(log_path).write_text(json.dumps(events))


def token_of(value) -> str | None:
    if value is None:
        return None
    return value.get("token", "?") if isinstance(value, dict) else f"? {value!r}"


def terminate_listeners(target) -> int:
    with target.connect() as connection:
        return connection.execute("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE application_name = %s AND datname = current_database()) t",
                                  (LISTENER_APPLICATION_NAME,)).fetchone()[0]


def test_processes_read_their_writes_and_see_every_write_within_the_bound(with_triggers, redis_server, tmp_path):
    namespace = new_namespace()
    context = multiprocessing.get_context("spawn")
    ready, go, stop = context.Queue(), context.Event(), context.Event()
    logs = [tmp_path / f"worker-{i}.json" for i in range(WORKERS)]
    workers = [context.Process(target=run_worker, args=(i, with_triggers.dsn, redis_server.url, namespace,
                                                        1000 + i, str(logs[i]), ready, go, stop))
               for i in range(WORKERS)]
    for worker in workers:
        worker.start()
    try:
        assert all(ready.get(timeout=60) for _ in workers), "a worker's near cache never started serving"
        go.set()
        phases = {"all up": time.monotonic()}
        time.sleep(4)
        phases["redis tracking connections killed"] = time.monotonic()
        killer = redis.Redis.from_url(redis_server.url)
        for _ in range(6):
            killer.client_kill_filter(_type="pubsub")
            time.sleep(0.5)
        killer.close()
        phases["postgresql listeners killed"] = time.monotonic()
        for _ in range(6):
            assert terminate_listeners(with_triggers) >= 1
            time.sleep(0.5)
        phases["redis down"] = redis_down = time.monotonic()
        redis_server.stop()
        time.sleep(2.5)
        redis_up = time.monotonic()
        redis_server.start()
        phases["redis back"] = redis_up
        time.sleep(3)
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        assert [worker.exitcode for worker in workers] == [0] * WORKERS
    finally:
        stop.set()
        for worker in workers:
            if worker.is_alive():
                worker.kill()
        if redis_server.process.poll() is not None:
            redis_server.start()

    events = [(process, *event) for process, path in enumerate(logs) for event in json.loads(path.read_text())]
    report = check_history(events)
    stats = [json.loads(e[3]) for e in events if e[1] == "stats"]
    hits_while_redis_down = [e for e in events if e[1] == "read" and e[6] and redis_down + MAX_STALENESS < e[4] < redis_up]
    print(f"\n{report['reads']} reads, {report['writes']} writes in {WORKERS} processes; near-cache hits "
          f"{report['near_hits']}; phases {json.dumps({k: round(v - phases['all up'], 2) for k, v in phases.items()})}")
    print(f"superseded values returned after the superseding write returned: {report['late_reads']} reads, "
          f"latest {report['max_lateness'] * 1000:.1f} ms (bound {MAX_STALENESS * 1000:.0f} ms)")

    assert report["violations"] == [], report["violations"][:10]
    assert report["max_lateness"] <= MAX_STALENESS
    assert report["writes"] > 500 and report["reads"] > 2000
    assert report["near_hits"] > 100, "the near cache served nothing: the test proved nothing about it"
    assert hits_while_redis_down == [], "the near cache answered while its Redis channel was down"
    assert all(s["flushes"] >= 12 for s in stats), stats       # every kill was noticed


def check_history(events: list[tuple]) -> dict:
    """Check every read of the log against the writes of the log; see the module docstring."""
    writes: dict[str, list[Write]] = defaultdict(list)
    by_token: dict[str, Write] = {}
    for process, kind, key, token, start, end, ttl in events:
        if kind in ("set", "delete"):
            write = Write(process, start, end, token, ttl)
            writes[key].append(write)
            if token is not None:
                by_token[token] = write
    for key_writes in writes.values():
        key_writes.sort(key=lambda w: w.start)
    starts = {key: [w.start for w in ws] for key, ws in writes.items()}
    # earliest end among the writes that start at or after position i
    suffix_min_end = {}
    for key, ws in writes.items():
        minimum, ends = float("inf"), [0.0] * len(ws)
        for i in range(len(ws) - 1, -1, -1):
            minimum = min(minimum, ws[i].end)
            ends[i] = minimum
        suffix_min_end[key] = ends + [float("inf")]
    last_own_write: dict[tuple[int, str], list[Write]] = defaultdict(list)
    for key, ws in writes.items():
        for w in ws:
            last_own_write[(w.process, key)].append(w)
    own_ends = {identity: sorted(ws, key=lambda w: w.end) for identity, ws in last_own_write.items()}

    def superseded_at(key: str, source_end: float) -> float:
        """When the value of a write that ended at source_end was certainly superseded: the earliest end
        of a write that started after it ended."""
        position = bisect.bisect_right(starts.get(key, []), source_end)
        return suffix_min_end[key][position] if key in suffix_min_end else float("inf")

    violations, reads, near_hits, lateness = [], 0, 0, []
    for process, kind, key, token, start, end, hit in events:
        if kind != "read":
            continue
        reads += 1
        near_hits += bool(hit)
        key_writes = writes.get(key, [])
        if token is None:
            # sources of "absent": nothing written yet, a delete, the expiry of a ttl write
            sources = [float("-inf")] + [w.end for w in key_writes if w.token is None and w.start < end] + \
                      [w.end for w in key_writes if w.ttl and w.start + w.ttl < end]
            source_end = max(sources)
        else:
            write = by_token.get(token)
            if write is None or write.start >= end:
                violations.append(("a value that was never written", process, key, token, start))
                continue
            if write.ttl and start > write.end + write.ttl + 0.005:
                violations.append(("an expired value", process, key, token, start - write.end - write.ttl))
            source_end = write.end
        late = start - superseded_at(key, source_end)
        if late > 0:
            lateness.append(late)
        if late > MAX_STALENESS:
            violations.append(("stale beyond the bound", process, key, token, late))
        own = own_ends.get((process, key), [])
        before = bisect.bisect_left([w.end for w in own], start)
        if before and source_end < own[before - 1].start:
            violations.append(("not its own write", process, key, token, own[before - 1].token))
    return {"violations": violations, "reads": reads, "near_hits": near_hits,
            "writes": sum(len(ws) for ws in writes.values()), "late_reads": len(lateness),
            "max_lateness": max(lateness, default=0.0)}
