"""A Redis cache in front of `unified_memory` (cache-aside), used by loader.client.MemoryClient.

Keys are `mem:{namespace}:{key}` holding the value's JSON text; a ':' or '%' in the namespace is
percent-encoded (`hooks:pre-bash` -> `hooks%3Apre-bash`) so two entries can never share a cache key.
A cached entry expires when its row does (expires_at); entries without expires_at are cached without a
TTL, and entries already expired are not cached.

Redis is optional at run time. When it cannot be reached, lookups are misses (the client reads
PostgreSQL), stores and invalidations are skipped, one warning is logged per Cache instance, and Redis
is not tried again for `retry_interval` seconds; no Redis error ever reaches the caller.

Known limits of cache-aside without versioning: a reader that missed, read PostgreSQL and fills the
cache just after a writer invalidated can leave the older value cached (until its TTL; for ever when the
entry has no expires_at) — except fills through `store_fenced` (MemoryClient.get_many and every read of
a client with a near cache), which an invalidation since their lookup voids; an invalidation skipped
while Redis was unreachable leaves a stale value in a Redis that comes back. `consolidate cache warm`
after such an outage, or a FLUSHDB, clears it (and so does a near-cache client, whenever its
invalidation channels reconnect: loader.near_cache).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from loader.client import Entry, MemoryClient

DEFAULT_URL = "redis://127.0.0.1:10001/0"
KEY_PREFIX = "mem"

log = logging.getLogger(__name__)
T = TypeVar("T")
UNREACHABLE = object()

FENCE_TTL_MS = 60_000
GLOBAL_FENCE = f"fence:{KEY_PREFIX}"

# Fenced fills (MemoryClient.get_many and every read of a client with a near cache): an invalidation
# also bumps a fence beside the key (`fence:mem:{namespace}:{key}`, kept FENCE_TTL_MS), invalidate_all
# bumps GLOBAL_FENCE; a reader notes both fences when it misses and fills only if they are unchanged, so
# a value read from PostgreSQL before a write committed is never stored after that write's invalidation
# (unless the read took longer than FENCE_TTL_MS).

# Per key asked (KEYS: the cache keys, their fences, then GLOBAL_FENCE): its text (false on a miss), its
# PTTL (-1: no expiry) and its fences, in one round trip and one atomic step.
LOOKUP_MANY_SCRIPT = """
local found = {}
local count = (#KEYS - 1) / 2
local global = redis.call('GET', KEYS[#KEYS]) or ''
for i = 1, count do
  local text = redis.call('GET', KEYS[i])
  found[#found + 1] = text
  found[#found + 1] = text and redis.call('PTTL', KEYS[i]) or -2
  found[#found + 1] = (redis.call('GET', KEYS[count + i]) or '') .. '/' .. global
end
return found
"""
FENCED_STORE_SCRIPT = """
if (redis.call('GET', KEYS[2]) or '') .. '/' .. (redis.call('GET', KEYS[3]) or '') ~= ARGV[2] then
  return 0
end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
end
return 1
"""
INVALIDATE_SCRIPT = """
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Cached:
    """A cache hit (the value may itself be None: a stored JSON null)."""

    value: Any


def cache_key(namespace: str, key: str) -> str:
    escaped_namespace = namespace.replace("%", "%25").replace(":", "%3A")
    return f"{KEY_PREFIX}:{escaped_namespace}:{key}"


def fence_key(namespace: str, key: str) -> str:
    return "fence:" + cache_key(namespace, key)


def redacted(url: str) -> str:
    """The URL as it may be shown to a person: never with its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else (parts.hostname or "")
    netloc = user + (f"{host}:{parts.port}" if parts.port else host)
    return urlunsplit(parts._replace(netloc=netloc))


def decoded(text: str | None) -> Cached | None:
    """A cache hit from the stored text; None for a miss or text that is not JSON (not ours)."""
    if text is None:
        return None
    try:
        return Cached(json.loads(text))
    except ValueError:
        return None


def milliseconds_to_live(entry: Entry) -> int | None:
    """PX for the entry: None = no expiry, <= 0 = already expired (do not cache)."""
    return None if entry.seconds_left is None else int(entry.seconds_left * 1000)


class Cache:
    """A Redis connection (from `url`) with counters: hits (answered from Redis), misses (Redis answered
    "not cached"), errors (operations skipped because Redis was unreachable)."""

    def __init__(self, url: str = DEFAULT_URL, *, timeout: float = 0.5, retry_interval: float = 5.0):
        self.url = url
        self.retry_interval = retry_interval
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           decode_responses=True)
        self._warned = False
        self._warning_lock = threading.Lock()
        self._unreachable_until = 0.0
        self._lookup_many_script = self._redis.register_script(LOOKUP_MANY_SCRIPT)
        self._fenced_store_script = self._redis.register_script(FENCED_STORE_SCRIPT)
        self._invalidate_script = self._redis.register_script(INVALIDATE_SCRIPT)

    @property
    def redacted_url(self) -> str:
        return redacted(self.url)

    # -- cache-aside -----------------------------------------------------------------------------

    def lookup(self, namespace: str, key: str) -> Cached | None:
        """The cached value, or None on a miss (or when Redis is unreachable)."""
        text = self._guarded(lambda: self._redis.get(cache_key(namespace, key)), fallback=UNREACHABLE)
        if text is UNREACHABLE:
            return None
        cached = decoded(text)
        if cached is None:
            self.misses += 1
        else:
            self.hits += 1
        return cached

    def lookup_many(self, namespace: str, keys: list[str]) -> dict[str, tuple[str | None, float | None, str]] | None:
        """{key: (JSON text or None on a miss, seconds left or None for no expiry, fence)} for every key
        asked; None when Redis is unreachable."""
        found = self._guarded(lambda: self._lookup_many_script(
            keys=[cache_key(namespace, key) for key in keys] + [fence_key(namespace, key) for key in keys]
            + [GLOBAL_FENCE]),
            fallback=UNREACHABLE)
        if found is UNREACHABLE:
            return None
        looked_up = {}
        for i, key in enumerate(keys):
            text, pttl, fence = found[3 * i: 3 * i + 3]
            looked_up[key] = (text, None if pttl < 0 else pttl / 1000, fence)
        hits = sum(1 for text, _, _ in looked_up.values() if text is not None)
        self.hits += hits
        self.misses += len(keys) - hits
        return looked_up

    def store_fenced(self, entry: Entry, fence: str) -> bool:
        """store(), only if no invalidation of the entry happened since lookup_many returned `fence`."""
        ttl_ms = milliseconds_to_live(entry)
        if ttl_ms is not None and ttl_ms <= 0:
            return False
        text = entry.text if entry.text is not None else json.dumps(entry.value)
        keys = [cache_key(entry.namespace, entry.key), fence_key(entry.namespace, entry.key), GLOBAL_FENCE]
        return bool(self._guarded(
            lambda: self._fenced_store_script(keys=keys, args=[text, fence, "" if ttl_ms is None else ttl_ms]),
            fallback=False))

    def store(self, entry: Entry) -> bool:
        """Cache a live entry until it expires; False when it was not cached."""
        ttl_ms = milliseconds_to_live(entry)
        if ttl_ms is not None and ttl_ms <= 0:
            return False
        text = entry.text if entry.text is not None else json.dumps(entry.value)
        return bool(self._guarded(
            lambda: self._redis.set(cache_key(entry.namespace, entry.key), text, px=ttl_ms), fallback=False))

    def invalidate(self, namespace: str, key: str) -> bool:
        """Remove the cached value and bump its fence (see FENCED_STORE_SCRIPT), in one round trip;
        False when Redis was unreachable."""
        keys = [cache_key(namespace, key), fence_key(namespace, key)]
        return bool(self._guarded(lambda: self._invalidate_script(keys=keys, args=[FENCE_TTL_MS]), fallback=False))

    def invalidate_all(self) -> bool:
        """Remove every cached value (`mem:*`), after bumping the global fence so that no fill that
        looked before can store afterwards; False when Redis was unreachable."""
        return self._guarded(self._invalidate_all, fallback=False)

    # -- warming and statistics ------------------------------------------------------------------

    def warm(self, client_or_dsn: MemoryClient | str, top: int, *, schema: str = "public") -> int:
        """Cache the `top` hottest live entries (access_count desc, then accessed_at desc); returns how
        many were cached (0 when Redis is unreachable)."""
        entries = hottest_entries(client_or_dsn, top, schema)
        return self._guarded(lambda: self._store_all(entries), fallback=0)

    def stats(self) -> dict[str, Any]:
        """This instance's counters, and the server's view from INFO; connected=False when Redis cannot
        be reached (without a warning: asking is the point)."""
        counters = {"url": self.redacted_url, "hits": self.hits, "misses": self.misses, "errors": self.errors}
        try:
            info = self._redis.info()
            return {**counters, "connected": True, "keys": self._count_keys(), **server_figures(info)}
        except RedisError as error:
            return {**counters, "connected": False, "error": str(error)}

    def available(self) -> bool:
        try:
            return bool(self._redis.ping())
        except RedisError:
            return False

    def close(self) -> None:
        self._redis.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _store_all(self, entries: Iterable[Entry]) -> int:
        pipeline = self._redis.pipeline(transaction=False)
        for entry in entries:
            ttl_ms = milliseconds_to_live(entry)
            if ttl_ms is None or ttl_ms > 0:
                pipeline.set(cache_key(entry.namespace, entry.key), json.dumps(entry.value), px=ttl_ms)
        return sum(1 for reply in pipeline.execute() if reply)

    def _invalidate_all(self) -> bool:
        self._redis.incr(GLOBAL_FENCE)
        batch = []
        for key in self._redis.scan_iter(match=f"{KEY_PREFIX}:*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                self._redis.unlink(*batch)
                batch.clear()
        if batch:
            self._redis.unlink(*batch)
        return True

    def _count_keys(self) -> int:
        return sum(1 for _ in self._redis.scan_iter(match=f"{KEY_PREFIX}:*", count=1000))

    def _guarded(self, operation: Callable[[], T], fallback: T) -> T:
        """Run a Redis operation; on any Redis error warn (once), back off, and return fallback."""
        if time.monotonic() < self._unreachable_until:
            self.errors += 1
            return fallback
        try:
            return operation()
        except RedisError as error:
            self._mark_unreachable(error)
            return fallback

    def _mark_unreachable(self, error: RedisError) -> None:
        self.errors += 1
        self._unreachable_until = time.monotonic() + self.retry_interval
        with self._warning_lock:
            already_warned, self._warned = self._warned, True
        if not already_warned:
            log.warning("Redis cache at %s is unreachable (%s); reading from PostgreSQL without the cache",
                        self.redacted_url, error)


def server_figures(info: dict[str, Any]) -> dict[str, Any]:
    """The INFO fields worth showing."""
    names = ("redis_version", "used_memory", "used_memory_human", "maxmemory", "maxmemory_policy",
             "keyspace_hits", "keyspace_misses", "expired_keys", "evicted_keys", "connected_clients")
    return {name: info.get(name) for name in names}


def hottest_entries(client_or_dsn: MemoryClient | str, top: int, schema: str) -> list[Entry]:
    from loader.client import MemoryClient

    if isinstance(client_or_dsn, MemoryClient):
        return client_or_dsn.hottest(top)
    with MemoryClient(client_or_dsn, schema=schema, pool_size=1) as client:
        return client.hottest(top)
