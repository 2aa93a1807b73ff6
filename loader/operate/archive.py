"""Archive (plan phase 5): zip the SQLite files whose exact bytes were migrated and validated, then
optionally remove the originals.

Which files pass
----------------
A discovered file passes when all of these hold:
- the ledger has a current load for its path (`consolidate.current_loads`);
- its bytes now have that load's sha256 (main file) and WAL sha256 (or, like then, no `-wal`);
- every table of that load has rows_in_sqlite = rows_loaded in `consolidate.load_tables`;
- if that load brought memory tables, the `reconciliation` mart in `target.schema` has a row for the
  path, built for that same load, with reconciled = true.
A byte-identical copy of a loaded file (the ledger's latest row for its path says `copy`: it was never
loaded itself) passes when its original's current load passes and its bytes are that load's: it is
archived with its own members and removed like any other, so no old copy is left behind to be loaded as
a source of its own after its original is gone.
Every other file is refused with the reason, and nothing of it is archived or removed.

The archive
-----------
`<destination>/consolidate-archive-<UTC stamp>-<hex>.zip` (deflate) holds `manifest.json` and, under
`files/`, each passing file's main file with its `-wal` and `-journal` exactly as they are on disk.
They are copied by `snapshot.consistent_copy`, never opened, and the copy is accepted only if its
checksums are the ledger's. The `-shm` is not archived: it is only an index of the WAL. Member paths
follow backup.py: `files/<source_db>` with one root, `files/<n>-<root folder name>/<source_db>` with
several. Beside the zip, `<archive>.zip.sha256` holds its sha256 in `sha256sum` format.

`manifest.json` (see `ArchiveManifest.to_json`, format `consolidate-archive/1`) lists every archived
file (original path, kind, the ledger load id, sha256 and WAL sha256) with its members (name in the zip,
original path, sha256, size), and every refused file with the reason. It also records archived_at,
the tool version, the roots and the schema of the reconciliation mart.

Destination rules
-----------------
A missing or empty folder, or a folder holding nothing but consolidate archives, is written to: each
run adds one archive. Anything else is refused (`ArchiveError`), as is a folder inside a root or one
that contains a root (unless it lies in an excluded folder, such as the tool's state folder, which
discovery never searches). The archive is written and verified in a hidden sibling folder
(`.<name>.partial-*`, mode 0700, since the databases hold credentials), then moved in. If no file
passes, nothing is written.

Removing originals
------------------
`remove_archived_originals` deletes a file's main file, `-wal`, `-shm` and `-journal` only when the
whole archive verifies, the ledger still shows the file fully migrated (the rules above), and its
main file, `-wal` and `-journal` on disk still have exactly the archived checksums. Never through a
symbolic link and never outside the roots: a file discovery reached through a link (its manifest
entry's `link_paths`), whose path now goes through a link, whose real path lies outside every root of
the archive, or whose parts are not regular files is refused. Otherwise it refuses that file, with the
reason, and deletes nothing of it.

The deletion itself: the folder is opened component by component without following any link, the parts
are moved (renamed, main file first) into a new `.consolidate-quarantine-<UTC stamp>-<hex>` folder
beside them (same file system, mode 0700), hashed again there, and deleted only if they still hold the
archived bytes. Bytes that changed between the check and the move are kept: moved back where they were
(never over a file that appeared meanwhile), or else left in the quarantine folder, which the refusal
names. An interruption leaves the parts in the quarantine folder, never lost.

Each file removed is recorded in the ledger (`consolidate.archived_removals`: its load, the archive,
the archive's sha256 and the file's members), so later commands know where its bytes are: validate
spot-checks them in the archive, status and sync report the file `archived`, rollback reads it there.
An archive moved since is pointed at again by `relocate_archive` (`archive --verify PATH --relocate`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql

from loader import __version__, ledger
from loader.backup.backup import backup_relative_path
from loader.backup.destination import Problem, destination_refusal, flush_to_disk, make_staging_folder, publish_files
from loader.database import Target
from loader.exit_codes import ExitCode
from loader.ledger import LATEST_FILE_ROWS, LEDGER_SCHEMA, CurrentLoad, current_loads, relation_exists
from loader.ledger import exists as ledger_exists
from loader.sources.discover import QUARANTINE_PREFIX, DiscoveryWarning, SourceFile, discover
from loader.sources.snapshot import (
    CHANGE_DETECTING_SUFFIXES,
    EVERY_SIDE_FILE,
    ZIP_READ_ERRORS,
    SourceKeptChanging,
    consistent_copy,
    file_set_state,
    sha256_of,
    side_file,
)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "consolidate-archive/1"
MEMBERS_FOLDER = "files"
CHECKSUM_SUFFIX = ".sha256"
ARCHIVE_FILE = re.compile(r"consolidate-archive-\d{8}T\d{6}Z-[0-9a-f]+\.zip(\.sha256)?")
# The bytes archived per file, and their labels in reasons: main file, WAL, hot journal.
ARCHIVED_SUFFIXES = CHANGE_DETECTING_SUFFIXES
SUFFIX_LABELS = {"": "main file", "-wal": "-wal", "-journal": "-journal"}
REMOVED_SUFFIXES = ("", *EVERY_SIDE_FILE)
# The raw tables the reconciliation mart counts: the dbt macro memory_raw_tables().
MEMORY_RAW_TABLES = ["raw_claude_flow_v2.memory_entries", "raw_claude_flow_v3.memory_entries",
                     "raw_extended_memory.memory_store"]
READ_CHUNK = 1 << 20
NO_LEDGER_REASON = "no load has run against this database (there is no consolidate ledger)"


class ArchiveError(Exception):
    """The archive cannot be written or read. The message says why and what to do."""


# -------------------------------------------------------------------------------------- manifest

@dataclass
class Member:
    """One file inside the archive."""

    name: str
    original: str
    sha256: str
    size_bytes: int

    def to_json(self) -> dict:
        return {"name": self.name, "original": self.original, "sha256": self.sha256, "size_bytes": self.size_bytes}

    @classmethod
    def from_json(cls, data: dict) -> Member:
        return cls(name=data["name"], original=data["original"], sha256=data["sha256"],
                   size_bytes=data["size_bytes"])


@dataclass
class ArchivedFile:
    """A source database in the archive: its main file and side files, and the load that migrated it."""

    path: str
    source_db: str
    kind: str
    load_id: str
    sha256: str
    wal_sha256: str | None
    members: list[Member]
    # Paths that reached the file through a symbolic link when it was archived: never deleted through.
    link_paths: list[str] = field(default_factory=list)
    # A byte-identical copy (never loaded itself): the file whose load (`load_id`) migrated its bytes.
    copy_of: str | None = None

    @property
    def migrated_as(self) -> str:
        """The path whose ledger load migrated these bytes: the file itself, or the original of a copy."""
        return self.copy_of or self.path

    def archived_state(self) -> tuple[str | None, ...]:
        """sha256 of the archived main file, `-wal` and `-journal` (None for one not archived), in the
        shape of `snapshot.file_set_state`."""
        by_original = {member.original: member.sha256 for member in self.members}
        return tuple(by_original.get(str(side_file(Path(self.path), suffix))) for suffix in ARCHIVED_SUFFIXES)

    def to_json(self) -> dict:
        return {"path": self.path, "source_db": self.source_db, "kind": self.kind, "load_id": self.load_id,
                "sha256": self.sha256, "wal_sha256": self.wal_sha256,
                "members": [member.to_json() for member in self.members], "link_paths": self.link_paths,
                "copy_of": self.copy_of}

    @classmethod
    def from_json(cls, data: dict) -> ArchivedFile:
        return cls(path=data["path"], source_db=data["source_db"], kind=data["kind"], load_id=data["load_id"],
                   sha256=data["sha256"], wal_sha256=data.get("wal_sha256"),
                   members=[Member.from_json(member) for member in data["members"]],
                   link_paths=list(data.get("link_paths") or []), copy_of=data.get("copy_of"))


@dataclass
class Refusal:
    """A file that was not archived, and why."""

    path: str
    reason: str

    def to_json(self) -> dict:
        return {"path": self.path, "reason": self.reason}

    @classmethod
    def from_json(cls, data: dict) -> Refusal:
        return cls(path=data["path"], reason=data["reason"])


@dataclass
class ArchiveManifest:
    archived_at: str
    version: str
    roots: list[str]
    schema: str
    files: list[ArchivedFile] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"format": MANIFEST_FORMAT, "tool": "consolidate", "version": self.version,
                "archived_at": self.archived_at, "roots": self.roots, "schema": self.schema,
                "files": [entry.to_json() for entry in self.files],
                "refused": [refusal.to_json() for refusal in self.refused]}

    @classmethod
    def from_json(cls, data: dict) -> ArchiveManifest:
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a {MANIFEST_FORMAT} manifest")
        try:
            return cls(archived_at=data["archived_at"], version=data["version"], roots=list(data["roots"]),
                       schema=data["schema"], files=[ArchivedFile.from_json(entry) for entry in data["files"]],
                       refused=[Refusal.from_json(refusal) for refusal in data["refused"]])
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{MANIFEST_NAME} lacks or mangles {error}") from error


@dataclass
class Removal:
    """What `remove_archived_originals` did with one archived file: the files it deleted, or why none."""

    path: str
    removed: list[str] = field(default_factory=list)
    refused: str | None = None

    def to_json(self) -> dict:
        return {"path": self.path, "removed": self.removed, "refused": self.refused}


@dataclass
class ArchiveReport:
    archive: Path | None
    manifest: ArchiveManifest
    removals: list[Removal] = field(default_factory=list)
    # what discovery warned of under the roots (an orphan -wal, a file that is no SQLite database)
    warnings: list[DiscoveryWarning] = field(default_factory=list)

    @property
    def archived(self) -> list[ArchivedFile]:
        return self.manifest.files

    @property
    def refused(self) -> list[Refusal]:
        return self.manifest.refused

    @property
    def exit_code(self) -> ExitCode:
        """1 when a file was not archived or a removal was refused."""
        refused_removal = any(removal.refused for removal in self.removals)
        return ExitCode.NOT_RECONCILED if self.refused or refused_removal else ExitCode.OK

    def to_json(self) -> dict:
        return {"archive": str(self.archive) if self.archive else None, "exit_code": self.exit_code,
                "checksum_file": str(checksum_file(self.archive)) if self.archive else None,
                **self.manifest.to_json(), "removals": [removal.to_json() for removal in self.removals],
                "warnings": [warning.to_json() for warning in self.warnings]}


# ------------------------------------------------------------------------------------------ ledger

@dataclass(frozen=True)
class LoadedTables:
    """What the ledger holds about the tables of a path's current load."""

    miscounted: list[str]  # rows loaded differ from rows in SQLite
    has_memory_tables: bool


@dataclass(frozen=True)
class LatestRow:
    load_id: str
    status: str
    error_message: str | None
    copy_of: str | None


@dataclass
class LedgerFacts:
    schema: str
    current: dict[str, CurrentLoad]
    tables: dict[str, LoadedTables]
    latest: dict[str, LatestRow]
    reconciliation: dict[str, tuple[str, bool]] | None  # path → (load_id, reconciled); None: no mart


TABLES_QUERY = """
SELECT c.source_path,
       array_agg(t.source_table ORDER BY t.source_table) FILTER (WHERE t.rows_in_sqlite <> t.rows_loaded),
       bool_or(t.raw_schema || '.' || t.raw_table = ANY(%(memory_tables)s))
FROM {ledger}.current_loads AS c
LEFT JOIN {ledger}.load_tables AS t USING (load_id, source_path)
GROUP BY c.source_path
"""

LATEST_QUERY = f"SELECT source_path, load_id, status, error_message, copy_of FROM {LATEST_FILE_ROWS} AS latest"


def read_ledger_facts(target: Target) -> LedgerFacts | None:
    """The ledger's current loads, latest rows and reconciliation verdicts; None without a ledger."""
    ledger = sql.Identifier(LEDGER_SCHEMA)
    with target.connect() as connection:
        if not ledger_exists(connection):
            return None
        current = current_loads(connection)
        table_rows = connection.execute(sql.SQL(TABLES_QUERY).format(ledger=ledger),
                                        {"memory_tables": MEMORY_RAW_TABLES}).fetchall()
        latest_rows = connection.execute(LATEST_QUERY).fetchall()
        reconciliation = None
        if relation_exists(connection, target.schema, "reconciliation"):
            reconciliation = {path: (load_id, reconciled) for path, load_id, reconciled in connection.execute(
                sql.SQL("SELECT source_path, load_id, reconciled FROM {}").format(
                    sql.Identifier(target.schema, "reconciliation")))}
    return LedgerFacts(
        schema=target.schema,
        current={load.source_path: load for load in current},
        tables={path: LoadedTables(miscounted or [], bool(memory)) for path, miscounted, memory in table_rows},
        latest={path: LatestRow(*rest) for path, *rest in latest_rows},
        reconciliation=reconciliation)


# ----------------------------------------------------------------------------------- which pass

def original_of(path: str, facts: LedgerFacts | None) -> str | None:
    """The file `path` is a byte-identical copy of, by the ledger's latest row for it (a copy is never
    loaded: its original's load migrated the same bytes); None for any other file, and for a path with
    a current load of its own (its bytes are checked against that load)."""
    if facts is None or path in facts.current:  # loaded on its own once: its own current load counts
        return None
    latest = facts.latest.get(path)
    return latest.copy_of if latest is not None and latest.status == "copy" else None


def ledger_refusal(path: str, facts: LedgerFacts | None) -> str | None:
    """Why the ledger does not show `path` (or, for a copy, its original) fully migrated; None when it does."""
    if facts is None:
        return NO_LEDGER_REASON
    original = original_of(path, facts)
    if original is not None:
        reason = ledger_refusal(original, facts)
        return f"a byte-identical copy of {original}, which is not archived: {reason}" if reason else None
    current = facts.current.get(path)
    if current is None:
        return no_current_load_reason(facts.latest.get(path))
    tables = facts.tables[path]
    if tables.miscounted:
        return (f"its current load {current.load_id} loaded a different number of rows than SQLite held "
                f"for table(s) {', '.join(tables.miscounted)}")
    if tables.has_memory_tables:
        return reconciliation_refusal(path, current.load_id, facts)
    return None


def no_current_load_reason(latest: LatestRow | None) -> str:
    if latest is None:
        return "never loaded: the ledger has no row for it"
    if latest.status == "failed":
        return f"never loaded successfully; its last load failed: {latest.error_message}"
    return f"the ledger has no loaded version of it (latest status: {latest.status})"


def reconciliation_refusal(path: str, load_id: str, facts: LedgerFacts) -> str | None:
    mart = f"{facts.schema}.reconciliation"
    if facts.reconciliation is None:
        return f"{mart} does not exist; run `consolidate build`"
    if path not in facts.reconciliation:
        return f"no row in {mart}; run `consolidate build`"
    built_for, reconciled = facts.reconciliation[path]
    if built_for != load_id:
        return f"{mart} was built for load {built_for}, not the current load {load_id}; run `consolidate build`"
    return None if reconciled else f"not reconciled in {mart}"


def differing_parts(expected: tuple[str | None, ...], actual: tuple[str | None, ...]) -> list[str]:
    """Labels (main file, -wal, -journal) of the parts whose sha256 differ, in ARCHIVED_SUFFIXES order."""
    return [SUFFIX_LABELS[suffix] for suffix, then, now in zip(ARCHIVED_SUFFIXES, expected, actual) if then != now]


def checksum_refusal(current: CurrentLoad, sha256: str | None, wal_sha256: str | None,
                     copy_of: str | None = None) -> str | None:
    """Why these bytes are not the ones the current load (of `copy_of`, for a copy) migrated; None when
    they are."""
    changed = differing_parts(current.identity, (sha256, wal_sha256))
    if not changed:
        return None
    parts = ' and the '.join(changed)
    if copy_of:
        return (f"no longer a byte-identical copy of {copy_of}: the {parts} no longer have the sha256 of "
                f"its current load {current.load_id}; load and build again first")
    return (f"changed since its current load {current.load_id}: the {parts} no longer have the ledger's "
            "sha256; load and build again first")


# ------------------------------------------------------------------------------------- archiving

def archive(target: Target, roots: list[Path], destination: Path, *, remove_originals: bool = False,
            exclude: list[Path] = ()) -> ArchiveReport:
    """Archive every database discovered under `roots` (never inside `exclude`: the tool's state folder)
    that passes (see the module docstring) into a new zip in `destination`; list the others with the
    reason. With `remove_originals`, then delete the originals of the archived files that
    `remove_archived_originals` allows. Raise `ArchiveError` if the destination may not be written."""
    roots = [root.absolute() for root in roots]
    destination = destination.absolute()
    check_destination(destination, roots, exclude)
    found = discover(roots, exclude, loaded=ledger.known_files(target))
    facts = read_ledger_facts(target)
    manifest = ArchiveManifest(archived_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               version=__version__, roots=[str(root) for root in roots], schema=target.schema)
    try:
        staging = make_staging_folder(destination)
    except OSError as error:
        raise ArchiveError(f"{destination} cannot be created or written: {error.strerror or error}") from None
    try:
        written = write_archive(staging / new_archive_name(), found.files, roots, facts, manifest)
        published = publish_files([written, checksum_file(written)], destination)[0] if manifest.files else None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    removals = remove_archived_originals(target, published) if published and remove_originals else []
    return ArchiveReport(archive=published, manifest=manifest, removals=removals, warnings=found.warnings)


def new_archive_name() -> str:
    return f"consolidate-archive-{ledger.new_id()}.zip"


def write_archive(path: Path, sources: list[SourceFile], roots: list[Path], facts: LedgerFacts | None,
                  manifest: ArchiveManifest) -> Path:
    """Write the zip of every passing source, filling in `manifest`; seal it with its checksum file and
    verify it. Raise `ArchiveError` if what was written does not verify."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for source in sources:
            outcome = archive_file(bundle, source, f"{MEMBERS_FOLDER}/{backup_relative_path(source, roots)}", facts)
            (manifest.files if isinstance(outcome, ArchivedFile) else manifest.refused).append(outcome)
        bundle.writestr(MANIFEST_NAME, json.dumps(manifest.to_json(), indent=2) + "\n")
    seal(path)
    problems = verify_archive(path)
    if problems:
        raise ArchiveError("the archive just written does not verify: "
                           + "; ".join(f"{p.path}: {p.problem}" for p in problems[:5]))
    return path


def archive_file(bundle: zipfile.ZipFile, source: SourceFile, member_name: str,
                 facts: LedgerFacts | None) -> ArchivedFile | Refusal:
    """Add `source` to the archive if it passes; otherwise say why not."""
    path = str(source.path)
    reason = ledger_refusal(path, facts)
    if reason:
        return Refusal(path, reason)
    original = original_of(path, facts)
    current = facts.current[original or path]
    with tempfile.TemporaryDirectory(prefix="consolidate-archive-") as folder:
        try:
            snapshot = consistent_copy(source.path, Path(folder))
        except (SourceKeptChanging, OSError) as error:
            return Refusal(path, f"cannot copy: {error}")
        reason = checksum_refusal(current, snapshot.sha256, snapshot.wal_sha256, original)
        if reason:
            return Refusal(path, reason)
        members = add_members(bundle, snapshot.path, source.path, member_name)
    return ArchivedFile(path=path, source_db=source.source_db, kind=source.kind, load_id=current.load_id,
                        sha256=snapshot.sha256, wal_sha256=snapshot.wal_sha256, members=members,
                        link_paths=[str(link) for link in source.link_paths], copy_of=original)


def add_members(bundle: zipfile.ZipFile, copy: Path, original: Path, name: str) -> list[Member]:
    """Add the copied main file and its copied side files to the archive, named after `name`."""
    members = []
    for suffix in ARCHIVED_SUFFIXES:
        copied = side_file(copy, suffix)
        if copied.exists():
            member = Member(name=name + suffix, original=str(side_file(original, suffix)),
                            sha256=sha256_of(copied), size_bytes=copied.stat().st_size)
            bundle.write(copied, arcname=member.name)
            members.append(member)
    return members


def checksum_file(archive_path: Path) -> Path:
    return archive_path.with_name(archive_path.name + CHECKSUM_SUFFIX)


def seal(archive_path: Path) -> None:
    """Make the archive private and durable, and write its checksum file beside it."""
    archive_path.chmod(0o600)
    flush_to_disk(archive_path)
    sums = checksum_file(archive_path)
    sums.write_text(f"{sha256_of(archive_path)}  {archive_path.name}\n", encoding="utf-8")
    flush_to_disk(sums)


# ----------------------------------------------------------------------------------- destination

def check_destination(destination: Path, roots: list[Path], exclude: list[Path] = ()) -> None:
    """Raise `ArchiveError` unless `destination` is missing, empty, or holds only consolidate archives."""
    refusal = destination_refusal(destination, roots, exclude, "the archives would sit among the files they replace")
    if refusal:
        raise ArchiveError(refusal)
    if not destination.exists():
        return
    foreign = sorted(child.name for child in destination.iterdir()
                     if not (child.is_file() and ARCHIVE_FILE.fullmatch(child.name)))
    if foreign:
        raise ArchiveError(f"{destination} holds more than consolidate archives ({', '.join(foreign[:5])}"
                           f"{', ...' if len(foreign) > 5 else ''}); choose a new or empty folder, or one "
                           "holding only archives")


# ---------------------------------------------------------------------------------------- verify

def verify_archive(path: Path) -> list[Problem]:
    """Re-read the archive: every member its manifest lists present with its sha256, no member it does
    not list, and, when the `.sha256` file is beside it, the archive's own sha256. Returns the problems;
    an empty list means verified."""
    if not path.is_file():
        return [Problem(path.name, "no such file")]
    problems = whole_archive_problems(path)
    try:
        with zipfile.ZipFile(path) as bundle:
            problems.extend(member_problems(bundle, manifest_in(bundle)))
    except (zipfile.BadZipFile, OSError) as error:
        problems.append(Problem(path.name, f"cannot be read as a zip archive: {error}"))
    except ValueError as error:
        problems.append(Problem(MANIFEST_NAME, f"{error}: not a consolidate archive"))
    return problems


def relocate_archive(target: Target, path: Path) -> list[tuple[str, str]] | None:
    """After an archive was moved to `path`: point the ledger's records of the files removed after
    archiving into it (`consolidate.archived_removals`, matched by the archive's sha256) at `path`, where
    validate, status and rollback look for their bytes. Returns (source_path, previous archive path) of
    each record moved; None when no record names an archive with these bytes (not one that
    `--remove-originals` wrote and removed files from). Only for an archive `verify_archive` passed."""
    archive_sha256 = sha256_of(path)
    with target.connect() as connection:
        if not ledger_exists(connection):
            return None
        return ledger.relocate_archive(connection, archive_sha256, os.path.abspath(path))


@dataclass
class ArchiveCheck:
    """`archive --verify PATH [--relocate]`: the archive's problems, and what relocating it did."""

    path: Path
    problems: list[Problem]
    relocate: bool = False  # asked to relocate
    relocated: list[tuple[str, str]] | None = None  # relocate_archive's answer (None: refused or not asked)

    @property
    def exit_code(self) -> ExitCode:
        refused = self.relocate and self.relocated is None
        return ExitCode.NOT_RECONCILED if self.problems or refused else ExitCode.OK


def check_archive(path: Path, relocate_in: Target | None = None) -> ArchiveCheck:
    """verify_archive, then, given `relocate_in` and an archive that verifies, relocate_archive."""
    problems = verify_archive(path)
    relocated = relocate_archive(relocate_in, path) if relocate_in is not None and not problems else None
    return ArchiveCheck(path, problems, relocate_in is not None, relocated)


def recorded_sha256(archive_path: Path) -> str | None:
    """The archive's sha256 as its `.sha256` file (sha256sum format) records it; None without one."""
    sums = checksum_file(archive_path)
    if not sums.is_file():
        return None
    return next(iter(sums.read_text(encoding="utf-8").split(maxsplit=1)), "")


def whole_archive_problems(path: Path) -> list[Problem]:
    recorded = recorded_sha256(path)
    if recorded is None:
        return []
    actual = sha256_of(path)
    if recorded != actual:
        return [Problem(path.name, f"sha256 {actual} differs from the one recorded in {checksum_file(path).name}")]
    return []


def manifest_in(bundle: zipfile.ZipFile) -> ArchiveManifest:
    """The archive's manifest. Raise ValueError if it is missing or not a consolidate archive manifest."""
    try:
        data = json.loads(bundle.read(MANIFEST_NAME))
    except KeyError as error:
        raise ValueError(f"no {MANIFEST_NAME}") from error
    except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {MANIFEST_NAME}: {error}") from error
    return ArchiveManifest.from_json(data)


def member_problems(bundle: zipfile.ZipFile, manifest: ArchiveManifest) -> list[Problem]:
    problems = []
    listed = {MANIFEST_NAME}
    for entry in manifest.files:
        for member in entry.members:
            listed.add(member.name)
            problem = member_problem(bundle, member)
            if problem:
                problems.append(Problem(member.name, problem, member.original))
    problems.extend(Problem(name, "not recorded in the manifest") for name in bundle.namelist() if name not in listed)
    return problems


def member_problem(bundle: zipfile.ZipFile, member: Member) -> str | None:
    try:
        actual = sha256_of_member(bundle, member.name)
    except KeyError:
        return "missing: listed in the manifest, not in the archive"
    except ZIP_READ_ERRORS as error:
        return f"cannot be read: {error}"
    if actual != member.sha256:
        return f"sha256 {actual} differs from the manifest's {member.sha256}"
    return None


def sha256_of_member(bundle: zipfile.ZipFile, name: str) -> str:
    digest = hashlib.sha256()
    with bundle.open(name) as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_archive_manifest(path: Path) -> ArchiveManifest:
    """The manifest inside an archive. Raise `ArchiveError` if the archive or its manifest cannot be read."""
    try:
        with zipfile.ZipFile(path) as bundle:
            return manifest_in(bundle)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ArchiveError(f"{path} is not a readable consolidate archive: {error}") from error


# -------------------------------------------------------------------------------------- removing

def remove_archived_originals(target: Target, archive_path: Path) -> list[Removal]:
    """Delete the originals (main file, -wal, -shm, -journal) of the files in the archive at
    `archive_path`, each only if the archive verifies, the ledger in `target` shows it fully migrated, it
    lies inside the archive's roots and was not reached through a link, and its bytes on disk are still
    the archived ones (checked again after they were moved into quarantine). Every other file is
    refused with the reason."""
    manifest = read_archive_manifest(archive_path)
    problems = verify_archive(archive_path)
    if problems:
        reason = (f"the archive does not verify ({len(problems)} problem(s), first: "
                  f"{problems[0].path}: {problems[0].problem})")
        return [Removal(entry.path, refused=reason) for entry in manifest.files]
    facts = read_ledger_facts(target)
    roots = [os.path.realpath(root) for root in manifest.roots]
    archive_sha256 = recorded_sha256(archive_path) or sha256_of(archive_path)
    with target.connect(autocommit=True) as connection:  # each record commits before its file goes
        ledger.ensure(connection)
        return [remove_original(connection, entry, facts, roots, archive_path, archive_sha256)
                for entry in manifest.files]


def remove_original(connection: psycopg.Connection, entry: ArchivedFile, facts: LedgerFacts | None,
                    real_roots: list[str], archive_path: Path, archive_sha256: str) -> Removal:
    """Remove the file if it may be, recording first where its bytes are (`consolidate.archived_removals`:
    validate spot-checks them there, rollback reads them there). Recorded before the removal, so an
    interruption leaves at worst the record of a file still on disk, which every reader ignores (they
    read the disk first), never a removed file whose bytes no record points to."""
    reason = location_refusal(entry, real_roots) or removal_refusal(entry, facts)
    if reason:
        return Removal(entry.path, refused=reason)
    current = facts.current[entry.migrated_as]  # the load whose checksums were just checked
    # the record names the path's own ledger row: the current load, or for a copy the load that found it one
    load_id = facts.latest[entry.path].load_id if entry.copy_of else current.load_id
    members = {member.original.removeprefix(entry.path): member.name for member in entry.members}
    ledger.record_archived_removal(connection, entry.path, load_id, current.sha256, current.wal_sha256,
                                   str(archive_path), archive_sha256, members, ledger.who())
    removal = remove_through_quarantine(entry)
    if not removal.removed:
        ledger.forget_archived_removal(connection, entry.path, load_id)
    return removal


def location_refusal(entry: ArchivedFile, real_roots: list[str]) -> str | None:
    """Why `entry.path` may not be deleted where it is: reached through a link, or outside every root."""
    if entry.link_paths:
        return (f"reached through a symbolic link ({', '.join(entry.link_paths)}): nothing is deleted "
                "through a link; remove the file and its link by hand if that is meant")
    real = os.path.realpath(entry.path)
    if real != entry.path:
        return f"its path goes through a symbolic link (it resolves to {real}): nothing is deleted through a link"
    if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in real_roots):
        return f"its real path is outside every root of the archive ({', '.join(real_roots)})"
    return None


def removal_refusal(entry: ArchivedFile, facts: LedgerFacts | None) -> str | None:
    """Why the original of `entry` may not be deleted; None when it may."""
    reason = ledger_refusal(entry.path, facts)
    if reason:
        return reason
    if original_of(entry.path, facts) != entry.copy_of:
        return ("the ledger no longer records it as it was archived (" + (
            f"a byte-identical copy of {entry.copy_of}" if entry.copy_of else "a file loaded on its own") + ")")
    on_disk = file_set_state(Path(entry.path))
    if on_disk[0] is None:
        return "no longer on disk"
    changed = differing_parts(entry.archived_state(), on_disk)
    if changed:
        return (f"changed since it was archived: the {' and the '.join(changed)} on disk no longer "
                "have the archived sha256")
    return checksum_refusal(facts.current[entry.migrated_as], on_disk[0], on_disk[1], entry.copy_of)


class NotDeletable(Exception):
    """A part of the file, or a folder on its path, is not what may be deleted (a link, not a file)."""


def open_folder_without_links(folder: Path) -> int:
    """A descriptor of `folder`, opened one component at a time from `/` without following any symbolic
    link: every later step works relative to it, so no link swapped in meanwhile can lead elsewhere."""
    descriptor = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in folder.parts[1:]:
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=descriptor)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise NotDeletable(f"the folder {part!r} on its path is a symbolic link or not a folder") from error
                raise
            os.close(descriptor)
            descriptor = child
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def parts_present(folder: int, name: str) -> list[str]:
    """The names of the file's parts (main file first, then side files) present in `folder`; raise
    NotDeletable when one is a link or not a regular file."""
    present = []
    for suffix in REMOVED_SUFFIXES:
        try:
            info = os.lstat(name + suffix, dir_fd=folder)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
            raise NotDeletable(f"{name + suffix} is {kind}")
        present.append(name + suffix)
    return present


def move_into_quarantine(folder: int, quarantine: int, names: list[str]) -> list[str]:
    """Rename each of `names` from `folder` into `quarantine` (same file system: nothing is copied);
    return those moved."""
    moved = []
    for name in names:
        try:
            os.rename(name, name, src_dir_fd=folder, dst_dir_fd=quarantine)
        except FileNotFoundError:
            continue
        moved.append(name)
    return moved


def sha256_in(folder: int, name: str) -> str | None:
    """sha256 of `name` in `folder`, never following a link; None when it is not there."""
    try:
        descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
    except FileNotFoundError:
        return None
    digest = hashlib.sha256()
    with os.fdopen(descriptor, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def put_back(folder: int, quarantine: int, names: list[str]) -> list[str]:
    """Move `names` back from quarantine, each only where no file appeared meanwhile (a hard link then an
    unlink: never overwrites); return the names left in quarantine."""
    left = []
    for name in names:
        try:
            os.link(name, name, src_dir_fd=quarantine, dst_dir_fd=folder, follow_symlinks=False)
        except OSError:
            left.append(name)
            continue
        os.unlink(name, dir_fd=quarantine)
    return left


def remove_through_quarantine(entry: ArchivedFile) -> Removal:
    """Move the file's parts into a quarantine folder beside them, hash them there, and delete them only
    if they still hold the archived bytes; otherwise put them back (see the module docstring)."""
    path = Path(entry.path)
    try:
        folder = open_folder_without_links(path.parent)
    except (NotDeletable, OSError) as error:
        return Removal(entry.path, refused=f"not deleted: {error}")
    try:
        try:
            names = parts_present(folder, path.name)
        except NotDeletable as error:
            return Removal(entry.path, refused=f"not deleted: {error}")
        quarantine_name = f"{QUARANTINE_PREFIX}{ledger.new_id()}"
        os.mkdir(quarantine_name, 0o700, dir_fd=folder)
        quarantine = os.open(quarantine_name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
        try:
            moved = move_into_quarantine(folder, quarantine, names)
            try:
                state = tuple(sha256_in(quarantine, path.name + suffix) for suffix in ARCHIVED_SUFFIXES)
            except OSError as error:  # a link renamed in at the last moment: O_NOFOLLOW refuses it
                state, problem = None, f"cannot be read in quarantine ({error})"
            else:
                changed = differing_parts(entry.archived_state(), state)
                problem = f"the {' and the '.join(changed)} changed" if changed else None
            if problem is None:
                for name in moved:
                    os.unlink(name, dir_fd=quarantine)
                os.rmdir(quarantine_name, dir_fd=folder)
                return Removal(entry.path, removed=[str(path.with_name(name)) for name in moved])
            left = put_back(folder, quarantine, moved)
            if not left:
                os.rmdir(quarantine_name, dir_fd=folder)
                kept = "nothing deleted, put back in place"
            else:
                kept = (f"nothing deleted; kept in {path.parent / quarantine_name} ({', '.join(left)}: a file "
                        "of that name appeared in its place)")
            return Removal(entry.path, refused=f"between the check and the removal {problem}: {kept}")
        finally:
            os.close(quarantine)
    finally:
        os.close(folder)
