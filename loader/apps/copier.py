"""`app_copy`: an n8n or Flowise SQLite database into the schema the application made in PostgreSQL.

In one transaction, after checking the versions and that the target holds no application data (or
`replace`): the target's rows are deleted (children first), except the first-start rows of a table
the source has none of; the source's rows are sent by COPY, parents first, each value converted to
its column's type (convert.py); every sequence is moved past the copied ids; then every table is
verified (digests.py). The transaction commits only when every table matches. A ledger row records
each attempt (consolidate.app_copies).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from loader import __version__, ledger
from loader.apps import digests
from loader.apps import source as source_db
from loader.apps import target as target_db
from loader.apps.applications import MIGRATIONS_TABLE, Application, is_copied_table, recognise
from loader.apps.convert import ConversionError, Converter, converter_for
from loader.apps.migrations import VersionCheck, compare
from loader.database import Target
from loader.exit_codes import ExitCode
from loader.ledger import LEDGER_SCHEMA, now

VERIFIED, MISMATCH, REFUSED, INTERRUPTED = "verified", "mismatch", "refused", "interrupted"
LOCK_TIMEOUT = "10s"


class AppCopyUsageError(Exception):
    """The command cannot apply: the schema does not exist, or the source is no n8n/Flowise database."""


class Refused(Exception):
    """Nothing was written, for the reason given."""


@dataclass
class TableReport:
    table: str
    action: str                 # copied / first-start rows replaced / first-start rows kept / emptied / skipped
                                # (--verify-only: compared / first-start rows kept / emptied / skipped)
    source_rows: int | None     # None: the source has no such table
    target_rows_before: int | None
    target_rows: int | None = None
    source_digest: str | None = None
    target_digest: str | None = None
    matches: bool | None = None
    differences: list[str] = field(default_factory=list)
    note: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class AppCopyResult:
    copy_id: str
    mode: str                   # copy / verify
    status: str                 # verified / mismatch / refused (interrupted: only in the ledger)
    source_path: str
    schema: str
    replace: bool
    application: str | None = None
    source_sha256: str | None = None
    wal_sha256: str | None = None
    message: str | None = None
    versions: VersionCheck | None = None
    tables: list[TableReport] = field(default_factory=list)
    sequences: list[dict] = field(default_factory=list)
    copy_seconds: float | None = None
    verify_seconds: float | None = None

    @property
    def exit_code(self) -> ExitCode:
        return {"verified": ExitCode.OK, "mismatch": ExitCode.NOT_RECONCILED, "refused": ExitCode.REFUSED}[self.status]

    @property
    def replaced_first_start(self) -> list[TableReport]:
        return [t for t in self.tables if t.action == "first-start rows replaced"]

    @property
    def copied_rows(self) -> int:
        return sum(t.source_rows or 0 for t in self.tables if t.action in ("copied", "first-start rows replaced"))

    @property
    def compared_rows(self) -> int:
        """The source rows verified against the target (all those copied; with --verify-only, compared)."""
        return self.copied_rows + sum(t.source_rows or 0 for t in self.tables if t.action == "compared")

    def to_json(self) -> dict:
        data = {name: getattr(self, name) for name in (
            "copy_id", "mode", "status", "application", "source_path", "source_sha256", "wal_sha256", "schema",
            "replace", "message", "sequences", "copy_seconds", "verify_seconds", "copied_rows", "compared_rows")}
        data["versions"] = self.versions.to_json() if self.versions else None
        data["replaced_first_start_rows"] = [
            {"table": t.table, "target_rows_replaced": t.target_rows_before, "source_rows": t.source_rows}
            for t in self.replaced_first_start]
        data["tables"] = [t.to_json() for t in self.tables]
        return data


@dataclass
class TablePlan:
    """How one table is handled."""

    name: str
    source_rows: int | None
    target_rows_before: int
    converters: list[Converter]   # the columns both sides have, with the target's types
    key_columns: list[str]
    action: str
    note: str | None = None

    @property
    def copies(self) -> bool:
        return self.action in ("copied", "first-start rows replaced")

    @property
    def clears(self) -> bool:
        return self.action != "first-start rows kept" and self.target_rows_before > 0


def session_settings(connection: psycopg.Connection) -> None:
    """UTC and ISO for every rendering; a lock held by a running application fails fast."""
    connection.execute("SET LOCAL TimeZone = 'UTC'")
    connection.execute("SET LOCAL DateStyle = 'ISO, YMD'")
    connection.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")


def lock_tables(connection: psycopg.Connection, schema: target_db.TargetSchema, exclusive: bool) -> None:
    relations = sql.SQL(", ").join(schema.relation(t) for t in sorted(schema.tables))
    mode = "ACCESS EXCLUSIVE" if exclusive else "SHARE"
    try:
        connection.execute(sql.SQL("LOCK TABLE {} IN " + mode + " MODE").format(relations))
    except psycopg.errors.LockNotAvailable:
        raise Refused(f"the tables of schema {schema.name} are in use by another session (is the application "
                      f"running against it? stop it first)") from None


def real_data(connection, schema, application: Application, counts: dict[str, int]) -> dict[str, str]:
    """The target tables holding rows that are not the application's first-start rows, described."""
    found = {}
    for table, rows in sorted(counts.items()):
        if not rows or table == MIGRATIONS_TABLE:
            continue
        if table not in application.first_start_tables:
            found[table] = f"{table} ({rows} rows)"
            continue
        condition = application.first_start_tables[table]
        if condition and (real := target_db.count(connection, schema, table, condition)):
            found[table] = f"{table} ({real} rows beyond the first start's)"
    return found


def plan_tables(source: source_db.SourceDatabase, schema: target_db.TargetSchema,
                application: Application, counts: dict[str, int], real: dict[str, str]) -> list[TablePlan]:
    """Every table of either side (migrations and SQLite's own tables aside): what happens to it.
    Raises Refused when source data has no place in the target."""
    source_tables = {name: columns for name, columns in source.tables().items() if is_copied_table(name)}
    problems, plans = [], []
    for name in sorted(set(source_tables) | {t for t in schema.tables if is_copied_table(t)}):
        source_rows = source.count(name) if name in source_tables else None
        table = schema.tables.get(name)
        if table is None:
            if source_rows and name not in application.transient_tables:
                problems.append(f"table {name} ({source_rows} rows) has no counterpart in schema {schema.name}")
            plans.append(TablePlan(name, source_rows, 0, [], [], "skipped",
                                   application.transient_tables.get(name, "not in the target; empty in the source")))
            continue
        before = counts[name]
        if name not in source_tables:
            plans.append(TablePlan(name, None, before, [], list(table.primary_key), "emptied",
                                   "not in the source"))
            continue
        shared = [c for c in source_tables[name] if table.column(c)]
        for column in source_tables[name]:
            if not table.column(column) and (values := source.non_null_count(name, column)):
                problems.append(f"column {name}.{column} holds {values} values but schema {schema.name} has no "
                                "such column")
        for column in table.columns:
            if column.name not in shared and column.not_null and not column.has_default and source_rows:
                problems.append(f"column {name}.{column.name} is NOT NULL without a default and the source has "
                                "no such column")
        converters = [converter_for(c, table.column(c).type) for c in shared]
        keys = [c for c in table.primary_key if c in shared]
        action, note = "copied", None
        if name in application.first_start_tables and before and name not in real:
            if source_rows:
                action = "first-start rows replaced"
                note = f"the target's {before} first-start rows replaced by the source's {source_rows}"
            else:
                action, note = "first-start rows kept", f"the source has none: the target's {before} kept"
        missing = [c.name for c in table.columns if c.name not in shared]
        if missing:
            note = "; ".join(filter(None, [note, "target columns left to their defaults: " + ", ".join(missing)]))
        plans.append(TablePlan(name, source_rows, before, converters, keys, action, note))
    if problems:
        raise Refused("; ".join(problems) + ". Nothing was written.")
    return plans


def copy_rows(connection: psycopg.Connection, schema: target_db.TargetSchema, source: source_db.SourceDatabase,
              plan: TablePlan) -> None:
    columns = [c.column for c in plan.converters]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        schema.relation(plan.name), sql.SQL(", ").join(map(sql.Identifier, columns)))
    try:
        with connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in source.rows(plan.name, columns):
                values = []
                for converter, value in zip(plan.converters, row):
                    try:
                        values.append(converter.convert(value)[0])
                    except ConversionError as error:
                        raise Refused(f"{source.path}: table {plan.name}, row {row_key(plan, columns, row)}, column "
                                      f"{converter.column} ({converter.type.declared}): {error}. Nothing was written.") from None
                copy.write_row(values)
    except (psycopg.DataError, psycopg.IntegrityError) as error:
        row = refused_row(error, source, plan, columns)
        if row is None:
            raise  # refused_on_bad_data names the table
        detail = f" ({error.diag.message_detail.strip()})" if error.diag.message_detail else ""
        column = COPY_COLUMN.search(error.diag.context or "")
        raise Refused(f"{source.path}: table {plan.name}, row {row_key(plan, columns, row)}"
                      + (f", column {column.group(1)}" if column else "")
                      + f": {error.diag.message_primary}{detail}. Nothing was written.") from None


def row_key(plan: TablePlan, columns: list[str], row: tuple) -> str:
    """A source row as its key's values (`id='t1Ya8fgFFvCXEwf9'`)."""
    return ", ".join(f"{k}={row[columns.index(k)]!r}" for k in plan.key_columns) or "?"


# Where COPY says it was when PostgreSQL refused a value ("COPY t, line 2, column name: ...") and what a
# broken foreign key's detail names ('Key ("workflowId")=(abc) is not present in table "workflow_entity".').
COPY_LINE = re.compile(r"^COPY [^,]+, line (\d+)")
COPY_COLUMN = re.compile(r"^COPY [^,]+, line \d+, column ([^:]+):")
MISSING_PARENT = re.compile(r'^Key \("?([^,()"]+)"?\)=\((.*)\) is not present in table')


def refused_row(error: psycopg.Error, source: source_db.SourceDatabase, plan: TablePlan,
                columns: list[str]) -> tuple | None:
    """The source row PostgreSQL refused in a COPY: the one at the line COPY names (the source's rows come in
    the same order when read again), or the first holding the value a broken foreign key names."""
    rows = source.rows(plan.name, columns)
    if line := COPY_LINE.search(error.diag.context or ""):
        return next(itertools.islice(rows, int(line.group(1)) - 1, None), None)
    if (missing := MISSING_PARENT.search(error.diag.message_detail or "")) and missing.group(1) in columns:
        position, value = columns.index(missing.group(1)), missing.group(2)
        return next((row for row in rows if row[position] is not None and str(row[position]) == value), None)
    return None


def move_sequences(connection: psycopg.Connection, schema: target_db.TargetSchema, copied: set[str],
                   high_water: dict[tuple[str, str], int]) -> list[dict]:
    """Every sequence feeding a copied table's column: past the largest copied value and past the ids the
    source's AUTOINCREMENT handed out (`high_water`: a deleted row's id is not handed out again), never
    backwards."""
    moved = []
    for use in schema.sequences:
        if use.table not in copied:
            continue
        copied_largest = connection.execute(sql.SQL("SELECT max({}) FROM {}").format(
            sql.Identifier(use.column), schema.relation(use.table))).fetchone()[0]
        largest = max((value for value in (copied_largest, high_water.get((use.table, use.column)))
                       if value is not None), default=None)
        last, called = connection.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(use.sequence))).fetchone()
        current = last if called else last - 1
        if largest is not None and largest > current:
            connection.execute("SELECT setval(%s::regclass, %s, true)", [use.sequence, largest])
            moved.append({"sequence": use.sequence, "table": use.table, "column": use.column,
                          "from": current, "to": largest})
    return moved


def verify_tables(connection: psycopg.Connection, schema: target_db.TargetSchema, source: source_db.SourceDatabase,
                  plans: list[TablePlan]) -> list[TableReport]:
    reports = []
    for plan in plans:
        report = TableReport(plan.name, plan.action, plan.source_rows, plan.target_rows_before, note=plan.note)
        reports.append(report)
        if plan.name not in schema.tables:
            report.matches = True
            continue
        expected = digests.TableDigest()
        if plan.action != "first-start rows kept" and plan.source_rows is not None:
            try:
                expected = digests.source_digest(source, plan.name, plan.converters, plan.key_columns)
            except ConversionError as error:
                report.matches, report.differences = False, [str(error)]
                continue
        found = digests.target_digest(connection, schema, plan.name, plan.converters, plan.key_columns)
        report.target_rows, report.target_digest = found.rows, found.digest
        if plan.action == "first-start rows kept":
            report.matches = True  # the target's own rows, untouched; the source has none to compare
            continue
        report.source_digest = expected.digest
        report.matches = expected.rows == found.rows and expected.digest == found.digest
        if not report.matches:
            report.differences = ([f"{expected.rows} rows in the source, {found.rows} in the target"]
                                  if expected.rows != found.rows else []) + digests.differences(expected, found)
    return reports


def record(connection: psycopg.Connection, result: AppCopyResult, started_at) -> None:
    """The ledger row of this attempt (in the caller's transaction)."""
    ledger.ensure(connection)
    connection.execute(
        f"INSERT INTO {LEDGER_SCHEMA}.app_copies (copy_id, started_at, finished_at, mode, status, application, "
        "source_path, source_sha256, wal_sha256, target_schema, source_migration, target_migration, replace, "
        "message, tables, copy_seconds, verify_seconds, tool_version) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [result.copy_id, started_at, now(), result.mode, result.status, result.application, result.source_path,
         result.source_sha256, result.wal_sha256, result.schema,
         str(result.versions.source_newest) if result.versions and result.versions.source_newest else None,
         str(result.versions.target_newest) if result.versions and result.versions.target_newest else None,
         result.replace, result.message, Jsonb([t.to_json() for t in result.tables]),
         result.copy_seconds, result.verify_seconds, __version__])


class RollBack(Exception):
    """Leaves the copy's transaction without committing (the verification did not match)."""


def app_copy(source_path: Path, target: Target, schema: str, *, replace: bool = False,
             verify_only: bool = False) -> AppCopyResult:
    """Copy (or with `verify_only`, only verify) `source_path` into `schema`. Raises
    source.SourceUnreadable (the source cannot be read), AppCopyUsageError, and psycopg.OperationalError
    (PostgreSQL unavailable); a refusal or a mismatch is a result, with its ledger row."""
    started_at = now()
    result = AppCopyResult(ledger.new_id(), "verify" if verify_only else "copy", REFUSED,
                           str(source_path.absolute()), schema, replace)
    with source_db.open_source(source_path) as source:
        result.source_sha256, result.wal_sha256 = source.snapshot.sha256, source.snapshot.wal_sha256
        application = recognise(set(source.tables()))
        if application is None:
            raise AppCopyUsageError(f"{source_path} is neither an n8n nor a Flowise database")
        result.application = application.name
        with target.connect() as connection:
            try:
                with connection.transaction():
                    run(connection, source, application, result, replace, verify_only)
                    if result.status == VERIFIED:
                        record(connection, result, started_at)
                    else:
                        raise RollBack
            except Refused as refusal:
                result.status, result.message = REFUSED, str(refusal)
            except RollBack:
                pass
            except psycopg.errors.InsufficientPrivilege as error:
                raise AppCopyUsageError(not_permitted(connection, schema, error)) from None
            except KeyboardInterrupt:  # recorded, then the command ends as every interrupted one does
                with contextlib.suppress(psycopg.Error), connection.transaction():
                    if not recorded(connection, result.copy_id):  # it may come as the copy commits
                        result.status, result.message = INTERRUPTED, "interrupted before it committed: nothing was written"
                        record(connection, result, started_at)
                raise
            if result.status != VERIFIED:
                with connection.transaction():
                    record(connection, result, started_at)
    return result


def application_sessions(connection: psycopg.Connection, schema: str) -> str | None:
    """The sessions of the role owning `schema` (the application's) on this database, described; None when
    there are none, or when app-copy itself connects as that role (its sessions are then not told apart).
    A copy under a running application replaces rows it holds in memory."""
    sessions = connection.execute(
        "SELECT count(*), string_agg(DISTINCT nullif(application_name, ''), ', ') FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND usesysid = (SELECT nspowner FROM pg_namespace WHERE nspname = %s) "
        "AND usesysid <> (SELECT oid FROM pg_roles WHERE rolname = current_user)", [schema]).fetchone()
    count, names = sessions
    if not count:
        return None
    return f"{count} session(s)" + (f" of {names}" if names else "")


def recorded(connection: psycopg.Connection, copy_id: str) -> bool:
    """Whether the ledger holds this attempt (a copy commits its own row with it)."""
    if not ledger.relation_exists(connection, LEDGER_SCHEMA, "app_copies"):
        return False
    return connection.execute(f"SELECT 1 FROM {LEDGER_SCHEMA}.app_copies WHERE copy_id = %s",
                              [copy_id]).fetchone() is not None


def not_permitted(connection: psycopg.Connection, schema: str, error: psycopg.Error) -> str:
    """What to do when the role app-copy connects as lacks a privilege: the README's grant when it is not a
    member of the role owning the application's schema, else PostgreSQL's own words (CREATE on the
    database for the ledger's schema, say)."""
    role, owner, member = connection.execute(
        "SELECT current_user, nspowner::regrole::text, pg_has_role(current_user, nspowner, 'MEMBER') "
        "FROM pg_namespace RIGHT JOIN (VALUES (%s)) AS wanted (name) ON nspname = wanted.name", [schema]).fetchone()
    if member is not False:
        return f"role {role} lacks a privilege app-copy needs: {error.diag.message_primary}. Nothing was written."
    return (f"role {role} may not use schema {schema}: {error.diag.message_primary}. app-copy writes as the role "
            f"that owns the schema's tables: GRANT {owner} TO {role} (README, step 2 of the procedure). "
            "Nothing was written.")


def run(connection: psycopg.Connection, source: source_db.SourceDatabase, application: Application,
        result: AppCopyResult, replace: bool, verify_only: bool) -> None:
    session_settings(connection)
    schema_name = result.schema
    if not target_db.schema_exists(connection, schema_name):
        raise AppCopyUsageError(f"schema {schema_name} does not exist: create it and start {application.name} once "
                                f"against it ({application.postgres_settings}) so it builds its own tables")
    try:
        connection.execute("SELECT pg_advisory_xact_lock(hashtext('consolidate.app-copy:' || %s))", [schema_name])
    except psycopg.errors.LockNotAvailable:
        raise Refused(f"another app-copy into schema {schema_name} is running") from None
    schema = target_db.inspect(connection, schema_name)
    target_application = recognise(set(schema.tables))
    if target_application is not None and target_application is not application:
        raise AppCopyUsageError(f"schema {schema_name} is {target_application.name}'s, and the source is a "
                                f"{application.name} database: copy it into the schema {application.name} built")
    if target_application is None:
        raise Refused(f"schema {schema_name} holds no {application.name} tables: start {application.name} once "
                      f"against it ({application.postgres_settings}) so it builds its own tables")
    if not verify_only and (running := application_sessions(connection, schema_name)):
        raise Refused(f"{application.name} is connected to schema {schema_name}'s database as its owner "
                      f"({running}): stop it first (step 1 of the procedure). Nothing was written.")
    result.versions = compare(application, source.migrations(), target_db.migrations(connection, schema), schema_name)
    if not result.versions.matches:
        raise Refused(result.versions.message)
    lock_tables(connection, schema, exclusive=not verify_only)
    counts = {table: target_db.count(connection, schema, table) for table in schema.tables}
    real = real_data(connection, schema, application, counts)
    if real and not replace and not verify_only:
        raise Refused(f"schema {schema_name} already holds {application.name} data: " + ", ".join(real.values())
                      + ". Pass --replace to replace it with the source's. Nothing was written.")
    plans = plan_tables(source, schema, application, counts, {} if verify_only else real)
    if verify_only:
        for plan in plans:  # nothing is cleared or copied now: compare the tables as they are
            if plan.copies:
                # what a copy would have done is not what this did
                plan.action, plan.note = "compared", (plan.note if plan.action == "copied" else None)
    else:
        started = time.monotonic()
        clear_and_copy(connection, schema, source, plans)
        result.sequences = move_sequences(connection, schema, {p.name for p in plans if p.copies},
                                          source.autoincrement_high_water())
        result.copy_seconds = round(time.monotonic() - started, 3)
    started = time.monotonic()
    result.tables = verify_tables(connection, schema, source, plans)
    result.verify_seconds = round(time.monotonic() - started, 3)
    mismatched = [t.table for t in result.tables if not t.matches]
    result.status = MISMATCH if mismatched else VERIFIED
    if mismatched:
        result.message = ("tables differing from the source: " + ", ".join(mismatched)
                          + ("" if verify_only else ". The copy was rolled back: nothing of it was kept."))


def clear_and_copy(connection: psycopg.Connection, schema: target_db.TargetSchema,
                   source: source_db.SourceDatabase, plans: list[TablePlan]) -> None:
    in_target = [p for p in plans if p.name in schema.tables]
    try:
        order = target_db.dependency_order([p.name for p in in_target], schema.foreign_keys)
    except ValueError as error:
        raise Refused(f"schema {schema.name}: {error}; app-copy cannot order the copy") from None
    by_name = {p.name: p for p in in_target}
    for name in reversed(order):
        if by_name[name].clears:
            with refused_on_bad_data(name, "deleting the target's rows"):
                connection.execute(sql.SQL("DELETE FROM {}").format(schema.relation(name)))
    for name in order:
        plan = by_name[name]
        if plan.copies and plan.source_rows:
            with refused_on_bad_data(name, f"copying from {source.path}"):
                copy_rows(connection, schema, source, plan)


@contextlib.contextmanager
def refused_on_bad_data(table: str, doing: str) -> Iterator[None]:
    """A value or row PostgreSQL refuses (too long for its varchar, a broken foreign key, a GENERATED ALWAYS
    column...) refuses the copy."""
    try:
        yield
    except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError, psycopg.NotSupportedError) as error:
        if isinstance(error, psycopg.errors.InsufficientPrivilege):
            raise  # not the data's fault: app_copy says which privilege is missing
        context = f" ({error.diag.context.strip()})" if error.diag.context else ""
        raise Refused(f"table {table}, {doing}: {error.diag.message_primary}{context}. Nothing was written.") from None
