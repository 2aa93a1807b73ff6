"""`bench/run read-latency`: how long one read takes on each read path a service can use, and how long a
write takes to reach a reader in another process (issue 13). Figures only: nothing here asserts a time.

    bench/run read-latency [--rows 1k,1M] [--reads 2000] [--seed 4] [--dsn DSN] [--out bench/out]
                           [--markdown BENCHMARKS.md | --no-markdown] [--json FILE]

Per size (a one-file corpus from bench/generate.py, consolidated with `consolidate run --no-backup`
into a fresh database, the notify triggers installed, a private redis-server on a loopback port):
1. `--reads` timed reads of keys drawn (seeded) from 2,000 live entries, after one untimed pass over
   them, on each path:
   sqlite        `select value from memory_entries where key=? and namespace=?` on a private copy of the
                 corpus file: the read a service does today;
   postgresql    MemoryClient(dsn).get (access bookkeeping on, the default), and with track_access=False;
   redis hit     MemoryClient(dsn, cache=Cache(url)).get, every key cached;
   near hit      MemoryClient(dsn, cache=Cache(url), near_cache=True).get, every key held;
   get_many      MemoryClient(dsn).get_many of 20 keys (one namespace) from PostgreSQL, per call, with and
                 without the access bookkeeping.
2. Staleness: a reader process polls `get` of one key (near cache + Redis, a poll every ~0.2 ms) while
   this process changes the key every 10-30 ms, through MemoryClient.set (with Redis) and through a
   plain SQL UPDATE (no client: the listeners forward it); staleness = the reader's first sight of the
   new value (or of a later one) minus the writer's return from the write (0 when the reader saw it first).

Results merge into OUT/read-latency.json (one entry per size, so sizes can be measured one at a time)
and the table goes to stdout and into BENCHMARKS.md between `<!-- bench:read-latency:begin/end -->`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import generate  # noqa: E402
from bench.parallel_run import redis_server  # noqa: E402
from bench.runner import Server, machine, source_revision  # noqa: E402
from loader.serve.cache import Cache  # noqa: E402
from loader.serve.client import MemoryClient  # noqa: E402

SAMPLE_KEYS = 2_000
STALENESS_WRITES = 300
SQLITE_READ = "select value from memory_entries where key=? and namespace=?"
LIVE = "(expires_at IS NULL OR expires_at > now())"

PATHS = [  # (name in the JSON, label in the table, target p50 µs, target p99 µs)
    ("sqlite", "SQLite read a service does today (private copy)", None, None),
    ("postgresql", "`MemoryClient.get`, PostgreSQL (no Redis; access bookkeeping on)", 400, None),
    ("postgresql_untracked", "`MemoryClient.get`, PostgreSQL, `track_access=False`", None, None),
    ("redis_hit", "`MemoryClient.get`, Redis hit", 150, None),
    ("near_hit", "`MemoryClient.get`, near-cache hit", 10, 50),
    ("get_many_20", "`MemoryClient.get_many` of 20 keys, PostgreSQL (per call)", None, None),
    ("get_many_20_untracked", "`MemoryClient.get_many` of 20 keys, PostgreSQL, `track_access=False` (per call)",
     None, None),
]
STALENESS = [
    ("after_client_set", "staleness after `MemoryClient.set` (writer with Redis)", None, 50_000),
    ("after_sql_update", "staleness after a plain SQL `UPDATE` (forwarded by the listeners)", None, 50_000),
]


# ----------------------------------------------------------------------------------------- timing

def percentiles(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    at = lambda share: ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1e6   # noqa: E731
    return {"p50_us": round(at(0.50), 1), "p99_us": round(at(0.99), 1), "max_us": round(ordered[-1] * 1e6, 1),
            "count": len(ordered)}


def timed(read, arguments: list[tuple], reads: int, rng: random.Random) -> dict:
    for each in arguments:            # warm: caches filled, statements prepared, pages in memory
        read(*each)
    draws = [rng.choice(arguments) for _ in range(reads)]
    spent = []
    for each in draws:
        started = time.perf_counter()
        read(*each)
        spent.append(time.perf_counter() - started)
    return percentiles(spent)


def batches_of(keys: list[tuple[str, str]], size: int) -> list[tuple[list[str], str]]:
    by_namespace: dict[str, list[str]] = {}
    for key, namespace in keys:
        by_namespace.setdefault(namespace, []).append(key)
    return [(names[i:i + size], namespace) for namespace, names in sorted(by_namespace.items())
            for i in range(0, len(names) - size + 1, size)]


# ----------------------------------------------------------------------------------------- setup

def consolidated(server: Server, corpus: Path, out: Path, label: str, prefix: str) -> str:
    dsn = server.recreate(f"{prefix}_latency_{label.lower()}")
    home = out / f"latency-home-{label}"
    shutil.rmtree(home, ignore_errors=True)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "loader", "run", str(corpus), "--dsn", dsn, "--home", str(home),
                             "--no-backup"], capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"consolidate run failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    say(f"consolidated {label} in {time.perf_counter() - started:.0f} s")   # the build installs the notify triggers
    return dsn


def sample_keys(dsn: str, seed: int) -> tuple[list[tuple[str, str]], int]:
    with psycopg.connect(dsn) as connection:
        entries = connection.execute("SELECT count(*) FROM unified_memory").fetchone()[0]
        keys = connection.execute(f"SELECT key, namespace FROM unified_memory WHERE {LIVE} "
                                  "ORDER BY md5(key || namespace || %s) LIMIT %s", (str(seed), SAMPLE_KEYS)).fetchall()
    return keys, entries


def private_copy(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / source.name
    for suffix in ("", "-wal"):
        if source.with_name(source.name + suffix).exists():
            shutil.copyfile(source.with_name(source.name + suffix), copy.with_name(copy.name + suffix))
    return copy


# ----------------------------------------------------------------------------------------- measuring

def measure_paths(dsn: str, redis_url: str, sqlite_file: Path, keys: list[tuple[str, str]], reads: int,
                  seed: int) -> dict:
    results = {}
    connection = sqlite3.connect(sqlite_file)
    results["sqlite"] = timed(lambda key, namespace: connection.execute(SQLITE_READ, (key, namespace)).fetchone(),
                              keys, reads, random.Random(seed))
    connection.close()
    say(f"sqlite {results['sqlite']}")

    with MemoryClient(dsn) as client:
        results["postgresql"] = timed(client.get, keys, reads, random.Random(seed))
        results["get_many_20"] = timed(client.get_many, batches_of(keys, 20), reads // 4, random.Random(seed))
    with MemoryClient(dsn, track_access=False) as client:
        results["postgresql_untracked"] = timed(client.get, keys, reads, random.Random(seed))
        results["get_many_20_untracked"] = timed(client.get_many, batches_of(keys, 20), reads // 4,
                                                 random.Random(seed))
    say(f"postgresql {results['postgresql']}")

    cache = Cache(redis_url)
    redis.Redis.from_url(redis_url).flushdb()
    with MemoryClient(dsn, cache=cache) as client:
        for key, namespace in keys:
            client.get(key, namespace)
        hits_before, misses_before = cache.hits, cache.misses
        results["redis_hit"] = timed(client.get, keys, reads, random.Random(seed))
        hits, misses = cache.hits - hits_before, cache.misses - misses_before
        results["redis_hit"]["hit_ratio"] = round(hits / max(1, hits + misses), 4)
    say(f"redis hit {results['redis_hit']}")

    with MemoryClient(dsn, cache=cache, near_cache=True) as client:
        near = client.near_cache
        near.wait_until_serving(30)
        for _ in range(2):                     # the first fill is dropped again by its own Redis write
            for key, namespace in keys:
                client.get(key, namespace)
            time.sleep(0.2)
        hits_before, calls_before = near.hits, near.hits + near.misses + near.bypassed
        results["near_hit"] = timed(client.get, keys, reads, random.Random(seed))
        calls = near.hits + near.misses + near.bypassed - calls_before
        results["near_hit"]["hit_ratio"] = round((near.hits - hits_before) / max(1, calls), 4)
        results["near_hit"]["held"] = near.stats()["entries"]
    cache.close()
    say(f"near hit {results['near_hit']}")
    return results


def poll_until_changed(dsn: str, redis_url: str, key: str, namespace: str, stop, ready, seen) -> None:
    """The reader process: poll `get` and report (n, time) every time the value changes."""
    cache = Cache(redis_url)
    with MemoryClient(dsn, cache=cache, near_cache=True) as client:
        client.near_cache.wait_until_serving(30)
        ready.set()
        last = None
        while not stop.is_set():
            value = client.get(key, namespace)
            now = time.monotonic()
            if value != last:
                seen.put((value["n"] if isinstance(value, dict) else None, now))
                last = value
            time.sleep(0.0002)


def measure_staleness(dsn: str, redis_url: str, seed: int) -> dict:
    context = multiprocessing.get_context("spawn")
    namespace, key = "bench-staleness", f"probe-{seed}"
    rng = random.Random(seed)
    results = {}
    cache = Cache(redis_url)
    with MemoryClient(dsn, cache=cache) as writer, psycopg.connect(dsn, autocommit=True) as sql_writer:
        writer.set(key, {"n": 0}, namespace)
        stop, ready, seen = context.Event(), context.Event(), context.Queue()
        reader = context.Process(target=poll_until_changed, args=(dsn, redis_url, key, namespace, stop, ready, seen))
        reader.start()
        ready.wait(60)
        time.sleep(0.5)
        n = 0
        for name, write in (("after_client_set", lambda value: writer.set(key, value, namespace)),
                            ("after_sql_update", lambda value: sql_writer.execute(
                                "UPDATE unified_memory SET value = %s::jsonb WHERE key = %s AND namespace = %s",
                                (json.dumps(value), key, namespace)))):
            returned = {}
            for _ in range(STALENESS_WRITES):
                n += 1
                write({"n": n})
                returned[n] = time.monotonic()
                time.sleep(rng.uniform(0.010, 0.030))
            time.sleep(0.5)
            sightings = []
            while not seen.empty():
                sightings.append(seen.get())
            # a write the reader never saw (the next one replaced it first) counts until it saw a later one
            delays, unseen = [], 0
            for i, at in returned.items():
                later = [seen_at for value, seen_at in sightings if value is not None and value >= i]
                unseen += not any(value == i for value, _ in sightings)
                if later:
                    delays.append(max(0.0, min(later) - at))
            results[name] = {**percentiles(delays), "writes": len(returned), "never_seen_itself": unseen}
            say(f"staleness {name} {results[name]}")
        stop.set()
        reader.join(30)
    cache.close()
    return results


def measure_size(rows: int, args, server: Server) -> dict:
    label = generate.size_label(rows)
    corpus = args.out / f"corpus-latency-{label}-1f-s{args.seed}"
    generate.generate(corpus, rows, files=1, seed=args.seed)
    manifest = json.loads((corpus / "corpus.json").read_text())
    sqlite_file = corpus / manifest["file_list"][0]["path"]
    load_before = os.getloadavg()
    dsn = consolidated(server, corpus, args.out, label, args.db_prefix)
    keys, entries = sample_keys(dsn, args.seed)
    (args.out / f"latency-redis-{label}").mkdir(parents=True, exist_ok=True)
    try:
        with redis_server(args.out / f"latency-redis-{label}") as redis_url:
            if redis_url is None:
                raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
            copy = private_copy(sqlite_file, args.out / f"latency-sqlite-{label}")
            paths = measure_paths(dsn, redis_url, copy, keys, args.reads, args.seed)
            staleness = measure_staleness(dsn, redis_url, args.seed)
    finally:
        shutil.rmtree(args.out / f"latency-sqlite-{label}", ignore_errors=True)
        if not args.keep_databases:
            server.drop(f"{args.db_prefix}_latency_{label.lower()}")
    return {"rows": rows, "entries_in_unified_memory": entries, "sampled_keys": len(keys), "reads": args.reads,
            "paths": paths, "staleness": staleness, "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "revision": source_revision()}


# ----------------------------------------------------------------------------------------- reporting

def cell(figures: dict | None) -> str:
    return "— | —" if figures is None else f"{fmt(figures['p50_us'])} | {fmt(figures['p99_us'])}"


def fmt(microseconds: float | None) -> str:
    if microseconds is None:
        return "—"
    if microseconds >= 10_000:
        return f"{microseconds / 1000:.0f} ms"
    if microseconds >= 1_000:
        return f"{microseconds / 1000:.1f} ms"
    return f"{microseconds:.0f} µs" if microseconds >= 10 else f"{microseconds:.1f} µs"


def target(p50: float | None, p99: float | None) -> str:
    parts = ([f"p50 ≤ {fmt(p50)}"] if p50 else []) + ([f"p99 ≤ {fmt(p99)}"] if p99 else [])
    return ", ".join(parts) or "—"


def markdown_section(results: dict) -> str:
    sizes = sorted(results["sizes"].values(), key=lambda size: size["rows"])
    header = "| read path | " + " | ".join(f"{generate.size_label(s['rows'])} p50 | {generate.size_label(s['rows'])} p99"
                                          for s in sizes) + " | target |"
    lines = ["### Read latency and staleness (`bench/run read-latency`)", "", header,
             "|---|" + "---:|---:|" * len(sizes) + "---|"]
    for name, label, p50, p99 in PATHS:
        cells = [cell(s["paths"].get(name)) for s in sizes]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target(p50, p99)} |")
    for name, label, p50, p99 in STALENESS:
        cells = [cell(s["staleness"].get(name)) for s in sizes]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target(p50, p99)} |")
    lines.append("")
    for s in sizes:
        near, redis_hit = s["paths"]["near_hit"], s["paths"]["redis_hit"]
        worst = {name: fmt(s["staleness"][name]["max_us"]) for name, *_ in STALENESS}
        lines.append(
            f"- {generate.size_label(s['rows'])}: {s['entries_in_unified_memory']:,} entries in `unified_memory`, "
            f"{s['reads']:,} timed reads per path over {s['sampled_keys']:,} live keys; near-cache hit ratio "
            f"{near['hit_ratio']:.1%} during the timed reads, Redis {redis_hit['hit_ratio']:.1%}; staleness worst "
            f"{worst['after_client_set']} / {worst['after_sql_update']} over {s['staleness']['after_client_set']['writes']} "
            f"writes each; load average {s['load_average_before'][0]:.1f} before, "
            f"{s['load_average_after'][0]:.1f} after (2 cores); commit {s['revision']}, {s['measured_at']}.")
    return "\n".join(lines)


def write_markdown(path: Path, results: dict) -> None:
    begin, end = "<!-- bench:read-latency:begin -->", "<!-- bench:read-latency:end -->"
    section = f"{begin}\n{markdown_section(results)}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def say(message: str) -> None:
    print(f"[read-latency] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1k,1M", help="comma-separated sizes (1k, 100k, 1M, ...)")
    parser.add_argument("--reads", type=int, default=2_000, help="timed reads per path")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"),
                        help="a server to measure on (default: a private pgserver under OUT/pg)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    markdown = parser.add_mutually_exclusive_group()
    markdown.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    markdown.add_argument("--no-markdown", dest="markdown", action="store_const", const=None)
    parser.add_argument("--json", type=Path, default=None, help="results file (default OUT/read-latency.json)")
    parser.add_argument("--db-prefix", default="bench")
    parser.add_argument("--keep-databases", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.json or args.out / "read-latency.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"sizes": {}}
    server = Server(args.dsn, args.out)
    results["machine"], results["server"] = machine(), server.describe()
    for rows in (generate.parse_size(size) for size in args.rows.split(",")):
        results["sizes"][generate.size_label(rows)] = measure_size(rows, args, server)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown_section(results))
    if args.markdown:
        write_markdown(args.markdown, results)
        say(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
