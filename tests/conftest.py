"""Shared fixtures: a real PostgreSQL (DATABASE_URL, or an embedded one) with a fresh database per
test that asks for one, private copies of SQLite files, and the shared real databases."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from loader.database import Target, embedded_dsn, stop_embedded
from loader.fixtures.claude_flow_v2 import V2_DDL

REPO = Path(__file__).resolve().parent.parent
REALDATA = Path(os.environ.get("CONSOLIDATE_REALDATA", REPO.parent / "shared" / "realdata")).resolve()   # as discovery records it: real paths


@pytest.fixture(scope="session")
def server_dsn(tmp_path_factory) -> str:
    """A PostgreSQL server for the whole test session: DATABASE_URL, or an embedded one stopped at the end."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    home = tmp_path_factory.mktemp("pg")
    yield embedded_dsn(home)
    stop_embedded(home)


@contextlib.contextmanager
def fresh_database(server_dsn: str):
    """A new, empty database on the server, dropped afterwards."""
    name = "test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = name
    try:
        yield Target(dsn=make_conninfo(**params))
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def target(server_dsn) -> Target:
    """A new, empty database on the test server, dropped afterwards."""
    with fresh_database(server_dsn) as database:
        yield database


@pytest.fixture(scope="module")
def consolidated(server_dsn, tmp_path_factory) -> Target:
    """A new database with the sample tree loaded and built, shared by a module's tests (each test
    writes only keys of its own)."""
    folder = tmp_path_factory.mktemp("consolidated")
    with fresh_database(server_dsn) as target:
        for arguments in (("sample", str(folder / "tree")),
                          ("run", str(folder / "tree"), "--dsn", target.dsn, "--home", str(folder / "state"))):
            result = consolidate(*arguments)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield target


def wait_for(condition, seconds: float = 5.0, step: float = 0.002) -> bool:
    """Whether `condition()` holds within `seconds`, asked every `step` seconds (none after the deadline)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False


def fetch(target: Target, query: str, parameters=()) -> list[tuple]:
    with target.connect() as connection:
        return connection.execute(query, parameters).fetchall()


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "state"


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not (REALDATA / "MANIFEST.tsv").exists():
        if os.environ.get("CI"):
            pytest.fail(f"shared real databases not found at {REALDATA}")
        pytest.skip(f"shared real databases not found at {REALDATA}")
    return REALDATA


# Variables that would point a CLI run under test somewhere else than the test says.
AMBIENT_SETTINGS = ("DATABASE_URL", "CONSOLIDATE_SECRET_KEY", "CONSOLIDATE_REDIS_URL", "CONSOLIDATE_HOME",
                    "CONSOLIDATE_TARGET_SCHEMA")


def consolidate(*arguments: str, target: Target | None = None, home: Path | None = None,
                timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the CLI as a user does: a separate process, with only the settings given here."""
    command = [sys.executable, "-m", "loader", *arguments]
    if target is not None:
        command += ["--dsn", target.dsn]
    if home is not None:
        command += ["--home", str(home)]
    environment = {k: v for k, v in os.environ.items() if k not in AMBIENT_SETTINGS}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=timeout)


def read_private_copy(source: Path, folder: Path, query: str, params=()) -> list[tuple]:
    """Run a query on a private copy of `source` (main file + WAL/journal), as the expectation
    side of a test: independent of the loader's own copying code."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / source.name
    shutil.copyfile(source, copy)
    for suffix in ("-wal", "-journal"):
        side = source.with_name(source.name + suffix)
        if side.exists():
            shutil.copyfile(side, copy.with_name(copy.name + suffix))
    connection = sqlite3.connect(copy)
    try:
        return connection.execute(query, params).fetchall()
    finally:
        connection.close()
        shutil.rmtree(folder)


def make_db(path: Path, *statements: str | tuple, encoding: str | None = None) -> Path:
    """A SQLite file from statements: a string, or (sql, rows) run with executemany."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    if encoding:
        connection.execute(f"PRAGMA encoding = '{encoding}'")
    for statement in statements:
        if isinstance(statement, tuple):
            connection.executemany(*statement)
        else:
            connection.execute(statement)
    connection.commit()
    connection.close()
    return path


# ---------------------------------------------------------------------------------------- Redis

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def require_redis_server() -> str:
    """redis-server's path: a test without it fails in CI (.ci/run installs it) and is skipped elsewhere."""
    executable = shutil.which("redis-server")
    if executable is None:
        message = "redis-server is not installed (Debian: apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return executable


class RedisServer:
    """A private redis-server (no persistence, optionally requiring `password`) that a test can stop and
    start again on the same port."""

    def __init__(self, folder: Path, password: str | None = None):
        self.executable = require_redis_server()
        self.folder, self.password = folder, password
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for _ in range(3):
            if self.launched():
                self.started = True
                return
            if self.started:  # a restart keeps its port
                break
            self.port = free_port()  # a free port can be taken between probing and binding
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def launched(self) -> bool:
        options = ["--requirepass", self.password] if self.password else []
        self.process = subprocess.Popen(
            [self.executable, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if redis.Redis(port=self.port, password=self.password).ping():
                    return True
            except redis.ConnectionError:
                time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> RedisServer:
    """A module's private redis-server."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def v2_file(path: Path, rows) -> Path:
    """A claude-flow v2 memory.db (its real DDL) with rows (key, value, namespace, updated_at): created_at
    and accessed_at are updated_at, access_count 1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.executescript(V2_DDL)
        connection.executemany(
            "INSERT INTO memory_entries (key, value, namespace, created_at, updated_at, accessed_at, access_count) "
            "VALUES (?, ?, ?, ?, ?, ?, 1)", [(key, value, namespace, at, at, at) for key, value, namespace, at in rows])
        connection.commit()
    return path


def write(path: Path, statement: str, parameters=()) -> None:
    """One statement on a SQLite file, committed."""
    change(path, (statement, parameters))


NUMBERED_T0 = 1_750_000_000


def numbered_v2_file(path: Path, count: int) -> Path:
    """A v2 memory.db of `count` rows key-0.. (every fifth in namespace performance-metrics), updated_at
    NUMBERED_T0 + n."""
    return v2_file(path, [(f"key-{n}", f'{{"n": {n}}}', "performance-metrics" if n % 5 == 0 else "default",
                           NUMBERED_T0 + n) for n in range(count)])


def change(path: Path, *statements: tuple) -> None:
    """Several statements (each `(sql, parameters...)`) on a SQLite file, committed together."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        for statement, *parameters in statements:
            connection.execute(statement, *parameters)
        connection.commit()


def rows_by_rowid(path: Path, folder: Path) -> dict[int, tuple]:
    """Every memory_entries row by rowid, read from a private copy."""
    copy = folder / f"copy-{len(list(folder.iterdir()))}.db"
    shutil.copyfile(path, copy)
    with contextlib.closing(sqlite3.connect(copy)) as connection:
        return {row[0]: row[1:] for row in connection.execute("SELECT rowid, * FROM memory_entries")}


def sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def independent_row_count(source: Path, scratch: Path) -> int:
    """Rows of every ordinary table of `source` (WAL replayed), read from a private copy."""
    names = [name for (name,) in read_private_copy(
        source, scratch, "SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL TABLE%'")]
    return sum(read_private_copy(source, scratch, 'SELECT count(*) FROM "{}"'.format(name.replace('"', '""')))[0][0]
               for name in names)


def write_and_run_sample(root: Path, target, home: Path) -> dict:
    """The sample tree written at `root` and consolidated by `consolidate run --json`; the run's JSON."""
    written = consolidate("sample", str(root))
    assert written.returncode == 0, written.stderr
    result = consolidate("run", str(root), "--json", target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout)


# ------------------------------------------------------------------------------- the client's tests

def new_key(label: str) -> str:
    """A key no other test uses."""
    return f"test:{label}:{uuid.uuid4().hex[:8]}"


def served_in_process(client, key: str, namespace: str) -> bool:
    """Whether a get of the entry is answered by the client's near cache."""
    hits = client.near_cache.hits
    client.get(key, namespace)
    return client.near_cache.hits == hits + 1


def write_past_the_client(target: Target, key: str, namespace: str, value) -> None:
    """A write by another connection, which no client or cache knows of (psql would do the same)."""
    with target.connect() as connection:
        connection.execute("UPDATE unified_memory SET value = %s::jsonb WHERE key = %s AND namespace = %s",
                           (json.dumps(value), key, namespace))
