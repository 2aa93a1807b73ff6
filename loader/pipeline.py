"""The order of the stages, and the only place that says it.

    load():  discover → load
    run():   discover → backup → load → build → validate → reconcile, per source file
    validate(): the validation stage on its own, with the secret policy the loads used
    sync():  discover → load what changed → detect the changes → check cut-over files for split brain
             → build (incremental: only the loads and writes new since the last build)
    watch(): sync every few seconds, a cycle that finds nothing changed doing nothing

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
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from loader import ledger
from loader.backup import backup as backup_stage
from loader.database import Target
from loader.exit_codes import ExitCode
from loader.load import load as load_stage
from loader.load.secret_policy import SecretPolicy, existing_policy, load_policy
from loader.operate import change_detection, cutover
from loader.serve.cache import Cache
from loader.serve.near_cache import forwarding_changes_to_redis
from loader.sources import discover as discovery
from loader.transform import build as build_stage
from loader.transform import freshness
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

def load(roots: Sequence[Path], target: Target, home: Path, *, secrets: Path | None = None,
         policy: SecretPolicy | None = None, force: bool = False, jobs: int = load_stage.DEFAULT_JOBS,
         on_file: FileCallback = no_progress) -> load_stage.LoadOutcome:
    """discover → load. Raises PolicyError for a bad secrets file."""
    policy = policy or load_policy(home, secrets)
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
         found: discovery.Discovery | None = None, force: bool = False,
         on_file: FileCallback = no_progress, cache: Cache | None = None) -> change_detection.SyncReport:
    """discover (unless `found` is given) → load (unchanged files skipped by checksum, changed ones
    reloaded) → change detection → split-brain check of cut-over files → `dbt build` (unless
    build=False; with a `cache`, every entry the build changed is invalidated in that Redis). Never
    raises for a bad source
    file: it is reported with status `failed` (exit code 3). Raises PolicyError for a bad secrets
    file, psycopg errors when PostgreSQL cannot be reached."""
    roots = absolute(roots)
    with contextlib.nullcontext(found) if found is not None else discovered_for_loading(roots, home, target) as found:
        return sync_found(roots, found, target, home, secrets=secrets, policy=policy, build=build, quiet=quiet,
                          force=force, on_file=on_file, cache=cache)


def sync_found(roots: list[Path], found: discovery.Discovery, target: Target, home: Path, *,
               secrets: Path | None, policy: SecretPolicy | None, build: bool, quiet: bool, force: bool,
               on_file: FileCallback, cache: Cache | None) -> change_detection.SyncReport:
    """sync, of what discovery found under `roots`."""
    report = change_detection.SyncReport(started_at=ledger.now())
    report.warnings = found.warnings
    report.checked = len(found.files)
    policy = policy or load_policy(home, secrets)
    if build:
        build_stage.prepare(target, home)
    loaded = load_stage.load(found, target, [str(root) for root in roots], policy, force=force, on_file=on_file)
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


def pause(seconds: float, stopping: Callable[[], bool], step: float = 0.1) -> None:
    deadline = time.monotonic() + seconds
    while not stopping() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, step))


def watch(roots: Sequence[Path], target: Target, home: Path, interval: float,
          on_cycle: Callable[[change_detection.SyncReport], None] = lambda report: None, *,
          secrets: Path | None = None, build: bool = True, cache: Cache | None = None,
          stop: threading.Event | None = None) -> change_detection.SyncReport | None:
    """Sync every `interval` seconds (from the end of one cycle to the start of the next) until
    SIGINT/SIGTERM (the cycle under way finishes first; a second signal interrupts it),
    KeyboardInterrupt, or `stop` is set. `on_cycle` gets every cycle's report: an idle one when no file
    changed since the previous cycle, one with `error` set when the cycle raised (the watch goes on:
    PostgreSQL unreachable or a root unmounted are retried next cycle). Returns the last cycle that
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
                        report = change_detection.SyncReport(started_at=started, finished_at=ledger.now(),
                                                             idle=True, checked=len(found.files))
                    else:
                        report = sync(roots, target, home, policy=policy, build=build, found=found, cache=cache)
                        last_state = state
            except psycopg.Error as error:
                report = change_detection.SyncReport.failed_cycle(started, error, ExitCode.DATABASE_UNAVAILABLE)
            except OSError as error:
                report = change_detection.SyncReport.failed_cycle(started, error, ExitCode.SOURCE_UNREADABLE)
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
