"""Which PostgreSQL to use, and how to reach it.

With `--dsn` or `DATABASE_URL` that server is used. Without either, a private PostgreSQL 16 (the
`pgserver` wheel) is started with its data under the project's state folder and left running, so the
next command and an analyst's `psql "$(consolidate db url)"` find it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus, urlsplit

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DEFAULT_HOME = Path(".consolidate")
# A schema name the tool accepts: a plain PostgreSQL identifier, nothing to quote or escape anywhere
# (dbt writes it into its SQL without escaping quotes).
PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def plain_identifier_problem(name: str) -> str | None:
    """Why `name` is not a plain identifier, or None."""
    if PLAIN_IDENTIFIER.fullmatch(name):
        return None
    return (f"{name!r} is not a plain identifier: 1 to 63 ASCII letters, digits and underscores, "
            "not starting with a digit")


@dataclass(frozen=True)
class Target:
    """A PostgreSQL server and the schema the marts are built in."""

    dsn: str
    schema: str = "public"
    embedded: bool = False

    def __post_init__(self):
        problem = plain_identifier_problem(self.schema)
        if problem:
            raise ValueError(f"schema {problem}")

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.dsn, **kwargs)

    def redact(self, text: str) -> str:
        return redact_password(text, self.dsn)

    def dbt_settings(self) -> dict[str, str]:
        """The connection variables profiles/profiles.yml reads, but the password (which libpq then
        takes from PGPASSWORD or ~/.pgpass), and the DSN's other settings (sslmode, options, ...) as
        libpq's own variables (dbt_libpq_variables)."""
        server = self.resolved_server
        return {
            "CONSOLIDATE_PG_HOST": server["host"],
            "CONSOLIDATE_PG_PORT": server["port"],
            "CONSOLIDATE_PG_USER": server["user"],
            "CONSOLIDATE_PG_DBNAME": server["dbname"],
            "CONSOLIDATE_TARGET_SCHEMA": self.schema,
            **dbt_libpq_variables(self.dsn),
        }

    @functools.cached_property
    def resolved_server(self) -> dict[str, str]:
        """Host, port, user and database as libpq resolved them connecting with the DSN: a DSN may leave
        any of them to libpq's defaults (PGHOST..., the Unix socket, the OS user, a service file), and
        dbt must reach the same server as the same role. Asked once per Target."""
        with self.connect(connect_timeout=10) as connection:
            info = connection.info
            return {"host": info.host, "port": str(info.port), "user": info.user, "dbname": info.dbname}

    def dbt_environment(self) -> dict[str, str]:
        """The variables profiles/profiles.yml reads, password included: set only while dbt runs and then
        restored (the password is never left in the environment). dbt scrubs the values of
        DBT_ENV_SECRET_* variables from its logs and artifacts."""
        params = conninfo_to_dict(self.dsn)
        return {**self.dbt_settings(),
                DBT_PASSWORD_VARIABLE: params.get("password") or os.environ.get("PGPASSWORD", "")}


DBT_PASSWORD_VARIABLE = "DBT_ENV_SECRET_CONSOLIDATE_PG_PASSWORD"
# What profiles.yml carries itself; every other setting of a DSN reaches dbt as libpq's variable.
PROFILE_KEYWORDS = {"host", "port", "user", "dbname", "password"}


def dbt_libpq_variables(dsn: str) -> dict[str, str]:
    """The DSN's settings that dbt's profile has no field for (sslmode, sslrootcert, options,
    target_session_attrs, ...) as libpq's environment variables (PGSSLMODE, ...): dbt's driver is libpq
    too and takes from them every setting its profile leaves out. A setting libpq reads from no variable
    (keepalives, sslpassword) cannot reach dbt."""
    variables = {option.keyword.decode(): option.envvar.decode()
                 for option in pq.Conninfo.get_defaults() if option.envvar}
    return {variables[keyword]: str(value) for keyword, value in conninfo_to_dict(dsn).items()
            if keyword not in PROFILE_KEYWORDS and keyword in variables and value is not None}
REDACTED = "***"


def dsn_password(dsn: str) -> str | None:
    return conninfo_to_dict(dsn).get("password") or None


def dsn_without_password(dsn: str) -> str:
    """The DSN as `key=value` settings, its password left out (libpq takes it from elsewhere)."""
    params = conninfo_to_dict(dsn)
    params.pop("password", None)
    return make_conninfo(**params)


def password_forms(dsn: str) -> list[str]:
    """Every text the password of `dsn` can appear as: itself, as written in the DSN (percent-encoded
    in a URL, quoted and escaped in key=value settings), and percent-encoded the usual ways. Longest
    first, so a longer form is replaced before a shorter one inside it."""
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.Error:  # a malformed DSN: its raw forms below still count
        password = None
    forms = set()
    if password:
        forms |= {password, quote(password, safe=""), quote(password), quote_plus(password),
                  password.replace("\\", "\\\\").replace("'", "\\'")}
    if dsn.startswith(("postgres://", "postgresql://")):
        with contextlib.suppress(ValueError):
            forms.add(urlsplit(dsn).password or "")
        forms |= set(re.findall(r"[?&]password=([^&#]*)", dsn))
    else:
        forms |= {match[0] or match[1] for match in
                  re.findall(r"password\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S+))", dsn)}
    return sorted((form for form in forms if form), key=len, reverse=True)


def redact_password(text: str, dsn: str) -> str:
    """`text` with every form of the DSN's password replaced by ***."""
    for form in password_forms(dsn):
        text = text.replace(form, REDACTED)
    return text


# Set once, when the embedded server's data folder is made. `wal_level = minimal` lets a build write the
# tables it creates or replaces in one transaction (every full-build model, their indexes) without also
# writing them to the WAL; it is as crash-safe as `replica` (such a table is synced at commit), but the server
# can feed no replica and no pg_basebackup. The embedded server is the tool's own; a deployment that needs
# those runs its own server (--dsn / DATABASE_URL). A folder made by an earlier version keeps its settings.
# pg_ctl status: no server runs on the data folder (its postmaster.pid may be left from one that died)
PG_CTL_NOT_RUNNING = 3
EMBEDDED_SETTINGS = {"wal_level": "minimal", "max_wal_senders": "0"}


def embedded_dsn(home: Path) -> str:
    """Start (or find running) the private PostgreSQL kept under `home`; return its DSN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        import pgserver

    home.mkdir(parents=True, exist_ok=True)
    pgdata = home / "pgdata"
    new_server = not (pgdata / "PG_VERSION").exists()
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    # under pgserver's lock: a handle cached in this process may outlive its server (start it again), and
    # another process making the same folder at the same moment finds the settings in place
    with server._lock:
        server.ensure_postgres_running()
        if new_server:
            apply_embedded_settings(home, server)
    return server.get_uri()


def apply_embedded_settings(home: Path, server) -> None:
    """EMBEDDED_SETTINGS into a new server's postgresql.auto.conf, then a restart so they take effect."""
    with psycopg.connect(server.get_uri(), autocommit=True) as connection:
        current = dict(connection.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                                          (list(EMBEDDED_SETTINGS),)).fetchall())
        if current == EMBEDDED_SETTINGS:
            return
        for name, value in EMBEDDED_SETTINGS.items():
            connection.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    stop_embedded(home)
    server.ensure_postgres_running()


class EmbeddedServerError(RuntimeError):
    """pg_ctl could not do what was asked of the embedded server; the message has its reason."""


def stop_embedded(home: Path, mode: str = "fast") -> bool:
    """Stop the private PostgreSQL under `home` (pg_ctl's smart / fast / immediate); False when none runs.

    pg_ctl is run directly: pgserver's handle would start a server that died (its postmaster.pid left
    behind) only to stop it again."""
    pgdata = home / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        from pgserver._commands import POSTGRES_BIN_PATH

    def pg_ctl(*arguments: str) -> subprocess.CompletedProcess:
        # pg_ctl refuses root: pgserver runs the server as its own user then
        return subprocess.run([str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), *arguments],
                              user="pgserver" if os.geteuid() == 0 else None,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)

    if pg_ctl("status").returncode == PG_CTL_NOT_RUNNING:
        return False
    stopped = pg_ctl("-w", "-m", mode, "stop")
    if stopped.returncode != 0:
        reason = " ".join(stopped.stderr.split()) or f"pg_ctl exited with {stopped.returncode}"
        raise EmbeddedServerError(f"could not stop the embedded PostgreSQL in {pgdata}: {reason}")
    return True


class BadDsn(ValueError):
    """The DSN given is not a PostgreSQL connection string. The message never holds the DSN itself."""


def check_dsn(dsn: str) -> None:
    """Raise BadDsn unless libpq can read `dsn` (a URI or key=value pairs); its message shows none of it."""
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as error:
        reason = str(error).strip()
        if not reason.startswith("invalid connection option"):  # that one quotes a key, never a value
            # libpq quotes a piece of the DSN (the password, maybe): nothing from the first quote on is shown
            reason = ('a word without "=" (key=value pairs need one)' if reason.startswith('missing "=" after')
                      else reason.split('"', 1)[0].rstrip(": ") + " (the text it quotes is not shown)")
        raise BadDsn("--dsn / DATABASE_URL is not a PostgreSQL connection string "
                     f"(postgresql://user@host:port/database, or key=value pairs): {reason}") from None


def resolve_target(dsn: str | None, home: Path, schema: str = "public") -> Target:
    dsn = dsn or os.environ.get("DATABASE_URL")
    if dsn:
        check_dsn(dsn)
        return Target(dsn=dsn, schema=schema)
    return Target(dsn=embedded_dsn(home), schema=schema, embedded=True)
