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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from loader.database import Target
from loader.load import raw_tables
from loader.transform.project import PROFILES_DIR, PROJECT_DIR


@dataclass
class BuildOutcome:
    success: bool
    passed: int = 0
    failures: list[str] = field(default_factory=list)
    skipped: bool = False
    crashed: bool = False  # dbt itself failed (bad arguments, no connection): no model or test ran to fail

    def to_json(self) -> dict:
        return {"success": self.success, "passed": self.passed, "failures": self.failures, "skipped": self.skipped,
                "crashed": self.crashed}


def dbt_arguments(command: list[str], home: Path, quiet: bool) -> list[str]:
    """`command` (a dbt command and its own arguments) pointed at the project, its profile and `home`."""
    arguments = [
        *command,
        "--project-dir", str(PROJECT_DIR),
        "--profiles-dir", str(PROFILES_DIR),
        "--target-path", str((home / "dbt" / "target").absolute()),
        "--log-path", str((home / "dbt" / "logs").absolute()),
    ]
    arguments.append("--use-colors" if sys.stdout.isatty() else "--no-use-colors")
    return arguments + (["--quiet"] if quiet else [])


@contextlib.contextmanager
def dbt_argv(arguments: list[str]) -> Iterator[None]:
    """dbt records the process's command line (its logs, `invocation_command` in run_results.json),
    which may hold `--dsn` and its password: while dbt runs, the command line is dbt's own arguments."""
    original = sys.argv
    sys.argv = ["dbt", *arguments]
    try:
        yield
    finally:
        sys.argv = original


def run_dbt(command: list[str], target: Target, home: Path, *, quiet: bool = False) -> BuildOutcome:
    """Invoke any dbt command (`["test", "--select", "unified_memory"]`, `["docs", "generate"]`, ...)
    in-process, against `target` (the profile reads its connection settings from the environment, see
    Target.dbt_environment) with its artifacts and logs under `home`/dbt. `crashed` tells a dbt error
    (bad arguments, no connection) from models or tests that failed. `quiet`: dbt prints only its
    errors, and to stderr, so stdout stays the caller's (one JSON document with --json)."""
    from dbt.cli.main import dbtRunner

    with target.connect(connect_timeout=10):  # PostgreSQL unreachable: psycopg's error, not dbt's (exit 4)
        pass

    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    arguments = dbt_arguments(command, home, quiet)
    output = contextlib.redirect_stdout(sys.stderr) if quiet else contextlib.nullcontext()
    with target.dbt_environment(), dbt_argv(arguments), output:
        result = dbtRunner().invoke(arguments)
    outcome = BuildOutcome(success=bool(result.success), crashed=result.exception is not None)
    for node_result in getattr(result.result, "results", None) or []:
        status = str(node_result.status)
        if status in ("error", "fail", "runtime error"):
            outcome.failures.append(target.redact(f"{node_result.node.unique_id}: {node_result.message}"))
        else:
            outcome.passed += 1
    if not outcome.success and not outcome.failures:
        outcome.failures.append(target.redact(str(result.exception or "dbt failed; see its output above")))
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
        raw_tables.bootstrap(connection)
        full_refresh = full_refresh or not can_build_incrementally(connection, target.schema)
    command = ["build", "--full-refresh"] if full_refresh else ["build"]
    return run_dbt(command if unit_tests else [*command, "--exclude", "test_type:unit"], target, home, quiet=quiet)
