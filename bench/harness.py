"""Run one `consolidate` command in this process with a timer around each of its phases.

    python -m bench.harness --result FILE [--profile FILE.pstats] -- load ROOT --dsn DSN --home HOME
    python -m bench.harness --result FILE -- run ROOT --dsn DSN --home HOME --no-backup

The command is the real one (`loader.cli.commands.app`, the code path a user runs); the harness only wraps the
library calls it makes, so a phase's time is the time of that call:

    backup    loader.backup.backup.backup (copies, hashes, verifies the files discovered)
    discover  loader.sources.discover.discover
    load      loader.load.load.load (the loader: private copies, checksums, DuckDB → PostgreSQL, ledger)
    build     loader.transform.build.build (dbt build: models and tests)
    reconcile loader.verify.reconciliation.summarize
    validate  loader.verify.validate.validate
    detect changes  loader.operate.change_detection.detect_pending (sync only)
    imports   importing loader.cli (typer, rich, duckdb, psycopg, ...)

FILE gets {"exit_code", "phases": {name: seconds}, "wall": seconds in process, "statuses": {...}}.
A wrapped name that the CLI no longer has is reported under "missing" instead of failing the run.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import time
from pathlib import Path


def wrap(owner, name: str, phase: str, phases: dict[str, float], missing: list[str], keep=None) -> None:
    original = getattr(owner, name, None)
    if original is None:
        missing.append(f"{owner.__name__}.{name}")
        return

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            result = original(*args, **kwargs)
        finally:
            phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - started
        if keep is not None:
            keep(result)
        return result

    setattr(owner, name, timed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats of the command here")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    phases: dict[str, float] = {}
    missing: list[str] = []
    statuses: dict[str, int] = {}

    imported = time.perf_counter()
    from loader.cli import finish, starting
    with starting(command):  # as the console script starts
        from loader.backup import backup as backup_stage
        from loader.cli import commands as cli
        from loader.load import load as load_stage
        from loader.sources import discover as discovery
        from loader.transform import build as build_stage
        from loader.verify import reconciliation
        from loader.verify import validate as validate_stage

    def count_statuses(outcome) -> None:
        for f in getattr(outcome, "files", []):
            statuses[f.status] = statuses.get(f.status, 0) + 1

    wrap(backup_stage, "backup", "backup", phases, missing)
    wrap(discovery, "discover", "discover", phases, missing)
    wrap(load_stage, "load", "load", phases, missing, keep=count_statuses)
    wrap(build_stage, "build", "build", phases, missing)
    wrap(reconciliation, "summarize", "reconcile", phases, missing)
    wrap(validate_stage, "validate", "validate", phases, missing)
    # `consolidate sync` (loader.pipeline.sync) calls the stages above, and change detection
    from loader.operate import change_detection
    wrap(change_detection, "detect_pending", "detect changes", phases, missing)
    # inside the load phase, per file, summed over files (so over the workers too: with two files at a
    # time these add up to about twice the load's wall time): where the loader's time goes
    from loader import ledger
    from loader.sources import snapshot
    # the load's private copies, which discovery makes and keeps for it (inside the discover phase)
    wrap(snapshot, "consistent_copy", "load: private copy + sha256", phases, missing)
    wrap(snapshot, "fold_into_single_file", "load: fold WAL", phases, missing)
    wrap(load_stage, "check_integrity", "load: quick_check", phases, missing)
    wrap(load_stage, "list_tables", "load: list tables + count(*)", phases, missing)
    wrap(load_stage, "plan_tables", "load: choose readers", phases, missing)
    wrap(load_stage, "insert_rows", "load: DuckDB → binary COPY", phases, missing)
    from loader.load import delta
    wrap(delta, "compare_in_duckdb", "load: change load compared in DuckDB", phases, missing)
    wrap(load_stage, "export_csv", "load: DuckDB → CSV", phases, missing)
    wrap(load_stage, "copy_csv_into", "load: COPY CSV", phases, missing)
    wrap(ledger, "current_checksums", "load: ledger look-up", phases, missing)

    started = time.perf_counter()
    phases["imports"] = started - imported
    profiler = cProfile.Profile() if args.profile else None
    exit_code = 0
    try:
        if profiler:
            profiler.enable()
        returned = cli.app(command, standalone_mode=False)
        exit_code = returned if isinstance(returned, int) else 0
    except SystemExit as stop:  # typer.Exit inside standalone_mode=False comes back as an exit code
        exit_code = stop.code if isinstance(stop.code, int) else 1
    except Exception as error:
        print(f"harness: {type(error).__name__}: {error}", file=sys.stderr)
        exit_code = 99
    finally:
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
    wall = time.perf_counter() - started
    result = {"exit_code": exit_code, "command": command, "wall": round(wall, 3),
              "phases": {name: round(seconds, 3) for name, seconds in phases.items()},
              "statuses": statuses, "missing": missing}
    args.result.write_text(json.dumps(result, indent=1) + "\n")
    finish()  # as the console script ends
    return 0


if __name__ == "__main__":
    sys.exit(main())
