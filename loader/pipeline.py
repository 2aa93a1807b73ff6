"""The order of the stages, and the only place that says it.

    load():  discover → load
    run():   discover → backup → load → build → validate → reconcile, per source file
    validate(): the validation stage on its own, with the secret policy the loads used
    sync():  discover → load what changed → detect the changes → check cut-over files for split brain
             → build (incremental: only the loads and writes new since the last build)
    watch(): sync every few seconds until SIGINT / SIGTERM; a cycle whose discovery (paths and checksums)
             equals the previous cycle's does nothing (no ledger rows, no build): SyncReport.idle

Each function takes its inputs (the roots, a `Target`) once and hands them down to the stages; none of them
prints: they return a report (with an `exit_code`) and call the optional `on_...` callbacks as work
happens, for a caller that shows progress.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from loader import ledger
from loader.backup import backup as backup_stage
from loader.database import Target
from loader.exit_codes import ExitCode
from loader.ledger import ARCHIVED, FORGOTTEN, MISSING
from loader.load import load as load_stage
from loader.load.secret_policy import SecretPolicy, existing_policy, load_policy
from loader.operate import change_detection, cutover
from loader.operate.change_detection import FileSync
from loader.serve.cache import Cache
from loader.serve.near_cache import forwarding_changes_to_redis
from loader.sources import discover as discovery
from loader.sources.discover import DiscoveryWarning
from loader.transform import build as build_stage
from loader.transform import freshness
from loader.transform.build import BuildOutcome
from loader.verify import reconciliation
from loader.verify import validate as validate_stage

FileCallback = Callable[[load_stage.FileOutcome], None]


def no_progress(outcome: load_stage.FileOutcome) -> None:
    pass


# ----------------------------------------------------------------------------------------- discover

@contextlib.contextmanager
def discovered_for_loading(roots: Sequence[Path], home: Path, target: Target) -> Iterator[discovery.Discovery]:
    """Discovery for a load: unchanged files known from the ledger, and the private copies it makes
    kept (in a temporary folder, gone on exit) for the load to use."""
    with tempfile.TemporaryDirectory(prefix="consolidate-copies-") as copies:
        yield discovery.discover(list(roots), exclude=[home], known=ledger.known_files(target),
                                 keep_copies_in=Path(copies))


def absolute(roots: Sequence[Path]) -> list[Path]:
    return [Path(root).absolute() for root in roots]


# --------------------------------------------------------------------------------------------- load

def load(roots: Sequence[Path], target: Target, home: Path, *, secrets: Path | None = None, force: bool = False,
         jobs: int = load_stage.DEFAULT_JOBS, on_file: FileCallback = no_progress) -> load_stage.LoadOutcome:
    """discover → load. Raises PolicyError for a bad secrets file."""
    policy = load_policy(home, secrets)
    roots = absolute(roots)
    with discovered_for_loading(roots, home, target) as found:
        return load_stage.load(found, target, [str(root) for root in roots], policy, force=force, jobs=jobs,
                               on_file=on_file)


# ---------------------------------------------------------------------------------------------- run

def default_backup_folder(home: Path) -> Path:
    return home / "backups" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class RunReport:
    loaded: load_stage.LoadOutcome
    build: build_stage.BuildOutcome
    files: list[reconciliation.FileSummary]
    validation: validate_stage.ValidationReport | None = None  # None: not built, or the marts were current
    backup_dir: Path | None = None
    backup: backup_stage.BackupManifest | None = None
    marts_were_current: bool = False  # nothing changed since the last build that passed: not rebuilt
    redis: dict | None = None  # what the build told the Redis cache (run --redis-url): build_telling_redis

    @property
    def reconciled(self) -> bool:
        validated = self.marts_were_current or (self.validation is not None and self.validation.passed)
        return self.build.success and validated and all(row.reconciled for row in self.files)

    @property
    def exit_code(self) -> ExitCode:
        if self.loaded.failed:
            return ExitCode.SOURCE_UNREADABLE
        if not self.reconciled:
            return ExitCode.NOT_RECONCILED
        return ExitCode.CACHE_UNAVAILABLE if self.redis is not None and not self.redis["reached"] else ExitCode.OK

    def to_json(self) -> dict:
        return {"load_id": self.loaded.load_id, "reconciled": self.reconciled, "exit_code": int(self.exit_code),
                "build": self.build.to_json(),
                "backup": str(self.backup_dir) if self.backup_dir else None,
                "validation": self.validation.to_json() if self.validation else None,
                "files": [row.to_json() for row in self.files],
                "warnings": [w.to_json() for w in self.loaded.warnings], "redis": self.redis}


@dataclass
class SyncReport:
    started_at: datetime
    finished_at: datetime | None = None
    load_id: str | None = None  # None when nothing was loaded (an idle watch cycle)
    files: list[FileSync] = field(default_factory=list)
    build: BuildOutcome | None = None  # None: not built (--no-build, or an idle cycle)
    caught_up: int = 0  # earlier loads (by `load` / `run`) whose changes this sync detected
    warnings: list[DiscoveryWarning] = field(default_factory=list)
    idle: bool = False  # a watch cycle that found every file as the previous cycle left it
    cycle: int | None = None  # the watch cycle's number
    error: str | None = None  # a watch cycle that raised (e.g. PostgreSQL unreachable)
    error_exit_code: ExitCode | None = None  # what that error means (ExitCode)
    checked: int = 0  # files discovered
    split_brain: list[cutover.SplitBrain] = field(default_factory=list)  # cut-over files that changed
    # what the build's changes did to the Redis cache (sync --redis-url): {"entries", "flushed", "reached"}
    redis: dict | None = None

    @classmethod
    def failed_cycle(cls, started_at: datetime, error: Exception, exit_code: ExitCode) -> SyncReport:
        return cls(started_at=started_at, finished_at=ledger.now(), error=f"{type(error).__name__}: {error}".strip(),
                   error_exit_code=exit_code)

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def owes_a_retry(self) -> bool:
        """Its build failed or Redis could not be told what it changed: a watch syncs again next cycle, even
        if no file changed (a file that failed to load is tried again when it changes)."""
        return (self.build is not None and not self.build.success) or \
            (self.redis is not None and not self.redis["reached"])

    @property
    def totals(self) -> dict:
        return {"files": len(self.files), **{s: self.count(s) for s in
                                             ("loaded", "unchanged", "copy", "failed", MISSING, ARCHIVED, FORGOTTEN)},
                "inserted": sum(f.inserted for f in self.files), "updated": sum(f.updated for f in self.files),
                "deleted": sum(f.deleted for f in self.files),
                "rows": sum(f.rows or 0 for f in self.files if f.status not in (MISSING, ARCHIVED, FORGOTTEN))}

    @property
    def failed(self) -> list[FileSync]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def exit_code(self) -> ExitCode:
        """Like `consolidate run`: 3 when a source could not be read, 1 when the build failed, 7 when Redis
        (`--redis-url`) could not be told what the build changed, else 0; a cycle that raised: what its error
        means (4 PostgreSQL unavailable, 3 a root unreadable)."""
        if self.error_exit_code is not None:
            return self.error_exit_code
        if self.failed:
            return ExitCode.SOURCE_UNREADABLE
        if self.build is not None and not self.build.success:
            return ExitCode.NOT_RECONCILED
        if self.redis is not None and not self.redis["reached"]:
            return ExitCode.CACHE_UNAVAILABLE
        return ExitCode.OK

    def status_line(self) -> str:
        """One line of plain text for a person watching the sync."""
        at = (self.finished_at or self.started_at).astimezone().strftime("%H:%M:%S")
        prefix = f"{at}" + (f" #{self.cycle}" if self.cycle is not None else "")
        if self.error:
            return f"{prefix} error: {self.error}"
        if self.idle:
            return f"{prefix} no change ({self.checked} files)"
        t = self.totals
        line = (f"{prefix} {t['loaded']} loaded (+{t['inserted']} ~{t['updated']} -{t['deleted']}), "
                f"{t['unchanged']} unchanged, {t['failed']} failed")
        for gone in ("missing", "archived", "forgotten"):
            if t[gone]:
                line += f", {t[gone]} {gone}"
        if self.split_brain:
            line += f", {len(self.split_brain)} split brain"
        if self.build is not None:
            line += "; build " + ("ok" if self.build.success else f"FAILED ({len(self.build.failures)})")
        if self.redis is not None:
            line += ("; Redis NOT told" if not self.redis["reached"] else "; Redis emptied" if self.redis["flushed"]
                     else f"; {self.redis['entries']} invalidated in Redis")
        return line

    def to_json(self) -> dict:
        return {"load_id": self.load_id, "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None,
                "idle": self.idle, "cycle": self.cycle, "error": self.error, "exit_code": self.exit_code,
                "checked": self.checked, "totals": self.totals, "caught_up": self.caught_up,
                "build": self.build.to_json() if self.build else None,
                "files": [f.to_json() for f in self.files], "warnings": [w.to_json() for w in self.warnings],
                "split_brain": [s.to_json() for s in self.split_brain], "redis": self.redis}


def run(roots: Sequence[Path], target: Target, home: Path, *, backup_to: Path | None,
        secrets: Path | None = None, force: bool = False, rebuild: bool = False,
        jobs: int = load_stage.DEFAULT_JOBS, quiet: bool = False, on_file: FileCallback = no_progress,
        cache: Cache | None = None) -> RunReport:
    """discover → backup (into `backup_to`; None: no backup) → load → build → validate → reconcile.

    When the current loads, the dbt project and the marts' schema are those of the last build that
    passed its tests and its validation, build and validation are skipped (`rebuild` forces them, the
    build then a full refresh from raw and the write log). With a `cache`, the entries the build changed
    are invalidated in that Redis (build_telling_redis).
    Raises PolicyError for a bad secrets file and BackupError when `backup_to` may not be used, both
    before anything is loaded. `quiet` silences dbt."""
    policy = load_policy(home, secrets)
    roots = absolute(roots)
    with discovered_for_loading(roots, home, target) as found:
        manifest = backup_stage.backup(roots, backup_to, exclude=[home], found=found) if backup_to else None
        build_stage.prepare(target, home)
        loaded = load_stage.load(found, target, [str(root) for root in roots], policy, force=force, jobs=jobs,
                                 on_file=on_file)
    built_from = freshness.fingerprint(target)
    redis = None
    if not rebuild and freshness.marts_are_current(target, built_from):
        built, validation = build_stage.BuildOutcome(success=True, skipped=True), None
    else:
        built, redis = build_telling_redis(target, home, cache, quiet=quiet, full_refresh=rebuild)
        validation = validate_stage.validate(target, backup_dir=backup_to, secret_policy=policy,
                                              backup_just_written=True) if built.success else None
        ledger.record_build(target, built_from, built.success, validation.passed if validation else None)
    return RunReport(loaded=loaded, build=built, files=reconciliation.summarize(target, loaded.load_id),
                     validation=validation, backup_dir=backup_to, backup=manifest,
                     marts_were_current=built.skipped, redis=redis)


# ----------------------------------------------------------------------------------------- validate

def validate(target: Target, home: Path, *, secrets: Path | None = None, sample_size: int = 20,
             seed: int | None = None, backup_dir: Path | None = None) -> validate_stage.ValidationReport:
    """The validation stage on its own, with the secret policy the loads under `home` used. Raises
    ValidationError when nothing can be validated, PolicyError for a bad secrets file."""
    return validate_stage.validate(target, sample_size=sample_size, seed=seed, backup_dir=backup_dir,
                                   secret_policy=existing_policy(home, secrets))


# ------------------------------------------------------------------------------- build, telling Redis

# An invalidation Redis could not be told (it was down): the next build told empties the cache instead.
REDIS_OWED = "redis-invalidation-owed"


def build_telling_redis(target: Target, home: Path, cache: Cache | None,
                        **options) -> tuple[build_stage.BuildOutcome, dict | None]:
    """build_stage.build; with a `cache`, every entry the build changed is invalidated in that Redis too
    (forwarding_changes_to_redis) and what Redis was told is returned ({"entries", "flushed", "reached"})."""
    if cache is None:
        return build_stage.build(target, home, **options), None
    owed = home / REDIS_OWED
    forwarded = None
    try:
        with forwarding_changes_to_redis(target.dsn, target.schema, cache, flush=owed.exists()) as forwarded:
            built = build_stage.build(target, home, **options)
    finally:
        if forwarded is not None and forwarded.reached:
            owed.unlink(missing_ok=True)
        elif forwarded is not None:
            home.mkdir(parents=True, exist_ok=True)
            owed.touch()
    return built, asdict(forwarded)


# --------------------------------------------------------------------------------------------- sync

def sync(roots: Sequence[Path], target: Target, home: Path, *, secrets: Path | None = None,
         policy: SecretPolicy | None = None, build: bool = True, quiet: bool = True,
         found: discovery.Discovery | None = None, on_file: FileCallback = no_progress,
         cache: Cache | None = None) -> SyncReport:
    """discover (unless `found` is given) → load (unchanged files skipped by checksum, changed ones
    reloaded) → change detection → split-brain check of cut-over files → `dbt build` (unless
    build=False; with a `cache`, every entry the build changed is invalidated in that Redis). Never
    raises for a bad source
    file: it is reported with status `failed` (exit code 3). Raises PolicyError for a bad secrets
    file, psycopg errors when PostgreSQL cannot be reached."""
    roots = absolute(roots)
    with contextlib.nullcontext(found) if found is not None else discovered_for_loading(roots, home, target) as found:
        return sync_found(roots, found, target, home, secrets=secrets, policy=policy, build=build, quiet=quiet,
                          on_file=on_file, cache=cache)


def sync_found(roots: list[Path], found: discovery.Discovery, target: Target, home: Path, *,
               secrets: Path | None, policy: SecretPolicy | None, build: bool, quiet: bool,
               on_file: FileCallback, cache: Cache | None) -> SyncReport:
    """sync, of what discovery found under `roots`."""
    report = SyncReport(started_at=ledger.now())
    report.warnings = found.warnings
    report.checked = len(found.files)
    policy = policy or load_policy(home, secrets)
    if build:
        build_stage.prepare(target, home)
    loaded = load_stage.load(found, target, [str(root) for root in roots], policy, on_file=on_file)
    report.load_id = loaded.load_id
    report.caught_up, report.files = change_detection.detect(target, loaded, roots)
    report.split_brain = cutover.check_split_brain(target)
    if build:  # dbt's unit tests (the project's SQL on fixed rows) are left to build and run
        report.build, report.redis = build_telling_redis(target, home, cache, quiet=quiet, unit_tests=False,
                                                         only_what_changed=True)
    report.finished_at = ledger.now()
    return report


# -------------------------------------------------------------------------------------------- watch

def discovery_state(found: discovery.Discovery) -> frozenset:
    """What a watch cycle compares with the previous one: every file's path, checksums and verdict."""
    return frozenset((str(f.path), f.sha256, f.wal_sha256, str(f.copy_of), f.error) for f in found.files)


class StopRequest:
    """SIGINT / SIGTERM ask the watch to stop after the cycle under way; a second one interrupts it.
    The handler only sets a flag (taking a lock in a signal handler could deadlock the main thread)."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def pause(seconds: float, stopping: Callable[[], bool]) -> None:
    """Sleep `seconds`, asking `stopping` every tenth of a second."""
    deadline = time.monotonic() + seconds
    while not stopping() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))


def watch(roots: Sequence[Path], target: Target, home: Path, interval: float,
          on_cycle: Callable[[SyncReport], None] = lambda report: None, *,
          secrets: Path | None = None, build: bool = True, cache: Cache | None = None,
          stop: threading.Event | None = None) -> SyncReport | None:
    """Sync every `interval` seconds (from the end of one cycle to the start of the next) until
    SIGINT/SIGTERM (the cycle under way finishes first; a second signal interrupts it),
    KeyboardInterrupt, or `stop` is set. `on_cycle` gets every cycle's report: an idle one when no file
    changed since the previous cycle, one with `error` set when the cycle raised (the watch goes on:
    PostgreSQL unreachable or a root unmounted are retried next cycle, and so is a cycle whose build failed
    or which could not tell Redis: SyncReport.owes_a_retry). Returns the last cycle that
    did something (a sync, or an error), whose exit code is the watch's; None when every cycle was
    idle. Raises PolicyError for a bad secrets file, before the first cycle."""
    stop = stop or threading.Event()
    request = StopRequest()
    roots = absolute(roots)
    policy = load_policy(home, secrets)
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            handlers[signum] = signal.signal(signum, request)

    def stopping() -> bool:
        return request.requested or stop.is_set()

    last_state, last_report, cycle = None, None, 0
    try:
        while not stopping():
            cycle += 1
            started = ledger.now()
            try:
                with discovered_for_loading(roots, home, target) as found:
                    state = discovery_state(found)
                    if state == last_state:
                        report = SyncReport(started_at=started, finished_at=ledger.now(), idle=True,
                                            checked=len(found.files))
                    else:
                        report = sync(roots, target, home, policy=policy, build=build, found=found, cache=cache)
                        if not report.owes_a_retry:
                            last_state = state
            except psycopg.Error as error:
                report = SyncReport.failed_cycle(started, error, ExitCode.DATABASE_UNAVAILABLE)
            except OSError as error:
                report = SyncReport.failed_cycle(started, error, ExitCode.SOURCE_UNREADABLE)
            report.cycle = cycle
            if not report.idle:
                last_report = report
            on_cycle(report)
            pause(interval, stopping)
    except KeyboardInterrupt:
        pass
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return last_report
