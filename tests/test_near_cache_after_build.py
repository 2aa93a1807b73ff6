"""The near cache works after `consolidate run` with no manual step: the build puts the notify triggers
on the marts it replaces (dbt post-hook, dbt_project/macros/notify_triggers.sql), the same triggers
loader.serve.near_cache.install_notify_triggers installs. This module never installs them on `public`
itself: its `consolidated` database holds only what the build made."""

from __future__ import annotations

import re
import time
import uuid

import psycopg

from loader.serve.cache import Cache
from loader.serve.client import MemoryClient
from loader.serve.near_cache import TRIGGERS, WATCHED_TABLES, install_notify_triggers

from conftest import consolidate, fetch, served_in_process, wait_for, write_past_the_client

MAX_STALENESS = 0.25          # NearCache's default


def stored_value(target, key: str, namespace: str):
    return fetch(target, "SELECT value FROM unified_memory WHERE key = %s AND namespace = %s", (key, namespace))[0][0]


def test_after_consolidate_run_a_near_cache_client_serves_and_sees_writes_from_elsewhere_across_rebuilds(
        consolidated, redis_server, tmp_path):
    key, namespace = fetch(consolidated, "SELECT key, namespace FROM unified_memory WHERE expires_at IS NULL"
                                         " ORDER BY namespace, key LIMIT 1")[0]
    built_value = stored_value(consolidated, key, namespace)
    cache = Cache(redis_server.url)
    with MemoryClient(consolidated.dsn, cache=cache, near_cache=True, pool_size=2) as client:
        assert client.near_cache.wait_until_serving(10), client.near_cache.stats()   # not bypassed
        assert client.get(key, namespace) == built_value
        assert wait_for(lambda: served_in_process(client, key, namespace), 5)

        write_past_the_client(consolidated, key, namespace, {"written": "elsewhere"})
        written = time.monotonic()
        assert wait_for(lambda: client.get(key, namespace) == {"written": "elsewhere"}, MAX_STALENESS)
        assert time.monotonic() - written < MAX_STALENESS

        # `consolidate build --full-refresh` replaces the marts; the write made elsewhere is a version in
        # the write log, so it survives; the near cache flushes, finds the triggers on the new tables and
        # serves again
        result = consolidate("build", "--full-refresh", "--dsn", consolidated.dsn, "--home", str(tmp_path))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert stored_value(consolidated, key, namespace) == {"written": "elsewhere"} != built_value
        assert wait_for(lambda: client.get(key, namespace) == {"written": "elsewhere"}, 5)
        assert client.near_cache.wait_until_serving(10), client.near_cache.stats()
        assert wait_for(lambda: served_in_process(client, key, namespace), 5)

        write_past_the_client(consolidated, key, namespace, {"written": "after the rebuild"})
        written = time.monotonic()
        assert wait_for(lambda: client.get(key, namespace) == {"written": "after the rebuild"}, MAX_STALENESS)
        assert time.monotonic() - written < MAX_STALENESS
    cache.close()


def notify_definitions(target, schema: str) -> list[str]:
    """The notify function's and triggers' definitions on `schema`'s watched tables, with the schema
    name taken out and whitespace collapsed."""
    with psycopg.connect(target.dsn) as connection:
        function = connection.execute("SELECT pg_get_functiondef(to_regprocedure(%s))",
                                      (f'"{schema}".consolidate_notify_memory_write()',)).fetchone()
        triggers = connection.execute(
            "SELECT c.relname, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid) FROM pg_trigger t"
            " JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = ANY(%s) AND NOT t.tgisinternal"
            " AND t.tgname LIKE 'consolidate\\_notify\\_%%' ORDER BY 1, 2",   # not the write capture's triggers
            (schema, list(WATCHED_TABLES))).fetchall()
    texts = [function[0] or ""] + [" ".join(map(str, row)) for row in triggers]
    return [re.sub(r"\s+", " ", text.replace(f'"{schema}".', "").replace(f"{schema}.", "")).strip()
            for text in texts]


def test_the_build_installs_the_triggers_install_notify_triggers_installs(consolidated):
    built = notify_definitions(consolidated, "public")
    assert len(built) == 1 + len(WATCHED_TABLES) * len(TRIGGERS)
    assert all(" A CREATE TRIGGER " in trigger for trigger in built[1:])          # ENABLE ALWAYS

    scratch = f"scratch_{uuid.uuid4().hex[:8]}"
    with consolidated.connect() as connection:
        connection.execute(f"CREATE SCHEMA {scratch}")
        for table in WATCHED_TABLES:
            connection.execute(f"CREATE TABLE {scratch}.{table} (LIKE public.{table})")
        connection.commit()
        install_notify_triggers(connection, scratch)
    try:
        assert notify_definitions(consolidated, scratch) == built
    finally:
        with consolidated.connect() as connection:
            connection.execute(f"DROP SCHEMA {scratch} CASCADE")
