"""Run the dbt project (models and their tests, the validation phase) against the target database.

A build is incremental when it can be: the memory models apply only the loads and writes that are new
since the last build (dbt_project/macros/incremental_memory.sql). It is a full refresh (everything from
raw and the write log) when asked, and when there is nothing to build on: the first build, or state left
by a version of the project without incremental memory models.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from loader import ledger
from loader.database import Target

PROJECT_DIR = Path(__file__).resolve().parents[2]
PROFILES_DIR = PROJECT_DIR / "profiles"


@dataclass
class BuildOutcome:
    success: bool
    passed: int = 0
    failures: list[str] = field(default_factory=list)
    skipped: bool = False

    def to_json(self) -> dict:
        return {"success": self.success, "passed": self.passed, "failures": self.failures, "skipped": self.skipped}


def dbt_arguments(command: str, home: Path, quiet: bool) -> list[str]:
    arguments = [
        *command.split(),
        "--project-dir", str(PROJECT_DIR),
        "--profiles-dir", str(PROFILES_DIR),
        "--target-path", str((home / "dbt" / "target").absolute()),
        "--log-path", str((home / "dbt" / "logs").absolute()),
    ]
    arguments.append("--use-colors" if sys.stdout.isatty() else "--no-use-colors")
    return arguments + (["--quiet"] if quiet else [])


@contextlib.contextmanager
def password_free_argv(target: Target):
    """dbt logs the process's command line, which may hold `--dsn` with a password: hide it."""
    password = conninfo_to_dict(target.dsn).get("password")
    original = sys.argv
    if password:
        sys.argv = [argument.replace(password, "***") for argument in original]
    try:
        yield
    finally:
        sys.argv = original


def run_dbt(command: str, target: Target, home: Path, *, quiet: bool = False) -> BuildOutcome:
    """Invoke dbt in-process with the connection settings of `target`."""
    from dbt.cli.main import dbtRunner

    os.environ.update(target.dbt_environment())
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    with password_free_argv(target):
        result = dbtRunner().invoke(dbt_arguments(command, home, quiet))
    outcome = BuildOutcome(success=bool(result.success))
    for node_result in getattr(result.result, "results", None) or []:
        status = str(node_result.status)
        if status in ("error", "fail", "runtime error"):
            outcome.failures.append(f"{node_result.node.unique_id}: {node_result.message}")
        else:
            outcome.passed += 1
    if not outcome.success and not outcome.failures:
        outcome.failures.append(str(result.exception or "dbt failed; see its output above"))
    return outcome


# What an incremental build needs from the previous one (a column only this project's models have).
INCREMENTAL_STATE = (("intermediate", "int_memory_ranked", "write_id"), (None, "unified_memory_history", "deleted"))


def can_build_incrementally(connection, schema: str) -> bool:
    """Whether the memory models hold state an incremental build can continue from: every table with
    its current shape, and ids for its entries (an emptied consolidate.entry_ids needs a full refresh)."""
    for table_schema, table, column in INCREMENTAL_STATE:
        if connection.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "AND column_name = %s", (table_schema or schema, table, column)).fetchone() is None:
            return False
    (ids_missing,) = connection.execute(
        "SELECT EXISTS (SELECT 1 FROM intermediate.int_memory_ranked) "
        "AND NOT EXISTS (SELECT 1 FROM consolidate.entry_ids)").fetchone()
    return not ids_missing


def build(target: Target, home: Path, *, quiet: bool = False, full_refresh: bool = False,
          unit_tests: bool = True) -> BuildOutcome:
    """dbt build: incremental unless `full_refresh` or there is no state to continue from. The ledger and
    the write log are created first, so a build never lacks its sources. `unit_tests=False` leaves out
    dbt's unit tests, which check the project's SQL on fixed rows, not the data (sync does, every cycle)."""
    with target.connect(autocommit=True) as connection:
        ledger.bootstrap(connection)
        full_refresh = full_refresh or not can_build_incrementally(connection, target.schema)
    command = "build --full-refresh" if full_refresh else "build"
    return run_dbt(command if unit_tests else f"{command} --exclude test_type:unit", target, home, quiet=quiet)
