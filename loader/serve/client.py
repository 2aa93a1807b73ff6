"""A small Python client for the consolidated memory: get, set, search and delete entries of
`unified_memory` in PostgreSQL, optionally behind a Redis cache (loader.serve.cache, cache-aside).

    with MemoryClient("postgresql://consolidate@db.internal:10000/memory", cache=Cache()) as memory:
        memory.set("agent:coder", {"status": "idle"}, namespace="swarm", ttl=3600)
        memory.get("agent:coder", namespace="swarm")        # {'status': 'idle'}

Writes are kept. PostgreSQL is the system of record: `set` and `delete` go through
consolidate.write_memory_entry (dbt_project/macros/memory_writes.sql), which appends the write to
raw_postgres.memory_writes (a delete as a tombstone) and updates the marts in the same transaction, by the
same rule every build applies. So a write is visible as soon as it commits, and no later
`consolidate sync`, `run` or `build` (full refresh included) loses it: the write is one more version of
its entry, and it stays the winner until a version with a later updated_at arrives (a SQLite file still
written during the parallel run). A write's updated_at is now(), or one microsecond after the entry's
current updated_at when a source clock put that in the future: every write moves its entry's updated_at
(the cache's version, Entry.version) strictly forward. Writes wait while a build holds the marts (seconds for an
incremental build, the whole build for a full refresh). Each connection's application_name (the DSN's,
else `consolidate-memory-client`) is recorded with every write; `consolidate lineage KEY` shows them.

Values are stored as jsonb: a Python `str` with data_type `text` (so the compat view
`compat.memory_entries` shows the string itself, as claude-flow v2 stored it), anything else
JSON-serializable with data_type `json`. `get` returns the stored JSON value decoded, whatever the
data_type (a `pickle` entry is its base64 string). A stored JSON null and an absent key both read as None.
A document nested deeper than loader.json_depth.MAX_JSON_DEPTH levels reads as its JSON text (a `str`),
as staging keeps such values, instead of raising RecursionError.
An entry of namespace `performance-metrics` lives in `performance_metrics` (as the builds put it); `get`
and `set` work on it all the same, `search` and `hottest` cover unified_memory only.

Ids: a new entry's id comes from consolidate.entry_ids, given once per (namespace, key) and never
renumbered by a build.

A service cut over from a SQLite file (`consolidate cutover`) passes `source=` that file: every write it
makes records the file as its entry's home (memory_writes.home_source_path, the path as the ledger spells
it: absolute, symlinks kept), so `consolidate rollback` of that file holds the entries it created.

Read paths, fastest first: a near-cache hit (`near_cache=True`, loader.serve.near_cache: in-process, a few µs,
consistent through server-sent invalidations), a Redis hit (one round trip), PostgreSQL (one prepared
statement in its own implicit transaction: one round trip). A read that reaches PostgreSQL bumps the
access bookkeeping in the same statement, committed with synchronous_commit off for that statement only:
a server crash can lose the last fraction of a second of access counts, never a write. Values travel as
JSON text from PostgreSQL (`value::text`) and are decoded once; the same text is what Redis stores.

Pool sizing: `pool_size` is the most PostgreSQL connections this client opens (it keeps one open).
Only reads that miss every cache and writes take a connection, for one statement (a write: its
transaction), so size it to the threads that may be in PostgreSQL at the same moment, not to all
threads: 4 (the default) serves a service whose hot set is cached. With `near_cache=True` each client
also holds one listening PostgreSQL connection and, with a cache, one Redis connection. The server
needs max_connections >= processes x (pool_size + 1) plus its other users.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from loader.json_depth import loads_within_depth
from loader.ledger import LEDGER_SCHEMA, WRITE_LOG_SCHEMA, ledger_path, relation_exists
from loader.serve.entries import Entry, EntryKey
from loader.serve.near_cache import NOT_HELD, NearCache

if TYPE_CHECKING:
    from loader.serve.cache import Cache

PERFORMANCE_METRICS_NAMESPACE = "performance-metrics"
DEFAULT_NAMESPACE = "default"
APPLICATION_NAME = "consolidate-memory-client"
WRITE_VIA = "client"
CONNECT_TIMEOUT_SECONDS = 10.0

LIVE = sql.SQL("(expires_at IS NULL OR expires_at > now())")
ABSENT_TEXT_LENGTH = len("null")
SECONDS_LEFT = sql.SQL("extract(epoch FROM expires_at - now())::float8")
# An entry's version for the cache (loader.serve.cache): its updated_at in epoch microseconds.
VERSION = sql.SQL("(extract(epoch FROM updated_at) * 1000000)::bigint")


def encode_value(value: Any) -> str:
    """The JSON text of a Python value (the write path gives a string `text`, anything else `json`);
    TypeError/ValueError when it is not JSON."""
    return json.dumps(value, allow_nan=False)


def encode_metadata(metadata: Any) -> str | None:
    return None if metadata is None else json.dumps(metadata, allow_nan=False)


def check_ttl(ttl: int | None) -> None:
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
        raise ValueError(f"ttl must be a positive number of seconds or None, not {ttl!r}")


def check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")


def written_version(connection: psycopg.Connection, write_id: int | None) -> int | None:
    """The version a write left (its updated_at, a delete's tombstone included, which the write path
    moves strictly forward), for the cache; None when nothing was written."""
    if write_id is None:
        return None
    return connection.execute(sql.SQL("SELECT {version} FROM {log} WHERE write_id = %s").format(
        version=VERSION, log=sql.Identifier(WRITE_LOG_SCHEMA, "memory_writes")), (write_id,)).fetchone()[0]


def decode_json_within_depth(connection: psycopg.Connection) -> None:
    set_json_loads(loads_within_depth, connection)


def open_pool(dsn: str, size: int) -> ConnectionPool:
    """A pool that is ready to use, or a clear error now rather than at the first query. Its connections
    carry the DSN's application_name, else APPLICATION_NAME (the write log records it)."""
    named = {} if conninfo_to_dict(dsn).get("application_name") else {"application_name": APPLICATION_NAME}
    pool = ConnectionPool(dsn, min_size=1, max_size=size, open=True, name=APPLICATION_NAME, kwargs=named,
                          configure=decode_json_within_depth)
    try:
        pool.wait(timeout=CONNECT_TIMEOUT_SECONDS)
    except PoolTimeout:
        pool.close()
        raise
    return pool


class MemoryClient:
    """get / set / search / delete on `<schema>.unified_memory`, through a connection pool.

    With a `cache`, reads are cache-aside (a hit never touches PostgreSQL; a miss reads PostgreSQL
    and fills the cache, unless a write of a newer version invalidated it meanwhile) and set/delete
    remove the cache key after their commit, leaving the version they wrote behind. With
    `track_access` (default), a read that reaches PostgreSQL also records the access (access_count + 1,
    accessed_at = now(), kept in raw_postgres.memory_accesses so builds keep it); cache hits are not counted.

    `near_cache=True` adds an in-process near cache in front (loader.serve.near_cache.NearCache over this
    dsn, schema and the cache's Redis, closed with the client), or pass a NearCache of your own (it
    stays yours). It needs the notify triggers, which every build installs on the marts
    (loader.serve.near_cache.install_notify_triggers for tables made otherwise); without them it stays
    bypassed, with a warning. set/delete drop the local copy after their commit.
    """

    def __init__(self, dsn: str, *, schema: str = "public", cache: Cache | None = None,
                 pool_size: int = 4, track_access: bool = True, near_cache: NearCache | bool = False,
                 source: str | Path | None = None):
        self.schema = schema
        self.home_source_path: str | None = None
        self.cache = cache
        self.track_access = track_access
        self._table = sql.Identifier(schema, "unified_memory")
        self._read_one_query = self._compose_read_query(sql.SQL("key = %(key)s"))
        self._read_many_query = self._compose_read_query(sql.SQL("key = ANY(%(keys)s)"))   # slower to bind
        self._pool = open_pool(dsn, pool_size)
        if source is not None:
            try:
                self.home_source_path = self._ledger_path_of(source)
            except BaseException:
                self._pool.close()
                raise
        self._owns_near_cache = near_cache is True
        if near_cache is True:
            near_cache = NearCache(dsn, schema=schema, cache=cache)
        self.near_cache: NearCache | None = near_cache or None

    def _ledger_path_of(self, source: str | Path) -> str:
        """`source` as the ledger spells it (through a link too); a ValueError for a file the ledger has
        not loaded: entries tied to any other path would be left out of every rollback (`consolidate
        rollback` finds them by that path)."""
        with self._autocommit_connection() as connection:
            if not relation_exists(connection, LEDGER_SCHEMA, "current_loads"):
                raise ValueError(f"source={source}: this database has no consolidate ledger (no load ran here)")
            path = ledger_path(connection, source)
            try:
                connection.execute("SELECT consolidate.check_home_file(%s, %s)", (path, f"source={source}"))
            except psycopg.errors.InvalidParameterValue as error:
                raise ValueError(f"{error.diag.message_primary} (see `consolidate status`); entries tied to it "
                                 "could not be rolled back to it") from None
            except psycopg.errors.UndefinedFunction:
                raise ValueError(f"source={source}: the marts are not built in this database "
                                 "(`consolidate build`)") from None
        return path

    # -- reading ---------------------------------------------------------------------------------

    def get(self, key: str, namespace: str = DEFAULT_NAMESPACE) -> Any:
        """The value of a live entry; None when it is absent or expired (expires_at in the past)."""
        if self.near_cache is not None:
            held = self.near_cache.lookup(namespace, key)
            if held is not NOT_HELD:
                return held
        return self._read_through([key], namespace)[key]

    def get_many(self, keys: Iterable[str], namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
        """{key: value} for every key asked, in the order asked (None when absent or expired): near-cache
        hits first, then one Redis round trip for the rest, then one PostgreSQL statement."""
        wanted = list(dict.fromkeys(keys))
        values: dict[str, Any] = {}
        missing = wanted
        if self.near_cache is not None:
            missing = []
            for key in wanted:
                held = self.near_cache.lookup(namespace, key)
                if held is NOT_HELD:
                    missing.append(key)
                else:
                    values[key] = held
        if missing:
            values.update(self._read_through(missing, namespace))
        return {key: values[key] for key in wanted}

    def read_entry(self, key: str, namespace: str = DEFAULT_NAMESPACE) -> Entry | None:
        """The live entry from PostgreSQL (never the cache)."""
        entries = self.read_entries([key], namespace)
        return entries[0] if entries else None

    def read_entries(self, keys: list[str], namespace: str = DEFAULT_NAMESPACE) -> list[Entry]:
        """The live entries among `keys` from PostgreSQL (never the cache), in one prepared statement."""
        rows = retried_after_a_deadlock(lambda: self._read_rows(keys, namespace))
        return [Entry(namespace, key, loads_within_depth(text), seconds_left, version, text)
                for namespace, key, text, seconds_left, version in rows]

    def _read_rows(self, keys: list[str], namespace: str) -> list[tuple]:
        if namespace == PERFORMANCE_METRICS_NAMESPACE:     # not in unified_memory: read through the write path's reader
            with self._autocommit_connection() as connection:
                return [row for key in keys for row in connection.execute(
                    "SELECT namespace, key, value::text, seconds_left, version"
                    " FROM consolidate.read_memory_entry(%s, %s, %s, %s)",
                    (self.schema, namespace, key, self.track_access)).fetchall()]
        query, parameters = ((self._read_one_query, {"key": keys[0], "namespace": namespace}) if len(keys) == 1
                             else (self._read_many_query, {"keys": keys, "namespace": namespace}))
        with self._autocommit_connection() as connection:
            return connection.execute(query, parameters, prepare=True).fetchall()

    def search(self, prefix: str, namespace: str | None = None, limit: int = 100) -> list[EntryKey]:
        """Live entries whose key starts with `prefix` (taken literally: no wildcards), in one
        namespace or all, ordered by namespace then key (bytewise)."""
        check_limit(limit)
        query = sql.SQL(
            "SELECT namespace, key FROM {table}"
            " WHERE starts_with(key, %(prefix)s)"
            " AND (%(namespace)s::text IS NULL OR namespace = %(namespace)s) AND {live}"
            ' ORDER BY namespace COLLATE "C", key COLLATE "C" LIMIT %(limit)s'
        ).format(table=self._table, live=LIVE)
        with self._pool.connection() as connection:
            rows = connection.execute(query, {"prefix": prefix, "namespace": namespace, "limit": limit})
            return [EntryKey(*row) for row in rows]

    def hottest(self, top: int) -> list[Entry]:
        """The `top` live entries most worth caching: access_count desc, then accessed_at desc
        (NULLs last), then namespace and key (bytewise) so ties are decided the same way every time."""
        check_limit(top)
        query = sql.SQL(
            "SELECT namespace, key, value, {seconds_left}, {version} FROM {table} WHERE {live}"
            " ORDER BY access_count DESC NULLS LAST, accessed_at DESC NULLS LAST,"
            ' namespace COLLATE "C", key COLLATE "C" LIMIT %(top)s'
        ).format(table=self._table, live=LIVE, seconds_left=SECONDS_LEFT, version=VERSION)
        with self._pool.connection() as connection:
            return [Entry(*row) for row in connection.execute(query, {"top": top})]

    # -- writing ---------------------------------------------------------------------------------

    def set(self, key: str, value: Any, namespace: str = DEFAULT_NAMESPACE, *, ttl: int | None = None,
            metadata: Any = None) -> None:
        """Insert or replace the entry (key, namespace): a new version of it, written now. ttl (seconds)
        sets expires_at = now() + ttl; None means it never expires. metadata=None keeps the entry's
        existing metadata. Its lineage becomes the write (source_db `postgresql`)."""
        check_ttl(ttl)
        value_json = encode_value(value)
        given = ["value", "expires_at", "ttl"] + (["metadata"] if metadata is not None else [])
        with self._pool.connection() as connection:
            (write_id,) = connection.execute(
                "SELECT consolidate.write_memory_entry(%(schema)s, %(via)s, 'upsert', %(namespace)s, %(key)s, "
                "%(given)s, p_value => %(value)s::jsonb, "
                "p_metadata => %(metadata)s::jsonb, p_ttl => %(ttl)s::integer, "
                "p_expires_at => now() + make_interval(secs => %(ttl)s::integer), "
                "p_home_source_path => %(home)s)",
                {"schema": self.schema, "via": WRITE_VIA, "namespace": namespace, "key": key, "given": given,
                 "value": value_json, "metadata": encode_metadata(metadata), "ttl": ttl,
                 "home": self.home_source_path}).fetchone()
            version = written_version(connection, write_id)
        self._invalidate(key, namespace, version)

    def delete(self, key: str, namespace: str = DEFAULT_NAMESPACE) -> bool:
        """Remove the entry (a tombstone in the write log; its versions stay in unified_memory_history);
        True when it had a value (live or expired), False when there was nothing to delete."""
        with self._pool.connection() as connection:
            (write_id,) = connection.execute(
                "SELECT consolidate.write_memory_entry(%s, %s, 'delete', %s, %s, p_home_source_path => %s)",
                (self.schema, WRITE_VIA, namespace, key, self.home_source_path)).fetchone()
            version = written_version(connection, write_id)
        self._invalidate(key, namespace, version)
        return write_id is not None

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the pool (and the near cache this client made). The cache belongs to the caller and
        stays open."""
        self._pool.close()
        if self._owns_near_cache:
            self.near_cache.close()

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _invalidate(self, key: str, namespace: str, version: int | None) -> None:
        if self.cache is not None:
            self.cache.invalidate(namespace, key, version)
        if self.near_cache is not None:
            self.near_cache.invalidate(namespace, key)

    def _read_through(self, keys: list[str], namespace: str) -> dict[str, Any]:
        """Values of `keys` from Redis, else PostgreSQL, held by the near cache when there is one (from
        PostgreSQL alone while the near cache is bypassed). The fill token is taken before anything is
        read, so a write that commits meanwhile voids the fill; Redis is filled only with the fence its
        lookup returned (loader.serve.cache: fence and version) for the same reason."""
        near = self.near_cache
        token = near.fill_token() if near is not None else 0
        started = time.monotonic()
        values: dict[str, Any] = {}
        fences: dict[str, str] = {}
        # while the near cache is bypassed, its listener may not have forwarded a recent write to Redis
        trust_redis = self.cache is not None and (near is None or near.serving)
        looked_up = self.cache.lookup_many(namespace, keys) if trust_redis else None
        for key, (text, seconds_left, fence) in (looked_up or {}).items():
            try:
                values[key] = loads_within_depth(text)
            except (TypeError, ValueError):     # a miss, or not a value of ours: read PostgreSQL
                fences[key] = fence
                continue
            if near is not None:
                near.fill(token, namespace, key, values[key], len(text), seconds_left, started)
        missing = [key for key in keys if key not in values]
        if missing:
            values.update(self._read_postgresql(missing, namespace, token, started, fences))
        return values

    def _read_postgresql(self, keys: list[str], namespace: str, token: int, started: float,
                         fences: dict[str, str]) -> dict[str, Any]:
        """Read PostgreSQL, fill Redis (only the keys looked up there: those with a fence) and the near
        cache."""
        entries = {entry.key: entry for entry in self.read_entries(keys, namespace)}
        values = {}
        for key in keys:
            entry = entries.get(key)
            values[key] = None if entry is None else entry.value
            if entry is not None and self.cache is not None and key in fences:
                self._share(entry, started, fences[key])
            if self.near_cache is not None:
                self.near_cache.fill(token, namespace, key, values[key],
                                     ABSENT_TEXT_LENGTH if entry is None else len(entry.text),
                                     None if entry is None else entry.seconds_left, started)
        return values

    def _share(self, entry: Entry, started: float, fence: str) -> None:
        """Fill Redis with what PostgreSQL returned, its TTL counted from before the read."""
        if entry.seconds_left is not None:
            entry = replace(entry, seconds_left=entry.seconds_left - (time.monotonic() - started))
        self.cache.store(entry, fence)

    @contextmanager
    def _autocommit_connection(self) -> Iterator[Any]:
        """A pooled connection in autocommit for one statement (one round trip, no BEGIN/COMMIT), handed
        back in the pool's default transaction mode that the writes rely on."""
        with self._pool.connection() as connection:
            connection.autocommit = True
            try:
                yield connection
            finally:
                if not connection.broken:
                    connection.autocommit = False

    def _compose_read_query(self, key_condition: sql.Composable) -> str:
        columns = sql.SQL("namespace, key, value::text, {seconds_left}, {version}").format(
            seconds_left=SECONDS_LEFT, version=VERSION)
        where = sql.SQL("namespace = %(namespace)s AND {key_condition} AND {live}").format(
            key_condition=key_condition, live=LIVE)
        if not self.track_access:
            query = sql.SQL("SELECT {columns} FROM {table} WHERE {where}")
        else:
            # the read is recorded as an access (raw_postgres.memory_accesses, so builds keep it), committed
            # without waiting for the WAL flush (this statement only). Recording locks each entry until the
            # commit, so every reader takes the locks in key order: in the order a plan happens to return
            # the rows, two readers of overlapping keys deadlocked.
            query = sql.SQL(
                "WITH hit AS MATERIALIZED (SELECT {columns} FROM {table} WHERE {where} ORDER BY key)"
                " SELECT hit.* FROM hit CROSS JOIN LATERAL (SELECT set_config('synchronous_commit', 'off', true),"
                " consolidate.record_memory_access(hit.namespace, hit.key)) AS recorded")
        return query.format(table=self._table, columns=columns, where=where).as_string(None)

# A read that records its access locks the entry after it has read the mart; a full refresh swapping that mart
# in holds the lock first and then waits for the table, so PostgreSQL may abort the read as a deadlock. It
# changed nothing (autocommit): it is read again.
READ_ATTEMPTS = 3


def retried_after_a_deadlock(read):
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            return read()
        except psycopg.errors.DeadlockDetected:
            if attempt == READ_ATTEMPTS:
                raise


def warm_cache(dsn: str, cache: Cache, top: int, *, schema: str = "public") -> int | None:
    """Cache the `top` hottest live entries of unified_memory (access_count desc, then accessed_at
    desc); returns how many were cached, None when Redis is unreachable."""
    if not cache.available():
        return None
    with MemoryClient(dsn, schema=schema, pool_size=1) as client:
        return cache.warm(client.hottest(top))
