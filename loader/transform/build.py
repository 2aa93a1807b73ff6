"""Run the dbt project (models and their tests, the validation phase) against the target database.

A build is incremental when it can be: the memory models apply only the loads and writes that are new
since the last build (dbt_project/macros/incremental_memory.sql). It is a full refresh (everything from
raw and the write log) when asked, and when there is nothing to build on: the first build, or state left
by a version of the project without incremental memory models.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from loader import ledger
from loader.database import Target
from loader.exit_codes import ExitCode
from loader.ledger import WRITE_LOG_SCHEMA
from loader.load import raw_tables
from loader.load.raw_contract import MEMORY_KINDS, RAW_SCHEMAS
from loader.relations import MEMORY_RANKED
from loader.transform import dbt_process, jinja_cache, schema_cache
from loader.transform.freshness import project_digest
from loader.transform.project import PROFILES_DIR, PROJECT_DIR


@dataclass
class BuildOutcome:
    success: bool
    passed: int = 0  # models, tests (unit tests too), seeds and snapshots that passed (dbt's PASS adds the hooks)
    warned: int = 0  # ... that passed with a warning (WARN)
    not_run: int = 0  # ... that dbt skipped because a node they depend on failed (SKIP)
    failures: list[str] = field(default_factory=list)
    skipped: bool = False
    crashed: bool = False  # dbt itself failed (bad arguments, no connection): no model or test ran to fail
    warnings: list[str] = field(default_factory=list)  # what the caller should know of how it built (not in JSON)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.success else ExitCode.NOT_RECONCILED

    def to_json(self) -> dict:
        return {"success": self.success, "passed": self.passed, "warned": self.warned, "not_run": self.not_run,
                "failures": self.failures, "skipped": self.skipped, "crashed": self.crashed}


def dbt_arguments(command: list[str], home: Path, quiet: bool) -> list[str]:
    """`command` (a dbt command and its own arguments) pointed at the project, its profile and `home`; dbt's
    options without a command (`--version`, `--help`) as they are."""
    if dbt_subcommand(command) is None:
        return command
    arguments = [
        *command,
        "--project-dir", str(PROJECT_DIR),
        "--profiles-dir", str(PROFILES_DIR),
        "--log-path", str((home / "dbt" / "logs").absolute()),
    ]
    if dbt_subcommand(command) not in ("debug", "deps", "init"):  # these take no --target-path
        arguments += ["--target-path", str((home / "dbt" / "target").absolute())]
    arguments.append("--use-colors" if sys.stdout.isatty() else "--no-use-colors")
    return arguments + (["--quiet"] if quiet else [])


# dbt's options that take a value, which may stand before its command (`--log-level debug build`).
OPTIONS_WITH_A_VALUE = {"--log-level", "--log-level-file", "--log-format", "--log-format-file", "--printer-width",
                        "--threads", "--target", "-t", "--profile", "--vars", "--log-path", "--target-path",
                        "--project-dir", "--profiles-dir"}


def dbt_subcommand(arguments: list[str]) -> str | None:
    """The dbt command `arguments` run (`build`, `clean`, `docs`...): the first word that is neither an
    option nor an option's value."""
    return None if (position := subcommand_position(arguments)) is None else arguments[position]


def subcommand_position(arguments: list[str]) -> int | None:
    """Where dbt_subcommand stands in `arguments`."""
    skip_value = False
    for position, word in enumerate(arguments):
        if skip_value:
            skip_value = False
        elif word in OPTIONS_WITH_A_VALUE:
            skip_value = True
        elif not word.startswith("-"):
            return position
    return None


def without_subcommand(arguments: list[str]) -> list[str]:
    """`arguments` but the dbt command: its options, wherever they stand."""
    position = subcommand_position(arguments)
    return arguments if position is None else arguments[:position] + arguments[position + 1:]


def clean(target: Target, home: Path) -> list[Path]:
    """What `dbt clean` would remove of a `consolidate dbt` project: its artifacts and logs under HOME/dbt
    (dbt's own clean removes the clean-targets beside the packaged project instead), under the dbt lock
    (a build's run_results.json is not removed under it). dbt's compiled templates and schemas kept under
    HOME/dbt stay: they are keyed by what they were made from. Returns the folders removed."""
    removed = []
    with target.connect(connect_timeout=10, autocommit=True) as connection:
        take_dbt_lock(connection)
        for folder in (home / "dbt" / "target", home / "dbt" / "logs"):
            if folder.exists():
                shutil.rmtree(folder)
                removed.append(folder)
    return removed


def dbt_environment(target: Target, home: Path) -> dict[str, str]:
    """The variables a dbt invocation runs with: the profile's connection settings and where the compiled
    templates and the schemas are kept (loader/transform/jinja_cache.py, schema_cache.py)."""
    return {**target.dbt_environment(),
            # as dbt_project.yml's flags say, before dbt has read them (its start-up)
            "DBT_SEND_ANONYMOUS_USAGE_STATS": os.environ.get("DBT_SEND_ANONYMOUS_USAGE_STATS", "false"),
            jinja_cache.FOLDER_VARIABLE: str((home / "dbt" / "jinja-cache").absolute()),
            schema_cache.FOLDER_VARIABLE: str((home / "dbt" / "schema-cache").absolute())}


def prepare(target: Target, home: Path) -> None:
    """Get dbt ready for a build against `target` under `home`, for a caller with other work to do first
    (a load): see loader/transform/dbt_process.py."""
    # its output is nobody's: dbt's logger writes to the process's stdout (the caller's --json document) past
    # any redirection, so it logs nothing, also when the caller exits under it (an error, a skipped build)
    dbt_process.start_ahead(dbt_arguments(["parse", "--no-write-json", "--log-level", "none"], home, quiet=True),
                            dbt_environment(target, home))


# dbt commands that write models, or read them as a build leaves them. Any other (`docs serve`, which
# runs until stopped, `parse`, `compile`, `ls`...) takes no lock.
LOCKING_COMMANDS = {"build", "run", "test", "seed", "snapshot", "run-operation", "retry", "clone"}


@contextlib.contextmanager
def dbt_lock(target: Target, command: list[str]) -> Iterator[psycopg.Connection | None]:
    """Hold the database's dbt lock (a session advisory lock, `consolidate.dbt`) while a command that
    names one of LOCKING_COMMANDS decides what to build and runs: two builds at once (two syncs, a sync
    and `consolidate build`) would each replace the same models, and one fail on the other's tables
    (`..._dbt_backup already exists`), and tests would read a build half done. The second waits, saying
    so, then decides what to build from what the first left (often nothing: it built those loads too).
    Gives the connection holding it (None for a command that takes no lock)."""
    if not LOCKING_COMMANDS & set(command):
        yield None
        return
    with target.connect(connect_timeout=10, autocommit=True) as connection:
        take_dbt_lock(connection)
        yield connection


def take_dbt_lock(connection: psycopg.Connection) -> None:
    """The dbt lock (dbt_lock) for the session of `connection` (an autocommit one), until it closes."""
    if not connection.execute("SELECT pg_try_advisory_lock(hashtext('consolidate.dbt'))").fetchone()[0]:
        print("waiting for another build (or dbt command) on this database to finish...", file=sys.stderr,
              flush=True)
        connection.execute("SELECT pg_advisory_lock(hashtext('consolidate.dbt'))")


def run_dbt(command: list[str], target: Target, home: Path, *, quiet: bool = False,
            progress_to_stderr: bool = False, locked: psycopg.Connection | None = None,
            project: str | None = None) -> BuildOutcome:
    """Invoke any dbt command (`["test", "--select", "unified_memory"]`, `["docs", "generate"]`, ...)
    against `target` (the profile reads its connection settings from the environment, see
    Target.dbt_environment) with its artifacts and logs under `home`/dbt. `crashed` tells a dbt error
    (bad arguments, no connection) from models or tests that failed. `quiet`: dbt prints only its
    errors, and to stderr, so stdout stays the caller's (one JSON document with --json).
    `progress_to_stderr`: dbt's progress goes to stderr, beside the command's own (stdout keeps the
    command's results); `consolidate dbt` leaves dbt's output where dbt puts it. `locked`: the autocommit
    connection on which the caller holds the dbt lock (dbt_lock) already. `project`: the project's
    digest, when the caller has it."""
    with contextlib.nullcontext(locked) if locked is not None else dbt_lock(target, command) as connection:
        return invoke_dbt(command, target, home, connection, quiet=quiet, progress_to_stderr=progress_to_stderr,
                          project=project)


@contextlib.contextmanager
def connection_for(target: Target, connection: psycopg.Connection | None) -> Iterator[psycopg.Connection]:
    """`connection`, or a new autocommit one for the block (PostgreSQL unreachable: psycopg's error, exit 4)."""
    if connection is not None:
        yield connection
        return
    with target.connect(connect_timeout=10, autocommit=True) as new:
        yield new


def invoke_dbt(command: list[str], target: Target, home: Path, connection: psycopg.Connection | None, *,
               quiet: bool, progress_to_stderr: bool, project: str | None) -> BuildOutcome:
    # The ledger first: every invocation's on-run-start records itself in it (a ledger made by an earlier
    # version gets its new columns).
    with connection_for(target, connection) as setup:
        ledger.ensure(setup)
        invoked_at, = setup.execute("SELECT clock_timestamp()").fetchone()
        project = project or project_digest()
        digests = {PROJECT_DIGEST_VARIABLE: project, COMPILED_FROM_VARIABLE: compiled_from(setup, project)}
        warnings = [warning] if (warning := incremental_over_stale_marts(setup, command, target.schema)) else []

    run_results = home / "dbt" / "target" / "run_results.json" if "--no-write-json" in command else None
    try:
        invocation = dbt_process.invoke(dbt_arguments(command, home, quiet), {**dbt_environment(target, home), **digests},
                                        run_results, quiet or progress_to_stderr)
    except dbt_process.WorkerGone as gone:
        return BuildOutcome(success=False, crashed=True, failures=[str(gone)])
    with connection_for(target, connection) as recording:
        record_invocation(recording, command, invoked_at, invocation.invocation_id)
        if invocation.success and not warnings and (warning := left_some_memory_models_behind(
                recording, command, invocation.invocation_id, invoked_at)):
            warnings.append(warning)
    outcome = BuildOutcome(success=invocation.success, crashed=invocation.exception is not None, warnings=warnings)
    for unique_id, status, message in invocation.results:
        if status in ("error", "fail", "runtime error"):
            outcome.failures.append(target.redact(f"{unique_id}: {message}"))
        elif unique_id.startswith("operation."):
            continue  # a hook that ran: neither a model nor a test
        elif status in ("success", "pass"):
            outcome.passed += 1
        elif status == "warn":
            outcome.warned += 1
        elif status == "skipped":
            outcome.not_run += 1
    if not outcome.success and not outcome.failures:
        outcome.failures.append(target.redact(invocation.exception or "dbt failed; see its output above"))
    return outcome


def incremental_over_stale_marts(connection: psycopg.Connection, command: list[str], schema: str) -> str | None:
    """For a dbt `build` or `run` without --full-refresh (`consolidate dbt`, plain dbt's users): a warning when
    the memory models hold no state an incremental build can continue from (can_build_incrementally), which
    `consolidate build` answers with a full refresh."""
    if (subcommand := dbt_subcommand(command)) not in ("build", "run") or {"--full-refresh", "-f"} & set(command) \
            or not ledger.relation_exists(connection, *MEMORY_RANKED) or can_build_incrementally(connection, schema):
        return None
    return (f"the last dbt invocation that built memory models failed, died or built only some of them: this "
            f"incremental `dbt {subcommand}` recomputes only what changed since and keeps marts that may not hold "
            "what int_memory_ranked does; `consolidate build` (or --full-refresh) rebuilds them from raw")


def left_some_memory_models_behind(connection: psycopg.Connection, command: list[str], invocation_id: str,
                                   invoked_at) -> str | None:
    """After a dbt `build` or `run` that passed: a warning when it built only some of the memory models (a
    selection; its on-run-start row in consolidate.memory_builds says `some`), so that the marts may not hold
    what int_memory_ranked does (said now, not only before the next incremental invocation)."""
    if (subcommand := dbt_subcommand(command)) not in ("build", "run") or not connection.execute(
            sql.SQL("SELECT 1 FROM {} WHERE invocation_id = %s AND started_at >= %s AND memory_models = 'some'").format(
                ledger.table("memory_builds")), (invocation_id, invoked_at)).fetchone():
        return None
    return (f"this `dbt {subcommand}` built only some of the memory models: the marts may not hold what "
            "int_memory_ranked does; `consolidate build` (or --full-refresh) rebuilds them from raw, an "
            "incremental `dbt build` would keep them")


# Options of `dbt build` that leave what it builds, and how, as a plain build would (--empty, --vars,
# --target, a selection... do not).
PLAIN_BUILD_FLAGS = {"--full-refresh", "--no-write-json", "--write-json", "--fail-fast", "-x", "--no-fail-fast",
                     "--partial-parse", "--no-partial-parse", "--debug", "-d", "--quiet", "-q", "--use-colors",
                     "--no-use-colors", "--warn-error", "--no-version-check", "--version-check"}
PLAIN_BUILD_OPTIONS = {"--threads", "--log-level", "--log-level-file", "--log-format", "--printer-width"}


def builds_every_node(command: list[str]) -> bool:
    """Whether the dbt command line `command` is a `build` of every model (its options before or after `build`)."""
    return dbt_subcommand(command) == "build" and selects_every_model(without_subcommand(command))


def selects_every_model(arguments: list[str]) -> bool:
    """Whether dbt build arguments build every model as a plain build does: only harmless flags, and no
    exclusion but dbt's unit tests."""
    index = 0
    while index < len(arguments):
        option, equals, value = arguments[index].partition("=")
        index += 1
        if option in PLAIN_BUILD_FLAGS and not equals:
            continue
        if option in PLAIN_BUILD_OPTIONS:
            index += 0 if equals else 1
            continue
        if option != "--exclude":
            return False
        excluded = [value] if equals else []
        while not equals and index < len(arguments) and not arguments[index].startswith("-"):
            excluded.append(arguments[index])
            index += 1
        if excluded != ["test_type:unit"]:
            return False
    return True


def record_invocation(connection: psycopg.Connection, command: list[str], invoked_at, invocation_id: str) -> None:
    """Note on the invocation's memory_builds row (its on-run-start made it, with what its views are
    compiled from) whether it built every node: a later sync leaves the views alone only after a complete
    passing build compiled from the same (selection). A row started before `invoked_at` is an earlier
    invocation's (dbt failed before starting this one)."""
    connection.execute(
        sql.SQL("UPDATE {} SET complete = %s WHERE invocation_id = %s AND started_at >= %s").format(
            ledger.table("memory_builds")), (builds_every_node(command), invocation_id, invoked_at))


# What an incremental build needs from the previous one (a column only this project's models have).
INCREMENTAL_STATE = ((*MEMORY_RANKED, "write_id"), (None, "unified_memory_history", "deleted"))
# A check constraint on the column that the table's contract declares. dbt adds a contract's constraints
# only when it creates the table, and an incremental build keeps the table it has: one built before the
# contract declared the check must be built again (assert_contract_constraints_in_place would fail it).
INCREMENTAL_CHECKS = (("unified_memory", "namespace"), ("performance_metrics", "namespace"))
HAS_CHECK = ("SELECT 1 FROM pg_constraint AS c JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey) "
             "WHERE c.conrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) AND c.contype = 'c' AND a.attname = %s")


def can_build_incrementally(connection, schema: str) -> bool:
    """Whether the memory models hold state an incremental build can continue from: every table with
    its current shape and its contract's checks, ids for its entries (an emptied consolidate.entry_ids
    needs a full refresh), and a last build that finished, passed and built every memory model (one that
    failed, died or built only some may have left marts that an incremental build, which recomputes only
    what changed since, would keep: the next build starts from raw; ledger.memory_models_left_whole)."""
    for table_schema, table, column in INCREMENTAL_STATE:
        if connection.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "AND column_name = %s", (table_schema or schema, table, column)).fetchone() is None:
            return False
    for table, column in INCREMENTAL_CHECKS:
        if connection.execute(HAS_CHECK, (schema, table, column)).fetchone() is None:
            return False
    (ids_missing,) = connection.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {}) AND NOT EXISTS (SELECT 1 FROM {})").format(
            sql.Identifier(*MEMORY_RANKED), ledger.table("entry_ids"))).fetchone()
    return not ids_missing and ledger.memory_models_left_whole(connection, schema)


# The digests an invocation's on-run-start records (start_memory_build in macros/incremental_memory.sql).
PROJECT_DIGEST_VARIABLE = "CONSOLIDATE_PROJECT_DIGEST"
COMPILED_FROM_VARIABLE = "CONSOLIDATE_COMPILED_FROM"

# What the views are compiled from besides the project's files: the raw tables' columns (staging selects
# them by name) in every raw schema and the write log's.
RAW_COLUMNS = sql.SQL(
    "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
    "FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace "
    "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped "
    "ORDER BY n.nspname, c.relname, a.attnum")


def compiled_from(connection, project: str) -> str:
    """A digest of what dbt compiles the views from: the project's files (`project`, their digest) and the
    raw tables' columns."""
    columns = connection.execute(RAW_COLUMNS, ([*RAW_SCHEMAS.values(), WRITE_LOG_SCHEMA],)).fetchall()
    return hashlib.sha256(f"{project}\n{columns!r}".encode()).hexdigest()


# The application sources: nothing else reads them.
APP_SOURCES = [schema for kind, schema in RAW_SCHEMAS.items() if kind not in MEMORY_KINDS]

# The latest complete build (every node) against the marts' schema: what it compiled from, whether it
# passed, and whether a file of a kind other than memory loaded since it started (its views, app ones
# included, are compiled from those loads' tables and declared types).
LAST_COMPLETE_BUILD = sql.SQL("""
SELECT build.compiled_from, build.passed,
       EXISTS (SELECT 1 FROM {load_files} AS f
               WHERE f.status = 'loaded' AND f.kind <> ALL(%(memory_kinds)s)
                 AND coalesce(f.completed_at, f.started_at) >= build.started_at)
FROM {memory_builds} AS build
WHERE build.marts_schema = %(schema)s AND build.complete
ORDER BY build.started_at DESC LIMIT 1
""").format(load_files=ledger.table("load_files"), memory_builds=ledger.table("memory_builds"))


def selection(connection, schema: str, project: str) -> tuple[list[str], list[str]]:
    """What an incremental build after a sync needs to build, as dbt's --select and --exclude: every table
    and incremental model and every test, but no view and nothing that reads only application sources.
    That holds when the last complete build passed, was compiled from the same project files and raw
    columns, and no file but memory files loaded since it started: its views are then what this build
    would make (a view's rows follow its inputs by themselves), and the application nodes would give what
    it gave. Nothing selected: build everything."""
    last = connection.execute(LAST_COMPLETE_BUILD, {"schema": schema, "memory_kinds": sorted(MEMORY_KINDS)}).fetchone()
    if last is None or last != (compiled_from(connection, project), True, False):
        return [], []
    return (["config.materialized:table", "config.materialized:incremental", "resource_type:test"],
            [f"source:{source}+" for source in APP_SOURCES])


class NotPermitted(Exception):
    """The role may not create what a build creates; the message names the privileges it lacks."""


# What a build needs of the role: temporary tables (dbt's incremental models write their rows there first)
# and creating tables in the marts' schema (in the database, while that schema does not exist).
MISSING_PRIVILEGES = """
SELECT array_remove(ARRAY[
    CASE WHEN NOT has_database_privilege(current_database(), 'TEMPORARY')
         THEN format('TEMPORARY ON DATABASE %%I', current_database()) END,
    CASE WHEN to_regnamespace(quote_ident(%(schema)s)) IS NULL AND NOT has_database_privilege(current_database(), 'CREATE')
         THEN format('CREATE ON DATABASE %%I', current_database())
         WHEN to_regnamespace(quote_ident(%(schema)s)) IS NOT NULL
              AND NOT has_schema_privilege(to_regnamespace(quote_ident(%(schema)s)), 'CREATE')
         THEN format('CREATE ON SCHEMA %%I', %(schema)s::text) END
], NULL)
"""


def check_privileges(connection: psycopg.Connection, schema: str) -> None:
    """Raise NotPermitted, before dbt starts, when the role lacks a privilege every build needs."""
    (missing,) = connection.execute(MISSING_PRIVILEGES, {"schema": schema}).fetchone()
    if missing:
        role = connection.execute("SELECT quote_ident(current_user)").fetchone()[0]
        raise NotPermitted(
            f"role {role} may not build the marts in schema {schema!r}: it lacks {' and '.join(missing)} "
            f"({'; '.join(f'GRANT {privilege} TO {role}' for privilege in missing)}; since PostgreSQL 15 only "
            "the database's owner may create in `public`: grant it, or give --schema another schema)")


def build(target: Target, home: Path, *, quiet: bool = False, full_refresh: bool = False,
          unit_tests: bool = True, only_what_changed: bool = False) -> BuildOutcome:
    """dbt build: incremental unless `full_refresh` or there is no state to continue from. The ledger and
    the write log are created first, so a build never lacks its sources. `unit_tests=False` leaves out
    dbt's unit tests, which check the project's SQL on fixed rows, not the data (sync does, every cycle).
    `only_what_changed` (a sync's) builds only the nodes that memory loads and writes in PostgreSQL can
    change, when that is known (`selection`)."""
    # the lock is held on the connection that decides what to build, until the build ends: the decision
    # reads the last build, never one still running
    with target.connect(connect_timeout=10, autocommit=True) as connection:
        take_dbt_lock(connection)
        raw_tables.bootstrap(connection)
        check_privileges(connection, target.schema)
        full_refresh = full_refresh or not can_build_incrementally(connection, target.schema)
        project = project_digest()
        select, exclude = selection(connection, target.schema, project) if only_what_changed and not full_refresh \
            else ([], [])
        exclude += [] if unit_tests else ["test_type:unit"]
        # manifest.json is left out (written twice per build, about half a second at this project's size);
        # run_results.json is kept. `consolidate dbt -- parse` writes the manifest.
        # A sync's log (it may run every few seconds) leaves out dbt's debug lines, every statement: 0.2-0.3 s.
        log_level = ["--log-level-file", "info"] if only_what_changed else []
        command = ["build", "--no-write-json", *log_level, *(["--full-refresh"] if full_refresh else []),
                   *(["--select", *select] if select else []), *(["--exclude", *exclude] if exclude else [])]
        return run_dbt(command, target, home, quiet=quiet, progress_to_stderr=True, locked=connection,
                       project=project)
