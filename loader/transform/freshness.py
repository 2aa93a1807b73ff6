"""Whether the marts already reflect the current loads: a re-run on unchanged files skips dbt and
validation instead of redoing minutes of work to reach the same state.

A build is identified by a fingerprint of what it was built from: every file's current load, the
dbt project's own files and the marts' schema. `run` records each build with whether its tests and
its validation passed; when the fingerprint after loading equals that of a build that passed both,
the marts are current.
"""

from __future__ import annotations

import hashlib

from psycopg import sql

from loader.transform.build import PROJECT_DIR
from loader.database import Target
from loader.load.raw_contract import LEDGER_SCHEMA

BUILDS_DDL = f"""
CREATE TABLE IF NOT EXISTS {LEDGER_SCHEMA}.builds (
    built_at          timestamptz NOT NULL DEFAULT now(),
    marts_schema      text NOT NULL,
    fingerprint       text NOT NULL,
    build_passed      boolean NOT NULL,
    validation_passed boolean
)
"""

CURRENT_LOADS = f"""
SELECT coalesce(string_agg(load_id || ' ' || source_path, E'\\n' ORDER BY source_path), '')
FROM {LEDGER_SCHEMA}.current_loads
"""


def project_digest() -> str:
    """The dbt project's files: a change to a model makes every earlier build stale."""
    digest = hashlib.sha256()
    files = [PROJECT_DIR / "dbt_project.yml", *sorted((PROJECT_DIR / "dbt_project").rglob("*"))]
    for path in files:
        if path.is_file():
            digest.update(path.relative_to(PROJECT_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def fingerprint(target: Target) -> str:
    with target.connect() as connection:
        (loads,) = connection.execute(CURRENT_LOADS).fetchone()
    return hashlib.sha256(f"{target.schema}\n{project_digest()}\n{loads}".encode()).hexdigest()


def record_build(target: Target, build_fingerprint: str, build_passed: bool, validation_passed: bool | None) -> None:
    with target.connect() as connection:
        connection.execute(BUILDS_DDL)
        connection.execute(
            sql.SQL("INSERT INTO {}.builds (marts_schema, fingerprint, build_passed, validation_passed) "
                    "VALUES (%s, %s, %s, %s)").format(sql.Identifier(LEDGER_SCHEMA)),
            (target.schema, build_fingerprint, build_passed, validation_passed))


def marts_are_current(target: Target, build_fingerprint: str) -> bool:
    """True when the latest build of the marts' schema had this fingerprint and passed its tests and
    its validation."""
    with target.connect() as connection:
        connection.execute(BUILDS_DDL)
        row = connection.execute(
            sql.SQL("SELECT fingerprint, build_passed, validation_passed FROM {}.builds "
                    "WHERE marts_schema = %s ORDER BY built_at DESC LIMIT 1").format(sql.Identifier(LEDGER_SCHEMA)),
            (target.schema,)).fetchone()
    return row == (build_fingerprint, True, True)
