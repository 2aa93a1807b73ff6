"""The parallel-run scenario of `bench/run` (issue 11): after a cold `consolidate run`, one row changes
in one SQLite file and one write is made through loader.serve.client.MemoryClient, then `consolidate sync`
applies both; then the same through one cycle of a running `consolidate sync --watch`, which keeps dbt
loaded between cycles (`watch_cycle`). And the client's latencies: `get` answered by Redis, `get` without Redis (PostgreSQL,
recording the access), `set`.

The corpus is shared by every run of the benchmark, so the changed file's bytes are put back afterwards
(`changed_file`).
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

CHANGED_VALUE = '{"changed_by": "bench parallel run"}'
WRITTEN = ("bench:client-write", "bench", {"written_by": "bench parallel run"})


def round_changes(number: int) -> tuple[str, tuple[str, str, dict]]:
    """What the `number`th one-shot sync round changes (round 1: CHANGED_VALUE and WRITTEN): other values
    each round, so that both are changes again."""
    if number == 1:
        return CHANGED_VALUE, WRITTEN
    key, namespace, value = WRITTEN
    return (json.dumps({"changed_by": "bench parallel run", "round": number}),
            (key, namespace, {**value, "round": number}))


# what the watch cycle changes: other values, so that both are changes again
WATCH_CHANGED_VALUE = '{"changed_by": "bench parallel run, watch cycle"}'
WATCH_WRITTEN = ("bench:client-write", "bench", {"written_by": "bench parallel run, watch cycle"})


@contextlib.contextmanager
def changed_file(path: Path, value: str = CHANGED_VALUE) -> Iterator[tuple[str, str]]:
    """Change one row of `path` (the middle one: a new value, updated_at a day after the file's latest)
    and yield its (key, namespace); the file's original bytes are restored on exit."""
    with tempfile.TemporaryDirectory(prefix="bench-changed-") as folder:
        original = Path(folder) / path.name
        shutil.copy2(path, original)
        try:
            with contextlib.closing(sqlite3.connect(path)) as connection:
                rowid, key, namespace = connection.execute(
                    "SELECT rowid, key, namespace FROM memory_entries "
                    "ORDER BY rowid LIMIT 1 OFFSET (SELECT count(*) / 2 FROM memory_entries)").fetchone()
                connection.execute(
                    "UPDATE memory_entries SET value = ?, updated_at = (SELECT max(updated_at) + 86400 "
                    "FROM memory_entries) WHERE rowid = ?", (value, rowid))
                connection.commit()
            yield key, namespace
        finally:
            shutil.copy2(original, path)


def client_write(dsn: str, written: tuple[str, str, dict] = WRITTEN) -> None:
    from loader.serve.client import MemoryClient

    key, namespace, value = written
    with MemoryClient(dsn, pool_size=1) as client:
        client.set(key, value, namespace)


def both_changes_in_the_marts(dsn: str, changed: tuple[str, str], changed_value: str = CHANGED_VALUE,
                              written: tuple[str, str, dict] = WRITTEN) -> dict[str, bool]:
    """Whether the synced row and the client's write are the winners in the marts after the sync."""
    key, namespace, value = written
    with psycopg.connect(dsn) as connection:
        synced = connection.execute(
            "SELECT value = %s::jsonb FROM unified_memory WHERE key = %s AND namespace = %s "
            "UNION ALL SELECT metric_data = %s::jsonb FROM performance_metrics WHERE key = %s AND namespace = %s",
            (changed_value, *changed, changed_value, *changed)).fetchall()
        written = connection.execute(
            "SELECT value = %s::jsonb FROM unified_memory WHERE key = %s AND namespace = %s",
            (Jsonb(value), key, namespace)).fetchall()
    return {"synced_row_in_marts": synced == [(True,)], "client_write_in_marts": written == [(True,)]}


def watch_reports(process: subprocess.Popen) -> queue.Queue:
    """The cycle reports a `consolidate sync --watch --json` prints (one JSON document a cycle), as they come."""
    reports: queue.Queue = queue.Queue()

    def read() -> None:
        pending = ""
        for line in process.stdout:
            pending += line
            try:
                reports.put(json.loads(pending))
                pending = ""
            except json.JSONDecodeError:
                continue
        reports.put(None)  # the watch ended

    threading.Thread(target=read, daemon=True).start()
    return reports


def next_report(reports: queue.Queue, wanted, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        report = reports.get(timeout=max(0.1, deadline - time.monotonic()))
        if report is None:
            raise RuntimeError("the watch ended before the cycle it was waited for")
        if wanted(report):
            return report


def watch_cycle(command: list[str], dsn: str, path: Path, log: Path) -> dict:
    """Start `command` (`consolidate sync ... --watch S --json`), let its first cycle run (it catches up and
    loads dbt), then make one client write and change one row of `path`; return the seconds of the cycle
    that applies them (its started_at to finished_at, in its report) and whether both are in the marts.
    The watch is stopped (SIGTERM) before the file gets its bytes back."""
    from datetime import datetime

    with open(log, "ab") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            reports = watch_reports(process)
            first = next_report(reports, lambda report: True, timeout=900)
            client_write(dsn, WATCH_WRITTEN)
            with changed_file(path, WATCH_CHANGED_VALUE) as changed:
                cycle = next_report(reports, lambda report: not report["idle"] and report["totals"]["loaded"] >= 1,
                                    timeout=600)
                process.terminate()
                process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    seconds = (datetime.fromisoformat(cycle["finished_at"]) - datetime.fromisoformat(cycle["started_at"])).total_seconds()
    return {"seconds": round(seconds, 3), "exit_code": cycle["exit_code"], "first_cycle": first["cycle"],
            "cycle": cycle["cycle"], "build_passed": (cycle.get("build") or {}).get("passed"),
            **both_changes_in_the_marts(dsn, changed, WATCH_CHANGED_VALUE, WATCH_WRITTEN)}


# ------------------------------------------------------------------------------------- latencies

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[str | None]:
    """A private redis-server on a free loopback port (None when redis-server is not installed)."""
    executable = shutil.which("redis-server")
    if executable is None:
        yield None
        return
    port = free_port()
    server = subprocess.Popen([executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", str(folder)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        for _ in range(100):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def percentiles(seconds: list[float]) -> dict[str, float]:
    milliseconds = sorted(s * 1000 for s in seconds)
    return {"p50_ms": round(statistics.median(milliseconds), 3),
            "p99_ms": round(milliseconds[min(len(milliseconds) - 1, int(len(milliseconds) * 0.99))], 3),
            "n": len(milliseconds)}


def timed(calls) -> list[float]:
    durations = []
    for call in calls:
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return durations


def client_latencies(dsn: str, work: Path, samples: int = 2000) -> dict[str, dict]:
    """get with a Redis hit, get without Redis (PostgreSQL; the access is recorded), set (a new value
    of an existing entry), each over `samples` live entries of unified_memory."""
    from loader.serve.cache import Cache
    from loader.serve.client import MemoryClient

    with psycopg.connect(dsn) as connection:
        entries = connection.execute(
            "SELECT key, namespace FROM unified_memory WHERE expires_at IS NULL OR expires_at > now() "
            "ORDER BY id LIMIT %s", (samples,)).fetchall()
    found: dict[str, dict] = {}
    with MemoryClient(dsn, pool_size=1) as client:
        client.get(*entries[0])  # the first call pays for the connection and the plans
        found["get (PostgreSQL, no Redis)"] = percentiles(timed(lambda k=k, n=n: client.get(k, n) for k, n in entries))
        found["set"] = percentiles(timed(lambda k=k, n=n: client.set(k, {"bench": k}, n) for k, n in entries))
    with redis_server(work) as url:
        if url is not None:
            cache = Cache(url)
            with MemoryClient(dsn, pool_size=1, cache=cache) as client:
                for key, namespace in entries:
                    client.get(key, namespace)  # fills the cache
                hits_before = cache.hits
                found["get (Redis hit)"] = percentiles(timed(lambda k=k, n=n: client.get(k, n) for k, n in entries))
                found["get (Redis hit)"]["hits"] = cache.hits - hits_before
            cache.close()
    return found
