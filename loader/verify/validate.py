"""Validation report (plan phase 3): re-check every current source file against what PostgreSQL holds.

For each file of `consolidate.current_loads`:

- counts: rows in SQLite (the ledger's, per table) against rows counted in raw now, and the file's
  memory rows in raw against kept + superseded + moved (the `reconciliation` mart);
- flagged: current memory versions whose `flags` (set in dbt staging, see
  dbt_project/macros/memory_flags.sql) name a problem: text in an INTEGER column, an unparsable or
  missing timestamp, a unit the magnitude rule corrected, JSON jsonb rejects, a bad `__compressed__`
  payload, a value stored as `\\x` hex bytes... The row is loaded all the same; this counts it, as the
  `reconciliation` mart counted it (the build's assert_flags_reach_the_marts counts it again in the marts);
- checksums: the file on disk now (main file and `-wal`) against the ledger's checksums of its current
  load, and, given a backup folder, the ledger's checksums against the backup manifest's for that path
  (does the backup hold exactly the bytes that were loaded?) and the backup's file itself as
  `backup --verify` checks it (in the folder, the manifest's sha256, integrity_check, row counts). A file `consolidate archive
  --remove-originals` deleted is `archived`: its bytes are read from the archive the ledger names
  (`consolidate.archived_removals`), checked against the current load's checksums and spot-checked
  (a backup made after the removal cannot hold it, and is not asked to; an earlier one is);
  a file `consolidate forget` accepted as gone is `forgotten`: its counts are checked, its bytes are not
  asked for (nor in a backup made after); a file gone from disk otherwise is `missing`, a problem;
- a spot check of N random rows, read with Python's sqlite3 from a private copy (never DuckDB, never
  dbt): memory rows are compared field by field with the marts row that represents them
  (unified_memory, performance_metrics or unified_memory_history) after applying the documented rules
  independently (whether the value is flagged `json_too_deep` included), and with their raw row; rows of every other table are compared column by column with
  their raw row. Raw holds `sqlite3_column_text` of every value, which is what SQLite's
  `CAST(x AS TEXT)` returns, so the comparison is exact for every storage class (REAL and BLOB too).
  Secret columns (loader/load/secret_policy.py) are expected as the policy stores them, under the rules
  the file's load recorded in `consolidate.loads.secret_policy` (the given or default rules for loads
  made before it was recorded): NULL for `exclude`; for `hash` the exact HMAC, and for `scrub` the
  exact scrubbed JSON, when the key in use is the one the load used (same `key_id`), else only their
  shape (`hmac-sha256:<64 hex>` where a hash stands).

A file passes when its counts reconcile, it is unchanged on disk (or in its archive), no spot-checked field differs and
(given a backup) the backup holds the loaded bytes. A file of the ledger whose every load failed (none of
its rows is in PostgreSQL) fails the validation too, named with its last error, until it loads or
`consolidate forget` accepts it as gone. Results are stored in `consolidate.validation_runs`
and `consolidate.validation_files`.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from pathlib import Path

import psycopg

from loader import ledger
from loader.database import Target
from loader.ledger import ARCHIVED, FORGOTTEN, LEDGER_SCHEMA, CurrentLoad, now
from loader.load.raw_contract import MEMORY_KINDS
from loader.load.secret_policy import SecretPolicy
from loader.relations import MEMORY_RANKED
from loader.verify.checksums import (
    NOT_BACKED_UP,
    backup_check,
    backup_entries,
    checksum_problems,
)
from loader.verify.counts import (
    count_problems,
    raw_rows_by_file,
    reconciliation_row,
    table_counts,
    written_since_counted,
)
from loader.verify.results import FileValidation, ValidationError, ValidationReport, store
from loader.verify.spot_check import Options, SpotCheck, check_source, compare_sample, fetch_sampled_rows

# Relations validate reads besides the ledger: the marts (in Target.schema) and the ranked versions.
MARTS = ("unified_memory", "performance_metrics", "unified_memory_history", "reconciliation")


def validate(target: Target, *, sample_size: int = 20, backup_dir: Path | None = None,
             seed: int | None = None, secret_policy: SecretPolicy | None = None,
             backup_just_written: bool = False) -> ValidationReport:
    """Validate every current source file (see the module docstring), store the results in
    consolidate.validation_runs / validation_files and return them. `seed` makes the spot check's
    choice of rows repeatable; without one a seed is drawn and recorded. `secret_policy`: the one the
    loads used (see `loader.load.secret_policy.existing_policy`); without it the default policy's hashed columns are
    checked by shape only. `backup_just_written`: the backup in `backup_dir` was written by this process,
    each file hashed and counted as it was (run), so its manifest is checked, its files not read again.
    Raises ValidationError when nothing can be validated."""
    if sample_size < 0:
        raise ValueError("sample_size must be 0 or more")
    started_at = now()
    options = Options(schema=target.schema, sample_size=sample_size,
                      seed=seed if seed is not None else secrets.randbelow(2**31),
                      backup=backup_entries(backup_dir, check_files=not backup_just_written)
                      if backup_dir is not None else None,
                      secret_policy=secret_policy)
    with target.connect() as connection:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot for all reads
        require_relations(connection, target.schema)
        currents = ledger.current_loads(connection)
        raw_counts = raw_rows_by_file(connection)
        written_since = written_since_counted(connection, target.schema)
        recorded = ledger.secret_policies(connection)
        gone = ledger.gone_files(connection)
        sources = [check_source(connection, current, options, gone) for current in currents]
        found = fetch_sampled_rows(connection, options.schema,
                                   [(current, sample) for current, (_, sample) in zip(currents, sources)])
        files = [validate_file(connection, current, options, raw_counts, status, gone.gone_since(current.source_path),
                               compare_sample(current, sample, found,
                                              policy_of_load(recorded.get(current.load_id), options.secret_policy)),
                               written_since.get(current.source_path, 0))
                 for current, (status, sample) in zip(currents, sources)]
        connection.commit()
        never_loaded = {path: error for path, error in ledger.never_loaded_files(connection).items()
                        if path not in gone.forgotten}
        report = ValidationReport(run_id=ledger.new_id(started_at), started_at=started_at, finished_at=now(),
                                  sample_size=sample_size, seed=options.seed, marts_schema=target.schema,
                                  backup_dir=str(backup_dir) if backup_dir is not None else None, files=files,
                                  never_loaded=never_loaded)
        store(connection, report)
    return report


def policy_of_load(recorded: dict | None, given: SecretPolicy | None) -> SecretPolicy | None:
    """The rules a load ran under, with the given key when it is the key that load used (else no key:
    hashes are checked by shape). Without a recorded policy: the given one."""
    if recorded is None:
        return given
    same_key = given is not None and given.describe()["key_id"] == recorded.get("key_id")
    return SecretPolicy(key=given.key if same_key else None, rules=dict(recorded["rules"]))


def require_relations(connection: psycopg.Connection, schema: str) -> None:
    needed = [(LEDGER_SCHEMA, "current_loads"), MEMORY_RANKED, *((schema, mart) for mart in MARTS)]
    missing = ledger.missing_relations(connection, needed)
    if missing:
        raise ValidationError(ledger.not_built(connection, missing, schema))


def validate_file(connection: psycopg.Connection, current: CurrentLoad, options: Options,
                  raw_counts: dict[tuple[str, str], dict[tuple[str, str], int]],
                  checksum_status: str, gone_since: datetime | None, spot: SpotCheck,
                  written_since_counted: int) -> FileValidation:
    tables = table_counts(connection, current, raw_counts)
    reconciliation = reconciliation_row(connection, options.schema, current)
    backup_status, backup_problems = backup_check(options.backup, current)
    if (backup_status == NOT_BACKED_UP and gone_since is not None and checksum_status in (ARCHIVED, FORGOTTEN)
            and options.backup.created_at > gone_since):
        # gone before that backup was made (its bytes in the archive, or forgotten)
        backup_status, backup_problems = None, []
    is_memory_file = current.kind in MEMORY_KINDS
    problems = (count_problems(current, tables, reconciliation)
                + checksum_problems(checksum_status, spot.reason)
                + backup_problems
                + ([f"spot check: {len(spot.mismatches)} difference(s)"] if spot.mismatches else []))
    return FileValidation(
        source_path=current.source_path, source_db=current.source_db, kind=current.kind,
        load_id=current.load_id, rows_in_sqlite=current.rows_in_sqlite, tables=tables,
        kept=reconciliation.get("kept"), superseded=reconciliation.get("superseded"),
        moved=reconciliation.get("moved"), flagged=reconciliation.get("flagged", 0) if is_memory_file else None,
        checksum_status=checksum_status, backup_checksum_status=backup_status, spot_checked=spot.checked,
        mismatches=spot.mismatches, problems=problems, written_since_counted=written_since_counted,
        outside_backup=options.backup is not None and not options.backup.covers(current.source_path))
