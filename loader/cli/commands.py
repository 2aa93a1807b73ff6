"""The `consolidate` commands: each parses its arguments, calls one library function and renders the
result (loader.cli.render). What runs in which order is loader.pipeline's business."""

from __future__ import annotations

import inspect
import os
import re
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import psycopg
import typer
from typer import rich_utils

from loader import ledger, pipeline
from loader.backup import backup as backup_stage
from loader.cli import render
from loader.database import (
    DEFAULT_HOME,
    BadDsn,
    EmbeddedServerError,
    Target,
    embedded_dsn,
    plain_identifier_problem,
    redact_password,
    resolve_target,
    stop_embedded,
)
from loader.exit_codes import ExitCode
from loader.load.load import DEFAULT_JOBS
from loader.load.secret_policy import PolicyError
from loader.operate import archive as archive_stage
from loader.operate import cutover as cutover_stage
from loader.operate import forget as forget_stage
from loader.operate import rollback as rollback_stage
from loader.operate import status as status_stage
from loader.serve import DEFAULT_REDIS_URL
from loader.sources.discover import discover as discover_files
from loader.transform import build as build_stage
from loader.verify import lineage as lineage_queries
from loader.verify import validate as validate_stage

app = typer.Typer(
    help="Consolidate many SQLite databases into one PostgreSQL schema, and prove nothing was lost.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
db_app = typer.Typer(help="The embedded PostgreSQL used when no --dsn / DATABASE_URL is given.\n\n"
                          "Example: psql \"$(consolidate db url)\"",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")
cache_app = typer.Typer(help="The Redis cache in front of unified_memory (cache-aside; see loader.serve.client).\n\n"
                             "Example: consolidate cache warm --top 10000 --redis-url redis://127.0.0.1:6379/0",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")

# A root that does not exist is a usage error (exit 2), not a warning: a mistyped path would otherwise
# load, sync or archive nothing of what was meant and still succeed.
Roots = Annotated[list[Path], typer.Argument(help="Directories (or files) to search for SQLite databases.", exists=True,
                                             metavar="ROOT")]
OptionalRoots = Annotated[list[Path] | None, typer.Argument(
    metavar="ROOT",
    help="Directories (or files) to search for SQLite databases.", show_default=False, exists=True)]
Dsn = Annotated[str | None, typer.Option(
    "--dsn", envvar="DATABASE_URL", show_envvar=True,
    help="The PostgreSQL database to use, e.g. postgresql://user@host:10000/db. Default: an embedded PostgreSQL "
         "kept under --home.")]
Home = Annotated[Path, typer.Option(
    "--home", envvar="CONSOLIDATE_HOME", show_envvar=True,
    help="State folder: the embedded PostgreSQL's data and dbt's target/logs.")]


def plain_identifier(name: str) -> str:
    problem = plain_identifier_problem(name)
    if problem:
        raise typer.BadParameter(problem)
    return name


Schema = Annotated[str, typer.Option("--schema", envvar="CONSOLIDATE_TARGET_SCHEMA", callback=plain_identifier,
                                     help="Schema the marts (unified_memory, ...) are built in: a plain "
                                          "identifier (letters, digits, underscores).")]
Secrets = Annotated[Path | None, typer.Option(
    "--secrets", exists=True, dir_okay=False,
    help="TOML file overriding the secret-column policy (hash / exclude / keep per kind.table.column).")]


def redis_url_option(help_text: str):
    return typer.Option("--redis-url", envvar="CONSOLIDATE_REDIS_URL", show_envvar=True, help=help_text)


RedisUrl = Annotated[str, redis_url_option(
    "The Redis cache, e.g. redis://127.0.0.1:10001/0 (a password in the URL is never printed).")]
AsJson = Annotated[bool, typer.Option("--json", metavar="", help="Print one JSON document for machines instead of tables.")]
TellRedis = Annotated[str | None, redis_url_option(
    "The Redis cache in front of the marts: every entry the build changes is invalidated there (a full "
    "rebuild empties it), so a client reading through Redis never gets a replaced value, without a "
    "near-cache client listening. Exit 7 when Redis could not be told (the next build told empties it). "
    "Off when not given.")]
Jobs = Annotated[int, typer.Option(
    "--jobs", min=1, help="Files loaded at a time, each in its own PostgreSQL session (two use both of two cores).")]
Force = Annotated[bool, typer.Option("--force", metavar="", help="Reload files whose checksums are unchanged.")]


def target_for(dsn: str | None, home: Path, schema: str) -> Target:
    target = resolve_target(dsn, home, schema)
    if target.embedded:
        render.note(f"Using the embedded PostgreSQL under {home}/pgdata")
    return target


def usage_error(message: object, as_json: bool = False) -> NoReturn:
    """Exit 2 with the message on stderr; with --json also as a JSON document on stdout."""
    render.error(message, as_json, ExitCode.USAGE)
    raise typer.Exit(ExitCode.USAGE)


@app.command()
def discover(roots: Roots, home: Home = DEFAULT_HOME, as_json: AsJson = False) -> None:
    """Find SQLite files by their header and classify each by schema (claude-flow-v2, claude-flow-v3,
    extended-memory, n8n, flowise, other), with size, sha256, tables and row counts. Exit 3 when a SQLite
    file cannot be read (named, with the reason).

    Example: consolidate discover /opt/sutazaiapp --json"""
    found = discover_files(roots, exclude=[home])
    render.discovery(found, as_json)
    raise typer.Exit(found.exit_code)


@app.command()
def load(roots: Roots, dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public",
         secrets: Secrets = None, force: Force = False, jobs: Jobs = DEFAULT_JOBS, as_json: AsJson = False) -> None:
    """Copy every table of every discovered database into PostgreSQL raw schemas (raw_claude_flow_v2,
    raw_claude_flow_v3, raw_extended_memory, raw_n8n, raw_flowise, raw_other) from a private copy,
    each file in one transaction, every row stamped with its lineage. Exit 3 if a file could not be read.

    Example: consolidate load /opt/sutazaiapp --dsn postgresql://consolidate@db.internal:10000/memory"""
    target = target_for(dsn, home, schema)
    try:
        outcome = pipeline.load(roots, target, home, secrets=secrets, force=force, jobs=jobs,
                                on_file=render.load_progress(quiet=as_json))
    except PolicyError as error:
        usage_error(error, as_json)
    render.loaded(outcome, as_json)
    raise typer.Exit(outcome.exit_code)


def redis_cache(redis_url: str | None, as_json: bool, required: bool = False):
    """The Redis cache at --redis-url (None when not given); exit 2 when the URL is malformed, or missing
    though `required`."""
    if not redis_url:
        if required:
            usage_error("--redis-url: no Redis URL given", as_json)
        return None
    from loader.serve import cache as cache_layer
    try:
        return cache_layer.Cache(redis_url)
    except ValueError as error:
        usage_error(f"--redis-url: {error}", as_json)


@app.command()
def build(dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public",
          full_refresh: Annotated[bool, typer.Option(
              "--full-refresh", metavar="", help="Rebuild every model from raw and the write log instead of applying "
                                     "only what is new since the last build (same result, ids included).")] = False,
          as_json: AsJson = False) -> None:
    """Run `dbt build` (models and tests: the validation phase) against the database: incremental, only
    the loads and writes new since the last build, unless --full-refresh (or there is no previous build).
    Exit 1 when a model or test fails. For any other dbt command, see `consolidate dbt`.

    Example: consolidate build --full-refresh --schema marts --json"""
    outcome = build_stage.build(target_for(dsn, home, schema), home, quiet=as_json, full_refresh=full_refresh)
    render.built(outcome, as_json)
    raise typer.Exit(outcome.exit_code)


@app.command(context_settings={"ignore_unknown_options": True})
def dbt(arguments: Annotated[list[str], typer.Argument(
            help="A dbt command and its arguments, after `--`: build, test --select X, docs generate, "
                 "docs serve, source freshness...", show_default=False, metavar="ARGS")],
        dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public") -> None:
    """Run any dbt command against the database the other commands use, with the project and profile
    shipped in the package; artifacts (manifest, catalog, run results) and logs go under HOME/dbt.
    Exit 0 when dbt succeeds (a selection that matches nothing included: dbt warns and does nothing), 1
    when a model, test or freshness check fails, 2 when dbt refuses the command (unknown command or option).

    `-- clean` removes the artifacts and logs under HOME/dbt (never files beside the packaged project).

    Example: consolidate dbt -- test --select unified_memory"""
    target = target_for(dsn, home, schema)
    if build_stage.dbt_subcommand(arguments) == "clean":
        for folder in build_stage.clean(target, home):
            render.note(f"Cleaned {folder}")
        raise typer.Exit(ExitCode.OK)
    outcome = build_stage.run_dbt(arguments, target, home)
    for message in outcome.warnings:
        render.warning(message)
    if outcome.crashed:  # dbt refused the command itself, often without a word of its own
        for failure in outcome.failures:
            render.error(f"dbt: {failure}")
    raise typer.Exit(ExitCode.OK if outcome.success else ExitCode.USAGE if outcome.crashed else ExitCode.NOT_RECONCILED)


@app.command()
def run(roots: Roots, dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public",
        secrets: Secrets = None, force: Force = False,
        no_backup: Annotated[bool, typer.Option("--no-backup", metavar="", help="Skip the backup taken before loading.")] = False,
        backup_to: Annotated[Path | None, typer.Option(
            "--backup-to", help="Folder for the backup taken first. Default: HOME/backups/<UTC time>.")] = None,
        rebuild: Annotated[bool, typer.Option(
            "--rebuild", metavar="", help="Build (a full refresh from raw and the write log) and validate even when "
                              "nothing changed since the last passing build.")] = False,
        jobs: Jobs = DEFAULT_JOBS, redis_url: TellRedis = None, as_json: AsJson = False) -> None:
    """discover → backup → load → build → validate → a reconciliation table per source file.

    When no file changed since the last build that passed its tests and validation, build and
    validation are skipped (the marts are current). Exit 0 only when every file reconciles and every
    dbt test passes; 1 when something does not reconcile or a test fails; 3 when a SQLite source
    could not be read. Non-SQLite files and orphan -wal files are warnings only.

    Example: consolidate run /opt/sutazaiapp --backup-to /srv/backups/before-migration"""
    target = target_for(dsn, home, schema)
    folder = None if no_backup else (backup_to or pipeline.default_backup_folder(home))
    if folder is not None and not as_json:
        render.note(f"Backing up to {folder}")
    try:
        report = pipeline.run(roots, target, home, backup_to=folder, secrets=secrets, force=force,
                              rebuild=rebuild, jobs=jobs, quiet=as_json, on_file=render.load_progress(quiet=as_json),
                              cache=redis_cache(redis_url, as_json))
    except PolicyError as error:
        usage_error(error, as_json)
    except backup_stage.BackupExists as error:
        usage_error(f"backup refused: {error} (or leave --backup-to out: each run backs up into "
                    f"{home}/backups/<UTC time>; or pass --no-backup)", as_json)
    except backup_stage.BackupError as error:
        usage_error(f"backup refused: {error} (or pass --no-backup)", as_json)
    render.run(report, as_json)
    raise typer.Exit(report.exit_code)


@app.command()
def backup(
    roots: OptionalRoots = None,
    to: Annotated[Path | None, typer.Option(
        "--to", help="Folder for the backups and manifest.json: new, empty, or an earlier backup with --overwrite.")] = None,
    verify: Annotated[Path | None, typer.Option(
        "--verify", help="Instead of backing up, check this backup folder against its manifest.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", metavar="", help="Replace the earlier backup in --to (refused if it holds files its manifest does not list).")] = False,
    home: Home = DEFAULT_HOME,
    as_json: AsJson = False,
) -> None:
    """Back up every discovered database (plan phase 1): one consistent single-file copy each, made
    with SQLite's online backup API from a private copy, and a manifest.json with checksums and
    per-table counts. `--verify DIR` re-checks a backup. Exit 1 when verification finds problems, 3
    when a database could not be backed up.

    Example: consolidate backup /opt/sutazaiapp --to /srv/backups/2026-12-01"""
    if verify is not None:
        if roots or to is not None:
            usage_error("--verify DIR takes no ROOT and no --to", as_json)
        problems = backup_stage.verify(verify)
        exit_code = ExitCode.OK if not problems else ExitCode.NOT_RECONCILED
        render.verification(problems, "folder", verify, as_json, exit_code)
        raise typer.Exit(exit_code)
    if not roots or to is None:
        usage_error("give ROOT... --to DIR (or --verify DIR)", as_json)
    try:
        manifest = backup_stage.backup(roots, to, on_file=render.backup_progress(quiet=as_json),
                                       overwrite=overwrite, exclude=[home])
    except backup_stage.BackupExists as error:
        usage_error(f"{error}, or pass --overwrite to replace it", as_json)
    except backup_stage.BackupError as error:
        usage_error(error, as_json)
    render.backed_up(manifest, as_json)
    raise typer.Exit(manifest.exit_code)


@app.command()
def validate(dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public", secrets: Secrets = None,
             sample: Annotated[int, typer.Option("--sample", min=0,
                 help="Random rows spot-checked per file (memory rows, and rows of the other tables).")] = 20,
             seed: Annotated[int | None, typer.Option("--seed", help="Repeat an earlier run's choice of rows.")] = None,
             backup: Annotated[Path | None, typer.Option("--backup", exists=True, file_okay=False,
                 help="Backup folder (manifest.json) that must hold the loaded bytes of every file.")] = None,
             as_json: AsJson = False) -> None:
    """Validation report (plan phase 3): per current source file, counts (SQLite, raw, kept, superseded,
    moved, flagged), sha256 on disk (and in --backup) against the loaded bytes, and a field-by-field spot
    check of random rows against the marts and raw. A file `archive --remove-originals` deleted is read
    from its archive instead (on disk: archived); one `consolidate forget` accepted as gone is checked by
    its counts only (forgotten). Stored in consolidate.validation_runs/_files. Exit 0
    when every file passes, 1 otherwise, 2 when nothing can be validated.

    Example: consolidate validate --sample 200 --backup /srv/backups/2026-12-01"""
    try:
        report = pipeline.validate(target_for(dsn, home, schema), home, secrets=secrets, sample_size=sample,
                                   seed=seed, backup_dir=backup)
    except (validate_stage.ValidationError, PolicyError) as error:
        usage_error(error, as_json)
    render.validated(report, as_json)
    raise typer.Exit(report.exit_code)


@app.command()
def sample(directory: Annotated[Path, typer.Argument(help="Empty or new folder to write the sample into.", metavar="DIR")]) -> None:
    """Write a deterministic sample tree shaped like the plan's inventory (claude-flow v2 and v3
    `.swarm/memory.db` files, extended_memory.db, n8n and Flowise databases, cross-file duplicates,
    WAL-only rows, a byte-identical copy, a non-SQLite file and an orphan WAL).

    Example: consolidate sample /tmp/sample && consolidate run /tmp/sample"""
    from loader.fixtures import sample as sample_tree

    try:
        written = sample_tree.write_sample(directory)
    except FileExistsError as error:
        usage_error(error)
    for path in written:
        render.out.print(str(path))


@app.command()
def lineage(key: Annotated[str, typer.Argument(help="The memory key to trace.", metavar="KEY")],
            namespace: Annotated[str | None, typer.Option(help="Only this namespace.")] = None,
            dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public",
            as_json: AsJson = False) -> None:
    """Every version of an entry across files, loads and writes made in PostgreSQL ("written in
    PostgreSQL by APP (USER) via PATH at TIME"), the winner marked. Exit 6 when there is no entry with
    that key, 2 before anything was loaded and built.

    Example: consolidate lineage session:abc --namespace default"""
    try:
        versions = lineage_queries.versions(target_for(dsn, home, schema), key, namespace)
    except lineage_queries.NotBuilt as error:
        usage_error(error, as_json)
    render.lineage(key, namespace, versions, as_json)
    raise typer.Exit(ExitCode.OK if versions else ExitCode.NOT_FOUND)


@app.command()
def status(dsn: Dsn = None, home: Home = DEFAULT_HOME, as_json: AsJson = False) -> None:
    """The ledger at a glance: per source file its latest status, current load, rows, whether the file
    on disk still has the loaded checksums (unchanged / changed / missing / archived: removed by
    `archive --remove-originals`, its bytes in the archive named / forgotten: accepted as gone by
    `consolidate forget`), time since its last sync,
    whether its service is cut over to PostgreSQL (since when, by whom, split-brain loads since) and its
    last failure; totals and the last load's status.

    Example: consolidate status --json"""
    render.status(status_stage.status(target_for(dsn, home, "public")), as_json)


@app.command()
def archive(
    roots: OptionalRoots = None,
    to: Annotated[Path | None, typer.Option(
        "--to", help="Folder for the archive: new, empty, or holding only consolidate archives.")] = None,
    verify: Annotated[Path | None, typer.Option(
        "--verify", help="Instead of archiving, re-check this archive (.zip) member by member.")] = None,
    relocate: Annotated[bool, typer.Option(
        "--relocate", metavar="", help="With --verify, for an archive moved since `--remove-originals`: once it "
                           "verifies, point the ledger's records of the files removed into it (matched "
                           "by its sha256) at PATH, where validate, status and rollback read them.")] = False,
    remove_originals: Annotated[bool, typer.Option(
        "--remove-originals", metavar="", help="After archiving, delete each archived file (main, -wal, -shm, -journal) "
                                   "whose archive verifies, whose migration the ledger confirms and whose "
                                   "bytes are still the archived ones (checked again after a move into a "
                                   "quarantine folder beside it); never a file reached through a symbolic "
                                   "link or outside the roots.")] = False,
    dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public", as_json: AsJson = False,
) -> None:
    """Archive (plan phase 5) every file whose exact bytes were loaded and reconciled into a zip with a
    manifest and checksums; list the others with the reason. `--verify PATH` re-checks an archive.
    Exit 1 when a file or a removal was refused or verification finds problems.

    Example: consolidate archive /opt/sutazaiapp --to /srv/archive --remove-originals
    Example: consolidate archive --verify /mnt/cold/consolidate-archive-20261203T095301Z-c1da9a.zip --relocate"""
    if verify is not None:
        if roots or to is not None or remove_originals:
            usage_error("--verify PATH takes no ROOT, no --to and no --remove-originals", as_json)
        check = archive_stage.check_archive(verify, target_for(dsn, home, schema) if relocate else None)
        render.verification(check.problems, "archive", verify, as_json, check.exit_code, check.relocate, check.relocated)
        raise typer.Exit(check.exit_code)
    if relocate:
        usage_error("--relocate goes with --verify PATH", as_json)
    if not roots or to is None:
        usage_error("give ROOT... --to DIR (or --verify PATH)", as_json)
    try:
        report = archive_stage.archive(target_for(dsn, home, schema), roots, to,
                                       remove_originals=remove_originals, exclude=[home])
    except archive_stage.ArchiveError as error:
        usage_error(error, as_json)
    render.archived(report, as_json)
    raise typer.Exit(report.exit_code)


@app.command()
def sync(roots: Roots, dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public",
         secrets: Secrets = None,
         watch: Annotated[float | None, typer.Option(
             "--watch", metavar="SECONDS", min=0.1,
             help="Keep syncing, SECONDS after the end of each cycle, until Ctrl-C (SIGINT) or SIGTERM; "
                  "a cycle that finds no file changed does nothing.")] = None,
         no_build: Annotated[bool, typer.Option(
             "--no-build", metavar="", help="Load and detect changes only; leave the marts as they are.")] = False,
         redis_url: TellRedis = None, as_json: AsJson = False) -> None:
    """For the parallel run: discover → load what changed (unchanged files are skipped by checksum; a
    changed memory file becomes a row-level change load that stores only its inserted and changed rows,
    any other changed file is loaded whole) → change detection per table (inserted / updated / deleted
    rows, stored in consolidate.load_changes and consolidate.deleted_rows; a deleted row's last version
    stays in raw; a delete in SQLite of an entry whose value is an older write made in PostgreSQL is
    recorded in the write log too) → an incremental dbt build of what the changes affect. Writes made in
    PostgreSQL are kept. A cut-over file that changed is loaded all the same and reported as split brain
    (a warning: the exit code stays 0). Exit 0 ok, 1 when a dbt model or test failed, 3 when a SQLite
    source could not be read, 4 when PostgreSQL could not be reached, 7 when Redis (--redis-url) could not
    be told what the build changed. With --watch, once interrupted: the exit code of the last cycle that did something
    (0 when none did).

    Example: consolidate sync /opt/sutazaiapp --watch 60"""
    target = target_for(dsn, home, schema)
    cache = redis_cache(redis_url, as_json)
    try:
        if watch is not None:
            with render.WatchLines(watch, as_json) as on_cycle:
                last = pipeline.watch(roots, target, home, watch, on_cycle, secrets=secrets, build=not no_build,
                                      cache=cache)
            raise typer.Exit(last.exit_code if last is not None else ExitCode.OK)
        report = pipeline.sync(roots, target, home, secrets=secrets, build=not no_build, cache=cache,
                               on_file=render.load_progress(quiet=as_json))
    except PolicyError as error:
        usage_error(error, as_json)
    render.synced(report, as_json)
    raise typer.Exit(report.exit_code)


@app.command("app-copy")
def app_copy(
    source: Annotated[Path, typer.Argument(help="The n8n or Flowise SQLite database (database.sqlite).", metavar="SOURCE")],
    schema: Annotated[str, typer.Option(
        "--schema", help="The schema the application made in PostgreSQL by starting once against it.")],
    dsn: Dsn = None, home: Home = DEFAULT_HOME,
    replace: Annotated[bool, typer.Option(
        "--replace", metavar="", help="Replace application data the schema already holds (beyond its first-start rows).")] = False,
    verify_only: Annotated[bool, typer.Option(
        "--verify-only", metavar="", help="Write nothing: compare every table of the schema with the source as it is now.")] = False,
    as_json: AsJson = False,
) -> None:
    """Copy an n8n or Flowise SQLite database (read from a private copy) into the schema the application
    itself created in PostgreSQL, each value converted to its column's type, then verify every table
    (row count and a digest of every row's values on both sides). One transaction, committed only when
    every table matches. Refused, writing nothing, when the migrations of the two sides differ or the
    schema already holds application data (unless --replace). Recorded in consolidate.app_copies.

    Exit 0 verified; 1 a table differs (the copy is rolled back); 2 bad usage (no such schema, not an
    n8n/Flowise file, a role that may not use the schema); 3 the source cannot be read; 4 PostgreSQL unavailable; 5 refused, nothing written (versions differ, data
    in the schema, a value that does not fit, the application connected as the schema's owner).

    Example: consolidate app-copy /srv/n8n/database.sqlite --schema n8n --dsn postgresql://consolidate@db/apps
    """
    if replace and verify_only:
        usage_error("--verify-only writes nothing: it takes no --replace", as_json)
    from loader import apps as app_databases

    try:
        result = app_databases.app_copy(source, target_for(dsn, home, "public"), schema, replace=replace,
                                        verify_only=verify_only)
    except app_databases.AppCopyUsageError as error:
        usage_error(error, as_json)
    except app_databases.SourceUnreadable as error:
        render.error(f"cannot read the source: {error}", as_json, ExitCode.SOURCE_UNREADABLE)
        raise typer.Exit(ExitCode.SOURCE_UNREADABLE) from None
    render.app_copied(result, as_json)
    raise typer.Exit(result.exit_code)


Sources = Annotated[list[Path], typer.Argument(help="SQLite files, as the ledger knows them (see `consolidate status`).",
                                               metavar="SOURCE")]
Note = Annotated[str | None, typer.Option("--note", help="Why, or which deployment: kept in the ledger.")]


@app.command()
def cutover(sources: Sources, dsn: Dsn = None, home: Home = DEFAULT_HOME, note: Note = None,
            undo: Annotated[bool, typer.Option(
                "--undo", metavar="", help="Record instead that these files' services write to their SQLite files again "
                               "(after `consolidate rollback`).")] = False,
            as_json: AsJson = False) -> None:
    """Record in the ledger (consolidate.cutovers) that each SOURCE's service now writes to PostgreSQL
    (give it MemoryClient(..., source=SOURCE)). Refused, for all, unless every SOURCE is a memory file
    whose bytes on disk are its current load's: stop its writes and `consolidate sync` first. From then
    on, a sync that finds SOURCE changed still loads it and warns of split brain, naming the entries
    written on both sides. `consolidate status` shows the files cut over. Exit 5 when refused (nothing
    recorded).

    Example: consolidate cutover /opt/app/.swarm/memory.db --note 'coder agents on PostgreSQL'"""
    try:
        outcomes = (cutover_stage.undo if undo else cutover_stage.cutover)(target_for(dsn, home, "public"), sources,
                                                                           note=note)
    except cutover_stage.CutoverError as error:
        render.refused(error, as_json, ExitCode.REFUSED)
        raise typer.Exit(ExitCode.REFUSED) from None
    render.cutovers(outcomes, as_json)


@app.command()
def forget(sources: Sources, dsn: Dsn = None, home: Home = DEFAULT_HOME, note: Note = None,
           as_json: AsJson = False) -> None:
    """Accept that each SOURCE, a file of the ledger deleted outside `consolidate archive`, is gone on
    purpose (consolidate.forgotten_files): its rows stay in PostgreSQL, `validate` checks their counts but
    asks for its bytes no more, and `status` and `sync` say `forgotten` instead of `missing`. A file put
    back on disk counts from disk again. Refused, for all, unless the ledger knows every SOURCE (a copy, or
    a file that only ever failed, too) and none is on disk but a file that only ever failed (left out on
    purpose: validate stops failing on it until it loads). Exit 5 when refused (nothing recorded).

    Example: consolidate forget /opt/app/retired/.swarm/memory.db --note 'service retired, disk wiped'"""
    try:
        outcomes = forget_stage.forget(target_for(dsn, home, "public"), sources, note=note)
    except forget_stage.ForgetError as error:
        render.refused(error, as_json, ExitCode.REFUSED)
        raise typer.Exit(ExitCode.REFUSED) from None
    render.forgotten(outcomes, as_json)


@app.command()
def rollback(source: Annotated[Path, typer.Argument(help="The SQLite file whose entries to write back.", metavar="SOURCE")],
             to: Annotated[Path, typer.Option("--to", metavar="FILE", help="The new SQLite file to write: outside the roots `sync` reads; move it into "
                                          "SOURCE's place yourself, with its service stopped.")],
             dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public",
             overwrite: Annotated[bool, typer.Option("--overwrite", metavar="", help="Replace FILE if it exists.")] = False,
             as_json: AsJson = False) -> None:
    """Write FILE: a new SQLite database in SOURCE's own schema (claude-flow v2, v3 or extended-memory:
    same tables, indexes, triggers, views and pragmas) holding PostgreSQL's current state of every
    entry whose home is SOURCE (its rows, and the entries its service wrote in PostgreSQL), deletes
    applied, times in SOURCE's units; rows PostgreSQL never changed are SOURCE's own, byte for byte.
    SOURCE is never opened (one `archive --remove-originals` removed is read from its archive); FILE is
    never replaced without --overwrite. Recorded in
    consolidate.rollbacks. Write FILE outside the folders `sync` reads (it would load it as a new file),
    then move it into SOURCE's place with its service stopped. Exit 2 when FILE may not be used (it
    exists, it is SOURCE or another file the ledger loads, it lies inside a root of the loads, it is a
    folder, no such folder); 5 when
    refused, nothing written (SOURCE changed since its last sync, not loaded, marts not built); 1 when
    writing FILE failed (nothing is left of it).

    Example: consolidate rollback /opt/app/.swarm/memory.db --to /srv/rollback/memory.db"""
    try:
        result = rollback_stage.rollback(target_for(dsn, home, schema), source, to, overwrite=overwrite)
    except rollback_stage.DestinationRefused as error:
        usage_error(error, as_json)
    except rollback_stage.WritingFailed as error:
        render.error(error, as_json, ExitCode.NOT_RECONCILED)
        raise typer.Exit(ExitCode.NOT_RECONCILED) from None
    except rollback_stage.RollbackError as error:
        render.refused(error, as_json, ExitCode.REFUSED)
        raise typer.Exit(ExitCode.REFUSED) from None
    render.rolled_back(result, as_json)


@db_app.command("url")
def db_url(home: Home = DEFAULT_HOME) -> None:
    """Start the embedded PostgreSQL if needed and print its connection URL (for psql).

    Example: psql "$(consolidate db url)\""""
    render.out.print(embedded_dsn(home), soft_wrap=True)


@db_app.command("env")
def db_env(dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public") -> None:
    """Print the dbt profile's variables for the database the other commands use, as shell `export`
    lines, to run plain dbt against it (never the password: libpq takes it from PGPASSWORD or ~/.pgpass).

    Example: eval "$(consolidate db env)" && dbt build --profiles-dir profiles"""
    render.shell_exports(target_for(dsn, home, schema).dbt_settings())


@db_app.command("stop")
def db_stop(home: Home = DEFAULT_HOME) -> None:
    """Stop the embedded PostgreSQL (fast: open connections are closed). Exit 4 when pg_ctl cannot stop it.

    Example: consolidate db stop --home ./.consolidate"""
    try:
        stopped = stop_embedded(home)
    except EmbeddedServerError as error:
        render.error(error)
        raise typer.Exit(ExitCode.DATABASE_UNAVAILABLE) from None
    render.err.print("stopped" if stopped else "not running")


@cache_app.command("warm")
def cache_warm(
    top: Annotated[int, typer.Option("--top", min=1, help="How many of the hottest entries to cache.")] = 1000,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    dsn: Dsn = None, home: Home = DEFAULT_HOME, schema: Schema = "public", as_json: AsJson = False,
) -> None:
    """Cache the hottest live entries of unified_memory (access_count desc, then accessed_at desc), each
    until its expires_at. Exit 7 when Redis cannot be reached.

    Example: consolidate cache warm --top 1000 --redis-url redis://127.0.0.1:10001/0"""
    from loader.serve import client as memory_client

    cache = redis_cache(redis_url, as_json, required=True)
    warmed = memory_client.warm_cache(target_for(dsn, home, schema).dsn, cache, top, schema=schema)
    render.cache_warmed(cache.redacted_url, warmed, as_json)
    raise typer.Exit(ExitCode.OK if warmed is not None else ExitCode.CACHE_UNAVAILABLE)


@cache_app.command("stats")
def cache_stats(redis_url: RedisUrl = DEFAULT_REDIS_URL, as_json: AsJson = False) -> None:
    """Cached entries (mem:* keys), memory used and the server's hit/miss counters from Redis INFO.
    Exit 7 when Redis cannot be reached.

    Example: consolidate cache stats --json"""
    stats = redis_cache(redis_url, as_json, required=True).stats()
    render.cache_stats(stats, as_json)
    raise typer.Exit(ExitCode.OK if stats["connected"] else ExitCode.CACHE_UNAVAILABLE)


def one_line_paragraphs(help_text: str) -> str:
    """A command's docstring as its help: typer joins the lines of the first paragraph only, and prints the
    later ones with the docstring's own line breaks (wrapped again: a break mid-sentence). Each paragraph
    becomes one line, but an `Example:` starts a line of its own."""
    paragraphs = inspect.cleandoc(help_text).split("\n\n")
    return "\n\n".join(re.sub(r"\n(?!Example:)", " ", paragraph) for paragraph in paragraphs)


for group in (app, db_app, cache_app):
    for registered in group.registered_commands:
        registered.help = registered.help or one_line_paragraphs(registered.callback.__doc__ or "")


def given_dsns(argv: list[str]) -> list[str]:
    """The DSNs this process was given (`--dsn`, DATABASE_URL), whose passwords no message may show."""
    dsns = [os.environ.get("DATABASE_URL") or ""]
    for index, argument in enumerate(argv):
        if argument == "--dsn" and index + 1 < len(argv):
            dsns.append(argv[index + 1])
        elif argument.startswith("--dsn="):
            dsns.append(argument.removeprefix("--dsn="))
    return [dsn for dsn in dsns if dsn]


def redacted_message(error: BaseException) -> str:
    text = str(error).strip()
    for dsn in given_dsns(sys.argv):
        text = redact_password(text, dsn)
    return text


# A server that answers and refuses what the DSN asks for: the DSN is wrong, not the server away.
CONNECTION_REFUSED = re.compile(r'(database|role) "[^"]*" does not exist|password authentication failed|'
                                r'no password supplied|no pg_hba\.conf entry|permission denied for database|'
                                r'server does not support SSL')
# What the role needs of a server of your own (README "Pointing it at a production server").
PRIVILEGES_NEEDED = ("the role needs CONNECT, CREATE and TEMPORARY on the database and CREATE on the marts' "
                     "schema (--schema; since PostgreSQL 15 only the database's owner may create in `public`): "
                     "see README, \"Pointing it at a production server\"")


def asked_for_json(argv: list[str]) -> bool:
    """Whether the command line has --json among the tool's own options (not among dbt's after `--`)."""
    options = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    return "--json" in options


# The usage errors typer finds as it parses (BadParameter, a missing argument, an unknown option): the base
# class of typer.BadParameter, in the click typer carries (or click itself, for typer before 0.22).
TYPER_USAGE_ERROR = next(base for base in typer.BadParameter.__mro__ if base.__name__ == "ClickException")


def main() -> None:
    """The console script: the app, with a DSN that cannot be used or a lost or unreachable PostgreSQL
    reported in one line (never with the DSN's password); with --json also as a JSON document on stdout."""
    try:
        exit_code = app(prog_name="consolidate", standalone_mode=False)
    except TYPER_USAGE_ERROR as error:  # a usage error typer found: a ROOT that does not exist...
        rich_utils.rich_format_error(error)
        if asked_for_json(sys.argv):
            render.print_json({"error": error.format_message(), "exit_code": error.exit_code})
        sys.exit(error.exit_code)
    except typer.Abort:
        rich_utils.rich_abort_error()
        sys.exit(1)
    except (BadDsn, ledger.LedgerTooNew, build_stage.NotPermitted) as error:
        usage_failure(redacted_message(error))
    except psycopg.errors.InsufficientPrivilege as error:
        refusal = redacted_message(error).splitlines()[0]
        usage_failure(f"PostgreSQL refused: {refusal}" + ("" if refusal.startswith("must be") else f"; {PRIVILEGES_NEEDED}"))
    except psycopg.OperationalError as error:
        message = redacted_message(error)
        if CONNECTION_REFUSED.search(message):
            usage_failure(f"PostgreSQL refused the connection (check --dsn / DATABASE_URL): {message}")
        render.database_unavailable(message)
        if asked_for_json(sys.argv):
            render.print_json({"error": f"PostgreSQL unavailable: {message}",
                               "exit_code": ExitCode.DATABASE_UNAVAILABLE})
        sys.exit(ExitCode.DATABASE_UNAVAILABLE)
    if exit_code == ExitCode.INTERRUPTED:  # typer's answer to a KeyboardInterrupt, which it leaves unsaid
        render.error("interrupted: PostgreSQL keeps what the command had committed and nothing of the "
                     "transaction it was in; a file it was writing (a backup, an archive, a rollback file) may be "
                     "incomplete", asked_for_json(sys.argv), ExitCode.INTERRUPTED)
    sys.exit(exit_code if isinstance(exit_code, int) else ExitCode.OK)


def usage_failure(message: str) -> NoReturn:
    """usage_error for a failure raised out of the command (outside typer's app: sys.exit)."""
    render.error(message, asked_for_json(sys.argv), ExitCode.USAGE)
    sys.exit(ExitCode.USAGE)
