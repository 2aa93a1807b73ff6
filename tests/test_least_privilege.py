"""A server of your own with a least-privilege role (README "Pointing it at a production server"): what
the role lacks is named before anything half-runs, in one line, exit 2, never a traceback."""

from __future__ import annotations

import json
import uuid

import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from loader.database import Target

from conftest import consolidate, fetch, v2_file


@pytest.fixture
def role(target):
    """A role that may only connect to the test's database (PUBLIC's rights on it revoked, as a production
    database would have them), and a Target that connects as it."""
    name = "least_" + uuid.uuid4().hex[:8]
    database = conninfo_to_dict(target.dsn)["dbname"]
    with target.connect() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
        admin.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(name)))
        admin.commit()
    yield name, Target(dsn=make_conninfo(target.dsn, user=name))
    with target.connect(autocommit=True) as admin:
        admin.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
    # the role goes with the cluster's other test roles: DROP ROLE needs every database's objects gone


def grant(target: Target, privilege: str, role: str) -> None:
    with target.connect(autocommit=True) as admin:
        admin.execute(sql.SQL(f"GRANT {privilege} TO {{}}").format(sql.Identifier(role)))


def test_what_the_role_lacks_is_named_in_one_line_with_exit_2(role, target, tmp_path):
    name, as_role = role
    database = conninfo_to_dict(target.dsn)["dbname"]
    tree = tmp_path / "tree"
    v2_file(tree / "app" / ".swarm" / "memory.db", [("alpha", '"a"', "default", 1_750_000_000),
                                                    ("beta", '"b"', "default", 1_750_000_001)])

    # CONNECT only: not even the ledger can be made
    for command in (("run", str(tree), "--no-backup", "--json"), ("load", str(tree), "--json")):
        result = consolidate(*command, target=as_role, home=tmp_path / "state")
        assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
        assert "Traceback" not in result.stderr and "permission denied" in result.stderr
        assert "CONNECT, CREATE and TEMPORARY on the database" in result.stderr
        assert json.loads(result.stdout)["exit_code"] == 2

    # CREATE on the database, no TEMPORARY: the files load (no key long enough to need a scratch index),
    # the build is refused before dbt starts, naming both privileges it lacks (public is not its own)
    grant(target, f"CREATE ON DATABASE {database}", name)
    result = consolidate("run", str(tree), "--no-backup", "--json", target=as_role, home=tmp_path / "state")
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for lacking in (f"GRANT TEMPORARY ON DATABASE {database} TO {name}", f"GRANT CREATE ON SCHEMA public TO {name}"):
        assert lacking in result.stderr, result.stderr[-2000:]
    assert fetch(target, "SELECT status, count(*) FROM consolidate.load_files GROUP BY status") == [("loaded", 1)]

    # with TEMPORARY, and the marts in a schema of its own: the run reconciles
    grant(target, f"TEMPORARY ON DATABASE {database}", name)
    result = consolidate("run", str(tree), "--no-backup", "--json", "--schema", "marts", target=as_role,
                         home=tmp_path / "state")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads(result.stdout)["reconciled"]
    assert fetch(target, "SELECT key FROM marts.unified_memory ORDER BY key") == [("alpha",), ("beta",)]

    # a command given the other schema names the one the marts were built in
    result = consolidate("validate", "--json", target=as_role, home=tmp_path / "state")
    assert result.returncode == 2 and "give --schema marts" in result.stderr, result.stderr[-2000:]


def test_a_mixed_case_marts_schema_the_role_may_not_create_in_is_named(role, target, tmp_path):
    name, as_role = role
    database = conninfo_to_dict(target.dsn)["dbname"]
    grant(target, f"CREATE, TEMPORARY ON DATABASE {database}", name)
    with target.connect(autocommit=True) as admin:
        admin.execute('CREATE SCHEMA "Marts"')
    result = consolidate("build", "--schema", "Marts", "--json", target=as_role, home=tmp_path / "state")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f'GRANT CREATE ON SCHEMA "Marts" TO {name}' in result.stderr, result.stderr[-2000:]
    grant(target, 'CREATE ON SCHEMA "Marts"', name)
    with target.connect(autocommit=True) as admin:  # the role may use it too, as a schema's owner would grant
        admin.execute(sql.SQL('GRANT USAGE ON SCHEMA "Marts" TO {}').format(sql.Identifier(name)))
    result = consolidate("build", "--schema", "Marts", "--json", target=as_role, home=tmp_path / "state")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
