"""`bench/run`: consolidate against pgloader and a PostgreSQL COPY floor, on one corpus and one server.

    bench/run --rows 100k|1M|10M [--files 16] [--seed 4] [--dsn DSN] [--out bench/out]
              [--skip-pgloader] [--skip-backup-run] [--skip-rerun] [--skip-run] [--profile]
              [--sync-rounds 5] [--skip-parallel-run] [--skip-anchor]
              [--pgloader-with "prefetch rows = 10000"] [--only-pgloader] [--db-prefix bench]
              [--markdown BENCHMARKS.md | --no-markdown] [--json FILE]
    bench/run --from-json bench/out/results-1M.json      # re-render an earlier run into BENCHMARKS.md

1. The corpus (bench/generate.py) is written once to OUT/corpus-<rows>-<files>f-s<seed> and reused.
2. The server: --dsn / $DATABASE_URL, else a private PostgreSQL from the pgserver wheel under OUT/pg
   (PostgreSQL 16, the same server the project embeds). Every measured step gets a fresh database on it.
3. Measured, each as its own process (wall time, CPU time and peak RSS from os.wait4):
   ours     `consolidate load` (cold, then again on the unchanged corpus), `consolidate run --no-backup`
            (cold, then again: the re-run target), `consolidate run` with its backup; per-phase times
            come from bench/harness.py, which runs the real CLI with a timer around each library call;
   pgloader the Debian package, one process, one LOAD DATABASE per file into its own schema (defaults:
            it also builds the source's unique and namespace indexes);
   floor    psql `\\copy ... FROM file (FORMAT binary)` (and csv) of exactly the rows `consolidate load`
            wrote into raw (source columns and lineage), exported beforehand, outside the timing;
   anchor   DuckDB attaching every SQLite file and PostgreSQL, one `CREATE TABLE ... AS SELECT` per file
            (bench/duckdb_anchor.py): what a user could run instead of `consolidate load`;
   parallel run  after the cold `run`, one row changed in one file and one MemoryClient write, then
            `consolidate sync` (its time as a share of the cold run; both changes checked in the marts),
            --sync-rounds times in a row; one cycle of `sync --watch`; and the client's get / set
            latencies (bench/parallel_run.py).
4. Row counts are checked for every system (raw = generated, pgloader's tables = generated, floor =
   generated, marts = generated keys) and written with the timings to OUT/results-<rows>.json; the
   table goes to stdout and into BENCHMARKS.md between `<!-- bench:<rows>:begin/end -->` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import generate, parallel_run  # noqa: E402
from loader.transform import dbt_server  # noqa: E402

RAW_TABLE = ("raw_claude_flow_v2", "memory_entries")
SYNC_STEP = "consolidate sync (one row changed + one client write)"
UNSERVED_SYNC_STEP = "consolidate sync without the dbt server (one row changed + one client write)"
WATCH_STEP = "consolidate sync --watch, one cycle (one row changed + one client write)"


def sync_round_name(number: int) -> str:
    return SYNC_STEP if number == 1 else f"{SYNC_STEP}, round {number}"


# ------------------------------------------------------------------------------------------ processes


@dataclass
class Measured:
    """One measured process."""

    name: str
    wall: float
    cpu: float = 0.0
    server_cpu: float | None = None
    peak_rss_mb: float = 0.0
    exit_code: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    checks: dict[str, object] = field(default_factory=dict)
    load_before: float = 0.0
    note: str = ""
    dbt_nodes: dict[str, float] = field(default_factory=dict)
    dbt_statements: list[list] = field(default_factory=list)  # [node, statement, seconds] (dbt_statements)

    def to_json(self) -> dict:
        return dict(self.__dict__)


TICKS = os.sysconf("SC_CLK_TCK")
POSTMASTER: list[int] = []   # the server's postmaster pid when it runs on this machine (see Server)


def server_cpu_seconds() -> float | None:
    """CPU seconds used so far by the local PostgreSQL server: the postmaster with the backends it has
    reaped (cutime/cstime), plus its live children. None when the server is not on this machine."""
    if not POSTMASTER:
        return None
    pid = POSTMASTER[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    total = sum(int(value) for value in fields[11:15])        # utime stime cutime cstime
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            child = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(child[1]) == pid:
            total += int(child[11]) + int(child[12])
    return total / TICKS


def measure(name: str, argv: list[str], log: Path, env: dict | None = None) -> Measured:
    """Run argv as a child; wall time, user+sys CPU and peak RSS of that child (os.wait4), and the CPU
    the PostgreSQL server spent meanwhile (when it runs here)."""
    load_before = os.getloadavg()[0]
    server_before = server_cpu_seconds()
    with open(log, "ab") as sink:
        sink.write(f"\n$ {' '.join(argv)}\n".encode())
        sink.flush()
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if server_before is not None:
        time.sleep(0.5)   # let the postmaster reap the child's backends: a zombie's times read as 0
    server_after = server_cpu_seconds()
    server = round(server_after - server_before, 1) if server_before is not None and server_after else None
    return Measured(name=name, wall=round(wall, 3), cpu=round(usage.ru_utime + usage.ru_stime, 3),
                    server_cpu=server,
                    peak_rss_mb=round(usage.ru_maxrss / 1024, 1), exit_code=child.returncode,
                    load_before=round(load_before, 2))


# ------------------------------------------------------------------------------------------- server


class Server:
    def __init__(self, dsn: str | None, out: Path):
        self.pgserver_home = None
        if not dsn:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from loader.database import embedded_dsn
                self.pgserver_home = out / "pg"
                dsn = embedded_dsn(self.pgserver_home)
        self.dsn = dsn
        with psycopg.connect(dsn) as connection:
            backend = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
            try:
                parent = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
                POSTMASTER[:] = [parent]
            except (OSError, ValueError):
                POSTMASTER[:] = []

    def dsn_for(self, database: str) -> str:
        params = conninfo_to_dict(self.dsn)
        params["dbname"] = database
        return make_conninfo(**params)

    def recreate(self, database: str) -> str:
        with psycopg.connect(self.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        return self.dsn_for(database)

    def drop(self, database: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))

    def describe(self) -> dict:
        with psycopg.connect(self.dsn) as connection:
            version = connection.execute("SHOW server_version").fetchone()[0]
            settings = dict(connection.execute(
                "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name = ANY(%s)",
                (["shared_buffers", "max_wal_size", "wal_level", "synchronous_commit", "fsync",
                  "maintenance_work_mem", "work_mem", "max_parallel_workers_per_gather"],)).fetchall())
        return {"version": version, "kind": "pgserver wheel (embedded)" if self.pgserver_home else "--dsn / DATABASE_URL",
                "settings": settings}

    def pgloader_url(self, database: str) -> str:
        params = conninfo_to_dict(self.dsn)
        user = params.get("user") or os.environ.get("PGUSER") or "postgres"
        password = params.get("password") or os.environ.get("PGPASSWORD") or ""
        host = params.get("host") or "localhost"
        port = params.get("port") or "5432"
        credentials = f"{user}:{password}" if password else user
        if host.startswith("/"):
            return f"postgresql://{credentials}@unix:{host}:{port}/{database}"
        return f"postgresql://{credentials}@{host}:{port}/{database}"


def count(dsn: str, query: str) -> int:
    with psycopg.connect(dsn) as connection:
        return connection.execute(query).fetchone()[0]


def psql_binary() -> str:
    found = shutil.which("psql")
    if found:
        return found
    try:
        import pgserver
        candidate = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise RuntimeError("psql not found (Debian's postgresql-client, or the pgserver wheel)")


# ---------------------------------------------------------------------------------------------- ours


def harness(name: str, command: list[str], work: Path, log: Path, profile: Path | None = None,
            env: dict[str, str] | None = None) -> Measured:
    result = work / f"{name}.json"
    argv = [sys.executable, "-m", "bench.harness", "--result", str(result)]
    if profile:
        argv += ["--profile", str(profile)]
    measured = measure(name, argv + ["--", *command], log, env)
    if result.exists():
        data = json.loads(result.read_text())
        measured.phases = data["phases"]
        measured.statuses = data["statuses"]
        measured.exit_code = data["exit_code"] or measured.exit_code
        if data["missing"]:
            measured.note = "not timed: " + ", ".join(data["missing"])
    else:
        measured.exit_code = measured.exit_code or 99
    return measured


def dbt_nodes(home: Path, top: int = 8) -> dict[str, float]:
    """The slowest dbt nodes of the last build under `home` (run_results.json), seconds each."""
    path = home / "dbt" / "target" / "run_results.json"
    if not path.exists():
        return {}
    nodes = json.loads(path.read_text()).get("results", [])
    nodes.sort(key=lambda node: node.get("execution_time") or 0, reverse=True)
    return {node["unique_id"].split(".", 1)[1]: round(node["execution_time"], 2) for node in nodes[:top]}


DBT_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d+ \[\w+\s*\] \[(?P<thread>[^\]]*)\]: (?P<text>.*)$")
DBT_STATEMENT = re.compile(r"^On (?P<node>[\w.]+): (?P<sql>.*)$")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # a log file dbt coloured
DBT_STATUS = re.compile(r"^SQL status: .* in (?P<seconds>[\d.]+) seconds$")


def statement_summary(sql_text: str) -> str:
    """A statement dbt ran, in a few words: its SQL without dbt's comment, on one line, cut short."""
    text = " ".join(re.sub(r"/\*.*?\*/", " ", sql_text, flags=re.S).split())
    text = re.sub(r'"[^"]*"\."([^"]*)"\."([^"]*)"', r"\1.\2", text)  # "db"."schema"."table" -> schema.table
    if index := re.search(r"create\s+(?:unique\s+)?index\b.*?\son\s+(\S+)\s*(using \w+\s*)?(\([^)]*\))", text, re.I):
        return f"create index on {index[1]} {index[2] or ''}{index[3]}"
    if made := re.match(r"create table \S+ as", text, re.I) or re.search(r"insert into \S+", text, re.I):
        return made[0] + " ..."
    if text.startswith("select count(*) as failures"):
        return "the test's query"
    return text if len(text) <= 90 else text[:87] + "..."


def dbt_statements(home: Path, top: int = 10) -> list[list]:
    """The slowest statements of the dbt invocations logged under `home` (dbt's debug log: each
    statement's SQL after `On <node>:` and its time in `SQL status: ... in N seconds`, per thread), as
    [node, statement, seconds]."""
    path = home / "dbt" / "logs" / "dbt.log"
    if not path.exists():
        return []
    statements, current, sql_lines = [], {}, None
    for line in path.read_text(errors="replace").splitlines():
        logged = DBT_LOG_LINE.match(ANSI_ESCAPE.sub("", line))
        if not logged:
            if sql_lines is not None:
                sql_lines.append(line)  # a statement's SQL goes on over lines of its own
            continue
        sql_lines = None
        thread, text = logged["thread"], logged["text"]
        if started := DBT_STATEMENT.match(text):
            sql_lines = [started["sql"]]
            current[thread] = (started["node"].split(".", 1)[-1], sql_lines)
        elif (status := DBT_STATUS.match(text)) and thread in current:
            node, lines = current.pop(thread)
            statements.append([node, statement_summary("\n".join(lines)), float(status["seconds"])])
    statements.sort(key=lambda statement: statement[2], reverse=True)
    return statements[:top]


def ours_command(kind: str, corpus: Path, dsn: str, home: Path, *extra: str) -> list[str]:
    return [kind, str(corpus), "--dsn", dsn, "--home", str(home), *extra]


def mart_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as connection:
        return {name: connection.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                for name in ("public.unified_memory", "public.performance_metrics", "public.unified_memory_history")}


# ------------------------------------------------------------------------------------------ pgloader


def pgloader_version() -> str | None:
    binary = shutil.which("pgloader")
    if not binary:
        return None
    output = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    return output.splitlines()[0].replace("pgloader version ", "").strip('"') if output else "unknown"


def pgloader_script(server: Server, database: str, files: list[Path], options: str = "") -> str:
    """One LOAD DATABASE per file, each into its own schema (f00, f01, ...), pgloader's defaults (plus
    `options`, e.g. "prefetch rows = 10000")."""
    commands = []
    for number, path in enumerate(files):
        schema = f"f{number:02d}"
        commands.append(
            f"LOAD DATABASE\n  FROM sqlite://{path}\n  INTO {server.pgloader_url(database)}\n"
            f"  WITH include drop, create tables, create indexes, reset sequences{', ' + options if options else ''}\n"
            f"  SET search_path TO '{schema}'\n"
            f"  BEFORE LOAD DO $$ CREATE SCHEMA IF NOT EXISTS {schema}; $$;\n")
    return "\n".join(commands)


def run_pgloader(server: Server, corpus: Path, manifest: dict, work: Path, log: Path, prefix: str,
                 options: str = "") -> Measured:
    database = f"{prefix}_pgloader"
    server.recreate(database)
    files = [corpus / f["path"] for f in manifest["file_list"]]
    script = work / "pgloader.load"
    script.write_text(pgloader_script(server, database, files, options))
    measured = measure(f"pgloader ({options})" if options else "pgloader", [shutil.which("pgloader"), "--root-dir", str(work / "pgloader"),
                                    "--client-min-messages", "warning", str(script)], log)
    counts = []
    with psycopg.connect(server.dsn_for(database)) as connection:
        for number in range(len(files)):
            try:
                counts.append(connection.execute(
                    sql.SQL("SELECT count(*) FROM {}.memory_entries").format(
                        sql.Identifier(f"f{number:02d}"))).fetchone()[0])
            except psycopg.errors.UndefinedTable:
                connection.rollback()
                counts.append(None)
    measured.checks = {"tables": len([c for c in counts if c is not None]), "rows": sum(c or 0 for c in counts),
                       "rows_expected": manifest["rows"], "per_file": counts}
    return measured


# --------------------------------------------------------------------------------------------- floor


def export_raw(dsn: str, target: Path, form: str) -> tuple[list[tuple[str, str]], int]:
    """The raw table's columns (name, type) and its rows in `form` (binary or csv) at `target`."""
    schema, table = RAW_TABLE
    with psycopg.connect(dsn) as connection:
        columns = connection.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (sql.Identifier(schema, table).as_string(connection),)).fetchall()
        statement = sql.SQL("COPY {} TO STDOUT (FORMAT {})").format(sql.Identifier(schema, table), sql.SQL(form))
        with connection.cursor() as cursor, cursor.copy(statement) as copy, open(target, "wb") as handle:
            for chunk in copy:
                handle.write(chunk)
    return columns, target.stat().st_size


def run_floor(server: Server, columns: list[tuple[str, str]], source: Path, form: str, log: Path,
              prefix: str) -> Measured:
    database = f"{prefix}_floor_{form}"
    dsn = server.recreate(database)
    definition = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind))
                                    for name, kind in columns)
    with psycopg.connect(dsn) as connection:
        connection.execute(sql.SQL("CREATE TABLE floor_rows ({})").format(definition))
    measured = measure(f"floor ({form} COPY)", [
        psql_binary(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn,
        "-c", f"\\copy floor_rows FROM '{source}' WITH (FORMAT {form})"], log)
    measured.checks = {"rows": count(dsn, "SELECT count(*) FROM floor_rows"), "file_bytes": source.stat().st_size}
    server.drop(database)
    return measured


def run_anchor(server: Server, corpus: Path, manifest: dict, log: Path, prefix: str) -> Measured:
    database = f"{prefix}_duckdb_anchor"
    dsn = server.recreate(database)
    files = [str(corpus / f["path"]) for f in manifest["file_list"]]
    measured = measure("DuckDB ATTACH + CREATE TABLE AS (anchor)",
                       [sys.executable, "-m", "bench.duckdb_anchor", "--dsn", dsn, *files], log)
    with psycopg.connect(dsn) as connection:
        measured.checks = {"rows": sum(connection.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f"f{number:02d}"))).fetchone()[0]
            for number in range(len(files))), "tables": len(files)}
    server.drop(database)
    return measured


# ----------------------------------------------------------------------------------------- reporting


def machine() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = 0
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal"):
                memory = int(line.split()[1]) // 1024
    return {"nproc": os.cpu_count(), "ram_mb": memory, "cpu": cpu, "kernel": platform.release(),
            "load_average": os.getloadavg()}


def source_revision() -> str:
    """The commit of the loader and dbt project measured (+ "dirty" when they differ from it)."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "loader", "dbt_project",
                                "dbt_project.yml"], capture_output=True, text=True, check=True).stdout.strip()
        return head + (" (dirty)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        marker = REPO / ".bench-rev"   # a snapshot made with git archive
        return marker.read_text().strip() if marker.exists() else "unknown"


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"consolidate": source_revision(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "pgloader": pgloader_version()}
    for package in ("duckdb", "psycopg", "dbt-core", "dbt-postgres", "pgserver"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def fmt_seconds(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:,.1f}"


def ratio(ours: float | None, other: float | None) -> str:
    return f"{ours / other:.2f}×" if ours and other else ""


def total_cpu(m: dict) -> float | None:
    """Client plus server CPU seconds: less sensitive than wall time to other jobs on a shared machine."""
    return m["cpu"] + m["server_cpu"] if m.get("server_cpu") is not None else None


def results_table(results: dict) -> str:
    """The Markdown table of one run of bench/run. Ratios: wall time (and total CPU in brackets)."""
    rows, mb = results["corpus"]["rows"], results["corpus"]["bytes"] / 1e6
    measured = {m["name"]: m for m in results["measured"]}
    pgl = next((m for m in results["measured"] if m["name"].startswith("pgloader") and not m["exit_code"]), {})
    floor = measured.get("floor (binary COPY)", {})
    lines = ["| step | wall s | rows/s | MB/s | CPU s | server CPU s | peak RSS MB | ours/pgloader | ours/floor "
             "| re-run/cold | phases (s) | checks |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]

    def ratios(m: dict, other: dict) -> str:
        if not other:
            return ""
        wall = ratio(m["wall"], other.get("wall"))
        cpu = ratio(total_cpu(m), total_cpu(other)) if total_cpu(m) and total_cpu(other) else ""
        return f"{wall} ({cpu})" if cpu else wall

    for m in results["measured"]:
        ours = m["name"].startswith("consolidate")
        cold = measured.get(m["name"].replace(" (re-run, unchanged)", ""), {}) if "re-run" in m["name"] else {}
        phases = ", ".join(f"{k} {v:.1f}" for k, v in m["phases"].items() if v >= 0.05 and ":" not in k)
        inner = ", ".join(f"{k.split(': ', 1)[1]} {v:.1f}" for k, v in m["phases"].items() if v >= 0.05 and ":" in k)
        if inner:
            phases += f" (load: {inner})"
        checks = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in m["checks"].items()
                           if k != "per_file")
        if m["exit_code"]:
            checks = f"**exit {m['exit_code']}** " + checks
        lines.append(
            f"| {m['name']} | {fmt_seconds(m['wall'])} | {rows / m['wall']:,.0f} | {mb / m['wall']:,.1f} | "
            f"{m['cpu']:,.1f} | {fmt_seconds(m.get('server_cpu'))} | {m['peak_rss_mb']:,.0f} | "
            f"{ratios(m, pgl) if ours else ''} | {ratios(m, floor) if ours else ''} | "
            f"{ratios(m, cold) if cold else ''} | {phases} | {checks} |")
    return "\n".join(lines)


def notes(results: dict) -> list[str]:
    lines = [f"- {m['name']}: {m['note']}." for m in results["measured"] if m.get("note")]
    measured = {m["name"]: m for m in results["measured"]}
    load, anchor = measured.get("consolidate load"), measured.get("DuckDB ATTACH + CREATE TABLE AS (anchor)")
    if load and anchor:
        lines.append(f"`consolidate load` against the DuckDB one-statement anchor: {ratio(load['wall'], anchor['wall'])} "
                     f"by wall time ({ratio(total_cpu(load), total_cpu(anchor)) or 'n/a'} by total CPU).")
    sync, cold = measured.get(SYNC_STEP), measured.get("consolidate run --no-backup")
    if sync and cold:
        lines.append(f"Parallel run: `consolidate sync` after one changed row and one client write took "
                     f"{sync['wall']:.1f} s, {sync['wall'] / cold['wall']:.1%} of the cold `run` ({cold['wall']:.1f} s); "
                     f"both changes in the marts afterwards: {sync['checks'].get('synced_row_in_marts')} / "
                     f"{sync['checks'].get('client_write_in_marts')}; raw rows added by the sync: "
                     f"{sync['checks'].get('raw_rows_added', 'n/a')}.")
        rounds = [m for name, m in measured.items() if name.startswith(SYNC_STEP)]
        if len(rounds) > 1:
            walls = [m["wall"] for m in rounds]
            middle = statistics.median(walls)
            both = sum(bool(m["checks"].get("synced_row_in_marts") and m["checks"].get("client_write_in_marts"))
                       for m in rounds)
            lines.append(f"The same {len(rounds)} times in a row (round 1 above; each round its own changed row "
                         f"and client write): {', '.join(f'{wall:.1f}' for wall in walls)} s; median {middle:.1f} s, "
                         f"{middle / cold['wall']:.1%} of the cold `run`; both changes in the marts after "
                         f"{both} of {len(rounds)} rounds.")
        unserved = [m for name, m in measured.items() if name.startswith(UNSERVED_SYNC_STEP)]
        if unserved:
            walls = [m["wall"] for m in unserved]
            lines.append(f"The syncs above find dbt imported, in the dbt server the cold `run` left (their CPU s "
                         f"leave out the served worker's). Each forking its own worker instead, which imports dbt "
                         f"(`{dbt_server.SWITCH_VARIABLE}=off`): {', '.join(f'{wall:.1f}' for wall in walls)} s; "
                         f"median {statistics.median(walls):.1f} s, "
                         f"{statistics.median(walls) / cold['wall']:.1%} of the cold `run`.")
    watched = measured.get(WATCH_STEP)
    if watched and cold:
        lines.append(f"The same through one cycle of a running `consolidate sync --watch` (dbt already loaded by "
                     f"its first cycle): {watched['wall']:.1f} s, {watched['wall'] / cold['wall']:.1%} of the cold `run`; "
                     f"both changes in the marts afterwards: {watched['checks'].get('synced_row_in_marts')} / "
                     f"{watched['checks'].get('client_write_in_marts')}.")
    for name, figures in results.get("client", {}).items():
        lines.append(f"MemoryClient {name}: p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms "
                     f"over {figures['n']:,} calls" + (f" ({figures['hits']:,} hits)" if "hits" in figures else "") + ".")
    lines += [f"- {note}" for note in results.get("notes", [])]
    return [""] + [line if line.startswith("- ") else f"- {line}" for line in lines] if lines else []


def markdown_section(results: dict) -> str:
    corpus, server, info = results["corpus"], results["server"], results["machine"]
    v = results["versions"]
    return "\n".join([
        f"### {results.get('title') or corpus['label'] + ' rows'} — {results['finished']}",
        "",
        f"Corpus: {corpus['rows']:,} claude-flow v2 memory rows in {corpus['files']} files, "
        f"{corpus['bytes'] / 1e6:,.0f} MB of SQLite (seed {corpus['seed']}, {corpus['duplicate_rows']:,} rows "
        f"repeating a key of an earlier file). Server: PostgreSQL {server['version']} ({server['kind']}; "
        + ", ".join(f"{k}={val}" for k, val in sorted(server["settings"].items())) + "). "
        f"Machine: {info['nproc']} cores ({info['cpu']}), {info['ram_mb'] / 1024:.0f} GiB RAM, load average "
        f"{info['load_average'][0]:.1f} when the run started (shared with other test runs). "
        f"Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        "",
        results_table(results),
        *notes(results),
        "",
        "rows/s and MB/s are over the whole corpus (MB of SQLite input) for every step, re-runs included; "
        "CPU s and peak RSS are of the measured process and the children it reaped (ours: the CLI with DuckDB in "
        "it, and its dbt worker, RSS the larger of the two; pgloader; psql for the floor); server CPU s is the PostgreSQL server's CPU meanwhile (all its processes). "
        "Ratios compare wall times, and in brackets total CPU (client + server), which other jobs on the machine "
        "disturb less.",
        *([""] + ["Slowest dbt nodes of the cold `run`: " + ", ".join(
            f"{name} {seconds:.1f} s" for name, seconds in m["dbt_nodes"].items()) + "."
            for m in results["measured"] if m["dbt_nodes"] and "re-run" not in m["name"]][:1]),
        *([""] + ["Slowest statements of the cold `run`'s build (dbt's log; a model's time is its statements' "
                  "and its hooks'): " + "; ".join(
            f"{node}: `{statement}` {seconds:.1f} s" for node, statement, seconds in m["dbt_statements"]) + "."
            for m in results["measured"] if m.get("dbt_statements")][:1]),
    ])


def write_markdown(path: Path, results: dict) -> None:
    label = results["corpus"]["label"]
    begin, end = f"<!-- bench:{label}:begin -->", f"<!-- bench:{label}:end -->"
    section = f"{begin}\n{markdown_section(results)}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n## Results (written by bench/run)\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        anchor = "<!-- bench:results -->"
        text = text.replace(anchor, f"{anchor}\n\n{section}") if anchor in text else text.rstrip() + f"\n\n{section}\n"
    path.write_text(text)


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="100k", help="100k, 1M, 10M, ...")
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"),
                        help="PostgreSQL server (default: $DATABASE_URL, else a private pgserver under OUT/pg)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--skip-pgloader", action="store_true")
    parser.add_argument("--skip-backup-run", action="store_true", help="skip `consolidate run` with its backup")
    parser.add_argument("--skip-run", action="store_true", help="only `consolidate load` (no dbt build)")
    parser.add_argument("--skip-rerun", action="store_true",
                        help="skip the second `consolidate run` on the unchanged corpus (the load re-run stays)")
    parser.add_argument("--skip-parallel-run", action="store_true",
                        help="skip the sync after one changed row and one client write, and the client latencies")
    parser.add_argument("--unserved-rounds", type=int, default=2, metavar="N",
                        help="then N more with the dbt server off: each sync forks its own worker, which imports "
                             "dbt (default 2)")
    parser.add_argument("--sync-rounds", type=int, default=5, metavar="N",
                        help="one-shot syncs in a row after the cold `run`, each after its own changed row and "
                             "client write (the first runs while the server still vacuums the new marts); "
                             "the notes give the first and the median (default 5)")
    parser.add_argument("--skip-anchor", action="store_true", help="skip the DuckDB one-statement anchor")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the cold `consolidate load` and `run` (OUT/*.pstats; adds overhead)")
    markdown = parser.add_mutually_exclusive_group()
    markdown.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    markdown.add_argument("--no-markdown", dest="markdown", action="store_const", const=None)
    parser.add_argument("--json", type=Path, default=None, help="results file (default OUT/results-<rows>.json)")
    parser.add_argument("--keep-databases", action="store_true")
    parser.add_argument("--db-prefix", default="bench", help="names of the databases made on the server")
    parser.add_argument("--pgloader-with", default="", metavar="OPTIONS",
                        help='added to pgloader\'s WITH clause, e.g. "prefetch rows = 10000" (its heap is 1 GB)')
    parser.add_argument("--only-pgloader", action="store_true", help="measure pgloader alone")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="only print (and write into --markdown) the results of an earlier run")
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        print(markdown_section(results))
        if args.markdown:
            write_markdown(args.markdown, results)
        return 0

    rows = generate.parse_size(args.rows)
    label = generate.size_label(rows)
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / f"corpus-{label}-{args.files}f-s{args.seed}"
    work = Path(tempfile.mkdtemp(prefix=f"run-{label}-", dir=out))
    log = work / "commands.log"
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    # The dbt server the commands leave and use is the bench's own (loader/transform/dbt_server.py): the
    # cold `run` starts with none, and the syncs after it find the one it left. Removing the folder ends it.
    runtime = work / "runtime"
    runtime.mkdir(mode=0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)

    say(f"corpus {corpus}")
    manifest = generate.generate(corpus, rows, args.files, args.seed)
    server = Server(args.dsn, out)
    say(f"server PostgreSQL {server.describe()['version']}; log {log}")
    measured: list[Measured] = []
    client: dict[str, dict] = {}
    expected_keys = rows - manifest["duplicate_rows"] - (args.files - 1)
    raw_count = f"SELECT count(*) FROM {RAW_TABLE[0]}.{RAW_TABLE[1]}"

    def step(m: Measured) -> Measured:
        measured.append(m)
        say(f"  {m.name:<40} {m.wall:8.1f} s  exit {m.exit_code}  rss {m.peak_rss_mb:,.0f} MB  "
            f"{' '.join(f'{k}={v:.1f}' for k, v in m.phases.items())} {m.checks or ''}")
        return m

    profile = (lambda name: out / f"{label}-{name}.pstats") if args.profile else (lambda name: None)
    # (a) ours: load, cold and again
    if not args.only_pgloader:
        dsn = server.recreate(f"{args.db_prefix}_ours_load")
        home = work / "home-load"
        m = step(harness("consolidate load", ours_command("load", corpus, dsn, home), work, log, profile("load")))
        m.checks = {"raw_rows": count(dsn, raw_count), "rows_expected": rows}
        step(harness("consolidate load (re-run, unchanged)", ours_command("load", corpus, dsn, home), work, log))
        measured[-1].checks = {"raw_rows": count(dsn, raw_count)}

        # (c) the floor: the rows `consolidate load` wrote, exported outside the timing
        for form in ("binary", "csv"):
            columns, _ = export_raw(dsn, work / f"raw.{form}", form)
            step(run_floor(server, columns, work / f"raw.{form}", form, log, args.db_prefix))
            (work / f"raw.{form}").unlink()
        if not args.skip_anchor:
            step(run_anchor(server, corpus, manifest, log, args.db_prefix))
        if not args.keep_databases:
            server.drop(f"{args.db_prefix}_ours_load")

    # (a) ours: run --no-backup, cold and again; run with its backup
    if not args.skip_run and not args.only_pgloader:
        dsn = server.recreate(f"{args.db_prefix}_ours_run")
        home = work / "home-run"
        m = cold_run = step(harness("consolidate run --no-backup", ours_command("run", corpus, dsn, home, "--no-backup"),
                                    work, log, profile("run")))
        m.checks = {"raw_rows": count(dsn, raw_count), **mart_counts(dsn), "keys_expected": expected_keys}
        m.dbt_nodes = dbt_nodes(home)
        m.dbt_statements = dbt_statements(home)
        if not args.skip_rerun:
            step(harness("consolidate run --no-backup (re-run, unchanged)",
                         ours_command("run", corpus, dsn, home, "--no-backup"), work, log)).dbt_nodes = dbt_nodes(home)
        if not args.skip_parallel_run:
            def sync_round(name: str, changes: int, environment: dict[str, str] | None = None) -> None:
                """One one-shot sync after round `changes`'s changed row and client write; both checked."""
                changed_value, written = parallel_run.round_changes(changes)
                with parallel_run.changed_file(corpus / manifest["file_list"][0]["path"], changed_value) as changed:
                    parallel_run.client_write(dsn, written)
                    raw_before = count(dsn, raw_count)
                    m = step(harness(name, ours_command("sync", corpus, dsn, home), work, log, env=environment))
                m.checks = {**parallel_run.both_changes_in_the_marts(dsn, changed, changed_value, written),
                            "share_of_cold_run": f"{m.wall / cold_run.wall:.1%}",
                            "raw_rows_added": count(dsn, raw_count) - raw_before}
                m.dbt_nodes = dbt_nodes(home)

            for number in range(1, args.sync_rounds + 1):
                sync_round(sync_round_name(number), number)
            # the same, each command forking its own worker to import dbt (loader/transform/dbt_server.py)
            for number in range(1, args.unserved_rounds + 1):
                sync_round(f"{UNSERVED_SYNC_STEP}, round {number}", args.sync_rounds + number,
                           {**os.environ, dbt_server.SWITCH_VARIABLE: "off"})
            watched = parallel_run.watch_cycle(
                [sys.executable, "-m", "loader", *ours_command("sync", corpus, dsn, home, "--watch", "0.5", "--json")],
                dsn, corpus / manifest["file_list"][0]["path"], log)
            seconds = watched.pop("seconds")
            step(Measured(name=WATCH_STEP, wall=seconds, exit_code=watched.pop("exit_code"),
                          load_before=round(os.getloadavg()[0], 2),
                          checks={**watched, "share_of_cold_run": f"{seconds / cold_run.wall:.1%}"},
                          note="timed by the cycle's own report (started_at to finished_at); CPU and RSS not "
                               "measured (the watch process runs on between cycles)"))
            client.update(parallel_run.client_latencies(dsn, work))
            say(f"  client {client}")
        if not args.keep_databases:
            server.drop(f"{args.db_prefix}_ours_run")
        if not args.skip_backup_run:
            dsn = server.recreate(f"{args.db_prefix}_ours_backup")
            home = work / "home-backup"
            m = step(harness("consolidate run (with backup)",
                             ours_command("run", corpus, dsn, home, "--backup-to", str(work / "backup")), work, log))
            m.checks = {"raw_rows": count(dsn, raw_count)}
            shutil.rmtree(work / "backup", ignore_errors=True)
            if not args.keep_databases:
                server.drop(f"{args.db_prefix}_ours_backup")

    # (b) pgloader
    if not args.skip_pgloader:
        if shutil.which("pgloader"):
            step(run_pgloader(server, corpus, manifest, work, log, args.db_prefix, args.pgloader_with))
            if not args.keep_databases:
                server.drop(f"{args.db_prefix}_pgloader")
        else:
            say("pgloader not installed (apt-get install -y pgloader): skipped")

    # ours first in the table, then pgloader, then the floors
    order = lambda m: (0 if m.name.startswith("consolidate") else 1 if m.name == "pgloader" else 2)  # noqa: E731
    results = {
        "finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "corpus": {"label": label, "path": str(corpus), "rows": rows, "files": args.files, "seed": args.seed,
                   "bytes": manifest["bytes"], "duplicate_rows": manifest["duplicate_rows"],
                   "keys_expected": expected_keys, "generated_in_s": manifest["seconds"]},
        "server": server.describe(), "machine": machine(), "versions": versions(),
        "measured": [m.to_json() for m in sorted(measured, key=order)], "work": str(work), "client": client,
    }
    results_path = args.json or out / f"results-{label}.json"
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown_section(results))
    if args.markdown:
        write_markdown(args.markdown, results)
        say(f"wrote {args.markdown}")
    say(f"results {results_path}")
    if server.pgserver_home and not args.keep_databases:
        from loader.database import stop_embedded
        stop_embedded(server.pgserver_home)
    shutil.rmtree(runtime, ignore_errors=True)
    return 1 if any(m.exit_code for m in measured) else 0


if __name__ == "__main__":
    sys.exit(main())
