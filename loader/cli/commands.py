"""The `consolidate` command line: parse arguments, call the library, print."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import psycopg
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from loader.operate import archive as archive_stage
from loader.operate import cutover as cutover_stage
from loader.operate import rollback as rollback_stage
from loader.backup import backup as backup_stage
from loader.transform import build as build_stage
from loader.serve import cache as cache_layer
from loader.transform import freshness
from loader import ledger
from loader.verify import lineage as lineage_queries
from loader.load import load as load_stage
from loader.verify import report
from loader.fixtures import sample as sample_tree
from loader.operate import status as status_stage
from loader.operate import sync as sync_stage
from loader.verify import validate as validate_stage
from loader.database import DEFAULT_HOME, Target, embedded_dsn, resolve_target, stop_embedded
from loader.sources.discover import Discovery, discover as discover_files
from loader.load.secret_policy import PolicyError, load_policy

app = typer.Typer(
    help="Consolidate many SQLite databases into one PostgreSQL schema, and prove nothing was lost.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
db_app = typer.Typer(help="The embedded PostgreSQL used when no --dsn / DATABASE_URL is given.",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")
cache_app = typer.Typer(help="The Redis cache in front of unified_memory (cache-aside; see loader.client).",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")

out = Console()
err = Console(stderr=True)

EXIT_OK = 0
EXIT_NOT_RECONCILED = 1
EXIT_USAGE = 2
EXIT_SOURCE_UNREADABLE = 3
EXIT_DATABASE_UNAVAILABLE = 4

Roots = Annotated[list[Path], typer.Argument(help="Directories (or files) to search for SQLite databases.")]
Dsn = Annotated[Optional[str], typer.Option(
    "--dsn", envvar="DATABASE_URL", show_envvar=True,
    help="PostgreSQL to write to, e.g. postgresql://user@host:10000/db. Default: an embedded PostgreSQL "
         "kept under --home.")]
Home = Annotated[Path, typer.Option(
    "--home", envvar="CONSOLIDATE_HOME", show_envvar=True,
    help="State folder: the embedded PostgreSQL's data and dbt's target/logs.")]
Schema = Annotated[str, typer.Option("--schema", envvar="CONSOLIDATE_TARGET_SCHEMA",
                                     help="Schema the marts (unified_memory, ...) are built in.")]
Secrets = Annotated[Optional[Path], typer.Option(
    "--secrets", exists=True, dir_okay=False,
    help="TOML file overriding the secret-column policy (hash / exclude / keep per kind.table.column).")]
RedisUrl = Annotated[str, typer.Option(
    "--redis-url", envvar="CONSOLIDATE_REDIS_URL", show_envvar=True,
    help="The Redis cache, e.g. redis://127.0.0.1:10001/0 (a password in the URL is never printed).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON document for machines instead of tables.")]
Jobs = Annotated[int, typer.Option(
    "--jobs", min=1, help="Files loaded at a time, each in its own PostgreSQL session (two use both of two cores).")]


def print_json(data) -> None:
    out.print_json(json.dumps(data, default=str))


def target_for(dsn: str | None, home: Path, schema: str) -> Target:
    target = resolve_target(dsn, home, schema)
    if target.embedded:
        err.print(f"[dim]Using the embedded PostgreSQL under {escape(str(home))}/pgdata[/dim]")
    return target


def print_warnings(found: Discovery) -> None:
    for warning in found.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(str(warning.path))}: {escape(str(warning.reason))}")


def discovery_table(found: Discovery) -> Table:
    table = Table(title=f"{len(found.files)} SQLite databases")
    for column in ("file", "kind", "size", "sha256", "tables", "rows", "note"):
        table.add_column(column, justify="right" if column in ("size", "tables", "rows") else "left")
    for f in found.files:
        note = f"copy of {escape(str(f.copy_of))}" if f.copy_of else (f"[red]{escape(f.error)}[/red]" if f.error else "")
        table.add_row(Text(f.source_db), f.kind, f"{f.size_bytes:,}", f.sha256[:12], str(len(f.tables)),
                      f"{sum(f.tables.values()):,}", note)
    return table


@app.command()
def discover(roots: Roots, home: Home = DEFAULT_HOME, as_json: AsJson = False) -> None:
    """Find SQLite files by their header and classify each by schema (claude-flow-v2, claude-flow-v3,
    extended-memory, n8n, flowise, other), with size, sha256, tables and row counts."""
    found = discover_files(roots, exclude=[home])
    if as_json:
        print_json({"files": [f.to_json() for f in found.files],
                    "warnings": [w.to_json() for w in found.warnings]})
        return
    out.print(discovery_table(found))
    print_warnings(found)


def load_table(outcome: load_stage.LoadOutcome) -> Table:
    table = Table(title=f"load {outcome.load_id}")
    for column in ("file", "kind", "status", "rows in SQLite", "rows loaded", "note"):
        table.add_column(column, justify="right" if column.startswith("rows") else "left")
    for f in outcome.files:
        note = "see below" if f.error else (f"copy of {escape(str(f.source.copy_of))}" if f.source.copy_of else "")
        table.add_row(Text(f.source.source_db), f.source.kind, f.status, f"{f.rows_in_sqlite:,}",
                      f"{f.rows_loaded:,}", note)
    return table


def print_load_failures(outcome: load_stage.LoadOutcome) -> None:
    for failed in outcome.failed:
        err.print(f"[red]could not load[/red] {escape(str(failed.source.path))}: {escape(str(failed.error))}")


@contextlib.contextmanager
def discovered_for_loading(roots: list[Path], home: Path, target: Target) -> Iterator[Discovery]:
    """Discovery for a load: unchanged files known from the ledger, and the private copies it makes
    kept (in a temporary folder, gone on exit) for the load to use."""
    with tempfile.TemporaryDirectory(prefix="consolidate-copies-") as copies:
        found = discover_files(roots, exclude=[home], known=ledger.known_files(target), keep_copies_in=Path(copies))
        print_warnings(found)
        yield found


def run_load(found: Discovery, target: Target, roots: list[Path], home: Path, secrets: Path | None,
             force: bool, quiet: bool, jobs: int = load_stage.DEFAULT_JOBS):
    def progress(outcome: load_stage.FileOutcome) -> None:
        if not quiet:
            colour = "red" if outcome.status == "failed" else "green"
            err.print(f"  [{colour}]{outcome.status:>9}[/{colour}] {escape(str(outcome.source.source_db))} "
                      f"({outcome.rows_loaded:,} rows)")
    try:
        policy = load_policy(home, secrets)
    except PolicyError as error:
        err.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(EXIT_USAGE)
    return load_stage.load(found, target, [str(r.absolute()) for r in roots], policy, force=force, jobs=jobs,
                           on_file=progress)


@app.command()
def load(roots: Roots, dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public",
         secrets: Secrets = None,
         force: Annotated[bool, typer.Option("--force", help="Reload files whose checksums are unchanged.")] = False,
         jobs: Jobs = load_stage.DEFAULT_JOBS, as_json: AsJson = False) -> None:
    """Copy every table of every discovered database into PostgreSQL raw schemas (raw_claude_flow_v2,
    raw_claude_flow_v3, raw_extended_memory, raw_n8n, raw_flowise, raw_other) from a private copy,
    each file in one transaction, every row stamped with its lineage. Exit 3 if a file could not be read."""
    target = target_for(dsn, home, schema)
    with discovered_for_loading(roots, home, target) as found:
        outcome = run_load(found, target, roots, home, secrets, force, as_json, jobs)
    if as_json:
        print_json(outcome.to_json())
    else:
        out.print(load_table(outcome))
        print_load_failures(outcome)
    raise typer.Exit(EXIT_SOURCE_UNREADABLE if outcome.failed else EXIT_OK)


@app.command()
def build(dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public",
          full_refresh: Annotated[bool, typer.Option(
              "--full-refresh", help="Rebuild every model from raw and the write log instead of applying "
                                     "only what is new since the last build (same result, ids included).")] = False,
          ) -> None:
    """Run `dbt build` (models and tests: the validation phase) against the database: incremental, only
    the loads and writes new since the last build, unless --full-refresh (or there is no previous build).
    Exit 1 when a model or test fails.

    Example: consolidate build --full-refresh --dsn postgresql://consolidate@db.internal:10000/memory"""
    outcome = build_stage.build(target_for(dsn, home, schema), home, full_refresh=full_refresh)
    for failure in outcome.failures:
        err.print(f"[red]failed:[/red] {escape(str(failure))}")
    raise typer.Exit(EXIT_OK if outcome.success else EXIT_NOT_RECONCILED)


def summary_table(rows: list[report.FileSummary]) -> Table:
    table = Table(title="reconciliation per source file")
    headers = ("file", "kind", "status", "rows in SQLite", "rows in raw", "memory rows", "kept",
               "superseded", "moved to performance_metrics", "ok")
    for header in headers:
        table.add_column(header, justify="left" if header in ("file", "kind", "status") else "right")
    for r in rows:
        cells = [r.rows_in_sqlite, r.rows_in_raw, r.memory_rows, r.kept, r.superseded, r.moved]
        table.add_row(Text(r.source_db), r.kind, r.status, *("" if c is None else f"{c:,}" for c in cells),
                      "[green]yes[/green]" if r.reconciled else "[red]NO[/red]")
    return table


def default_backup_folder(home: Path) -> Path:
    return home / "backups" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def run_backup(roots: list[Path], folder: Path, home: Path, quiet: bool, found: Discovery) -> Path:
    """Plan phase 1 before anything is loaded: a verified backup, or stop the run."""
    if not quiet:
        err.print(f"Backing up to {escape(str(folder))}")
    try:
        manifest = backup_stage.backup(roots, folder, exclude=[home], found=found)
    except backup_stage.BackupError as error:
        err.print(f"[red]backup refused:[/red] {escape(str(error))} (or pass --no-backup)")
        raise typer.Exit(EXIT_USAGE)
    for entry in manifest.failed:
        err.print(f"[red]could not back up[/red] {escape(str(entry.path))}: {escape(str(entry.reason))}")
    return folder


@app.command()
def run(roots: Roots, dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public",
        secrets: Secrets = None,
        force: Annotated[bool, typer.Option("--force", help="Reload files whose checksums are unchanged.")] = False,
        no_backup: Annotated[bool, typer.Option("--no-backup", help="Skip the backup taken before loading.")] = False,
        backup_to: Annotated[Optional[Path], typer.Option(
            "--backup-to", help="Folder for the backup taken first. Default: HOME/backups/<UTC time>.")] = None,
        rebuild: Annotated[bool, typer.Option(
            "--rebuild", help="Build (a full refresh from raw and the write log) and validate even when "
                              "nothing changed since the last passing build.")] = False,
        jobs: Jobs = load_stage.DEFAULT_JOBS, as_json: AsJson = False) -> None:
    """discover → backup → load → build → validate → a reconciliation table per source file.

    When no file changed since the last build that passed its tests and validation, build and
    validation are skipped (the marts are current). Exit 0 only when every file reconciles and every
    dbt test passes; 1 when something does not reconcile or a test fails; 3 when a SQLite source
    could not be read. Non-SQLite files and orphan -wal files are warnings only."""
    target = target_for(dsn, home, schema)
    with discovered_for_loading(roots, home, target) as found:
        backed_up = None if no_backup else run_backup(roots, backup_to or default_backup_folder(home), home,
                                                      as_json, found)
        loaded = run_load(found, target, roots, home, secrets, force, as_json, jobs)
    built_from = freshness.fingerprint(target)
    current = not rebuild and freshness.marts_are_current(target, built_from)
    if current:
        err.print("Nothing changed since the last build that passed its tests and validation: "
                  "the marts are current (--rebuild to build and validate again).")
        built, validation = build_stage.BuildOutcome(success=True, skipped=True), None
    else:
        built = build_stage.build(target, home, quiet=as_json, full_refresh=rebuild)
        validation = validate_stage.validate(target, backup_dir=backed_up,
                                             secret_policy=validate_stage.secret_policy_in_use(home, secrets)) \
            if built.success else None
        freshness.record_build(target, built_from, built.success, validation.passed if validation else None)
    summary = report.summarize(target, loaded.load_id)
    reconciled = built.success and all(row.reconciled for row in summary) and (current or validation.passed)
    if as_json:
        print_json({"load_id": loaded.load_id, "reconciled": reconciled, "build": built.to_json(),
                    "backup": str(backed_up) if backed_up else None,
                    "validation": validation.to_json() if validation else None,
                    "files": [row.to_json() for row in summary],
                    "warnings": [w.to_json() for w in found.warnings]})
    else:
        out.print(summary_table(summary))
        if validation:
            out.print(validation_table(validation))
            print_validation_problems(validation)
        for failure in built.failures:
            err.print(f"[red]failed:[/red] {escape(str(failure))}")
        print_load_failures(loaded)
    if loaded.failed:
        raise typer.Exit(EXIT_SOURCE_UNREADABLE)
    raise typer.Exit(EXIT_OK if reconciled else EXIT_NOT_RECONCILED)


def backup_table(manifest: backup_stage.BackupManifest) -> Table:
    table = Table(title=f"{len(manifest.files)} databases")
    for column in ("file", "kind", "status", "tables", "rows", "note"):
        table.add_column(column, justify="right" if column in ("tables", "rows") else "left")
    for entry in manifest.files:
        table.add_row(Text(entry.source_db), entry.kind, entry.status, str(len(entry.tables)),
                      f"{sum(entry.tables.values()):,}", Text(entry.reason or ""))
    return table


def verify_backup(folder: Path, as_json: bool) -> None:
    problems = backup_stage.verify(folder)
    if as_json:
        print_json({"folder": str(folder), "verified": not problems, "problems": [p.to_json() for p in problems]})
    else:
        for problem in problems:
            err.print(f"[red]{escape(str(problem.path))}[/red]: {escape(str(problem.problem))}")
        err.print(f"verified {escape(str(folder))}" if not problems else f"{len(problems)} problem(s) in {escape(str(folder))}")
    raise typer.Exit(EXIT_OK if not problems else EXIT_NOT_RECONCILED)


@app.command()
def backup(
    roots: Annotated[Optional[list[Path]], typer.Argument(
        help="Directories (or files) to search for SQLite databases.", show_default=False)] = None,
    to: Annotated[Optional[Path], typer.Option(
        "--to", help="Folder for the backups and manifest.json: new, empty, or an earlier backup with --overwrite.")] = None,
    verify: Annotated[Optional[Path], typer.Option(
        "--verify", help="Instead of backing up, check this backup folder against its manifest.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the earlier backup in --to (refused if it holds files its manifest does not list).")] = False,
    home: Home = DEFAULT_HOME,
    as_json: AsJson = False,
) -> None:
    """Back up every discovered database (plan phase 1): one consistent single-file copy each, made
    with SQLite's online backup API from a private copy, and a manifest.json with checksums and
    per-table counts. `--verify DIR` re-checks a backup. Exit 1 when verification finds problems, 3
    when a database could not be backed up."""
    if verify is not None:
        if roots or to is not None:
            raise typer.BadParameter("--verify DIR takes no ROOT and no --to")
        verify_backup(verify, as_json)
    if not roots or to is None:
        raise typer.BadParameter("give ROOT... --to DIR (or --verify DIR)")

    def progress(entry: backup_stage.BackupEntry) -> None:
        if not as_json:
            err.print(f"  {entry.status:>9} {escape(str(entry.source_db))}")
    try:
        manifest = backup_stage.backup(roots, to, on_file=progress, overwrite=overwrite, exclude=[home])
    except backup_stage.BackupError as error:
        err.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(EXIT_USAGE)
    if as_json:
        print_json(manifest.to_json())
    else:
        out.print(backup_table(manifest))
    raise typer.Exit(EXIT_SOURCE_UNREADABLE if manifest.failed else EXIT_OK)


def validation_table(report: validate_stage.ValidationReport) -> Table:
    table = Table(title=f"validation {report.run_id} (sample {report.sample_size}, seed {report.seed})")
    headers = ("file", "rows in SQLite", "rows in raw", "kept", "superseded", "moved", "flagged",
               "on disk", "backup", "spot-checked", "mismatches", "ok")
    for header in headers:
        table.add_column(header, justify="left" if header in ("file", "on disk", "backup") else "right")
    for f in report.files:
        counts = [f.rows_in_sqlite, f.rows_in_raw, f.kept, f.superseded, f.moved, f.flagged]
        table.add_row(Text(f.source_db), *("" if c is None else f"{c:,}" for c in counts), f.checksum_status,
                      f.backup_checksum_status or "", f"{f.spot_checked:,}", f"{len(f.mismatches):,}",
                      "[green]yes[/green]" if f.passed else "[red]NO[/red]")
    return table


def print_validation_problems(report: validate_stage.ValidationReport) -> None:
    for f in report.files:
        for problem in f.problems:
            err.print(f"[red]{escape(str(f.source_db))}[/red]: {escape(str(problem))}")
        for m in f.mismatches[:10]:
            err.print(f"  {m.source_table} rowid {m.source_rowid} {m.against}.{m.field}: "
                      f"expected {m.expected}, found {m.actual}", markup=False, highlight=False)


@app.command()
def validate(dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public", secrets: Secrets = None,
             sample: Annotated[int, typer.Option("--sample", min=0,
                 help="Random rows spot-checked per file (memory rows, and rows of the other tables).")] = 20,
             seed: Annotated[Optional[int], typer.Option("--seed", help="Repeat an earlier run's choice of rows.")] = None,
             backup: Annotated[Optional[Path], typer.Option("--backup", exists=True, file_okay=False,
                 help="Backup folder (manifest.json) that must hold the loaded bytes of every file.")] = None,
             as_json: AsJson = False) -> None:
    """Validation report (plan phase 3): per current source file, counts (SQLite, raw, kept, superseded,
    moved, flagged), sha256 on disk (and in --backup) against the loaded bytes, and a field-by-field spot
    check of random rows against the marts and raw. Stored in consolidate.validation_runs/_files. Exit 0
    when every file passes, 1 otherwise, 2 when nothing can be validated."""
    try:
        policy = validate_stage.secret_policy_in_use(home, secrets)
        report = validate_stage.validate(target_for(dsn, home, schema), sample_size=sample, seed=seed,
                                         backup_dir=backup, secret_policy=policy)
    except (validate_stage.ValidationError, PolicyError) as error:
        err.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(EXIT_USAGE)
    if as_json:
        print_json(report.to_json())
    else:
        out.print(validation_table(report))
        print_validation_problems(report)
    raise typer.Exit(EXIT_OK if report.passed else EXIT_NOT_RECONCILED)


@app.command()
def sample(directory: Annotated[Path, typer.Argument(help="Empty or new folder to write the sample into.")]) -> None:
    """Write a deterministic sample tree shaped like the plan's inventory (claude-flow v2 and v3
    `.swarm/memory.db` files, extended_memory.db, n8n and Flowise databases, cross-file duplicates,
    WAL-only rows, a byte-identical copy, a non-SQLite file and an orphan WAL)."""
    try:
        written = sample_tree.write_sample(directory)
    except FileExistsError as error:
        err.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(EXIT_USAGE)
    for path in written:
        out.print(str(path))


@app.command()
def lineage(key: Annotated[str, typer.Argument(help="The memory key to trace.")],
            namespace: Annotated[Optional[str], typer.Option(help="Only this namespace.")] = None,
            dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public",
            as_json: AsJson = False) -> None:
    """Every version of an entry across files, loads and writes made in PostgreSQL ("written in
    PostgreSQL by APP (USER) via PATH at TIME"), the winner marked.

    Example: consolidate lineage session:abc --namespace sessions"""
    versions = lineage_queries.versions(target_for(dsn, home, schema), key, namespace)
    if as_json:
        print_json([v.to_json() for v in versions])
        return
    if not versions:
        err.print(f"no entry with key {escape(repr(key))}" + (f" in namespace {escape(repr(namespace))}" if namespace else ""))
        raise typer.Exit(1)
    table = Table(title=f"versions of {key!r}")
    for column in ("", "namespace", "source", "rowid", "load", "updated_at", "accessed_at", "value"):
        table.add_column(column)
    for v in versions:
        table.add_row("[green]winner[/green]" if v.winner else v.role, Text(v.namespace),
                      Text(v.source_db if v.write_id is None else "PostgreSQL"), str(v.source_rowid),
                      v.load_id or f"write {v.write_id}", str(v.updated_at), str(v.accessed_at),
                      Text(v.value_preview))
    out.print(table)
    for v in versions:
        if v.write_id is not None:
            out.print(Text(f"write {v.write_id}: {v.origin}"), soft_wrap=True)

def format_age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def status_table(report: status_stage.StatusReport) -> Table:
    table = Table(title="ledger status per source file")
    for column in ("file", "kind", "status", "current load", "rows in SQLite", "rows loaded", "on disk",
                   "since sync", "cut over", "last failure"):
        table.add_column(column, justify="right" if column.startswith(("rows", "since")) else "left")
    for f in report.files:
        current = f.current
        on_disk = {"changed": "[yellow]changed[/yellow]", "missing": "[red]missing[/red]"}.get(f.on_disk, f.on_disk or "")
        failure = (f"[red]{f.last_failure.failed_at:%Y-%m-%d %H:%M} {escape(f.last_failure.error_message or '')}[/red]"
                   if f.last_failure else "")
        table.add_row(Text(f.source_db), f.kind, f.status, current.load_id if current else "",
                      f"{current.rows_in_sqlite:,}" if current and current.rows_in_sqlite is not None else "",
                      f"{current.rows_loaded:,}" if current and current.rows_loaded is not None else "",
                      on_disk, format_age(f.seconds_since_sync), cut_over_cell(f.cut_over), failure)
    return table


def cut_over_cell(cut_over: status_stage.CutOver | None) -> str:
    if cut_over is None:
        return ""
    cell = f"since {cut_over.cut_over_at.astimezone():%Y-%m-%d %H:%M} by {escape(cut_over.cut_over_by)}"
    if cut_over.split_brain_loads:
        cell += f" [red]split brain ({cut_over.split_brain_loads} load{'s' if cut_over.split_brain_loads > 1 else ''})[/red]"
    return cell


@app.command()
def status(dsn: Dsn = None, home: Home = DEFAULT_HOME, as_json: AsJson = False) -> None:
    """The ledger at a glance: per source file its latest status, current load, rows, whether the file
    on disk still has the loaded checksums (unchanged / changed / missing), time since its last sync,
    whether its service is cut over to PostgreSQL (since when, by whom, split-brain loads since) and its
    last failure; totals and the last load's status.

    Example: consolidate status --json"""
    report = status_stage.status(target_for(dsn, home, "public"))
    if as_json:
        print_json(report.to_json())
        return
    if report.message:
        err.print(report.message)
    if report.files:
        out.print(status_table(report))
    totals, last = report.totals, report.last_load
    err.print(f"{totals.files} files, {totals.rows_loaded:,} of {totals.rows_in_sqlite:,} rows loaded, "
              f"{totals.failed_files} failing, {totals.changed_files} changed, {totals.missing_files} missing, "
              f"{totals.cut_over_files} cut over"
              + (f"; last load {last.load_id}: {last.status}" if last else ""))


def archive_table(report: archive_stage.ArchiveReport) -> Table:
    table = Table(title=str(report.archive) if report.archive else "nothing archived")
    for column in ("file", "archived", "removed", "reason"):
        table.add_column(column)
    removals = {removal.path: removal for removal in report.removals}
    for entry in report.archived:
        removal = removals.get(entry.path)
        removed = "" if removal is None else ("[green]yes[/green]" if removal.removed else "[red]no[/red]")
        table.add_row(Text(str(entry.path)), "[green]yes[/green]", removed, Text((removal.refused or "") if removal else ""))
    for refusal in report.refused:
        table.add_row(Text(str(refusal.path)), "[red]no[/red]", "", Text(refusal.reason))
    return table


def verify_archive_file(path: Path, as_json: bool) -> None:
    problems = archive_stage.verify_archive(path)
    if as_json:
        print_json({"archive": str(path), "verified": not problems, "problems": [p.to_json() for p in problems]})
    else:
        for problem in problems:
            err.print(f"[red]{escape(str(problem.path))}[/red]: {escape(str(problem.problem))}")
        err.print(f"verified {escape(str(path))}" if not problems else f"{len(problems)} problem(s) in {escape(str(path))}")
    raise typer.Exit(EXIT_OK if not problems else EXIT_NOT_RECONCILED)


@app.command()
def archive(
    roots: Annotated[Optional[list[Path]], typer.Argument(
        help="Directories (or files) to search for SQLite databases.", show_default=False)] = None,
    to: Annotated[Optional[Path], typer.Option(
        "--to", help="Folder for the archive: new, empty, or holding only consolidate archives.")] = None,
    verify: Annotated[Optional[Path], typer.Option(
        "--verify", help="Instead of archiving, re-check this archive (.zip) member by member.")] = None,
    remove_originals: Annotated[bool, typer.Option(
        "--remove-originals", help="After archiving, delete each archived file (main, -wal, -shm, -journal) "
                                   "whose archive verifies, whose migration the ledger confirms and whose "
                                   "bytes are still the archived ones.")] = False,
    dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public", as_json: AsJson = False,
) -> None:
    """Archive (plan phase 5) every file whose exact bytes were loaded and reconciled into a zip with a
    manifest and checksums; list the others with the reason. `--verify PATH` re-checks an archive.
    Exit 1 when a file or a removal was refused or verification finds problems."""
    if verify is not None:
        if roots or to is not None or remove_originals:
            raise typer.BadParameter("--verify PATH takes no ROOT, no --to and no --remove-originals")
        verify_archive_file(verify, as_json)
    if not roots or to is None:
        raise typer.BadParameter("give ROOT... --to DIR (or --verify PATH)")
    try:
        report = archive_stage.archive(target_for(dsn, home, schema), roots, to,
                                       remove_originals=remove_originals, exclude=[home])
    except archive_stage.ArchiveError as error:
        err.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(EXIT_USAGE)
    if as_json:
        print_json(report.to_json())
    else:
        out.print(archive_table(report))
    refused_removal = any(removal.refused for removal in report.removals)
    raise typer.Exit(EXIT_NOT_RECONCILED if report.refused or refused_removal else EXIT_OK)


def sync_table(report: sync_stage.SyncReport) -> Table:
    table = Table(title=f"sync {report.load_id}")
    for column in ("file", "kind", "status", "rows", "inserted", "updated", "deleted", "note"):
        table.add_column(column, justify="right" if column in ("rows", "inserted", "updated", "deleted") else "left")
    for f in report.files:
        note = (f"[red]{escape(f.error)}[/red]" if f.error else
                "not on disk any more: its last load stays current" if f.status == "missing" else "")
        table.add_row(Text(f.source_db), f.kind, f.status, "" if f.rows is None else f"{f.rows:,}",
                      f"{f.inserted:,}", f"{f.updated:,}", f"{f.deleted:,}", note)
    return table


def sync_line(report: sync_stage.SyncReport) -> str:
    colour = "red" if report.exit_code else ("dim" if report.idle else "green")
    return f"[{colour}]{escape(report.status_line())}[/{colour}]"


def print_sync_problems(report: sync_stage.SyncReport) -> None:
    for split in report.split_brain:
        err.print(f"[yellow]warning:[/yellow] {escape(split.message())}")
    for f in report.failed:
        err.print(f"[red]could not load[/red] {escape(str(f.source_path))}: {escape(f.error or '')}")
    for failure in report.build.failures if report.build else []:
        err.print(f"[red]failed:[/red] {escape(failure)}")


def watch_sync(roots: list[Path], target: Target, home: Path, secrets: Path | None, interval: float,
               build: bool, as_json: bool) -> None:
    """One status line per cycle: JSON Lines with --json; else a line on stdout per cycle that did
    something and, on a terminal, a live line on stderr updated every cycle."""
    live = err.status("first sync...") if err.is_terminal and not as_json else None

    def on_cycle(report: sync_stage.SyncReport) -> None:
        if as_json:
            out.file.write(json.dumps(report.to_json(), default=str) + "\n")
            out.file.flush()
        elif not report.idle:
            out.print(sync_line(report))
            print_sync_problems(report)
        if live is not None:
            live.update(f"{sync_line(report)} [dim]- every {interval:g}s, Ctrl-C to stop[/dim]")

    if live is not None:
        live.start()
    try:
        sync_stage.watch(roots, target, home, interval, on_cycle, secrets=secrets, build=build)
    finally:
        if live is not None:
            live.stop()
    if not as_json:
        err.print("stopped")


@app.command()
def sync(roots: Roots, dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public",
         secrets: Secrets = None,
         watch: Annotated[Optional[float], typer.Option(
             "--watch", metavar="SECONDS", min=0.1,
             help="Keep syncing, SECONDS after the end of each cycle, until Ctrl-C (SIGINT) or SIGTERM; "
                  "a cycle that finds no file changed does nothing.")] = None,
         no_build: Annotated[bool, typer.Option(
             "--no-build", help="Load and detect changes only; leave the marts as they are.")] = False,
         as_json: AsJson = False) -> None:
    """For the parallel run: discover → load what changed (unchanged files are skipped by checksum, a
    changed file is reloaded as its new current load) → change detection per table (inserted / updated
    / deleted rows, stored in consolidate.load_changes and consolidate.deleted_rows; deletions are
    recorded, never applied to history) → dbt build. Exit 0 ok, 1 when a dbt model or test failed, 3
    when a SQLite source could not be read. With --watch: until interrupted, then 0."""
    target = target_for(dsn, home, schema)
    try:
        if watch is not None:
            watch_sync(roots, target, home, secrets, watch, not no_build, as_json)
            raise typer.Exit(EXIT_OK)
        report = sync_stage.sync(roots, target, home, secrets=secrets, build=not no_build)
    except PolicyError as error:
        err.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(EXIT_USAGE)
    if as_json:
        print_json(report.to_json())
    else:
        out.print(sync_table(report))
        out.print(sync_line(report))
        print_sync_problems(report)
    raise typer.Exit(report.exit_code)


Sources = Annotated[list[Path], typer.Argument(help="SQLite files, as the ledger knows them (see `consolidate status`).")]
Note = Annotated[Optional[str], typer.Option("--note", help="Why, or which deployment: kept in the ledger.")]


def cutover_table(outcomes: list[cutover_stage.CutoverOutcome]) -> Table:
    table = Table(title="cutover")
    for column in ("file", "outcome", "cut over at", "by", "baseline load"):
        table.add_column(column)
    for o in outcomes:
        c = o.cutover
        table.add_row(Text(o.source_path), o.outcome, f"{c.cut_over_at.astimezone():%Y-%m-%d %H:%M:%S}" if c else "",
                      Text(c.cut_over_by) if c else "", c.load_id if c else "")
    return table


@app.command()
def cutover(sources: Sources, dsn: Dsn = None, home: Home = DEFAULT_HOME, note: Note = None,
            undo: Annotated[bool, typer.Option(
                "--undo", help="Record instead that these files' services write to their SQLite files again "
                               "(after `consolidate rollback`).")] = False,
            as_json: AsJson = False) -> None:
    """Record in the ledger (consolidate.cutovers) that each SOURCE's service now writes to PostgreSQL
    (give it MemoryClient(..., source=SOURCE)). Refused, for all, unless every SOURCE is a memory file
    whose bytes on disk are its current load's: stop its writes and `consolidate sync` first. From then
    on, a sync that finds SOURCE changed still loads it and warns of split brain, naming the entries
    written on both sides. `consolidate status` shows the files cut over. Exit 2 when refused.

    Example: consolidate cutover /opt/app/.swarm/memory.db --note 'coder agents on PostgreSQL'"""
    target = target_for(dsn, home, "public")
    try:
        outcomes = (cutover_stage.undo if undo else cutover_stage.cutover)(target, sources, note=note)
    except cutover_stage.CutoverError as error:
        err.print(f"[red]refused:[/red] {escape(str(error))}")
        raise typer.Exit(EXIT_USAGE)
    if as_json:
        print_json([o.to_json() for o in outcomes])
    else:
        out.print(cutover_table(outcomes))


@app.command()
def rollback(source: Annotated[Path, typer.Argument(help="The SQLite file whose entries to write back.")],
             to: Annotated[Path, typer.Option("--to", help="The new SQLite file to write (beside it, then moved into place).")],
             dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public",
             overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace FILE if it exists.")] = False,
             as_json: AsJson = False) -> None:
    """Write FILE: a new SQLite database in SOURCE's own schema (claude-flow v2, v3 or extended-memory:
    same tables, indexes, triggers, views and pragmas) holding PostgreSQL's current state of every
    entry whose home is SOURCE (its rows, and the entries its service wrote in PostgreSQL), deletes
    applied, times in SOURCE's units; rows PostgreSQL never changed are SOURCE's own, byte for byte.
    SOURCE is never opened; FILE is never replaced without --overwrite. Recorded in
    consolidate.rollbacks. Exit 2 when refused (SOURCE changed since its last sync, marts not built,
    FILE exists).

    Example: consolidate rollback /opt/app/.swarm/memory.db --to /opt/app/.swarm/memory.rollback.db"""
    try:
        result = rollback_stage.rollback(target_for(dsn, home, schema), source, to, overwrite=overwrite)
    except rollback_stage.RollbackError as error:
        err.print(f"[red]refused:[/red] {escape(str(error))}")
        raise typer.Exit(EXIT_USAGE)
    if as_json:
        print_json(result.to_json())
        return
    table = Table(title=f"rollback of {result.source_path} ({result.kind}, load {result.load_id})")
    for column in ("unchanged", "changed", "created", "deleted", "skipped"):
        table.add_column(column, justify="right")
    table.add_row(*(f"{n:,}" for n in (result.unchanged, len(result.changed), len(result.created),
                                       len(result.deleted), len(result.skipped))))
    out.print(table)
    for skipped in result.skipped:
        err.print(f"[yellow]skipped[/yellow] {escape(skipped['namespace'])}/{escape(skipped['key'])}: "
                  f"{escape(skipped['reason'])}")
    for note in result.notes:
        err.print(f"[yellow]note:[/yellow] {escape(note)}")
    err.print(f"wrote {escape(result.written_to)} (sha256 {result.sha256[:16]}...)")


@db_app.command("url")
def db_url(home: Home = DEFAULT_HOME) -> None:
    """Start the embedded PostgreSQL if needed and print its connection URL (for psql)."""
    out.print(embedded_dsn(home), soft_wrap=True)


@db_app.command("stop")
def db_stop(home: Home = DEFAULT_HOME) -> None:
    """Stop the embedded PostgreSQL."""
    err.print("stopped" if stop_embedded(home) else "not running")


@cache_app.command("warm")
def cache_warm(
    top: Annotated[int, typer.Option("--top", min=1, help="How many of the hottest entries to cache.")] = 1000,
    redis_url: RedisUrl = cache_layer.DEFAULT_URL,
    dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public",
) -> None:
    """Cache the hottest live entries of unified_memory (access_count desc, then accessed_at desc), each
    until its expires_at. Exit 1 when Redis cannot be reached."""
    cache = cache_layer.Cache(redis_url)
    if not cache.available():
        err.print(f"[red]error:[/red] Redis at {escape(str(cache.redacted_url))} cannot be reached")
        raise typer.Exit(EXIT_NOT_RECONCILED)
    warmed = cache.warm(target_for(dsn, home, schema).dsn, top, schema=schema)
    err.print(f"cached {warmed:,} entries in {escape(str(cache.redacted_url))}")


@cache_app.command("stats")
def cache_stats(redis_url: RedisUrl = cache_layer.DEFAULT_URL, as_json: AsJson = False) -> None:
    """Cached entries (mem:* keys), memory used and the server's hit/miss counters from Redis INFO.
    Exit 1 when Redis cannot be reached."""
    stats = cache_layer.Cache(redis_url).stats()
    for counter in ("hits", "misses", "errors"):  # this process's own counters: always 0 here
        stats.pop(counter)
    if as_json:
        print_json(stats)
    else:
        table = Table(title=f"Redis cache {stats['url']}")
        table.add_column("")
        table.add_column("value", justify="right")
        for name, value in stats.items():
            if name != "url":
                table.add_row(name, "" if value is None else str(value))
        out.print(table)
    raise typer.Exit(EXIT_OK if stats["connected"] else EXIT_NOT_RECONCILED)


def main() -> None:
    """The console script: the app, with a lost or unreachable PostgreSQL reported in one line."""
    try:
        app(prog_name="consolidate")
    except psycopg.OperationalError as error:
        err.print(f"[red]PostgreSQL unavailable:[/red] {escape(str(error).strip())}\n"
                  "Nothing half-done was kept: every file loads in one transaction. "
                  "Run the same command again once the server is back; unchanged files are skipped.")
        sys.exit(EXIT_DATABASE_UNAVAILABLE)
