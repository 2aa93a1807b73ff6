"""Run the dbt project (models and their tests, the validation phase) against the target database."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from loader.database import Target
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


def run_dbt(command: list[str], target: Target, home: Path, *, quiet: bool = False) -> BuildOutcome:
    """Invoke any dbt command (`["test", "--select", "unified_memory"]`, `["docs", "generate"]`, ...)
    in-process, against `target` (the profile reads its connection settings from the environment) with
    its artifacts and logs under `home`/dbt. `crashed` tells a dbt error (bad arguments, no connection)
    from models or tests that failed."""
    from dbt.cli.main import dbtRunner

    os.environ.update(target.dbt_environment())
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    with password_free_argv(target):
        result = dbtRunner().invoke(dbt_arguments(command, home, quiet))
    outcome = BuildOutcome(success=bool(result.success), crashed=result.exception is not None)
    for node_result in getattr(result.result, "results", None) or []:
        status = str(node_result.status)
        if status in ("error", "fail", "runtime error"):
            outcome.failures.append(f"{node_result.node.unique_id}: {node_result.message}")
        else:
            outcome.passed += 1
    if not outcome.success and not outcome.failures:
        outcome.failures.append(str(result.exception or "dbt failed; see its output above"))
    return outcome


def build(target: Target, home: Path, *, quiet: bool = False) -> BuildOutcome:
    return run_dbt(["build"], target, home, quiet=quiet)
