"""What the loader proposals in BENCHMARKS.md would buy, measured on a bench corpus before the loader took
one of them (duckdb-pg is `consolidate load`'s path now; "today's" below is the CSV path it had then). Not
used by the loader; each variant loads the corpus's memory_entries into raw_claude_flow_v2.memory_entries of a fresh
database, with the same lineage columns as `consolidate load`, one transaction per file).

    python -m bench.experiments CORPUS --dsn DSN [--variants csv-file,fifo,fifo-2,duckdb-pg,duckdb-pg-2]

    csv-file     today's path without the snapshot/ledger work: DuckDB → CSV file, then COPY (serial)
    fifo         DuckDB writes the CSV into a named pipe that COPY reads at the same time (no file, overlap)
    fifo-2       fifo, two files at a time (one PostgreSQL backend each)
    duckdb-pg    DuckDB's postgres extension: INSERT INTO pg.raw... SELECT FROM the SQLite file
                 (DuckDB streams binary COPY itself; no CSV, no Python in the row path)
    duckdb-pg-2  duckdb-pg, two files at a time
    hash-once    only the snapshot cost: copy + sha256 once per file, against today's 3 passes + copy

Prints one line per variant: wall, this process's CPU, the server's CPU, rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import duckdb_extension_postgres_scanner  # noqa: E402

from bench import runner  # noqa: E402
from loader.sources.snapshot import sha256_of  # noqa: E402
from loader.sources.sqlite_reader import duckdb_session, extension_path, quote  # noqa: E402

COLUMNS = ["id", "key", "value", "namespace", "metadata", "created_at", "updated_at", "accessed_at",
           "access_count", "ttl", "expires_at"]
TARGET = ["_source_rowid", *COLUMNS, "_load_id", "_source_path", "_source_sha256", "_loaded_at"]


def create_raw(dsn: str) -> None:
    with psycopg.connect(dsn) as connection:
        connection.execute("CREATE SCHEMA raw_claude_flow_v2")
        connection.execute(
            "CREATE TABLE raw_claude_flow_v2.memory_entries (" + ", ".join(f"{quote(c)} text" for c in COLUMNS)
            + ", _load_id text, _source_path text, _source_sha256 text, _source_rowid bigint, "
              "_loaded_at timestamptz)")


def select_sql(alias: str, path: Path) -> str:
    lineage = ["'bench'", f"'{path}'", "'sha'", "now()"]
    return (f"SELECT rowid, {', '.join(quote(c) for c in COLUMNS)}, {', '.join(lineage)} "
            f"FROM {alias}.memory_entries")


def copy_statement():
    return sql.SQL("COPY raw_claude_flow_v2.memory_entries ({}) FROM STDIN (FORMAT csv)").format(
        sql.SQL(", ").join(map(sql.Identifier, TARGET)))


LOCAL = threading.local()


def session(with_postgres: bool = False):
    """One DuckDB session per worker thread, as the loader keeps one per load."""
    if getattr(LOCAL, "duck", None) is None:
        LOCAL.duck = duckdb_session()
        LOCAL.postgres = False
    if with_postgres and not LOCAL.postgres:
        LOCAL.duck.execute(f"LOAD '{extension_path(duckdb_extension_postgres_scanner, 'postgres_scanner')}'")
        LOCAL.postgres = True
    return LOCAL.duck


def attach(duck, path: Path) -> None:
    duck.execute(f"ATTACH '{path}' AS src (TYPE sqlite, READ_ONLY)")


def detach(duck) -> None:
    duck.execute("DETACH src")


def load_csv_file(dsn: str, path: Path, folder: Path) -> int:
    duck = session()
    attach(duck, path)
    target = folder / (path.parent.parent.name + ".csv")
    duck.execute(f"COPY ({select_sql('src', path)}) TO '{target}' (FORMAT csv, HEADER false, FORCE_QUOTE *)")
    detach(duck)
    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        with cursor.copy(copy_statement()) as copy, open(target, "rb") as handle:
            while chunk := handle.read(1 << 20):
                copy.write(chunk)
        rows = cursor.rowcount
    target.unlink()
    return rows


def load_fifo(dsn: str, path: Path, folder: Path) -> int:
    duck = session()
    attach(duck, path)
    fifo = folder / (path.parent.parent.name + ".pipe")
    os.mkfifo(fifo)
    failure: list[BaseException] = []

    def export() -> None:
        try:
            duck.execute(f"COPY ({select_sql('src', path)}) TO '{fifo}' "
                         f"(FORMAT csv, HEADER false, FORCE_QUOTE *, USE_TMP_FILE false)")
        except BaseException as error:
            failure.append(error)
            # unblock a reader still waiting in open(): an empty pipe reads as end of file
            threading.Thread(target=lambda: os.close(os.open(fifo, os.O_WRONLY)), daemon=True).start()

    writer = threading.Thread(target=export)
    writer.start()
    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        with cursor.copy(copy_statement()) as copy, open(fifo, "rb") as handle:
            while chunk := handle.read(1 << 20):
                copy.write(chunk)
        rows = cursor.rowcount
    writer.join()
    detach(duck)
    fifo.unlink()
    if failure:
        raise failure[0]
    return rows


def load_duckdb_pg(dsn: str, path: Path, folder: Path) -> int:
    duck = session(with_postgres=True)
    attach(duck, path)
    duck.execute(f"ATTACH '{dsn}' AS pg (TYPE postgres)")
    duck.execute("BEGIN")
    rows = duck.execute(f"INSERT INTO pg.raw_claude_flow_v2.memory_entries ({', '.join(TARGET)}) "
                        f"{select_sql('src', path)}").fetchone()[0]
    duck.execute("COMMIT")
    duck.execute("DETACH pg")
    detach(duck)
    return rows


def hash_three_times_and_copy(path: Path, folder: Path) -> None:
    for _ in range(2):
        sha256_of(path)
    shutil.copyfile(path, folder / "copy.db")
    sha256_of(folder / "copy.db")
    (folder / "copy.db").unlink()


def hash_once_while_copying(path: Path, folder: Path) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as source, open(folder / "copy.db", "wb") as target:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            target.write(chunk)
    (folder / "copy.db").unlink()


VARIANTS = {"csv-file": (load_csv_file, 1), "fifo": (load_fifo, 1), "fifo-2": (load_fifo, 2),
            "duckdb-pg": (load_duckdb_pg, 1), "duckdb-pg-2": (load_duckdb_pg, 2)}


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--variants", default="csv-file,fifo,fifo-2,duckdb-pg,duckdb-pg-2,hash-once")
    args = parser.parse_args(argv)
    manifest = json.loads((args.corpus / "corpus.json").read_text())
    files = [args.corpus / f["path"] for f in manifest["file_list"]]
    server = runner.Server(args.dsn, args.corpus)
    results = []
    for variant in args.variants.split(","):
        with tempfile.TemporaryDirectory(dir=args.corpus.parent) as folder:
            folder = Path(folder)
            cpu, server_cpu, started = cpu_self(), runner.server_cpu_seconds(), time.perf_counter()
            if variant == "hash-once":
                for path in files:
                    hash_once_while_copying(path, folder)
                once = time.perf_counter() - started
                started = time.perf_counter()
                for path in files:
                    hash_three_times_and_copy(path, folder)
                line = {"variant": "hash-once vs today", "once_s": round(once, 1),
                        "today_s": round(time.perf_counter() - started, 1)}
            else:
                dsn = server.recreate(f"bench_experiment_{variant.replace('-', '_')}")
                create_raw(dsn)
                load, workers = VARIANTS[variant]
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    rows = sum(pool.map(lambda p: load(dsn, p, folder), files))  # noqa: B023 - consumed here
                line = {"variant": variant, "wall_s": round(time.perf_counter() - started, 1),
                        "cpu_s": round(cpu_self() - cpu, 1),
                        "server_cpu_s": round(runner.server_cpu_seconds() - server_cpu, 1)
                        if server_cpu is not None else None,
                        "rows": rows, "counted": runner.count(dsn, "SELECT count(*) FROM raw_claude_flow_v2.memory_entries")}
                server.drop(f"bench_experiment_{variant.replace('-', '_')}")
        line["load_average"] = round(os.getloadavg()[0], 1)
        results.append(line)
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
