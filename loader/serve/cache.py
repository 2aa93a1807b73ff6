"""A Redis cache in front of `unified_memory` (cache-aside), used by loader.serve.client.MemoryClient.

Keys are `mem:{namespace}:{key}` holding the value's JSON text; a ':' or '%' in the namespace is
percent-encoded (`hooks:pre-bash` -> `hooks%3Apre-bash`) so two entries can never share a cache key.
A cached entry expires when its row does (expires_at), and at the latest after MAX_TTL_SECONDS (one
hour), entries without expires_at included; entries already expired are not cached.

Fills follow one protocol, one Lua script (FILL_SCRIPT), with two conditions:
- Version: every entry read from PostgreSQL carries its version (updated_at in epoch microseconds; every
  write through loader.serve.client moves it strictly forward). A write, after its commit, deletes the
  cached value and leaves its version in `memver:{namespace}:{key}` (for MAX_TTL_SECONDS); a fill of an
  older version (or of an unknown one while a marker exists) is refused. So a reader that read v1, then
  lost the race to a writer's set("v2") and its invalidation, cannot cache v1.
- Fence: every invalidation also bumps a counter beside the key (`fence:mem:{namespace}:{key}`, kept
  FENCE_TTL_MS), invalidate_all bumps GLOBAL_FENCE. A reader notes both when it looks the key up
  (lookup_many) and its fill stores only if neither has moved since. This voids the fill even when the
  write carried no version: a change PostgreSQL notified to a near cache (loader.serve.near_cache), made
  by psql, the compat views or another service, and forwarded here by its listener.
MemoryClient fills only after a lookup_many, so both conditions apply to every read it fills; `warm` and a
`store` without a fence (nothing was looked up) rely on the version alone.

Redis is optional at run time. When it cannot be reached, lookups are misses (the client reads
PostgreSQL), stores and invalidations are skipped, one warning is logged per Cache instance, and Redis
is not tried again for `retry_interval` seconds; no Redis error ever reaches the caller.

Known limits: writes that bypass the client (SQL, a `consolidate build`) leave no marker (only a near
cache's listener, when one runs, invalidates them and bumps their fence), a fill whose read took longer
than FENCE_TTL_MS is checked by version only, and an invalidation skipped while Redis was unreachable
leaves a stale value in a Redis that comes back until the Cache that skipped it reaches Redis again: it
then removes every cached value first (as a near-cache client does whenever its invalidation channels
reconnect). A process killed between its commit and its invalidation leaves the value for at most
MAX_TTL_SECONDS.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import redis
from redis.exceptions import RedisError

from loader.json_depth import loads_within_depth
from loader.serve import DEFAULT_REDIS_URL
from loader.serve.entries import Entry

KEY_PREFIX = "mem"
VERSION_PREFIX = "memver"
MAX_TTL_SECONDS = 3600

FENCE_TTL_MS = 60_000
GLOBAL_FENCE = f"fence:{KEY_PREFIX}"

# Per key asked (KEYS: the cache keys, their fences, then GLOBAL_FENCE): its text (false on a miss), its
# PTTL and its fence ('{key fence}/{global fence}'), in one round trip and one atomic step.
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
# KEYS: value, version marker, key fence, GLOBAL_FENCE. ARGV: JSON text, TTL in ms, the entry's version
# ('' when unknown), the fence noted at lookup ('' when nothing was looked up). Refused (0) when an
# invalidation happened since that lookup, or a write of a newer version invalidated the key; else
# cached (1).
FILL_SCRIPT = """
if ARGV[4] ~= '' and (redis.call('GET', KEYS[3]) or '') .. '/' .. (redis.call('GET', KEYS[4]) or '') ~= ARGV[4] then
    return 0
end
local newest = redis.call('GET', KEYS[2])
if newest and (ARGV[3] == '' or tonumber(ARGV[3]) < tonumber(newest)) then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# KEYS: value, version marker, key fence. ARGV: the written version ('' when none: no marker), marker TTL
# in ms, fence TTL in ms.
INVALIDATE_SCRIPT = """
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
if ARGV[1] ~= '' then
    local newest = redis.call('GET', KEYS[2])
    if not newest or tonumber(newest) < tonumber(ARGV[1]) then
        newest = ARGV[1]
    end
    redis.call('SET', KEYS[2], newest, 'PX', ARGV[2])
end
return 1
"""

log = logging.getLogger(__name__)
T = TypeVar("T")
UNREACHABLE = object()


@dataclass(frozen=True)
class Cached:
    """A cache hit (the value may itself be None: a stored JSON null)."""

    value: Any


def cache_key(namespace: str, key: str, prefix: str = KEY_PREFIX) -> str:
    escaped_namespace = namespace.replace("%", "%25").replace(":", "%3A")
    return f"{prefix}:{escaped_namespace}:{key}"


def version_key(namespace: str, key: str) -> str:
    """Where the newest version written to an entry is kept (see the module docstring)."""
    return cache_key(namespace, key, VERSION_PREFIX)


def fence_key(namespace: str, key: str) -> str:
    """The counter every invalidation of the entry bumps (see the module docstring)."""
    return "fence:" + cache_key(namespace, key)


def text_of(entry: Entry) -> str:
    """The JSON text to cache: as PostgreSQL sent it when the entry was read as text."""
    return entry.text if entry.text is not None else json.dumps(entry.value)


def url_passwords(url: str) -> list[str]:
    """Every text the URL's passwords can appear as (in `user:password@` or `?password=`), as written
    and decoded, longest first."""
    try:
        parts = urlsplit(url)
        written = [parts.password or ""]
    except ValueError:
        parts, written = None, []
    written += [value for name, value in parse_qsl(parts.query if parts else url.partition("?")[2],
                                                   keep_blank_values=True) if name.lower() == "password"]
    written += re.findall(r"(?i)[?&]password=([^&#]*)", url)
    forms = {form for value in written for form in (value, unquote(value), quote(unquote(value), safe=""))}
    return sorted((form for form in forms if form), key=len, reverse=True)


def without_passwords(text: str, url: str) -> str:
    for form in url_passwords(url):
        text = text.replace(form, "***")
    return text


def redacted(url: str) -> str:
    """The URL as it may be shown to a person: never with a password (`user:password@` or `?password=`)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # not a URL urllib can take apart: show only its scheme
        return url.partition(":")[0] + "://***"
    netloc = parts.netloc
    if parts.password is not None:
        user = f"{parts.username}:***@" if parts.username else ":***@"
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else (parts.hostname or "")
        netloc = user + (f"{host}:{port}" if port else host)
    query = re.sub(r"(?i)(^|&)(password)=[^&]*", r"\1\2=***", parts.query)
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "") + \
        (f"#{parts.fragment}" if parts.fragment else "")


def decoded(text: str | None) -> Cached | None:
    """A cache hit from the stored text; None for a miss or text that is not JSON (not ours)."""
    if text is None:
        return None
    try:
        return Cached(loads_within_depth(text))
    except ValueError:
        return None


def milliseconds_to_live(entry: Entry) -> int:
    """PX for the entry: until it expires, at most MAX_TTL_SECONDS; <= 0 = already expired (do not cache)."""
    cap = MAX_TTL_SECONDS * 1000
    return cap if entry.seconds_left is None else min(int(entry.seconds_left * 1000), cap)


class Cache:
    """A Redis connection (from `url`) with counters: hits (answered from Redis), misses (Redis answered
    "not cached"), errors (operations skipped because Redis was unreachable)."""

    def __init__(self, url: str = DEFAULT_REDIS_URL, *, timeout: float = 0.5, retry_interval: float = 5.0):
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
        # an invalidation Redis did not take: every cached value is removed before Redis is used again
        self._flush_owed = False
        self._lookup_many = self._redis.register_script(LOOKUP_MANY_SCRIPT)
        self._fill = self._redis.register_script(FILL_SCRIPT)
        self._invalidate = self._redis.register_script(INVALIDATE_SCRIPT)

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
        """{key: (JSON text or None on a miss, seconds left, fence to pass to store)} for every key
        asked, in one round trip; None when Redis is unreachable."""
        found = self._guarded(lambda: self._lookup_many(
            keys=[cache_key(namespace, key) for key in keys] + [fence_key(namespace, key) for key in keys]
            + [GLOBAL_FENCE]), fallback=UNREACHABLE)
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

    def store(self, entry: Entry, fence: str | None = None) -> bool:
        """Cache a live entry until it expires (at most MAX_TTL_SECONDS); False when it was not cached:
        expired, Redis unreachable, a write of a newer version invalidated the key, or (with the `fence`
        lookup_many returned) any invalidation of the key happened since that lookup."""
        if milliseconds_to_live(entry) <= 0:
            return False
        return bool(self._guarded(lambda: self._fill_entry(entry, fence), fallback=False))

    def invalidate(self, namespace: str, key: str, version: int | None = None) -> bool:
        """Delete the cached value after a write and bump its fence (voiding fills that looked it up
        before); with the written `version`, also refuse later fills of older versions (for
        MAX_TTL_SECONDS). False when Redis was unreachable."""
        return bool(self._guarded(
            lambda: self._invalidate(keys=[cache_key(namespace, key), version_key(namespace, key), fence_key(namespace, key)],
                                     args=["" if version is None else version, MAX_TTL_SECONDS * 1000, FENCE_TTL_MS]),
            fallback=False, owes_a_flush=True))

    def invalidate_all(self) -> bool:
        """Remove every cached value (`mem:*`), after bumping the global fence so that no fill that
        looked up before can store afterwards; False when Redis was unreachable."""
        return self._guarded(self._invalidate_all, fallback=False, owes_a_flush=True)

    # -- warming and statistics ------------------------------------------------------------------

    def warm(self, entries: Iterable[Entry]) -> int:
        """Cache these live entries (MemoryClient.hottest gives the hottest); returns how many were
        cached (0 when Redis is unreachable)."""
        entries = list(entries)
        return self._guarded(lambda: self._store_all(entries), fallback=0)

    def stats(self) -> dict[str, Any]:
        """This instance's counters, and the server's view from INFO; connected=False when Redis cannot
        be reached (without a warning: asking is the point)."""
        counters = {"url": self.redacted_url, "hits": self.hits, "misses": self.misses, "errors": self.errors}
        try:
            info = self._redis.info()
            return {**counters, "connected": True, "keys": self._count_keys(), **server_figures(info)}
        except RedisError as error:
            return {**counters, "connected": False, "error": without_passwords(str(error), self.url)}

    def available(self) -> bool:
        try:
            return bool(self._redis.ping())
        except RedisError:
            return False

    def close(self) -> None:
        self._redis.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _fill_entry(self, entry: Entry, fence: str | None, client=None):
        namespace, key = entry.namespace, entry.key
        return self._fill(keys=[cache_key(namespace, key), version_key(namespace, key), fence_key(namespace, key),
                                GLOBAL_FENCE],
                          args=[text_of(entry), milliseconds_to_live(entry),
                                "" if entry.version is None else entry.version, "" if fence is None else fence],
                          client=client)

    def _store_all(self, entries: Iterable[Entry]) -> int:
        pipeline = self._redis.pipeline(transaction=False)
        for entry in entries:
            if milliseconds_to_live(entry) > 0:
                self._fill_entry(entry, None, client=pipeline)
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

    def _guarded(self, operation: Callable[[], T], fallback: T, owes_a_flush: bool = False) -> T:
        """Run a Redis operation; on any Redis error warn (once), back off, and return fallback. An
        invalidation (`owes_a_flush`) that Redis did not take leaves a value it should have removed: the
        next operation Redis answers first removes every cached value (invalidate_all)."""
        if time.monotonic() < self._unreachable_until:
            self.errors += 1
            self._flush_owed = self._flush_owed or owes_a_flush
            return fallback
        try:
            if self._flush_owed:
                self._invalidate_all()
                self._flush_owed = False
            return operation()
        except RedisError as error:
            self._flush_owed = self._flush_owed or owes_a_flush
            self._mark_unreachable(error)
            return fallback

    def _mark_unreachable(self, error: RedisError) -> None:
        self.errors += 1
        self._unreachable_until = time.monotonic() + self.retry_interval
        with self._warning_lock:
            already_warned, self._warned = self._warned, True
        if not already_warned:
            log.warning("Redis cache at %s is unreachable (%s); going on without it (reads go to PostgreSQL)",
                        self.redacted_url, without_passwords(str(error), self.url))


def server_figures(info: dict[str, Any]) -> dict[str, Any]:
    """The INFO fields worth showing."""
    names = ("redis_version", "used_memory", "used_memory_human", "maxmemory", "maxmemory_policy",
             "keyspace_hits", "keyspace_misses", "expired_keys", "evicted_keys", "connected_clients")
    return {name: info.get(name) for name in names}

