"""Secrets of application databases never reach PostgreSQL in clear; the DSN password is never shown."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from loader.database import Target
from loader.exit_codes import ExitCode

from conftest import AMBIENT_SETTINGS, REPO, RedisServer, consolidate, make_db, read_private_copy

SECRET_COLUMNS = {  # the documented default policy: (database, table, column)
    ("n8n", "credentials_entity", "data"), ("n8n", "user", "password"),
    ("flowise", "credential", "encryptedData"), ("flowise", "apikey", "apiKey"), ("flowise", "apikey", "apiSecret"),
}


@pytest.fixture(scope="module")
def sample_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("secrets") / "tree"
    assert consolidate("sample", str(root)).returncode == 0
    return root


def secret_values(tree: Path, scratch: Path) -> dict[tuple[str, str, str], list[str]]:
    values = {}
    for app, table, column in SECRET_COLUMNS:
        (database,) = tree.rglob(f"data/{app}/database.sqlite")
        rows = read_private_copy(database, scratch, f'SELECT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL')
        values[(app, table, column)] = [value for (value,) in rows]
    return values


def every_text_in_the_database(target) -> str:
    with target.connect() as connection:
        tables = connection.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')").fetchall()
        return "\n".join(
            row[0] for schema, table in tables
            for row in connection.execute(f'SELECT t::text FROM "{schema}"."{table}" AS t').fetchall())


def test_secret_columns_are_stored_only_as_keyed_hashes(sample_tree, target, home, tmp_path):
    password = "pw-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]
    params = conninfo_to_dict(target.dsn)
    params["password"] = password
    result = consolidate("run", str(sample_tree), "--dsn", make_conninfo(**params), "--home", str(home))
    assert result.returncode == 0, result.stderr[-2000:]

    secrets = secret_values(sample_tree, tmp_path / "scratch")
    assert all(secrets.values()), "the sample must hold a value in every secret column"
    stored = every_text_in_the_database(target)
    for values in secrets.values():
        for value in values:
            assert value not in stored

    key = (home / "secret.key").read_text().strip().encode()
    with target.connect() as connection:
        (hashed,) = connection.execute('SELECT "password" FROM raw_n8n."user" LIMIT 1').fetchone()
    expected = {"hmac-sha256:" + hmac.new(key, v.encode(), hashlib.sha256).hexdigest()
                for v in secrets[("n8n", "user", "password")]}
    assert hashed in expected

    logs = "".join(p.read_text(errors="replace") for p in home.rglob("*.log"))
    assert password not in result.stdout + result.stderr + logs


def test_policy_file_can_exclude_a_column(sample_tree, target, home, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('[secrets]\n"n8n.credentials_entity.data" = "exclude"\n')
    result = consolidate("run", str(sample_tree), "--no-backup", "--secrets", str(policy), target=target, home=home)
    assert result.returncode == 0, result.stderr[-2000:]
    with target.connect() as connection:
        values = connection.execute("SELECT data FROM raw_n8n.credentials_entity").fetchall()
    assert values and all(value is None for (value,) in values)


def test_bad_policy_file_is_a_usage_error(sample_tree, target, home, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('[secrets]\n"n8n.credentials_entity.data" = "encrypt"\n')
    result = consolidate("load", str(sample_tree), "--secrets", str(policy), target=target, home=home)
    assert result.returncode == 2
    assert "n8n.credentials_entity.data" in result.stderr


# ------------------------------------------------------------------ marker secrets in real app files

# Every secret-bearing column of the real n8n and Flowise schemas (issue 9), planted with a marker.
HASHED_COLUMNS = [
    ("user_api_keys", "apiKey"), ("variables", "value"), ("invalid_auth_token", "token"),
    ("credentials_entity", "data"), ("user", "password"), ("user", "apiKey"), ("user", "mfaSecret"),
    ("user", "mfaRecoveryCodes"),
    ("credential", "encryptedData"), ("apikey", "apiKey"), ("apikey", "apiSecret"), ("user", "credential"),
    ("user", "tempToken"), ("variable", "value"), ("login_sessions", "sid"),
]
# Columns holding JSON: a marker under a secret key and one in a Bearer header, beside a key that must survive.
JSON_COLUMNS = [
    ("event_destinations", "destination"), ("workflow_entity", "nodes"), ("workflow_history", "nodes"),
    ("execution_data", "workflowData"), ("login_method", "config"), ("login_sessions", "sess"),
    ("chat_flow", "flowData"), ("assistant", "details"),
]
N8N_SETTINGS = {"features.ldap": "bindingAdminPassword", "features.oidc": "clientSecret",
                "features.sourceControl.sshKeys": "encryptedPrivateKey"}


class Planter:
    """Plants distinct marker secrets in a private copy, remembering what a correct load must show."""

    def __init__(self):
        self.markers: list[str] = []
        self.hashed: list[tuple[str, str, str, str]] = []    # (file, table, column, marker)
        self.json: list[tuple[str, str, str, dict]] = []      # (file, table, column, expected fields)
        self.flatted: list[tuple[str, str, str]] = []         # (file, marker under a key, bearer marker)

    def marker(self) -> str:
        self.markers.append(f"MRK{len(self.markers):04d}x{uuid.uuid4().hex[:10]}")
        return self.markers[-1]

    @staticmethod
    def columns(connection: sqlite3.Connection, table: str) -> list[tuple]:
        return connection.execute(f'SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(\'{table}\')').fetchall()

    def put(self, connection: sqlite3.Connection, table: str, column: str, value: str, where: str | None = None) -> None:
        """Write `value` into `column` of the table's first row (or the row `where` names), adding a
        row with placeholder values first when there is none."""
        condition = where or f'rowid = (SELECT min(rowid) FROM "{table}")'
        if connection.execute(f'SELECT count(*) FROM "{table}" WHERE {condition}').fetchone()[0] == 0:
            needed = [(name, kind) for name, kind, not_null, default, pk in self.columns(connection, table)
                      if (not_null or pk) and default is None and name != column]
            values = [("2025-01-01 00:00:00.000" if "date" in kind.lower() or "time" in kind.lower()
                       else 0 if any(t in kind.lower() for t in ("int", "bool")) else f"placeholder-{uuid.uuid4().hex[:8]}")
                      for _, kind in needed]
            names = ", ".join(f'"{name}"' for name, _ in needed + [(column, "")])
            connection.execute(f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" * (len(values) + 1))})',
                               [*values, value])
            return
        connection.execute(f'UPDATE "{table}" SET "{column}" = ? WHERE {condition}', [value])

    def plant(self, database: Path, label: str) -> None:
        connection = sqlite3.connect(database)
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

        def has(table: str, column: str) -> bool:
            return table in tables and column in [c[0] for c in self.columns(connection, table)]

        for table, column in HASHED_COLUMNS:
            if has(table, column):
                marker = self.marker()
                self.put(connection, table, column, marker)
                self.hashed.append((label, table, column, marker))
        for table, column in JSON_COLUMNS:
            if has(table, column):
                secret, bearer, visible = self.marker(), self.marker(), f"visible-{uuid.uuid4().hex[:8]}"
                header = {"name": "Authorization", "value": f"Bearer {bearer}"}
                document = {"keep_me": visible, "clientSecret": secret,
                            "headerParameters": {"parameters": [header]}}
                self.put(connection, table, column, json.dumps([document] if column == "nodes" else document))
                self.json.append((label, table, column, {"keep_me": visible, "clientSecret": secret,
                                                         "header": f"Bearer {bearer}"}))
        if has("execution_data", "data"):  # n8n's flatted format: strings referred to by index
            secret, bearer = self.marker(), self.marker()
            flatted = [{"resultData": "1"}, {"password": "2", "headers": "3", "note": "5"}, secret,
                       {"authorization": "4"}, f"Bearer {bearer}", "kept note"]
            self.put(connection, "execution_data", "data", json.dumps(flatted))
            self.flatted.append((label, secret, bearer))
        if has("settings", "value"):
            for key, field_name in N8N_SETTINGS.items():
                secret = self.marker()
                row = connection.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
                document = {**(json.loads(row[0]) if row else {}), field_name: secret, "keep_me": key}
                if row:
                    connection.execute("UPDATE settings SET value = ? WHERE key = ?", [json.dumps(document), key])
                else:
                    connection.execute("INSERT INTO settings (key, value, loadOnStartup) VALUES (?, ?, 1)",
                                       [key, json.dumps(document)])
                self.json.append((label, "settings", "value", {"keep_me": key, field_name: secret}))
        connection.commit()
        connection.close()


def private_app_copy(source: Path, destination: Path) -> Path:
    destination.mkdir(parents=True)
    for side in ("", "-wal", "-journal"):
        if source.with_name(source.name + side).exists():
            shutil.copyfile(source.with_name(source.name + side), destination / ("database.sqlite" + side))
    return destination / "database.sqlite"


@pytest.fixture(scope="module")
def planted_tree(realdata, tmp_path_factory):
    """Private copies of every real n8n / Flowise file, one more Flowise copy without its chat tables
    (so it is classified `other`), each with a distinct marker in every secret-bearing column."""
    root = tmp_path_factory.mktemp("planted") / "tree"
    planter = Planter()
    sources = {f"{app}-{folder.name}": folder / "database.sqlite"
               for app in ("n8n", "flowise") for folder in sorted((realdata / app).iterdir())}
    apps = realdata.parent / "apps" / "n8n-1.100.1" / "database.sqlite"
    if apps.exists():
        sources["n8n-1.100.1"] = apps
    for label, source in sources.items():
        copy = private_app_copy(source, root / label)
        if label == "n8n-1.100.1":  # n8n before 1.0 kept API keys on the user row
            sqlite3.connect(copy).execute('ALTER TABLE "user" ADD COLUMN "apiKey" TEXT').connection.close()
        planter.plant(copy, label)
    flowise = next(source for label, source in sources.items() if label.startswith("flowise")
                   and "login_sessions" in str(read_private_copy(source, root.parent / "probe",
                                                                  "SELECT group_concat(name) FROM sqlite_master")))
    copy = private_app_copy(flowise, root / "flowise-without-chats")
    connection = sqlite3.connect(copy)
    for table in ("chat_flow", "chat_message", "chat_message_feedback"):
        connection.execute(f"DROP TABLE {table}")
    connection.commit()
    connection.close()
    planter.plant(copy, "flowise-without-chats")
    return root, planter


def relation_texts(target) -> str:
    """Every row of every table and view of every schema (the ledger included), as text."""
    with target.connect() as connection:
        relations = connection.execute(
            "SELECT n.nspname, c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'v', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%'").fetchall()
        return "\n".join(row[0] for schema, name in relations
                         for row in connection.execute(
                             sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier(schema, name))).fetchall())


def files_text(folder: Path, skip: tuple[str, ...]) -> str:
    return "\n".join(path.read_text(errors="replace") for path in folder.rglob("*")
                     if path.is_file() and not any(part in skip for part in path.relative_to(folder).parts))


def keyed(key: bytes, text: str) -> str:
    return "hmac-sha256:" + hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def test_no_planted_secret_reaches_postgresql_logs_or_output(planted_tree, target, home):
    root, planter = planted_tree
    result = consolidate("run", str(root), target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert {table for _, table, _, _ in planter.hashed} >= {t for t, _ in HASHED_COLUMNS}, "every column planted"
    assert {table for _, table, _, _ in planter.json} >= {t for t, _ in JSON_COLUMNS} | {"settings"}

    everything = "\n".join([relation_texts(target), result.stdout, result.stderr,
                            files_text(home, skip=("pgdata", "backups", "secret.key"))])
    leaked = [marker for marker in planter.markers if marker in everything]
    assert not leaked, f"{len(leaked)} of {len(planter.markers)} planted secrets in clear: {leaked[:5]}"

    key = (home / "secret.key").read_text().strip().encode()
    with target.connect() as connection:
        kinds = dict(connection.execute("SELECT source_path, kind FROM consolidate.current_loads").fetchall())
        assert kinds[str(root / "flowise-without-chats" / "database.sqlite")] == "other"

        def raw_values(label: str, table: str, column: str) -> list[str]:
            path = str(root / label / "database.sqlite")
            schema = {"n8n": "raw_n8n", "flowise": "raw_flowise", "other": "raw_other"}[kinds[path]]
            return [value for (value,) in connection.execute(
                sql.SQL("SELECT {} FROM {} WHERE _source_path = %s").format(
                    sql.Identifier(column), sql.Identifier(schema, table)), [path])]

        for label, table, column, marker in planter.hashed:
            assert keyed(key, marker) in raw_values(label, table, column), (label, table, column)
        for label, table, column, expected in planter.json:
            documents = [json.loads(value) for value in raw_values(label, table, column) if expected["keep_me"] in value]
            assert len(documents) == 1, (label, table, column)
            document = documents[0][0] if isinstance(documents[0], list) else documents[0]
            assert document["keep_me"] == expected["keep_me"]  # what is not secret survives unchanged
            for name, value in expected.items():
                if name == "header":
                    assert document["headerParameters"]["parameters"][0] == {"name": "Authorization",
                                                                             "value": keyed(key, value)}
                elif name != "keep_me":
                    assert document[name] == keyed(key, value), (label, table, column, name)
        assert planter.flatted
        for label, secret, bearer in planter.flatted:  # hashed in place: every index still points right
            (flatted,) = [json.loads(v) for v in raw_values(label, "execution_data", "data") if "kept note" in v]
            assert flatted == [{"resultData": "1"}, {"password": "2", "headers": "3", "note": "5"},
                               keyed(key, secret), {"authorization": "4"}, keyed(key, f"Bearer {bearer}"),
                               "kept note"]
        (policy, digest), = connection.execute(
            "SELECT secret_policy, secret_policy_digest FROM consolidate.loads").fetchall()
    assert {"n8n.user_api_keys.apiKey", "flowise.login_method.config"} <= set(policy["rules"])
    assert digest == hashlib.sha256(json.dumps(policy, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert "hmac-sha256" not in json.dumps(policy) and key.decode() not in json.dumps(policy)


# ------------------------------------------------------------------------------ injection and leaks

def test_a_schema_that_is_not_a_plain_identifier_is_refused_before_anything_runs(sample_tree, target, home):
    injected = 'm"; create table public.pwned(i int); --'
    result = consolidate("run", str(sample_tree), "--no-backup", "--schema", injected, target=target, home=home)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "plain identifier" in result.stderr
    with target.connect() as connection:
        assert connection.execute("SELECT to_regclass('public.pwned'), to_regclass('consolidate.loads')").fetchone() \
            == (None, None)


PASSWORD_ROLE = "consolidate_pw"


@pytest.fixture(scope="module")
def password_protected(tmp_path_factory):
    """A PostgreSQL of its own where one role must give its password (scram-sha-256 on the socket and
    on TCP), a password holding '@' and '%', and a database that role owns. Yields (URL, password)."""
    from loader.database import embedded_dsn, stop_embedded
    home = tmp_path_factory.mktemp("password-pg")
    admin_dsn = embedded_dsn(home)
    hba = home / "pgdata" / "pg_hba.conf"
    hba.write_text(f"local all {PASSWORD_ROLE} scram-sha-256\nhost all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
                   + hba.read_text())
    password = f"Pw@{uuid.uuid4().hex[:8]}%Secret"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(PASSWORD_ROLE),
                                                                         sql.Literal(password)))
        admin.execute(sql.SQL("CREATE DATABASE consolidate_pw OWNER {}").format(sql.Identifier(PASSWORD_ROLE)))
        admin.execute("SELECT pg_reload_conf()")
    socket_folder = conninfo_to_dict(admin_dsn)["host"]
    url = f"postgresql://{PASSWORD_ROLE}:{quote(password, safe='')}@/consolidate_pw?host={socket_folder}"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url.replace(quote(password, safe=""), "wrong")).close()
    yield url, password, admin_dsn
    stop_embedded(home)


def forms_of(password: str) -> set[str]:
    """The password decoded, percent-encoded, and its distinctive part."""
    return {password, quote(password, safe=""), quote(password), password.split("@")[1].split("%")[0]}


def shown(forms: set[str], text: str) -> list[str]:
    return [form for form in forms if form in text]


@pytest.fixture(scope="module")
def loaded_with_password(password_protected, sample_tree, tmp_path_factory):
    url, _, _ = password_protected
    home = tmp_path_factory.mktemp("password-home")
    result = consolidate("run", str(sample_tree), "--no-backup", "--dsn", url, "--home", str(home))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, home


def test_a_percent_encoded_password_appears_in_no_log_artifact_output_or_table(password_protected,
                                                                            loaded_with_password):
    url, password, admin_dsn = password_protected
    result, home = loaded_with_password
    artifacts = files_text(home, skip=("secret.key",))
    assert (home / "dbt" / "target" / "run_results.json").exists() and list((home / "dbt" / "logs").iterdir())
    stored = relation_texts(Target(dsn=admin_dsn.replace("/postgres?", "/consolidate_pw?")))
    assert not shown(forms_of(password), result.stdout + result.stderr + artifacts + stored)
    with psycopg.connect(url) as connection:  # every file went the direct way: DuckDB attached with the password
        assert connection.execute("SELECT count(*) FROM consolidate.load_tables WHERE notes LIKE '%attach%'").fetchone() == (0,)


def test_dbt_gets_the_password_only_while_it_runs(password_protected, loaded_with_password):
    from loader.transform.build import build
    url, password, _ = password_protected
    _, home = loaded_with_password
    outcome = build(Target(dsn=url), home, quiet=True)
    assert outcome.success, outcome.failures
    assert not [name for name, value in os.environ.items() if shown(forms_of(password), value)]
    assert "CONSOLIDATE_PG_PASSWORD" not in os.environ


def test_a_failed_attach_leaves_no_password_in_the_ledger_or_the_output(password_protected, sample_tree, tmp_path):
    """The role may open two sessions: the load's and its worker's; DuckDB's attach is refused, so the
    file goes through CSV and the ledger says why."""
    url, password, admin_dsn = password_protected
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 2").format(sql.Identifier(PASSWORD_ROLE)))
    try:
        result = consolidate("load", str(sample_tree), "--force", "--jobs", "1", "--dsn", url,
                             "--home", str(tmp_path / "state"))
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT -1").format(sql.Identifier(PASSWORD_ROLE)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with psycopg.connect(url) as connection:
        notes = [note for (note,) in connection.execute(
            "SELECT notes FROM consolidate.load_tables WHERE notes LIKE '%could not attach%'").fetchall()]
    assert notes and "too many connections" in notes[0]
    assert not shown(forms_of(password), "\n".join(notes) + result.stdout + result.stderr)


def test_an_attach_error_never_quotes_the_password_in_any_form(password_protected):
    from loader.load.duckdb_postgres import AttachFailed, attach_postgres
    from loader.sources.sqlite_reader import duckdb_session
    url, password, _ = password_protected
    duck = duckdb_session()
    with pytest.raises(AttachFailed) as failure:
        attach_postgres(duck, url.replace("/consolidate_pw?", "/no_such_database?"))
    duck.close()
    assert "no_such_database" in str(failure.value)
    assert not shown(forms_of(password), str(failure.value))


def test_a_dsn_that_cannot_be_used_is_reported_without_the_password(password_protected, sample_tree, tmp_path):
    """A database that does not exist or a wrong password is the DSN's fault (exit 2, not 'unavailable');
    a server away is exit 4; a DSN libpq cannot read is exit 2. Never a traceback, never the password."""
    url, password, _ = password_protected
    state = str(tmp_path / "state")
    missing = consolidate("load", str(sample_tree), "--dsn", url.replace("/consolidate_pw?", "/no_such_database?"),
                          "--home", state)
    assert missing.returncode == 2 and "no_such_database" in missing.stderr
    assert "refused the connection" in missing.stderr and "once the server is back" not in missing.stderr
    wrong = consolidate("status", "--dsn", url.replace(quote(password, safe=""), "wrong"), "--home", state)
    assert wrong.returncode == 2 and "password authentication failed" in wrong.stderr
    away = consolidate("status", "--dsn", f"postgresql://{PASSWORD_ROLE}:{quote(password, safe='')}@127.0.0.1:1/x",
                       "--home", state)
    assert away.returncode == 4 and "PostgreSQL unavailable" in away.stderr
    for unreadable in (f"mysql://{PASSWORD_ROLE}:{password}@db/x", f"host=db password={password} bogus=1",
                       # pasted raw into a URL (libpq quotes the bad token: the password), or unquoted
                       f"postgresql://{PASSWORD_ROLE}:{password}@db/x", f"host=db password={password} and more"):
        bad = consolidate("status", "--dsn", unreadable, "--home", state)
        assert bad.returncode == 2 and "not a PostgreSQL connection string" in bad.stderr, bad.stderr[-2000:]
        assert "Traceback" not in bad.stderr and not shown(forms_of(password), bad.stdout + bad.stderr)
    for result in (missing, wrong, away):
        assert "Traceback" not in result.stderr
        assert not shown(forms_of(password), result.stdout + result.stderr)
    # with --json, a machine gets the same as a document on stdout (and still never the password)
    for args, code, words in ((["status", "--dsn", url.replace(quote(password, safe=""), "wrong")], 2,
                               "password authentication failed"),
                              (["status", "--dsn", f"host=db password={password} bogus=1"], 2,
                               "not a PostgreSQL connection string"),
                              (["validate", "--dsn", f"postgresql://{PASSWORD_ROLE}:x@127.0.0.1:1/x"], 4,
                               "PostgreSQL unavailable")):
        result = consolidate(*args, "--home", state, "--json")
        document = json.loads(result.stdout)
        assert result.returncode == code and document["exit_code"] == code and words in document["error"]
        assert not shown(forms_of(password), result.stdout + result.stderr)


# ---------------------------------------------------------------------------------------- Redis

@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory):
    """A private redis-server that requires a password holding '@' and '%'. Yields (port, password)."""
    server = RedisServer(tmp_path_factory.mktemp("redis-pw"), password=f"R3d@{uuid.uuid4().hex[:8]}%pw")
    server.start()
    yield server.port, server.password
    server.stop()


@pytest.mark.parametrize("shape", ["query", "userinfo"])
def test_cache_commands_never_print_the_redis_password(redis_with_password, shape, tmp_path):
    port, password = redis_with_password
    encoded = quote(password, safe="")
    url = {"query": f"redis://127.0.0.1:{port}/0?password={encoded}",
           "userinfo": f"redis://:{encoded}@127.0.0.1:{port}/0"}[shape]
    wrong = url.replace(encoded, quote(password + "-wrong", safe=""))
    forms = {password, encoded, password.split("@")[1].split("%")[0]}

    stats = consolidate("cache", "stats", "--json", "--redis-url", url)
    assert stats.returncode == 0, stats.stderr  # connected: the password reached Redis
    assert json.loads(stats.stdout)["connected"] is True and "***" in json.loads(stats.stdout)["url"]
    refused = consolidate("cache", "stats", "--json", "--redis-url", wrong)
    warm = consolidate("cache", "warm", "--redis-url", wrong, "--home", str(tmp_path / "state"))
    warm_json = consolidate("cache", "warm", "--json", "--redis-url", wrong, "--home", str(tmp_path / "state"))
    assert (refused.returncode, warm.returncode, warm_json.returncode) == (ExitCode.CACHE_UNAVAILABLE,) * 3
    assert json.loads(refused.stdout)["connected"] is False
    # every --json document carries the code the command exits with (README), an error's its reason too
    assert (json.loads(stats.stdout)["exit_code"], json.loads(refused.stdout)["exit_code"]) == (0, ExitCode.CACHE_UNAVAILABLE)
    warmed = json.loads(warm_json.stdout)
    assert warmed["exit_code"] == ExitCode.CACHE_UNAVAILABLE and "cannot be reached" in warmed["error"]
    outputs = "".join(r.stdout + r.stderr for r in (stats, refused, warm, warm_json))
    assert not shown(forms, outputs)


def test_the_unreachable_cache_warning_never_shows_the_password(redis_with_password, caplog):
    from loader.serve.cache import Cache
    port, password = redis_with_password
    encoded = quote(password + "-wrong", safe="")
    cache = Cache(f"redis://127.0.0.1:{port}/0?password={encoded}")
    with caplog.at_level(logging.WARNING, logger="loader.serve.cache"):
        assert cache.lookup("ns", "key") is None
    cache.close()
    assert "unreachable" in caplog.text
    assert not shown({password, encoded, password.split("@")[1].split("%")[0]}, caplog.text)


def test_the_python_reader_hashes_and_scrubs_like_duckdb(target, home, tmp_path):
    """A BLOB sends the table to the Python reader, and bytes that are not UTF-8 a hashed value too:
    the stored values are those of the documented rules, computed here."""
    secret, bearer = uuid.uuid4().hex, uuid.uuid4().hex
    config = json.dumps({"clientID": "visible-id", "clientSecret": secret,
                         "headers": [{"name": "Authorization", "value": f"Bearer {bearer}"}]})
    make_db(tmp_path / "tree" / "flowise-auth.sqlite",
            "CREATE TABLE login_method (id TEXT, name TEXT, config TEXT, icon BLOB)",
            ("INSERT INTO login_method VALUES (?, ?, ?, ?)",
             [("1", "azure", config, b"\x89PNG\x00"), ("2", "plain", "not json " + secret, None)]),
            "CREATE TABLE variable (id TEXT, value TEXT)",
            ("INSERT INTO variable VALUES (?, CAST(? AS TEXT))", [("1", b"\xffsecret-" + secret.encode())]))
    result = consolidate("run", str(tmp_path / "tree"), "--no-backup", target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    key = (home / "secret.key").read_text().strip().encode()
    with target.connect() as connection:
        readers = dict(connection.execute("SELECT source_table, reader FROM consolidate.load_tables").fetchall())
        configs = connection.execute("SELECT config FROM raw_other.login_method ORDER BY id").fetchall()
        (variable,) = connection.execute("SELECT value FROM raw_other.variable").fetchone()
    assert readers == {"login_method": "python-fallback", "variable": "python-fallback"}
    assert json.loads(configs[0][0]) == {"clientID": "visible-id", "clientSecret": keyed(key, secret),
                                         "headers": [{"name": "Authorization", "value": keyed(key, f"Bearer {bearer}")}]}
    assert configs[1][0] == keyed(key, "not json " + secret)  # not JSON: hashed whole
    assert variable == "hmac-sha256:" + hmac.new(key, b"\xffsecret-" + secret.encode(), hashlib.sha256).hexdigest()


def test_the_password_can_come_from_pgpassword_or_pgpass(password_protected, tmp_path):
    """README: `DATABASE_URL` without its password, the password in PGPASSWORD or ~/.pgpass. The load,
    DuckDB's attach and dbt all connect; a run without the password is refused with exit 2."""
    _, password, admin_dsn = password_protected
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE consolidate_pw_files OWNER {}").format(sql.Identifier(PASSWORD_ROLE)))
    socket_folder = conninfo_to_dict(admin_dsn)["host"]
    without_password = f"postgresql://{PASSWORD_ROLE}@/consolidate_pw_files?host={socket_folder}"
    tree = tmp_path / "tree"
    make_db(tree / "memory.db", "CREATE TABLE memory_entries (key TEXT, value TEXT, namespace TEXT, "
            "created_at INTEGER, updated_at INTEGER, accessed_at INTEGER, access_count INTEGER, ttl INTEGER, "
            "expires_at INTEGER, metadata TEXT, id INTEGER PRIMARY KEY)",
            ("INSERT INTO memory_entries (key, value, namespace, updated_at) VALUES (?, ?, 'default', ?)",
             [("alpha", '"a"', 1_750_000_000), ("beta", '"b"', 1_750_000_001)]))
    environment = {k: v for k, v in os.environ.items() if k not in (*AMBIENT_SETTINGS, "PGPASSWORD", "PGPASSFILE")}
    user_home = tmp_path / "user"
    user_home.mkdir()
    environment["HOME"] = str(user_home)

    def run(*extra: str, **variables: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "loader", "run", str(tree), "--no-backup", "--json",
                   "--dsn", without_password, "--home", str(tmp_path / "state"), *extra]
        return subprocess.run(command, capture_output=True, text=True, env={**environment, **variables}, timeout=600)

    refused = run()
    assert refused.returncode == 2 and "no password supplied" in refused.stderr, refused.stderr[-2000:]

    with_variable = run(PGPASSWORD=password)
    assert with_variable.returncode == 0, with_variable.stdout[-2000:] + with_variable.stderr[-2000:]
    assert json.loads(with_variable.stdout)["reconciled"]

    pgpass = user_home / ".pgpass"
    pgpass.write_text(f"*:*:consolidate_pw_files:{PASSWORD_ROLE}:{password}\n")
    pgpass.chmod(0o600)
    with_file = run("--rebuild")  # build and validate again: dbt must connect through ~/.pgpass too
    assert with_file.returncode == 0, with_file.stdout[-2000:] + with_file.stderr[-2000:]
    report = json.loads(with_file.stdout)
    assert report["reconciled"] and not report["build"]["skipped"] and report["validation"]["passed"]
    for result in (refused, with_variable, with_file):
        assert not shown(forms_of(password), result.stdout + result.stderr)

    # plain dbt with the checkout's profile (README "Driving dbt"): the password from PGPASSWORD, else ~/.pgpass
    dbt_environment = {**environment, "CONSOLIDATE_PG_HOST": socket_folder, "CONSOLIDATE_PG_USER": PASSWORD_ROLE,
                       "CONSOLIDATE_PG_DBNAME": "consolidate_pw_files",
                       "CONSOLIDATE_PG_PORT": conninfo_to_dict(admin_dsn).get("port", "5432"), "DBT_LOG_PATH": str(tmp_path / "dbt-logs"),
                       "DBT_TARGET_PATH": str(tmp_path / "dbt-target")}

    def dbt_debug(**variables: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(Path(sys.executable).with_name("dbt")), "debug", "--no-use-colors", "--profiles-dir", "profiles"],
                              cwd=REPO, capture_output=True, text=True, env={**dbt_environment, **variables}, timeout=300)

    with_file = dbt_debug()
    pgpass.unlink()
    with_variable, without = dbt_debug(PGPASSWORD=password), dbt_debug()
    for connected in (with_file, with_variable):
        assert connected.returncode == 0 and "Connection test: [OK" in connected.stdout, connected.stdout[-2000:]
    assert without.returncode != 0 and "no password supplied" in without.stdout, without.stdout[-2000:]
