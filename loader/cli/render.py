"""How the command line shows results: tables and lines for people, one JSON document for machines.
Tables and results go to stdout, progress, warnings and problems to stderr."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from loader.backup.backup import BackupEntry, BackupManifest
from loader.exit_codes import ExitCode
from loader.ledger import RELOCATE_HINT
from loader.load.load import FileOutcome, LoadOutcome
from loader.operate.archive import ArchiveReport
from loader.operate.cutover import CutoverOutcome
from loader.operate.forget import ForgetOutcome
from loader.operate.rollback import RollbackReport
from loader.operate.status import CutOver, StatusReport
from loader.pipeline import RunReport, SyncReport
from loader.sources.discover import Discovery, DiscoveryWarning
from loader.transform.build import BuildOutcome
from loader.verify.lineage import Version
from loader.verify.reconciliation import FileSummary
from loader.verify.validate import ValidationReport

if TYPE_CHECKING:  # the apps are imported by the one command that copies them
    from loader.apps import AppCopyResult

# Output saved to a file or read by a pipe is not cut to 80 columns (rich's width without a terminal);
# COLUMNS still decides when it is set.
SAVED_OUTPUT_WIDTH = 240


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    saved = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=SAVED_OUTPUT_WIDTH if saved else None)


out = console()
err = console(stderr=True)


def print_json(data) -> None:
    out.print_json(json.dumps(data, default=str))


def error(message: object, as_json: bool = False, exit_code: int | None = None) -> None:
    """One line, never wrapped: it names paths a reader (or a script) looks for whole; with --json also as
    a JSON document on stdout ({"error", "exit_code"}), so a machine reading it gets one."""
    err.print(f"[red]error:[/red] {escape(str(message))}", soft_wrap=True)
    if as_json:
        print_json({"error": str(message), "exit_code": exit_code})


def database_unavailable(message: str) -> None:
    err.print(f"[red]PostgreSQL unavailable:[/red] {escape(message)}\n"
              "Nothing half-done was kept (each file load, build, copy and record commits in one "
              "transaction). Run the same command again once the server is back.")


def refused(message: object, as_json: bool = False, exit_code: int = ExitCode.REFUSED) -> None:
    """A refusal on stderr; with --json also as JSON on stdout, so a machine reading it gets a document."""
    err.print(f"[red]refused:[/red] {escape(str(message))}")
    if as_json:
        print_json({"refused": str(message), "exit_code": exit_code})


def note(message: str) -> None:
    err.print(f"[dim]{escape(message)}[/dim]", soft_wrap=True)


def warning(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)


def print_warnings(warnings: list[DiscoveryWarning]) -> None:
    for warning in warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(str(warning.path))}: {escape(str(warning.reason))}")


def print_problems(problems: list, where: Path) -> None:
    """A verification's problems (backup or archive), then one line saying whether it verified."""
    for problem in problems:
        err.print(f"[red]{escape(str(problem.path))}[/red]: {escape(str(problem.problem))}")
    err.print(f"verified {escape(str(where))}" if not problems else f"{len(problems)} problem(s) in {escape(str(where))}")


def verification(problems: list, key: str, where: Path, as_json: bool, exit_code: int, relocate: bool = False,
                 relocated: list[tuple[str, str]] | None = None) -> None:
    """`relocated`: the ledger records `archive --verify --relocate` pointed at `where` (None when not
    asked for, or refused: the archive does not verify, or no record names an archive with its bytes)."""
    if as_json:
        document = {key: str(where), "verified": not problems, "problems": [p.to_json() for p in problems],
                    "exit_code": int(exit_code)}
        if relocate:
            document["relocated"] = None if relocated is None else [
                {"source_path": path, "previous_archive_path": previous} for path, previous in relocated]
        print_json(document)
        return
    print_problems(problems, where)
    if relocate and relocated is None:
        err.print("[red]not relocated[/red]: " + (
            "the archive does not verify" if problems else
            "no ledger record of a removed file names an archive with these bytes (the ledger knows the "
            "archive `archive --remove-originals` wrote, with its sha256 in consolidate.archived_removals)"))
    if relocated is not None and not relocated:
        err.print("the ledger's records of the files removed into this archive already point here")
    for path, previous in relocated or []:
        err.print(f"relocated {escape(path)}: its bytes are read here now, not in {escape(previous)}")


# ------------------------------------------------------------------------------------ discover, load

def file_label(path: object) -> Text:
    """A file's path or label in a table cell: a line break in it shown as \\n, so one file is one row."""
    return Text(str(path).replace("\r", "\\r").replace("\n", "\\n"))


def discovery(found: Discovery, as_json: bool) -> None:
    if as_json:
        print_json({"files": [f.to_json() for f in found.files], "warnings": [w.to_json() for w in found.warnings],
                    "exit_code": int(found.exit_code)})
        return
    table = Table(title=f"{len(found.files)} SQLite databases")
    for column in ("file", "kind", "size", "sha256", "tables", "rows", "note"):
        table.add_column(column, justify="right" if column in ("size", "tables", "rows") else "left")
    for f in found.files:
        note_text = f"copy of {escape(str(f.copy_of))}" if f.copy_of else (f"[red]{escape(f.error)}[/red]" if f.error else "")
        table.add_row(file_label(f.source_db), f.kind, f"{f.size_bytes:,}", f.sha256[:12], str(len(f.tables)),
                      f"{sum(f.tables.values()):,}", note_text)
    out.print(table)
    print_warnings(found.warnings)


def load_progress(quiet: bool) -> Callable[[FileOutcome], None]:
    def progress(outcome: FileOutcome) -> None:
        if not quiet:
            colour = "red" if outcome.status == "failed" else "green"
            rows = f" ({loaded_rows(outcome)})" if outcome.status == "loaded" else ""  # others load none
            err.print(f"  [{colour}]{outcome.status:>9}[/{colour}] {escape(str(outcome.source.source_db))}{rows}")
    return progress


def loaded_rows(outcome: FileOutcome) -> str:
    if outcome.rows_stored == outcome.rows_loaded:
        return f"{outcome.rows_loaded:,} rows"
    return f"{outcome.rows_loaded:,} rows, {outcome.rows_stored:,} of them changed and stored"


def load_table(outcome: LoadOutcome) -> Table:
    table = Table(title=f"load {outcome.load_id}")
    for column in ("file", "kind", "status", "rows in SQLite", "rows loaded", "note"):
        table.add_column(column, justify="right" if column.startswith("rows") else "left")
    for f in outcome.files:
        note_text = "see below" if f.error else (f"copy of {escape(str(f.source.copy_of))}" if f.source.copy_of else
                                                  f"{f.rows_stored:,} changed rows stored"
                                                  if f.status == "loaded" and f.rows_stored < f.rows_loaded else "")
        table.add_row(file_label(f.source.source_db), f.source.kind, f.status, f"{f.rows_in_sqlite:,}",
                      f"{f.rows_loaded:,}", note_text)
    return table


def print_load_failures(outcome: LoadOutcome) -> None:
    for failed in outcome.failed:
        err.print(f"[red]could not load[/red] {escape(str(failed.source.path))}: {escape(str(failed.error))}")


def loaded(outcome: LoadOutcome, as_json: bool) -> None:
    if as_json:
        print_json({**outcome.to_json(), "exit_code": int(outcome.exit_code)})
        return
    print_warnings(outcome.warnings)
    out.print(load_table(outcome))
    print_load_failures(outcome)


# -------------------------------------------------------------------------------------- build, run

def print_build_failures(outcome: BuildOutcome, to: Console = err) -> None:
    for failure in outcome.failures:
        to.print(f"[red]failed:[/red] {escape(str(failure))}", soft_wrap=True)


def built(outcome: BuildOutcome, as_json: bool) -> None:
    """The outcome on stdout (dbt's progress went to stderr)."""
    if as_json:
        print_json({**outcome.to_json(), "exit_code": int(outcome.exit_code)})
        return
    print_build_failures(outcome, out)
    if outcome.skipped:
        out.print("build skipped: nothing changed since the last passing build")
    elif outcome.success:
        warned = f" ({outcome.warned:,} with a warning)" if outcome.warned else ""
        out.print(f"build passed: {outcome.passed + outcome.warned:,} models and tests{warned}")
    elif not outcome.failures:
        out.print("[red]build failed[/red] (dbt's output above says why)")


def summary_table(rows: list[FileSummary]) -> Table:
    table = Table(title="reconciliation per source file")
    headers = ("file", "kind", "status", "rows in SQLite", "rows in raw", "memory rows", "kept",
               "superseded", "moved to performance_metrics", "ok")
    for header in headers:
        table.add_column(header, justify="left" if header in ("file", "kind", "status") else "right")
    for r in rows:
        cells = [r.rows_in_sqlite, r.rows_in_raw, r.memory_rows, r.kept, r.superseded, r.moved]
        table.add_row(file_label(r.source_db), r.kind, r.status, *("" if c is None else f"{c:,}" for c in cells),
                      "[red]failed[/red]" if r.status == "failed" else
                      "[green]yes[/green]" if r.reconciled else "[red]NO[/red]")
    return table


def print_backup_failures(manifest: BackupManifest) -> None:
    for entry in manifest.failed:
        err.print(f"[red]could not back up[/red] {escape(str(entry.path))}: {escape(str(entry.reason))}")


def run(report: RunReport, as_json: bool) -> None:
    if report.marts_were_current:
        failed = (f" (not counting the {len(report.loaded.failed)} file(s) that could not be loaded, named below: "
                  "none of their rows is in PostgreSQL)" if report.loaded.failed else "")
        err.print(f"Nothing loaded changed since the last build that passed its tests and validation{failed}: "
                  "the marts are current (--rebuild to build and validate again).")
    if as_json:
        print_json(report.to_json())
        return
    print_warnings(report.loaded.warnings)
    if report.backup is not None:
        print_backup_failures(report.backup)
    out.print(summary_table(report.files))
    if report.validation:
        out.print(validation_table(report.validation))
        print_validation_problems(report.validation)
    print_build_failures(report.build)
    print_load_failures(report.loaded)
    print_redis_untold(report.redis)


# -------------------------------------------------------------------------------------------- backup

def backup_progress(quiet: bool) -> Callable[[BackupEntry], None]:
    def progress(entry: BackupEntry) -> None:
        if not quiet:
            err.print(f"  {entry.status:>9} {escape(str(entry.source_db))}")
    return progress


def backed_up(manifest: BackupManifest, as_json: bool) -> None:
    if as_json:
        print_json({**manifest.to_json(), "exit_code": int(manifest.exit_code)})
        return
    table = Table(title=f"{len(manifest.files)} databases")
    for column in ("file", "kind", "status", "tables", "rows", "note"):
        table.add_column(column, justify="right" if column in ("tables", "rows") else "left")
    for entry in manifest.files:
        table.add_row(file_label(entry.source_db), entry.kind, entry.status, str(len(entry.tables)),
                      f"{sum(entry.tables.values()):,}", Text(entry.reason or ""))
    out.print(table)


# ------------------------------------------------------------------------------------------ validate

def validation_table(report: ValidationReport) -> Table:
    table = Table(title=f"validation {report.run_id} (sample {report.sample_size}, seed {report.seed})")
    headers = ("file", "rows in SQLite", "rows in raw", "kept", "superseded", "moved", "flagged",
               "on disk", "backup", "spot-checked", "mismatches", "ok")
    for header in headers:
        table.add_column(header, justify="left" if header in ("file", "on disk", "backup") else "right")
    for f in report.files:
        counts = [f.rows_in_sqlite, f.rows_in_raw, f.kept, f.superseded, f.moved, f.flagged]
        table.add_row(file_label(f.source_db), *("" if c is None else f"{c:,}" for c in counts), f.checksum_status,
                      f.backup_checksum_status or ("[yellow]outside it[/yellow]" if f.outside_backup else ""),
                      f"{f.spot_checked:,}", f"{len(f.mismatches):,}",
                      "[green]yes[/green]" if f.passed else "[red]NO[/red]")
    return table


def print_validation_problems(report: ValidationReport) -> None:
    for path, error in report.never_loaded.items():
        err.print(f"[red]{escape(path)}[/red]: never loaded (none of its rows is in PostgreSQL): {escape(error)}")
    if report.outside_backup:
        err.print(f"[yellow]note:[/yellow] {len(report.outside_backup)} file(s) lie under none of the roots the backup "
                  f"{escape(str(report.backup_dir))} was made of, so it was not checked for them (back up their roots "
                  f"too): {escape(', '.join(f.source_path for f in report.outside_backup))}")
    recounted_later = [f for f in report.files if f.written_since_counted]
    if recounted_later:
        written = ", ".join(f"{f.source_db}: {f.written_since_counted:,}" for f in recounted_later)
        err.print(f"[yellow]note:[/yellow] kept / superseded / moved are the last build's: since it, PostgreSQL wrote "
                  f"entries with rows of {len(recounted_later)} file(s) ({escape(written)} entries), which may have "
                  "moved those rows between them; `consolidate build` recounts", soft_wrap=True)
    for f in report.files:
        for problem in f.problems:
            err.print(f"[red]{escape(str(f.source_db))}[/red]: {escape(str(problem))}")
        for m in f.mismatches[:10]:
            err.print(f"  {m.source_table} rowid {m.source_rowid} {m.against}.{m.field}: "
                      f"expected {m.expected}, found {m.actual}", markup=False, highlight=False)


def validated(report: ValidationReport, as_json: bool) -> None:
    if as_json:
        print_json(report.to_json())
    else:
        out.print(validation_table(report))
        print_validation_problems(report)


# ------------------------------------------------------------------------------------------- lineage

def lineage(key: str, namespace: str | None, versions: list[Version], as_json: bool) -> None:
    if not versions:  # on stderr with --json too: the document is the list of versions, empty
        err.print(f"no entry with key {escape(repr(key))}" + (f" in namespace {escape(repr(namespace))}" if namespace else ""))
    if as_json:
        print_json([v.to_json() for v in versions])
        return
    if not versions:
        return
    table = Table(title=f"versions of {key!r}")
    for column in ("", "namespace", "source", "rowid", "load", "updated_at", "accessed_at", "value"):
        table.add_column(column)
    for v in versions:
        table.add_row("[green]winner[/green]" if v.winner else v.role, Text(v.namespace),
                      file_label(v.source_db if v.write_id is None else "PostgreSQL"),
                      "" if v.write_id is not None else str(v.source_rowid),
                      v.load_id or f"write {v.write_id}", "" if v.updated_at is None else str(v.updated_at),
                      "" if v.accessed_at is None else str(v.accessed_at),
                      Text(v.value_preview))
    out.print(table)
    for v in versions:
        if v.write_id is not None:
            out.print(Text(f"write {v.write_id}: {v.origin}"), soft_wrap=True)
        elif v.retired_by is not None:
            out.print(Text(f"rowid {v.source_rowid} of load {v.load_id}: {v.retired_as} in {v.source_db} "
                           f"by load {v.retired_by} at {v.retired_at:%Y-%m-%d %H:%M:%S%z}"), soft_wrap=True)
    if any(v.role == "pending" for v in versions):
        warning("pending: a version loaded or written since the last build, which the marts do not rank yet "
                "(the winner shown is the marts'): `consolidate build` ranks it")


# -------------------------------------------------------------------------------------------- status

def format_age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def status_table(report: StatusReport) -> Table:
    table = Table(title="ledger status per source file")
    for column in ("file", "kind", "last load", "current load", "rows in SQLite", "rows loaded", "on disk",
                   "since sync", "cut over", "last failure"):
        table.add_column(column, justify="right" if column.startswith(("rows", "since")) else "left")
    for f in report.files:
        current = f.current
        on_disk = {"changed": "[yellow]changed[/yellow]", "missing": "[red]missing[/red]"}.get(f.on_disk, f.on_disk or "")
        if f.archived:
            on_disk = (f"archived in {escape(f.archived.archive_path)}" if f.archive_exists else
                       f"[red]archive not there any more: {escape(f.archived.archive_path)} "
                       f"({escape(RELOCATE_HINT)})[/red]")
        elif f.forgotten:
            on_disk = f"forgotten {f.forgotten.forgotten_at:%Y-%m-%d %H:%M} by {escape(f.forgotten.forgotten_by)}"
        failure = (f"[red]{f.last_failure.failed_at:%Y-%m-%d %H:%M} {escape(f.last_failure.error_message or '')}[/red]"
                   if f.last_failure else "")
        table.add_row(file_label(f.source_db), f.kind, f.status, current.load_id if current else "",
                      f"{current.rows_in_sqlite:,}" if current and current.rows_in_sqlite is not None else "",
                      f"{current.rows_loaded:,}" if current and current.rows_loaded is not None else "",
                      on_disk, format_age(f.seconds_since_sync), cut_over_cell(f.cut_over), failure)
    return table


def cut_over_cell(cut_over: CutOver | None) -> str:
    if cut_over is None:
        return ""
    cell = f"since {cut_over.cut_over_at.astimezone():%Y-%m-%d %H:%M} by {escape(cut_over.cut_over_by)}"
    if cut_over.split_brain_loads:
        cell += f" [red]split brain ({cut_over.split_brain_loads} load{'s' if cut_over.split_brain_loads > 1 else ''})[/red]"
    return cell


def status(report: StatusReport, as_json: bool) -> None:
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
              + (f", {totals.archived_files} archived and removed" if totals.archived_files else "")
              + (f", {totals.forgotten_files} forgotten" if totals.forgotten_files else "")
              + (f"; last load {last.load_id}: {last.status}" if last else ""))


# ------------------------------------------------------------------------------------------- archive

def archived(report: ArchiveReport, as_json: bool) -> None:
    if as_json:
        print_json(report.to_json())
        return
    table = Table(title=str(report.archive) if report.archive else "nothing archived")
    for column in ("file", "archived", "removed", "reason"):
        table.add_column(column)
    removals = {removal.path: removal for removal in report.removals}
    for entry in report.archived:
        removal = removals.get(entry.path)
        removed = "" if removal is None else ("[green]yes[/green]" if removal.removed else "[red]no[/red]")
        table.add_row(file_label(str(entry.path)), "[green]yes[/green]", removed, Text((removal.refused or "") if removal else ""))
    for refusal in report.refused:
        table.add_row(file_label(str(refusal.path)), "[red]no[/red]", "", Text(refusal.reason))
    out.print(table)
    print_warnings(report.warnings)


# ------------------------------------------------------------------------------------------- cutover

def cutover_table(outcomes: list[CutoverOutcome]) -> Table:
    table = Table(title="cutover")
    for column in ("file", "outcome", "cut over at", "by", "baseline load"):
        table.add_column(column)
    for o in outcomes:
        c = o.cutover
        table.add_row(file_label(o.source_path), o.outcome, f"{c.cut_over_at.astimezone():%Y-%m-%d %H:%M:%S}" if c else "",
                      Text(c.cut_over_by) if c else "", c.load_id if c else "")
    return table


def cutovers(outcomes: list[CutoverOutcome], as_json: bool) -> None:
    if as_json:
        print_json([o.to_json() for o in outcomes])
    else:
        out.print(cutover_table(outcomes))


def forgotten(outcomes: list[ForgetOutcome], as_json: bool) -> None:
    if as_json:
        print_json([o.to_json() for o in outcomes])
        return
    table = Table(title="files accepted as gone")
    for column in ("file", "outcome", "load", "forgotten at", "by", "note"):
        table.add_column(column)
    for o in outcomes:
        f = o.forgotten
        table.add_row(file_label(o.source_path), o.outcome, f.load_id, f"{f.forgotten_at:%Y-%m-%d %H:%M}",
                      Text(f.forgotten_by), Text(f.note or ""))
    out.print(table)


def rolled_back(result: RollbackReport, as_json: bool) -> None:
    if as_json:
        print_json({**result.to_json(), "exit_code": int(ExitCode.OK)})  # a rollback that failed is an error
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
    others = result.from_other_files
    if others:
        err.print(f"[yellow]note:[/yellow] {len(others):,} changed entries take another SQLite file's newer row, "
                  "not a write made in PostgreSQL (`value_from` in --json; `consolidate lineage KEY` shows each): "
                  + escape(", ".join(f"{namespace}/{key} from {result.value_from[(namespace, key)]}"
                                     for namespace, key in others[:5])) + (" ..." if len(others) > 5 else ""))
    for note_text in result.notes:
        err.print(f"[yellow]note:[/yellow] {escape(note_text)}")
    err.print(f"wrote {escape(result.written_to)} (sha256 {result.sha256[:16]}...)")


# ---------------------------------------------------------------------------------------------- sync

def sync_table(report: SyncReport) -> Table:
    table = Table(title=f"sync {report.load_id}")
    for column in ("file", "kind", "status", "rows", "inserted", "updated", "deleted", "note"):
        table.add_column(column, justify="right" if column in ("rows", "inserted", "updated", "deleted") else "left")
    both_sides: dict[str, list[int]] = {}  # per file: entries written on both sides, deleted in SQLite
    for s in report.split_brain:  # one sync can check several loads of one file
        counts = both_sides.setdefault(s.source_path, [0, 0])
        counts[0] += len(s.entries)
        counts[1] += len(s.deleted)
    for f in report.files:
        note_text = (f"[red]{escape(f.error)}[/red]" if f.error else
                     "not on disk any more: its last load stays current" if f.status == "missing" else
                     f"removed after archiving into {escape(f.archive_path or '')}: its last load stays current"
                     if f.status == "archived" and f.archive_exists else
                     f"[red]its archive is not there any more: {escape(f.archive_path or '')} "
                     f"({escape(RELOCATE_HINT)}); its last load stays current[/red]"
                     if f.status == "archived" else
                     "gone, accepted by `consolidate forget`: its last load stays current" if f.status == "forgotten" else
                     f"[yellow]split brain: changed after its cutover, {both_sides[f.source_path][0]} "
                     f"entries written on both sides, {both_sides[f.source_path][1]} deleted in SQLite "
                     "(warning below)[/yellow]" if f.source_path in both_sides else "")
        table.add_row(file_label(f.source_db), f.kind, f.status, "" if f.rows is None else f"{f.rows:,}",
                      f"{f.inserted:,}", f"{f.updated:,}", f"{f.deleted:,}", note_text)
    return table


def sync_line(report: SyncReport) -> str:
    colour = "red" if report.exit_code else ("dim" if report.idle else "green")
    return f"[{colour}]{escape(report.status_line())}[/{colour}]"


def print_sync_problems(report: SyncReport) -> None:
    print_warnings(report.warnings)
    for split in report.split_brain:
        err.print(f"[yellow]warning:[/yellow] {escape(split.message())}")
    for f in report.failed:
        err.print(f"[red]could not load[/red] {escape(str(f.source_path))}: {escape(f.error or '')}")
    if report.build:
        print_build_failures(report.build)
    print_redis_untold(report.redis)


def print_redis_untold(redis: dict | None) -> None:
    if redis is not None and not redis["reached"]:
        err.print(f"[red]the Redis cache could not be told[/red] that the build changed {redis['entries']:,} entries: "
                  "a client reading through it alone may get replaced values. The next build told (`sync` or "
                  "`run` with --redis-url) empties it; so does a near-cache client as it starts.")


def synced(report: SyncReport, as_json: bool) -> None:
    if as_json:
        print_json(report.to_json())
    else:
        out.print(sync_table(report))
        out.print(sync_line(report))
        print_sync_problems(report)


class WatchLines:
    """One status line per watch cycle: JSON Lines with --json; else a line on stdout per cycle that did
    something and, on a terminal, a live line on stderr updated every cycle. A context manager."""

    def __init__(self, interval: float, as_json: bool):
        self.interval, self.as_json = interval, as_json
        self.live = err.status("first sync...") if err.is_terminal and not as_json else None

    def __enter__(self) -> WatchLines:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.live is not None:
            self.live.stop()
        if not self.as_json:
            err.print("stopped")

    def __call__(self, report: SyncReport) -> None:
        if self.as_json:
            out.file.write(json.dumps(report.to_json(), default=str) + "\n")
            out.file.flush()
        elif not report.idle:
            out.print(sync_line(report))
            print_sync_problems(report)
        if self.live is not None:
            self.live.update(f"{sync_line(report)} [dim]- every {self.interval:g}s, Ctrl-C to stop[/dim]")


# ------------------------------------------------------------------------------------------ app-copy

def app_copy_table(result: AppCopyResult) -> Table:
    table = Table(title=f"app-copy {result.copy_id}: {result.application} → schema {result.schema} ({result.mode})")
    for column in ("table", "action", "rows in source", "rows in target before", "rows in target", "digest", "ok"):
        table.add_column(column, justify="right" if column.startswith("rows") else "left")
    for t in result.tables:
        cells = [t.source_rows, t.target_rows_before, t.target_rows]
        ok = "" if t.matches is None else ("[green]yes[/green]" if t.matches else "[red]NO[/red]")
        table.add_row(Text(t.table), t.action, *("" if c is None else f"{c:,}" for c in cells),
                      (t.target_digest or "")[:12], ok)
    return table


def app_copied(result: AppCopyResult, as_json: bool) -> None:
    if as_json:
        print_json({**result.to_json(), "exit_code": int(result.exit_code)})
        return
    if result.tables:
        out.print(app_copy_table(result))
    for t in result.tables:
        if t.note and t.action != "copied":
            err.print(f"{escape(t.table)}: {escape(t.note)}")
        for difference in t.differences:
            err.print(f"[red]{escape(t.table)}[/red]: {escape(difference)}")
    for moved in result.sequences:
        err.print(f"sequence {escape(moved['sequence'])}: {moved['from']} → {moved['to']}")
    if result.status == "verified":
        timing = "" if result.copy_seconds is None else f"copied in {result.copy_seconds:.2f} s, "
        rows = (f"{result.compared_rows:,} source rows compared, nothing written" if result.mode == "verify" else
                f"{result.copied_rows:,} source rows")
        err.print(f"[green]verified[/green]: {len(result.tables)} tables, {rows} "
                  f"({timing}verified in {result.verify_seconds:.2f} s)")
    else:
        err.print(f"[red]{result.status}:[/red] {escape(result.message or '')}")


# ------------------------------------------------------------------------------------------------ db

def shell_exports(variables: dict[str, str]) -> None:
    for name, value in variables.items():
        out.print(f"export {name}={shlex.quote(value)}", markup=False, highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------------------------- cache

def cache_warmed(url: str, warmed: int | None, as_json: bool) -> None:
    """`warmed` None: Redis could not be reached."""
    if as_json:
        print_json({"url": url, "connected": warmed is not None, "cached": warmed or 0,
                    **({} if warmed is not None else {"error": f"Redis at {url} cannot be reached"}),
                    "exit_code": int(ExitCode.OK if warmed is not None else ExitCode.CACHE_UNAVAILABLE)})
    elif warmed is None:
        error(f"Redis at {url} cannot be reached")
    else:
        err.print(f"cached {warmed:,} entries in {escape(url)}")


def cache_stats(stats: dict, as_json: bool) -> None:
    """The server's figures: the counters of this process (hits, misses, errors) are always 0 here."""
    stats = {name: value for name, value in stats.items() if name not in ("hits", "misses", "errors")}
    if as_json:
        print_json({**stats, "exit_code": int(ExitCode.OK if stats["connected"] else ExitCode.CACHE_UNAVAILABLE)})
        return
    table = Table(title=f"Redis cache {stats['url']}")
    table.add_column("")
    table.add_column("value", justify="right")
    for name, value in stats.items():
        if name != "url":
            table.add_row(name, "" if value is None else str(value))
    out.print(table)
