"""Run the dbt project (models and their tests, the validation phase) against the target database."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

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


def build(target: Target, home: Path, *, quiet: bool = False) -> BuildOutcome:
    return run_dbt("build", target, home, quiet=quiet)
