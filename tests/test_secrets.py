"""Secrets of application databases never reach PostgreSQL in clear; the DSN password is never shown."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from conftest import consolidate, read_private_copy

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
