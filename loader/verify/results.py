"""The validation report: per file its counts, checksums and spot-check differences, and the run's
results stored in the ledger (`consolidate.validation_runs`, `consolidate.validation_files`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

from loader import ledger
from loader.exit_codes import ExitCode
from loader.ledger import LEDGER_SCHEMA


class ValidationError(Exception):
    """Validation cannot run at all (nothing loaded, marts not built, not a backup folder)."""


@dataclass
class Mismatch:
    """One spot-checked field that differs. `against` is the mart or raw table compared with."""

    source_table: str
    source_rowid: int
    against: str
    field: str
    expected: str
    actual: str


@dataclass
class TableCount:
    source_table: str
    raw_schema: str
    raw_table: str
    rows_in_sqlite: int
    rows_in_raw: int


@dataclass
class FileValidation:
    source_path: str
    source_db: str
    kind: str
    load_id: str
    rows_in_sqlite: int | None
    tables: list[TableCount]
    kept: int | None
    superseded: int | None
    moved: int | None
    flagged: int | None
    checksum_status: str
    backup_checksum_status: str | None
    spot_checked: int
    mismatches: list[Mismatch]
    problems: list[str]
    # entries with a row of the file written in PostgreSQL since the build that counted kept / superseded /
    # moved (those counts are that build's; the next build recounts)
    written_since_counted: int = 0
    # a backup was given, but the file lies under none of the roots it was made of: not checked against it
    outside_backup: bool = False

    @property
    def rows_in_raw(self) -> int:
        return sum(table.rows_in_raw for table in self.tables)

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(rows_in_raw=self.rows_in_raw, spot_mismatches=len(self.mismatches), passed=self.passed)
        return data


@dataclass
class ValidationReport:
    run_id: str
    started_at: datetime
    finished_at: datetime
    sample_size: int
    seed: int
    marts_schema: str
    backup_dir: str | None
    files: list[FileValidation]
    # files of the ledger never loaded (their every load failed), not accepted as gone: path -> last error
    never_loaded: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(file.passed for file in self.files) and not self.never_loaded

    @property
    def outside_backup(self) -> list[FileValidation]:
        return [file for file in self.files if file.outside_backup]

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat(), "passed": self.passed,
                "sample_size": self.sample_size, "seed": self.seed, "marts_schema": self.marts_schema,
                "backup_dir": self.backup_dir, "files": [file.to_json() for file in self.files],
                "never_loaded": [{"source_path": path, "error": error} for path, error in self.never_loaded.items()],
                "exit_code": int(self.exit_code)}

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.passed else ExitCode.NOT_RECONCILED


def store(connection: psycopg.Connection, report: ValidationReport) -> None:
    ledger.ensure(connection)
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(hashtext('consolidate.validation'))")
        connection.execute(
            f"INSERT INTO {LEDGER_SCHEMA}.validation_runs (run_id, started_at, finished_at, passed, sample_size, "
            "seed, marts_schema, backup_dir) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (report.run_id, report.started_at, report.finished_at, report.passed, report.sample_size,
             report.seed, report.marts_schema, report.backup_dir))
        with connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {LEDGER_SCHEMA}.validation_files (run_id, source_path, load_id, rows_in_sqlite, "
                "rows_in_raw, kept, superseded, moved, flagged, checksum_status, backup_checksum_status, "
                "spot_checked, spot_mismatches, mismatch_details, tables, problems, passed) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(report.run_id, f.source_path, f.load_id, f.rows_in_sqlite, f.rows_in_raw, f.kept, f.superseded,
                  f.moved, f.flagged, f.checksum_status, f.backup_checksum_status, f.spot_checked,
                  len(f.mismatches), Jsonb([asdict(m) for m in f.mismatches]),
                  Jsonb([asdict(t) for t in f.tables]), f.problems, f.passed) for f in report.files])
