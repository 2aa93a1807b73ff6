"""Run the dbt project (models and their tests, the validation phase) against the target database."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
def dbt_argv(arguments: list[str]) -> Iterator[None]:
    """dbt records the process's command line (its logs, `invocation_command` in run_results.json),
    which may hold `--dsn` and its password: while dbt runs, the command line is dbt's own arguments."""
    original = sys.argv
    sys.argv = ["dbt", *arguments]
    try:
        yield
    finally:
        sys.argv = original


def run_dbt(command: str, target: Target, home: Path, *, quiet: bool = False) -> BuildOutcome:
    """Invoke dbt in-process with the connection settings of `target` (see Target.dbt_environment)."""
    from dbt.cli.main import dbtRunner

    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    arguments = dbt_arguments(command, home, quiet)
    with target.dbt_environment(), dbt_argv(arguments):
        result = dbtRunner().invoke(arguments)
    outcome = BuildOutcome(success=bool(result.success))
    for node_result in getattr(result.result, "results", None) or []:
        status = str(node_result.status)
        if status in ("error", "fail", "runtime error"):
            outcome.failures.append(target.redact(f"{node_result.node.unique_id}: {node_result.message}"))
        else:
            outcome.passed += 1
    if not outcome.success and not outcome.failures:
        outcome.failures.append(target.redact(str(result.exception or "dbt failed; see its output above")))
    return outcome


def build(target: Target, home: Path, *, quiet: bool = False) -> BuildOutcome:
    return run_dbt("build", target, home, quiet=quiet)
