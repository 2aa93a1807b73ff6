"""Which PostgreSQL to use, and how to reach it.

With `--dsn` or `DATABASE_URL` that server is used. Without either, a private PostgreSQL 16 (the
`pgserver` wheel) is started with its data under the project's state folder and left running, so the
next command and an analyst's `psql "$(consolidate db url)"` find it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DEFAULT_HOME = Path(".consolidate")


@dataclass(frozen=True)
class Target:
    """A PostgreSQL server and the schema the marts are built in."""

    dsn: str
    schema: str = "public"
    embedded: bool = False

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.dsn, **kwargs)

    @property
    def redacted(self) -> str:
        """The DSN as it may be shown to a person: never with its password."""
        params = conninfo_to_dict(self.dsn)
        if params.get("password"):
            params["password"] = "***"
        return make_conninfo(**params)

    def dbt_environment(self) -> dict[str, str]:
        """The variables profiles/profiles.yml reads."""
        params = conninfo_to_dict(self.dsn)
        return {
            "CONSOLIDATE_PG_HOST": params.get("host") or "localhost",
            "CONSOLIDATE_PG_PORT": str(params.get("port") or 5432),
            "CONSOLIDATE_PG_USER": params.get("user") or os.environ.get("PGUSER", "postgres"),
            "CONSOLIDATE_PG_PASSWORD": params.get("password") or os.environ.get("PGPASSWORD", ""),
            "CONSOLIDATE_PG_DBNAME": params.get("dbname") or "postgres",
            "CONSOLIDATE_TARGET_SCHEMA": self.schema,
        }


def embedded_dsn(home: Path) -> str:
    """Start (or find running) the private PostgreSQL kept under `home`; return its DSN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        import pgserver

    home.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(home / "pgdata", cleanup_mode=None)
    with server._lock:  # a handle cached in this process may outlive its server: start it again
        server.ensure_postgres_running()
    return server.get_uri()


def stop_embedded(home: Path, mode: str = "fast") -> bool:
    """Stop the private PostgreSQL under `home` (pg_ctl's smart / fast / immediate); False when there is none."""
    pgdata = home / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
        from pgserver._commands import pg_ctl

    server = pgserver.get_server(pgdata, cleanup_mode=None)
    pg_ctl(["-w", "-m", mode, "stop"], pgdata=server.pgdata, user=server.system_user)
    return True


def resolve_target(dsn: str | None, home: Path, schema: str = "public") -> Target:
    dsn = dsn or os.environ.get("DATABASE_URL")
    if dsn:
        return Target(dsn=dsn, schema=schema)
    return Target(dsn=embedded_dsn(home), schema=schema, embedded=True)
