"""Running the real applications for the app-copy tests: n8n 1.100.1 (.ci/install-n8n) and Flowise's own
PostgreSQL migrations (.ci/install-flowise), each as its own PostgreSQL role owning only its schema
(README, "n8n and Flowise on PostgreSQL")."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from loader.database import Target

from conftest import REALDATA, REPO, fresh_database

N8N_DIR = Path(os.environ.get("N8N_INSTALL_DIR", "/opt/consolidate-n8n"))
FLOWISE_DIR = Path(os.environ.get("FLOWISE_INSTALL_DIR", "/opt/consolidate-flowise"))
N8N_KEY = "fixture-key-n8n-1"
# What real applications made (shared/apps, beside shared/realdata).
SHARED_APPS = Path(os.environ.get("CONSOLIDATE_APPS", REALDATA.parent / "apps")).resolve()
FLOWISE_MIGRATE = REPO / "tests" / "apps" / "flowise_migrate.js"
FLOWISE_READ = REPO / "tests" / "apps" / "flowise_read.js"


def require_installed(path: Path, what: str, script: str) -> Path:
    """`path`, or skip the test (fail it under CI, where .ci/run installs it)."""
    if not path.exists():
        message = f"{what} not installed at {path} (run {script})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass(frozen=True)
class AppDatabase:
    """A fresh database, a login role for the application and the schema that role owns."""

    admin: Target      # the test server's superuser, on this database (what app-copy uses)
    role: str
    password: str
    schema: str

    @property
    def host(self) -> str:
        return conninfo_to_dict(self.admin.dsn).get("host") or "127.0.0.1"

    @property
    def port(self) -> str:
        return str(conninfo_to_dict(self.admin.dsn).get("port") or 5432)

    @property
    def dbname(self) -> str:
        return conninfo_to_dict(self.admin.dsn)["dbname"]

    @property
    def role_dsn(self) -> str:
        params = conninfo_to_dict(self.admin.dsn)
        params.update(user=self.role, password=self.password)
        return make_conninfo(**params)

    def fetch(self, query: str, parameters=()) -> list[tuple]:
        with self.admin.connect() as connection:
            return connection.execute(query, parameters).fetchall()


@contextlib.contextmanager
def app_database(server_dsn: str, application: str, database_privileges: str = "CONNECT"):
    """The README's grant procedure: a role that owns only its schema, found through its search_path.
    n8n also needs CREATE on the database: its driver runs `CREATE SCHEMA IF NOT EXISTS` on every
    connection, which PostgreSQL checks against that privilege even when the schema exists."""
    role = None
    try:
        with fresh_database(server_dsn) as admin:
            dbname = conninfo_to_dict(admin.dsn)["dbname"]
            role, password = f"{application}_{dbname}", secrets.token_hex(8)
            with admin.connect(autocommit=True) as connection:
                for statement in (
                        "CREATE ROLE {role} LOGIN PASSWORD {password}",
                        "CREATE SCHEMA {schema} AUTHORIZATION {role}",
                        "ALTER ROLE {role} SET search_path = {schema}",
                        "REVOKE ALL ON DATABASE {database} FROM PUBLIC",
                        "GRANT " + database_privileges + " ON DATABASE {database} TO {role}"):
                    connection.execute(sql.SQL(statement).format(
                        role=sql.Identifier(role), password=sql.Literal(password),
                        schema=sql.Identifier(application), database=sql.Identifier(dbname)))
            yield AppDatabase(admin, role, password, application)
    finally:
        if role:
            with psycopg.connect(server_dsn, autocommit=True) as connection:
                connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def n8n(database: AppDatabase, home: Path, *arguments: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Real n8n on PostgreSQL, as the application's role."""
    binary = require_installed(N8N_DIR / "node_modules" / ".bin" / "n8n", "n8n 1.100.1", ".ci/install-n8n")
    environment = {
        "PATH": os.environ["PATH"], "HOME": str(home), "N8N_USER_FOLDER": str(home),
        "N8N_ENCRYPTION_KEY": N8N_KEY, "N8N_DIAGNOSTICS_ENABLED": "false",
        "N8N_VERSION_NOTIFICATIONS_ENABLED": "false", "N8N_TEMPLATES_ENABLED": "false",
        "DB_TYPE": "postgresdb", "DB_POSTGRESDB_HOST": database.host, "DB_POSTGRESDB_PORT": database.port,
        "DB_POSTGRESDB_DATABASE": database.dbname, "DB_POSTGRESDB_USER": database.role,
        "DB_POSTGRESDB_PASSWORD": database.password, "DB_POSTGRESDB_SCHEMA": database.schema,
    }
    return subprocess.run([str(binary), *arguments], capture_output=True, text=True, env=environment,
                          timeout=timeout, cwd=home)


def n8n_export(database: AppDatabase, home: Path, what: str, *options: str) -> list[dict]:
    output = home / f"export-{what}.json"
    result = n8n(database, home, f"export:{what}", "--all", *options, f"--output={output}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(output.read_text())


def flowise_versions() -> list[str]:
    found = sorted(path.name.removeprefix("flowise-") for path in FLOWISE_DIR.glob("flowise-*"))
    return found


def flowise_migrations(version: str, database_type: str) -> list[str]:
    """The names of the migrations a Flowise version ships for `database_type` (sqlite / postgres), in order."""
    result = subprocess.run(["node", str(FLOWISE_MIGRATE), str(FLOWISE_DIR / f"flowise-{version}"), "--list",
                             database_type], capture_output=True, text=True, timeout=120,
                            env=flowise_environment(None))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def flowise_build_schema(database: AppDatabase, version: str) -> None:
    """Flowise's own migrations of `version`, run as Flowise runs them at start, as the Flowise role."""
    require_installed(FLOWISE_DIR / f"flowise-{version}", f"Flowise {version}", ".ci/install-flowise")
    result = subprocess.run(["node", str(FLOWISE_MIGRATE), str(FLOWISE_DIR / f"flowise-{version}")],
                            capture_output=True, text=True, env=flowise_environment(database), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def flowise_environment(database: AppDatabase | None) -> dict[str, str]:
    environment = {"PATH": os.environ["PATH"], "NODE_PATH": str(FLOWISE_DIR / "node_modules"), "TZ": "UTC"}
    if database is not None:
        environment.update(DATABASE_TYPE="postgres", DATABASE_HOST=database.host, DATABASE_PORT=database.port,
                           DATABASE_NAME=database.dbname, DATABASE_USER=database.role,
                           DATABASE_PASSWORD=database.password)
    return environment


def flowise_entities(version: str, database: AppDatabase | None = None, sqlite_copy: Path | None = None) -> dict:
    """Every row of Flowise's own entities, read through typeorm as Flowise's server reads them, from
    PostgreSQL as the Flowise role, or from a (private copy of a) SQLite file."""
    where = ["sqlite", str(sqlite_copy)] if sqlite_copy else ["postgres"]
    result = subprocess.run(["node", str(FLOWISE_READ), str(FLOWISE_DIR / f"flowise-{version}"), *where],
                            capture_output=True, text=True, env=flowise_environment(database), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)
