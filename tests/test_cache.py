"""loader.serve.cache.Cache with loader.serve.client.MemoryClient: cache-aside reads, invalidation on write, Redis
being unreachable, warm and stats. Against a real PostgreSQL (the sample, consolidated by the CLI) and a
real redis-server that this module starts on a free loopback port; Redis is observed directly."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time

import pytest
import redis

from loader.pipeline import sync
from loader.serve.cache import Cache, cache_key
from loader.serve.client import MemoryClient, warm_cache

from conftest import consolidate, fetch, new_key, v2_file, write, write_past_the_client

LIVE = "(expires_at IS NULL OR expires_at > now())"


@pytest.fixture(scope="module")
def redis_url(redis_server) -> str:
    return redis_server.url


@pytest.fixture
def redis_db(redis_url) -> redis.Redis:
    """Direct access to the test Redis, emptied for each test."""
    connection = redis.Redis.from_url(redis_url, decode_responses=True)
    connection.flushdb()
    yield connection
    connection.close()


@pytest.fixture
def cache(redis_url, redis_db) -> Cache:
    cache = Cache(redis_url)
    yield cache
    cache.close()


@pytest.fixture
def client(consolidated, cache):
    with MemoryClient(consolidated.dsn, cache=cache, pool_size=2) as memory:
        yield memory


@pytest.fixture
def closed_port():
    """A loopback port that is bound but not listening: connecting is refused at once."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        yield blocker.getsockname()[1]


def live_entry(target, condition: str) -> tuple[str, str, object]:
    return fetch(target, f"SELECT key, namespace, value FROM unified_memory WHERE {LIVE} AND {condition} "
                         "ORDER BY id LIMIT 1")[0]


def cached_keys(redis_db: redis.Redis) -> set[str]:
    return set(redis_db.scan_iter(match="mem:*"))


# -- cache-aside reads -----------------------------------------------------------------------------

def test_first_read_caches_an_entry_that_never_expires_for_at_most_an_hour(consolidated, client, redis_db):
    key, namespace, value = live_entry(consolidated, "expires_at IS NULL")
    assert client.get(key, namespace) == value
    assert json.loads(redis_db.get(cache_key(namespace, key))) == value
    assert 3_595_000 < redis_db.pttl(cache_key(namespace, key)) <= 3_600_000


def test_an_entry_expiring_in_days_is_cached_for_at_most_an_hour(client, cache, redis_db):
    key = new_key("long-ttl")
    client.set(key, "lives two days", ttl=2 * 86400)
    assert client.get(key) == "lives two days"
    assert 3_595_000 < redis_db.pttl(cache_key("default", key)) <= 3_600_000
    client.get("no such key")
    cache.warm(client.hottest(50))
    assert all(0 < redis_db.pttl(name) <= 3_600_000 for name in cached_keys(redis_db))


def test_first_read_caches_until_expires_at(consolidated, client, redis_db):
    key = new_key("ttl")
    client.set(key, {"n": 1}, ttl=600)
    assert client.get(key) == {"n": 1}
    assert 595_000 < redis_db.pttl(cache_key("default", key)) <= 600_000


def test_second_read_is_a_hit_served_by_redis(consolidated, client, cache):
    key, namespace, value = live_entry(consolidated, "expires_at IS NULL AND namespace <> 'default'")
    client.get(key, namespace)
    write_past_the_client(consolidated, key, namespace, "changed behind the cache's back")
    assert client.get(key, namespace) == value
    assert (cache.hits, cache.misses) == (1, 1)


def test_expired_and_absent_entries_are_not_cached(consolidated, client, redis_db):
    expired = fetch(consolidated, "SELECT key, namespace FROM unified_memory WHERE expires_at <= now() LIMIT 5")
    assert [client.get(k, n) for k, n in expired] == [None] * len(expired)
    assert client.get("no such key") is None
    assert cached_keys(redis_db) == set()


def test_namespaces_with_colons_get_distinct_cache_keys(client, redis_db):
    client.set("pre-bash:x", "in namespace hooks", "hooks")
    client.set("x", "in namespace hooks:pre-bash", "hooks:pre-bash")
    assert (client.get("pre-bash:x", "hooks"), client.get("x", "hooks:pre-bash")) == \
           ("in namespace hooks", "in namespace hooks:pre-bash")
    assert cached_keys(redis_db) == {"mem:hooks:pre-bash:x", "mem:hooks%3Apre-bash:x"}


# -- invalidation ----------------------------------------------------------------------------------

def test_set_invalidates_the_cached_value(consolidated, client, redis_db):
    key, namespace, _ = live_entry(consolidated, "expires_at IS NULL AND namespace = 'default'")
    client.get(key, namespace)
    client.set(key, {"version": 2}, namespace)
    assert not redis_db.exists(cache_key(namespace, key))
    assert client.get(key, namespace) == {"version": 2}
    assert json.loads(redis_db.get(cache_key(namespace, key))) == {"version": 2}


def test_a_fill_of_a_version_older_than_a_write_is_refused(client, cache, redis_db):
    """The race, step by step: a reader reads v1 from PostgreSQL; a writer sets v2 and invalidates; the
    reader's fill of v1 comes last. Redis must not keep v1 (before: v1, with no expiry)."""
    key = new_key("race")
    client.set(key, "v1")
    read_by_the_reader = client.read_entry(key)
    assert read_by_the_reader.value == "v1"

    client.set(key, "v2")
    assert cache.store(read_by_the_reader) is False

    assert not redis_db.exists(cache_key("default", key))
    assert client.get(key) == "v2"
    assert json.loads(redis_db.get(cache_key("default", key))) == "v2"
    assert 0 < redis_db.pttl(cache_key("default", key)) <= 3_600_000
    assert cache.store(read_by_the_reader) is False  # nor over the newer cached value
    assert json.loads(redis_db.get(cache_key("default", key))) == "v2"


def test_a_fill_of_a_deleted_entry_is_refused(client, cache, redis_db):
    key = new_key("race-delete")
    client.set(key, "gone soon")
    read_by_the_reader = client.read_entry(key)
    assert client.delete(key) is True
    assert cache.store(read_by_the_reader) is False
    assert not redis_db.exists(cache_key("default", key)) and client.get(key) is None


def test_a_fill_is_refused_when_the_key_was_invalidated_since_its_lookup(client, cache, redis_db):
    """The fence half of the one fill protocol: an invalidation that carries no version (what a near
    cache's listener forwards for a write by psql) still voids a fill that looked the key up before it."""
    key = new_key("fence")
    client.set(key, "v1")
    text, _, fence = cache.lookup_many("default", [key])[key]
    assert text is None
    read_by_the_reader = client.read_entry(key)
    cache.invalidate("default", key)
    assert cache.store(read_by_the_reader, fence) is False
    assert not redis_db.exists(cache_key("default", key))

    fence = cache.lookup_many("default", [key])[key][2]
    assert cache.invalidate_all() is True                  # bumps the global fence
    assert cache.store(read_by_the_reader, fence) is False
    assert cache.store(read_by_the_reader, cache.lookup_many("default", [key])[key][2]) is True
    assert json.loads(redis_db.get(cache_key("default", key))) == "v1"


def test_a_fenced_fill_of_an_older_version_is_refused_though_its_fence_did_not_move(client, cache, redis_db):
    """The version half: the reader looked up after the write's invalidation (so its fence is current)
    but read PostgreSQL before the write committed."""
    key = new_key("fence-version")
    client.set(key, "v1")
    read_by_the_reader = client.read_entry(key)
    client.set(key, "v2")
    fence = cache.lookup_many("default", [key])[key][2]
    assert cache.store(read_by_the_reader, fence) is False
    assert not redis_db.exists(cache_key("default", key))
    assert client.get(key) == "v2" and json.loads(redis_db.get(cache_key("default", key))) == "v2"


def test_every_write_through_the_client_moves_the_version_forward(client):
    key = new_key("versions")
    versions = []
    for value in range(5):
        client.set(key, value)
        versions.append(client.read_entry(key).version)
    assert versions == sorted(set(versions))


def test_delete_invalidates_the_cached_value(client, redis_db):
    key = new_key("delete")
    client.set(key, "short-lived", "cache-tests")
    assert client.get(key, "cache-tests") == "short-lived"
    assert client.delete(key, "cache-tests") is True
    assert not redis_db.exists(cache_key("cache-tests", key))
    assert client.get(key, "cache-tests") is None


# -- Redis unreachable -----------------------------------------------------------------------------

def test_an_invalidation_redis_did_not_take_empties_the_cache_before_it_is_read_again(consolidated, redis_url,
                                                                                        redis_db):
    """A write whose invalidation timed out (Redis paused) left the old value cached for up to an hour,
    for the writer too: the cache that skipped it now removes every cached value as Redis answers again."""
    key, namespace, _ = live_entry(consolidated, "expires_at IS NULL AND namespace = 'default'")
    cache = Cache(redis_url, timeout=0.2, retry_interval=0.1)
    try:
        with MemoryClient(consolidated.dsn, cache=cache, pool_size=1) as client:
            client.set(key, {"version": "old"}, namespace)
            assert client.get(key, namespace) == {"version": "old"}
            assert redis_db.exists(cache_key(namespace, key))         # cached
            redis_db.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
            client.set(key, {"version": "new"}, namespace)              # committed; its invalidation times out
            time.sleep(1.2)
            assert json.loads(redis_db.get(cache_key(namespace, key))) == {"version": "old"}
            assert client.get(key, namespace) == {"version": "new"}
            assert json.loads(redis_db.get(cache_key(namespace, key))) == {"version": "new"}
    finally:
        cache.close()


def test_unreachable_redis_falls_back_to_postgresql_with_one_warning(consolidated, closed_port, caplog):
    entries = fetch(consolidated, f"SELECT key, namespace, value FROM unified_memory WHERE {LIVE} ORDER BY id LIMIT 5")
    unreachable = Cache(f"redis://:secret@127.0.0.1:{closed_port}/0")
    caplog.set_level(logging.WARNING, logger="loader.serve.cache")
    with MemoryClient(consolidated.dsn, cache=unreachable, pool_size=1) as client:
        assert [client.get(k, n) for k, n, _ in entries] == [v for _, _, v in entries]
        key = new_key("no-redis")
        client.set(key, [1])
        assert client.get(key) == [1]
        assert client.delete(key) is True

    warnings = [r for r in caplog.records if r.name == "loader.serve.cache" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unreachable" in warnings[0].getMessage() and "secret" not in warnings[0].getMessage()
    assert unreachable.stats()["connected"] is False


# -- warm and stats --------------------------------------------------------------------------------

def hottest_identities(target, top: int) -> set[str]:
    """The documented order, computed in Python from the whole table: access_count desc, accessed_at
    desc (NULLs last for both), then namespace and key."""
    rows = fetch(target, f"SELECT namespace, key, access_count, extract(epoch FROM accessed_at) "
                         f"FROM unified_memory WHERE {LIVE}")
    def order(row):
        namespace, key, count, accessed = row
        return (count is None, -(count or 0), accessed is None, -(accessed or 0), namespace, key)
    return {cache_key(namespace, key) for namespace, key, *_ in sorted(rows, key=order)[:top]}


@pytest.mark.parametrize("top", [1, 7, 50])
def test_warm_caches_exactly_the_hottest_entries(consolidated, client, cache, redis_db, top):
    expected = hottest_identities(consolidated, top)
    assert cache.warm(client.hottest(top)) == top
    assert cached_keys(redis_db) == expected


def test_warm_from_a_dsn(consolidated, cache, redis_db):
    expected = hottest_identities(consolidated, 10)
    assert warm_cache(consolidated.dsn, cache, 10) == 10
    assert cached_keys(redis_db) == expected


def test_warm_with_redis_unreachable_caches_nothing(consolidated, closed_port):
    assert warm_cache(consolidated.dsn, Cache(f"redis://127.0.0.1:{closed_port}/0"), 5) is None


def test_stats_report_counters_and_server_figures(consolidated, client, cache):
    key, namespace, _ = live_entry(consolidated, "expires_at IS NULL")
    client.get(key, namespace)
    client.get(key, namespace)
    client.get("no such key")
    stats = cache.stats()
    assert stats["connected"] is True
    assert (stats["keys"], stats["hits"], stats["misses"], stats["errors"]) == (1, 1, 2, 0)
    assert stats["used_memory"] > 0 and stats["keyspace_hits"] >= 1


def consolidate_cache(*arguments: str) -> subprocess.CompletedProcess:
    return consolidate("cache", *arguments, timeout=300)


def test_cli_warm_then_stats(consolidated, redis_url, redis_db, tmp_path):
    expected = hottest_identities(consolidated, 12)
    warmed = consolidate_cache("warm", "--top", "12", "--redis-url", redis_url, "--dsn", consolidated.dsn,
                               "--home", str(tmp_path / "state"))
    assert warmed.returncode == 0, warmed.stderr
    assert cached_keys(redis_db) == expected

    stats = consolidate_cache("stats", "--redis-url", redis_url, "--json")
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    assert (report["connected"], report["keys"]) == (True, 12) and report["used_memory"] > 0


def test_cli_with_redis_unreachable_exits_7_without_the_password(consolidated, closed_port, tmp_path):
    url = f"redis://:secret@127.0.0.1:{closed_port}/0"
    warmed = consolidate_cache("warm", "--redis-url", url, "--dsn", consolidated.dsn, "--home", str(tmp_path / "state"))
    stats = consolidate_cache("stats", "--redis-url", url, "--json")
    assert (warmed.returncode, stats.returncode) == (7, 7)
    assert json.loads(stats.stdout)["connected"] is False
    assert "secret" not in warmed.stdout + warmed.stderr + stats.stdout + stats.stderr


@pytest.mark.parametrize("command", ["warm", "stats"])
@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/0", ""])
def test_cli_cache_commands_refuse_a_malformed_or_empty_redis_url_as_usage(command, url):
    refused = consolidate_cache(command, "--redis-url", url, "--json")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--redis-url" in json.loads(refused.stdout)["error"] and "Traceback" not in refused.stderr


# -- a sync's build tells Redis what it changed ------------------------------------------------------

def test_a_sync_with_a_redis_url_invalidates_what_its_build_changed_and_nothing_else(
        tmp_path, target, home, redis_url, redis_db, closed_port):
    """Without a near-cache client listening, Redis learns of a change a sync builds only when the sync is
    given the cache (--redis-url): then the entries the build changed or deleted are invalidated there,
    and the others stay cached. Without it, a reader through Redis keeps the replaced value."""
    db = v2_file(tmp_path / "tree/app/.swarm/memory.db", [
        ("changed", '"old"', "default", 1_750_000_000), ("deleted", '"gone soon"', "default", 1_750_000_000),
        ("kept", '"same"', "default", 1_750_000_000), ("unsynced", '"before"', "default", 1_750_000_000)])
    assert not sync([tmp_path / "tree"], target, home).failed
    cache = Cache(redis_url)
    with MemoryClient(target.dsn, cache=cache, track_access=False) as memory:
        assert [memory.get(key) for key in ("changed", "deleted", "kept", "unsynced")] == \
            ["old", "gone soon", "same", "before"]
        assert cached_keys(redis_db) == {cache_key("default", key) for key in ("changed", "deleted", "kept", "unsynced")}

        write(db, "UPDATE memory_entries SET value = '\"stale in Redis\"', updated_at = updated_at + 60 "
                  "WHERE key = 'unsynced'")
        assert sync([tmp_path / "tree"], target, home).redis is None
        assert memory.get("unsynced") == "before"  # what this test is about: Redis was not told

        write(db, "UPDATE memory_entries SET value = '\"new\"', updated_at = updated_at + 60 WHERE key = 'changed'")
        write(db, "DELETE FROM memory_entries WHERE key = 'deleted'")
        report = sync([tmp_path / "tree"], target, home, cache=cache)

        assert report.build.success and report.redis == {"entries": 2, "flushed": False, "reached": True}
        assert cached_keys(redis_db) == {cache_key("default", key) for key in ("kept", "unsynced")}
        assert [memory.get(key) for key in ("changed", "deleted", "kept")] == ["new", None, "same"]

        write(db, "UPDATE memory_entries SET value = '\"changed too\"', updated_at = updated_at + 60 WHERE key = 'kept'")
        synced = consolidate("sync", str(tmp_path / "tree"), "--redis-url", redis_url, "--json", target=target,
                             home=home)
        assert synced.returncode == 0, synced.stdout[-3000:] + synced.stderr[-3000:]
        assert json.loads(synced.stdout)["redis"] == {"entries": 1, "flushed": False, "reached": True}
        assert memory.get("kept") == "changed too"

        # Redis away during a sync: exit 7, and the invalidation is owed: the next build told empties the cache
        write(db, "UPDATE memory_entries SET value = '\"while Redis was away\"', updated_at = updated_at + 60 "
                  "WHERE key = 'kept'")
        away = consolidate("sync", str(tmp_path / "tree"), "--redis-url", f"redis://127.0.0.1:{closed_port}/0",
                           "--json", target=target, home=home)
        assert away.returncode == 7, away.stdout[-3000:] + away.stderr[-3000:]
        assert json.loads(away.stdout)["redis"] == {"entries": 1, "flushed": False, "reached": False}
        assert memory.get("kept") == "changed too"  # stale until the cache is told
        nothing_changed = sync([tmp_path / "tree"], target, home, cache=cache)
        assert nothing_changed.exit_code == 0 and nothing_changed.redis["flushed"] and cached_keys(redis_db) == set()
        assert memory.get("kept") == "while Redis was away"
        assert sync([tmp_path / "tree"], target, home, cache=cache).redis == \
            {"entries": 0, "flushed": False, "reached": True}  # owed no more

        assert memory.get("kept") == "while Redis was away" and cached_keys(redis_db)
        rebuilt = consolidate("run", str(tmp_path / "tree"), "--no-backup", "--rebuild", "--redis-url", redis_url,
                              "--json", target=target, home=home)
        assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-3000:]
        assert json.loads(rebuilt.stdout)["redis"]["flushed"] and cached_keys(redis_db) == set()

        refused = consolidate("sync", str(tmp_path / "tree"), "--redis-url", "not-a-url", "--json",
                              target=target, home=home)
        assert refused.returncode == 2 and "--redis-url" in json.loads(refused.stdout)["error"]
        assert "Traceback" not in refused.stderr
    cache.close()
