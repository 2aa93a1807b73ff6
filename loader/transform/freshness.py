"""Whether the marts already reflect the current loads: a re-run on unchanged files skips dbt and
validation instead of redoing minutes of work to reach the same state.

A build is identified by a fingerprint of what it was built from: every file's current load, the
dbt project's own files and the marts' schema. `run` records each build with whether its tests and
its validation passed; when the fingerprint after loading equals that of a build that passed both,
the marts are current.
"""

from __future__ import annotations

import hashlib

from loader import ledger
from loader.database import Target
from loader.transform.project import PROJECT_DIR


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
        loads = ledger.current_loads_text(connection)
    return hashlib.sha256(f"{target.schema}\n{project_digest()}\n{loads}".encode()).hexdigest()


def marts_are_current(target: Target, build_fingerprint: str) -> bool:
    """True when the latest `run`'s build of the marts' schema had this fingerprint and passed its tests
    and its validation, and no dbt invocation since (`consolidate build`, `consolidate dbt`) failed, died
    or built only some of the memory models."""
    with target.connect() as connection:
        return ledger.latest_build(connection, target.schema) == (build_fingerprint, True, True) \
            and ledger.memory_models_left_whole(connection, target.schema)
