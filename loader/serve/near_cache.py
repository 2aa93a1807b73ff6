"""A near cache for MemoryClient: hot entries of `unified_memory` held decoded in the process, kept
consistent by the servers telling it what changed, never by guessing a TTL.

    client = MemoryClient(dsn, cache=Cache(url), near_cache=True)

Where invalidations come from (every channel must be up for the near cache to answer):

- PostgreSQL, always: a connection LISTENs on `consolidate_memory_writes`. Row triggers on
  `unified_memory` and `performance_metrics` (install_notify_triggers) send
  {"schema", "namespace", "key"} for every INSERT, DELETE and UPDATE that changes the value, the expiry
  or the identity of a row, and {"schema", "flush": true} for a TRUNCATE, for a key too long for a
  NOTIFY payload, and once per transaction instead of more than NOTIFY_ROWS_PER_TRANSACTION row messages.
  PostgreSQL delivers a NOTIFY when its transaction commits, whoever wrote (this client, another
  process, psql, the compat views, another service) as long as the triggers fired (they are ENABLE
  ALWAYS, so `session_replication_role = replica` does not silence them). The listener also forwards
  each of them to Redis (Cache.invalidate, invalidate_all for a flush) before dropping the held copy,
  so Redis follows writes that did not go through a client with this Redis.
- Redis, when the client has a Cache: `CLIENT TRACKING on REDIRECT <own id> BCAST PREFIX mem:` on a
  connection SUBSCRIBEd to `__redis__:invalidate` (RESP2; redis-py's own client-side caching needs a
  server >= 7.4). Every change of a `mem:` key (an invalidation, a fill, an expiry, an eviction,
  FLUSHDB) drops the held copy, so copies taken from Redis follow Redis.

Both channels are checked by a heartbeat every `max_staleness / 5` seconds (PostgreSQL: a query that also
checks that the triggers are in place on the same table; Redis: PING). A server sends a notification
ahead of its reply to any command it reads after the change, so once a heartbeat sent at time H is
answered, every invalidation for a change committed before H has been applied (and forwarded).

The guarantee, for a write W committed at time C that fired the triggers, to every read through a
client with a near cache:
1. A read that starts after C + max_staleness (default 0.25 s) never returns the value W replaced or
   deleted, whether the near cache, Redis or PostgreSQL answers it. The near cache answers only while
   every channel was confirmed within max_staleness (so W's invalidation was applied and forwarded
   to Redis); otherwise the read goes to PostgreSQL alone (not Redis). Redis is filled by these
   clients only through fences that any invalidation since the reader's lookup voids, and never with a
   version older than the newest one written (loader.serve.cache).
2. Read-your-writes: once `set`/`delete` returned, no read in this process returns the replaced value
   (the client drops its own copy after the commit; a fill carries a token taken before its read, and
   an invalidation since then voids it).
3. An entry is never served past its `expires_at` (the deadline is counted from before the read).
4. Whatever path wrote (even one that fired no trigger), a near-cache hit returns a value that Redis or
   PostgreSQL returned at most max_entry_age seconds (default 5) before.
When a channel drops (connection lost, server restarted, an invalidation that could not be forwarded,
the triggers dropped or disabled, the table replaced) the near cache is flushed and bypassed until the
channel is back; before serving again it empties Redis's `mem:*` keys (writes made while nothing
forwarded them may have left it stale), so every process start and every reconnect empties Redis.

Values are held decoded; a hit returns a fresh copy of a dict or list (marshal, about 1 µs), so a caller
that mutates what it got changes nothing for other readers. Bounded by entries and by bytes (the
value's JSON text length plus ENTRY_OVERHEAD_BYTES), least recently used first out. Thread-safe.
"""

from __future__ import annotations

import contextlib
import json
import logging
import marshal
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import redis
from psycopg import sql
from redis.exceptions import RedisError

from loader.serve.cache import KEY_PREFIX, Cache

NOTIFY_CHANNEL = "consolidate_memory_writes"
REDIS_INVALIDATION_CHANNEL = "__redis__:invalidate"
NOTIFY_FUNCTION = "consolidate_notify_memory_write"
NOTIFY_ROWS_PER_TRANSACTION = 1000
MAX_NOTIFY_PAYLOAD_BYTES = 7999          # PostgreSQL refuses payloads of 8000 bytes or more
ENTRY_OVERHEAD_BYTES = 200               # dict slot, key tuple, bookkeeping
LISTENER_APPLICATION_NAME = "consolidate-near-cache"
FORWARDER_APPLICATION_NAME = "consolidate-redis-forwarder"

# Per watched table: the columns whose change a reader can see (an UPDATE of anything else, such as the
# access bookkeeping every tracked read writes, sends nothing).
WATCHED_TABLES = {
    "unified_memory": ("key", "namespace", "value", "expires_at"),
    "performance_metrics": ("key", "namespace", "metric_data"),
}
TRIGGERS = ("consolidate_notify_insert_delete", "consolidate_notify_update", "consolidate_notify_truncate")

NOT_HELD = object()

log = logging.getLogger(__name__)


# -- the triggers that send the notifications ------------------------------------------------------

def notified_entry(payload: str, schema: str) -> tuple[bool, tuple[str, str] | None]:
    """Whether a notification on NOTIFY_CHANNEL concerns the marts of `schema`, and the (namespace, key)
    it names (None: possibly every entry, a flush). A payload that is not the triggers' concerns every
    schema, as a flush: assume the worst."""
    try:
        message = json.loads(payload)
        if message.get("schema") != schema:
            return False, None
        return True, None if message.get("flush") else (message["namespace"], message["key"])
    except (ValueError, AttributeError, KeyError, TypeError):
        return True, None


@dataclass
class Forwarded:
    """What forwarding_changes_to_redis told Redis: how many entries the block changed, whether every cached
    entry was invalidated instead (a flush), and whether Redis was told."""

    entries: int = 0
    flushed: bool = False
    reached: bool = True


@contextlib.contextmanager
def forwarding_changes_to_redis(dsn: str, schema: str, cache: Cache, *, flush: bool = False) -> Iterator[Forwarded]:
    """For a writer that changes many entries at once (a build) while no near-cache client may be
    listening: the marts' notifications of the changes committed while the block runs are collected,
    and when it ends every entry they name is invalidated in Redis (Cache.invalidate: its fence voids a
    fill that read the old value before). A flush, unified_memory replaced (a full refresh fires no
    row trigger) or `flush` (an invalidation owed since Redis could not be told) empties every cached
    entry. Redis unreachable: `reached` is False (the cache warns)."""
    forwarded = Forwarded(flushed=flush)
    table = sql.Identifier(schema, "unified_memory")
    with psycopg.connect(dsn, autocommit=True, application_name=FORWARDER_APPLICATION_NAME,
                         connect_timeout=5) as connection:
        connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
        oid_query = sql.SQL("SELECT to_regclass({})::oid").format(sql.Literal(table.as_string(connection)))
        before = connection.execute(oid_query).fetchone()[0]
        try:
            yield forwarded
        finally:  # a build that failed may have committed some of its models
            # the server sends every notification committed before it read this query ahead of its reply
            replaced = connection.execute(oid_query).fetchone()[0] != before
            identities: set[tuple[str, str]] = set()
            for notification in connection.notifies(timeout=0):
                concerned, identity = notified_entry(notification.payload, schema)
                if concerned and identity is None:
                    forwarded.flushed = True
                elif concerned:
                    identities.add(identity)
            tell_redis(cache, forwarded, replaced, identities)


def tell_redis(cache: Cache, forwarded: Forwarded, replaced: bool, identities: set[tuple[str, str]]) -> None:
    forwarded.entries = len(identities)
    if replaced or forwarded.flushed:
        forwarded.flushed = True
        forwarded.reached = cache.invalidate_all()
    elif identities:
        forwarded.reached = all(cache.invalidate(*identity) for identity in sorted(identities))
    else:
        forwarded.reached = cache.available()

def notify_trigger_statements(schema: str) -> list[sql.Composed]:
    """The statements install_notify_triggers runs. The build installs the same ones itself
    (dbt_project/macros/notify_triggers.sql: on-run-start and a post-hook of each watched mart)."""
    function = sql.Identifier(schema, NOTIFY_FUNCTION)
    statements = [sql.SQL("""
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $body$
DECLARE
    sent integer;
    flush text := json_build_object('schema', TG_TABLE_SCHEMA, 'flush', true)::text;
    payload text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify({channel}, flush);
        RETURN NULL;
    END IF;
    -- a bulk change sends one flush instead of a message per row
    sent := coalesce(nullif(current_setting('consolidate.notified_rows', true), ''), '0')::integer + 1;
    PERFORM set_config('consolidate.notified_rows', sent::text, true);
    IF sent > {per_transaction} THEN
        IF sent = {per_transaction} + 1 THEN
            PERFORM pg_notify({channel}, flush);
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        payload := json_build_object('schema', TG_TABLE_SCHEMA, 'namespace', OLD.namespace, 'key', OLD.key)::text;
        PERFORM pg_notify({channel}, CASE WHEN octet_length(payload) > {max_payload} THEN flush ELSE payload END);
    END IF;
    IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE' AND (NEW.namespace, NEW.key) IS DISTINCT FROM (OLD.namespace, OLD.key) THEN
        payload := json_build_object('schema', TG_TABLE_SCHEMA, 'namespace', NEW.namespace, 'key', NEW.key)::text;
        PERFORM pg_notify({channel}, CASE WHEN octet_length(payload) > {max_payload} THEN flush ELSE payload END);
    END IF;
    RETURN NULL;
END
$body$""").format(function=function, channel=sql.Literal(NOTIFY_CHANNEL),
                  per_transaction=sql.Literal(NOTIFY_ROWS_PER_TRANSACTION),
                  max_payload=sql.Literal(MAX_NOTIFY_PAYLOAD_BYTES))]
    for table_name, columns in WATCHED_TABLES.items():
        table = sql.Identifier(schema, table_name)
        changed = sql.SQL(" OR ").join(
            sql.SQL("OLD.{column} IS DISTINCT FROM NEW.{column}").format(column=sql.Identifier(column))
            for column in columns)
        insert_delete, update, truncate = (sql.Identifier(name) for name in TRIGGERS)
        statements += [sql.SQL("DROP TRIGGER IF EXISTS {name} ON {table}").format(name=sql.Identifier(name), table=table)
                       for name in TRIGGERS]
        statements += [
            sql.SQL("CREATE TRIGGER {name} AFTER INSERT OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {function}()")
            .format(name=insert_delete, table=table, function=function),
            sql.SQL("CREATE TRIGGER {name} AFTER UPDATE ON {table} FOR EACH ROW WHEN ({changed}) "
                    "EXECUTE FUNCTION {function}()").format(name=update, table=table, changed=changed, function=function),
            sql.SQL("CREATE TRIGGER {name} AFTER TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {function}()")
            .format(name=truncate, table=table, function=function),
        ]
        statements += [sql.SQL("ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}").format(table=table, name=sql.Identifier(name))
                       for name in TRIGGERS]
    return statements


def install_notify_triggers(connection: psycopg.Connection, schema: str = "public") -> None:
    """Create (or replace) the notify function and its triggers on the watched tables of `schema`, in one
    transaction; running it again changes nothing. Needs CREATE on the schema and ownership of the tables.
    Every `consolidate build` / `run` / `dbt -- build` puts them back on the marts it replaces (a dbt
    post-hook); this is for tables made otherwise (the near cache stays bypassed, with a warning, while
    they are missing)."""
    with connection.transaction():
        for statement in notify_trigger_statements(schema):
            connection.execute(statement)


# -- the cache -------------------------------------------------------------------------------------

class _Held:
    __slots__ = ("blob", "deadline", "size", "value")

    def __init__(self, value: Any, blob: bytes | None, size: int, deadline: float):
        self.value = value
        self.blob = blob
        self.size = size
        self.deadline = deadline


class NearCache:
    """Decoded entries of `<schema>.unified_memory`, keyed by (namespace, key); see the module docstring.

    max_entries / max_bytes bound what is held (a single value larger than max_bytes is never held).
    max_staleness bounds how late an invalidation can be applied before the cache stops answering.
    max_entry_age is the safety net for writes that do not fire the triggers.
    cache (the client's Redis, optional): a change of its `mem:` keys drops the held copy (CLIENT
    TRACKING), and every committed change PostgreSQL notifies is forwarded to it (Cache.invalidate, or
    invalidate_all for a flush) before the held copy is dropped, so Redis follows writes that did not go
    through a client with this cache (psql, the compat views, a service without Redis).
    """

    def __init__(self, dsn: str, *, schema: str = "public", cache: Cache | None = None,
                 max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024, max_staleness: float = 0.25,
                 max_entry_age: float = 5.0, reconnect_interval: float = 0.2):
        if max_entries <= 0 or max_bytes <= 0 or max_staleness <= 0 or max_entry_age <= 0:
            raise ValueError("max_entries, max_bytes, max_staleness and max_entry_age must be positive")
        self.schema = schema
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_staleness = max_staleness
        self.max_entry_age = max_entry_age
        self.hits = 0
        self.misses = 0
        self.bypassed = 0
        self.flushes = 0
        self.invalidations = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], _Held] = OrderedDict()
        self._bytes = 0
        # Invalidation sequence: a fill presents the value of _sequence taken before its read; it is
        # void when the key (or everything, _floor) was invalidated since.
        self._sequence = 0
        self._floor = 0
        self._invalidated: dict[tuple[str, str], int] = {}
        self._serving_until = -math.inf
        self._stopping = threading.Event()
        channels: list[_Channel] = [_PostgresChannel(self, dsn, schema, reconnect_interval)]
        self.shared_cache = cache
        if cache is not None:
            channels.append(_RedisChannel(self, cache.url, reconnect_interval))
        self._channels = channels
        for channel in channels:
            channel.start()

    # -- reading ---------------------------------------------------------------------------------

    def lookup(self, namespace: str, key: str) -> Any:
        """The held value (a fresh copy of a dict or list), or NOT_HELD."""
        now = time.monotonic()
        identity = (namespace, key)
        with self._lock:
            if now > self._serving_until:
                self.bypassed += 1
                return NOT_HELD
            held = self._entries.get(identity)
            if held is None:
                self.misses += 1
                return NOT_HELD
            if now >= held.deadline:
                self._drop(identity)
                self.misses += 1
                return NOT_HELD
            self._entries.move_to_end(identity)
            self.hits += 1
        return held.value if held.blob is None else marshal.loads(held.blob)

    @property
    def serving(self) -> bool:
        return time.monotonic() <= self._serving_until

    def wait_until_serving(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.serving:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    # -- filling ---------------------------------------------------------------------------------

    def fill_token(self) -> int:
        """Take before reading Redis/PostgreSQL; present it to fill()."""
        return self._sequence

    def fill(self, token: int, namespace: str, key: str, value: Any, text_length: int,
             seconds_left: float | None, read_started: float) -> bool:
        """Hold a value read from Redis/PostgreSQL (the read began at monotonic `read_started`, with
        `seconds_left` until the entry expires, None for never). False when it is not held: expired,
        too large, a channel is down, or the key was invalidated since `token` was taken."""
        if seconds_left is not None and seconds_left <= 0:
            return False
        blob = marshal.dumps(value) if isinstance(value, (dict, list)) else None
        size = (len(blob) if blob is not None else text_length) + ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes:
            return False
        lifetime = self.max_entry_age if seconds_left is None else min(self.max_entry_age, seconds_left)
        identity = (namespace, key)
        with self._lock:
            if time.monotonic() > self._serving_until or self._voided(token, identity):
                return False
            if identity in self._entries:
                self._drop(identity)
            self._entries[identity] = _Held(None if blob is not None else value, blob, size, read_started + lifetime)
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))
        return True

    # -- invalidating ----------------------------------------------------------------------------

    def invalidate(self, namespace: str, key: str) -> None:
        """Drop the local copy of one entry (and void fills in flight for it)."""
        self._invalidate_many([(namespace, key)])

    def flush(self) -> None:
        """Drop every local copy and void every fill in flight."""
        with self._lock:
            self._flush_locked()

    # -- statistics and lifecycle ----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"serving": time.monotonic() <= self._serving_until, "entries": len(self._entries),
                    "bytes": self._bytes, "hits": self.hits, "misses": self.misses, "bypassed": self.bypassed,
                    "invalidations": self.invalidations, "flushes": self.flushes,
                    "channels": {channel.kind: channel.connected for channel in self._channels}}

    def close(self) -> None:
        self._stopping.set()
        for channel in self._channels:
            channel.join(timeout=5)
        with self._lock:
            self._serving_until = -math.inf
            self._flush_locked()

    def __enter__(self) -> NearCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- called by the channels ------------------------------------------------------------------

    def _invalidate_committed(self, identity: tuple[str, str] | None) -> bool:
        """A committed change in PostgreSQL (None: possibly every entry). Redis is invalidated first, so
        a read that misses here afterwards cannot find the old value there; this forwards the writes
        that did not go through a client with this Redis (psql, compat views, other services). False
        when Redis could not be told (the held copy is dropped all the same)."""
        if identity is None:
            forwarded = self.shared_cache is None or self.shared_cache.invalidate_all()
            self.flush()
        else:
            forwarded = self.shared_cache is None or self.shared_cache.invalidate(*identity)
            self._invalidate_many([identity])
        return forwarded

    def _empty_shared_cache(self) -> bool:
        """Before serving after a channel (re)connects: writes made while nothing forwarded them may have
        left Redis stale, so empty it (True when there is no Redis or it was emptied)."""
        return self.shared_cache is None or self.shared_cache.invalidate_all()

    def _invalidate_many(self, identities: list[tuple[str, str]]) -> None:
        with self._lock:
            self._sequence += 1
            self.invalidations += len(identities)
            if len(self._invalidated) + len(identities) > 4096:
                # forget old invalidations: fills still in flight are voided instead (always safe)
                self._invalidated.clear()
                self._floor = self._sequence
            for identity in identities:
                self._invalidated[identity] = self._sequence
                if identity in self._entries:
                    self._drop(identity)

    def _channel_confirmed(self, channel: _Channel, heartbeat_sent: float) -> None:
        """A channel's heartbeat came back: serve until max_staleness after the oldest confirmation."""
        with self._lock:
            channel.confirmed_at = heartbeat_sent
            self._serving_until = min(each.confirmed_at for each in self._channels) + self.max_staleness

    def _channel_lost(self, channel: _Channel) -> None:
        with self._lock:
            channel.confirmed_at = -math.inf
            self._serving_until = -math.inf
            self._flush_locked()

    # -- helpers (call with the lock held) -------------------------------------------------------

    def _voided(self, token: int, identity: tuple[str, str]) -> bool:
        return token < self._floor or self._invalidated.get(identity, -1) > token

    def _drop(self, identity: tuple[str, str]) -> None:
        self._bytes -= self._entries.pop(identity).size

    def _flush_locked(self) -> None:
        self._sequence += 1
        self._floor = self._sequence
        self._invalidated.clear()
        self._entries.clear()
        self._bytes = 0
        self.flushes += 1


# -- the channels ----------------------------------------------------------------------------------

class _Channel:
    """A listener thread: connect, confirm by heartbeat, apply invalidations; on any failure report the
    loss (the cache flushes and stops answering) and reconnect."""

    kind = "channel"

    def __init__(self, near: NearCache, reconnect_interval: float):
        self.near = near
        self.reconnect_interval = reconnect_interval
        self.heartbeat_interval = near.max_staleness / 5
        self.confirmed_at = -math.inf
        self.connected = False
        self._outage_reported = False
        self._thread = threading.Thread(target=self._run, name=f"near-cache-{self.kind}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self.near._stopping.is_set():
            try:
                self.listen()
            except Exception as error:  # any failure of the channel means invalidations may be lost
                self.lost(error)
                self.near._stopping.wait(self.reconnect_interval)

    def confirm(self, heartbeat_sent: float) -> None:
        if not self.connected:
            # invalidations were not received while down: start again from empty caches
            if not self.near._empty_shared_cache():
                self.lost("Redis could not be emptied")
                return
            self.near.flush()
            self.connected = True
            if self._outage_reported:
                log.warning("near cache: %s invalidations are back; serving again", self.kind)
                self._outage_reported = False
        self.near._channel_confirmed(self, heartbeat_sent)

    def lost(self, error: BaseException | str) -> None:
        self.connected = False
        self.near._channel_lost(self)
        if not self._outage_reported and not self.near._stopping.is_set():
            log.warning("near cache: %s invalidations unavailable (%s); flushed, reading through until they are back",
                        self.kind, error)
            self._outage_reported = True

    def listen(self) -> None:
        raise NotImplementedError


class _PostgresChannel(_Channel):
    kind = "postgresql"

    def __init__(self, near: NearCache, dsn: str, schema: str, reconnect_interval: float):
        super().__init__(near, reconnect_interval)
        self.dsn = dsn
        self.schema = schema
        self.forwarded = True

    def listen(self) -> None:
        self.forwarded = True
        with psycopg.connect(self.dsn, autocommit=True, application_name=LISTENER_APPLICATION_NAME,
                             connect_timeout=5) as connection:
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
            table = sql.Identifier(self.schema, "unified_memory").as_string(connection)
            heartbeat = ("SELECT to_regclass(%(table)s)::oid, (SELECT count(*) FROM pg_trigger"
                         " WHERE tgrelid = to_regclass(%(table)s) AND tgname = ANY(%(names)s) AND tgenabled = 'A')")
            parameters = {"table": table, "names": list(TRIGGERS)}
            table_oid = None
            while not self.near._stopping.is_set():
                sent = time.monotonic()
                oid, triggers = connection.execute(heartbeat, parameters, prepare=True).fetchone()
                forwarded = self.apply_all(connection.notifies(timeout=0))
                if not (forwarded and self.forwarded):
                    self.lost("an invalidation could not be forwarded to Redis")
                elif oid is None or triggers < len(TRIGGERS):
                    self.lost(f"the notify triggers are not installed on {table}: run install_notify_triggers")
                elif table_oid is not None and oid != table_oid:
                    self.lost(f"{table} was replaced")
                else:
                    self.confirm(sent)
                table_oid = oid
                self.forwarded = self.apply_all(connection.notifies(timeout=self.heartbeat_interval))

    def apply_all(self, notifications: Iterable[psycopg.Notify]) -> bool:
        """Apply every notification (none is skipped after one fails); True when all were forwarded."""
        forwarded = True
        for notification in notifications:
            forwarded = self.apply(notification.payload) and forwarded
        return forwarded

    def apply(self, payload: str) -> bool:
        concerned, identity = notified_entry(payload, self.schema)
        return self.near._invalidate_committed(identity) if concerned else True


class _RedisChannel(_Channel):
    kind = "redis"
    pong_timeout = 2.0

    def __init__(self, near: NearCache, url: str, reconnect_interval: float):
        super().__init__(near, reconnect_interval)
        # RESP2: invalidations come as messages on the subscribed channel (RESP3 would push them)
        self.pool = redis.ConnectionPool.from_url(url, protocol=2, socket_timeout=self.pong_timeout,
                                                  socket_connect_timeout=self.pong_timeout, decode_responses=True)

    def listen(self) -> None:
        connection = self.pool.make_connection()
        try:
            connection.connect()
            client_id = self.command(connection, "CLIENT", "ID")
            self.command(connection, "CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST",
                         "PREFIX", f"{KEY_PREFIX}:")
            self.command(connection, "SUBSCRIBE", REDIS_INVALIDATION_CHANNEL)
            ping_sent: float | None = None
            next_ping = time.monotonic()
            while not self.near._stopping.is_set():
                now = time.monotonic()
                if ping_sent is None and now >= next_ping:
                    connection.send_command("PING")
                    ping_sent = now
                wait = self.heartbeat_interval if ping_sent is not None else next_ping - now
                if connection.can_read(timeout=max(wait, 0.001)):
                    message = connection.read_response()
                    if message[0] == "pong":
                        self.confirm(ping_sent)
                        ping_sent, next_ping = None, ping_sent + self.heartbeat_interval
                    elif message[0] == "message":
                        self.apply(message[2])
                elif ping_sent is not None and time.monotonic() - ping_sent > self.pong_timeout:
                    raise RedisError(f"no reply to PING within {self.pong_timeout} s")
        finally:
            connection.disconnect()

    @staticmethod
    def command(connection: redis.Connection, *arguments: Any) -> Any:
        connection.send_command(*arguments)
        return connection.read_response()

    def apply(self, keys: list[str] | None) -> None:
        if keys is None:          # FLUSHDB / FLUSHALL
            self.near.flush()
            return
        identities = [identity for identity in map(identity_of_cache_key, keys) if identity is not None]
        if identities:
            self.near._invalidate_many(identities)


def identity_of_cache_key(cache_key: str) -> tuple[str, str] | None:
    """(namespace, key) of a `mem:{namespace}:{key}` Redis key (the inverse of loader.serve.cache.cache_key)."""
    escaped_namespace, separator, key = cache_key[len(KEY_PREFIX) + 1:].partition(":")
    if not separator:
        return None
    return escaped_namespace.replace("%3A", ":").replace("%25", "%"), key
