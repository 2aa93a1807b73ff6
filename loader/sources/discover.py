"""Find SQLite databases under directory trees and tell what they are.

A database is recognised by its header, never by its name. `-wal`, `-shm` and `-journal` files belong
to their main file; a `-wal` without one is reported as an orphan. Files named like databases that are
not SQLite are reported too. A byte-identical copy (same main file, same WAL) of an earlier file is
marked as a copy of it and is never loaded twice.

Every file is known by its real path (symbolic links resolved once, here): its `-wal`, `-shm` and
`-journal` are the ones beside the real file, where SQLite looks for them, and a file reached several
times (through links, or under several roots) is listed once. The paths through which it was reached
via a link below its root are kept in `SourceFile.link_paths`: nothing is ever deleted through them.

A file that cannot be read (permissions) is a failed source with its reason when it looks like a
database (a database-looking name, or a `-wal`/`-journal` beside it), since it may hold rows that would
otherwise be lost silently; any other unreadable file is a warning. A file that disappears while being
looked at is a warning too (it is gone: there is nothing to load).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loader.exit_codes import ExitCode
from loader.ledger import KnownFile
from loader.sources.snapshot import (
    EVERY_SIDE_FILE,
    SIDE_FILES,
    SQLITE_HEADER,
    Snapshot,
    SourceKeptChanging,
    consolidated_copy,
    private_copy,
    sha256_of,
    side_file,
)
from loader.sources.sqlite_reader import list_tables

DATABASE_LOOKING_SUFFIXES = (".db", ".sqlite", ".sqlite3", ".db3")
# Files hashed, copied and counted two at a time: sha256 and file copies release the GIL.
DISCOVERY_JOBS = 2
# See unchanged_since; coarse file systems keep mtime to 1-2 s.
RACY_NANOSECONDS = 2_000_000_000


@dataclass
class SourceFile:
    path: Path
    root: Path
    size_bytes: int
    sha256: str
    wal_sha256: str | None
    kind: str = "other"
    tables: dict[str, int] = field(default_factory=dict)
    copy_of: Path | None = None
    error: str | None = None
    stat: dict | None = None  # stat_signature, taken before the checksums
    # The path under `root` it was found as (path itself, unless a link or a linked root led to it).
    found_as: Path | None = None
    # Paths under a root that reach this file through a symbolic link below that root.
    link_paths: list[Path] = field(default_factory=list)
    # A consistent private copy discovery kept for the load (discover's keep_copies_in); not in JSON.
    snapshot: Snapshot | None = field(default=None, repr=False, compare=False)
    # The label the ledger already knows the file by (set by the load: ledger.file_labels).
    known_as: str | None = None

    @property
    def source_db(self) -> str:
        """A short, readable name: the one the ledger knows the file by, else its path relative to the root
        it was found under (so a file keeps its first load's label whatever root a later sync is given)."""
        if self.known_as is not None:
            return self.known_as
        found_as = self.found_as or self.path
        relative = found_as.relative_to(self.root).as_posix()
        return relative if relative != "." else found_as.name

    @property
    def identity(self) -> tuple[str, str | None]:
        return (self.sha256, self.wal_sha256)

    def to_json(self) -> dict:
        data = asdict(self)
        del data["snapshot"]
        data.update(path=str(self.path), root=str(self.root), source_db=self.source_db,
                    copy_of=str(self.copy_of) if self.copy_of else None,
                    found_as=str(self.found_as or self.path), link_paths=[str(link) for link in self.link_paths])
        return data


@dataclass
class DiscoveryWarning:
    path: Path
    reason: str

    def to_json(self) -> dict:
        return {"path": str(self.path), "reason": self.reason}


@dataclass
class Discovery:
    files: list[SourceFile]
    warnings: list[DiscoveryWarning]

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.SOURCE_UNREADABLE if any(f.error for f in self.files) else ExitCode.OK


def classify(tables: dict[str, list[str]]) -> str:
    """Name the schema a database follows, from its tables and their columns."""
    memory_columns = set(tables.get("memory_entries", []))
    if "content" in memory_columns:
        return "claude-flow-v3"
    if "value" in memory_columns:
        return "claude-flow-v2"
    if "memory_store" in tables:
        return "extended-memory"
    if {"workflow_entity", "execution_entity", "credentials_entity"} & tables.keys():
        return "n8n"
    if {"chat_flow", "chat_message"} & tables.keys():
        return "flowise"
    return "other"


def has_sqlite_header(path: Path) -> bool:
    """Whether the file starts with SQLite's header; raises OSError when it cannot be read."""
    with open(path, "rb") as handle:
        return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def looks_like_database(path: Path) -> bool:
    return path.suffix.lower() in DATABASE_LOOKING_SUFFIXES or any(
        side_file(path, suffix).exists() for suffix in SIDE_FILES)


def unreadable_source(path: Path, root: Path, error: OSError) -> SourceFile:
    """A database-looking file that cannot be read: listed, failed, with the reason."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    return SourceFile(path=path, root=root, size_bytes=size, sha256="", wal_sha256=None,
                      error=f"cannot read: {type(error).__name__}: {error}")


def is_wal_only_database(path: Path) -> bool:
    """An empty main file whose content lives entirely in its WAL is still a database."""
    wal = side_file(path, "-wal")
    return path.stat().st_size == 0 and wal.exists() and wal.stat().st_size > 0


def is_inside(path: str, folders: list[str]) -> bool:
    return any(path == folder or path.startswith(folder + os.sep) for folder in folders)


# The folder `consolidate archive --remove-originals` moves a file's parts into before it deletes them
# (loader/operate/archive.py): what a removal it could not finish left there is no source of its own.
QUARANTINE_PREFIX = ".consolidate-quarantine-"


def walk_files(root: Path, exclude: list[Path] = (), quarantines: list[Path] | None = None):
    """Every regular file under root, following symlinks but never a directory twice, and never
    inside an excluded folder (the tool's own state: its backups are SQLite files too) or a quarantine
    folder of the archive's (each one met is added to `quarantines`)."""
    if root.is_file():
        yield root
        return
    seen: set[str] = set()
    excluded = [os.path.realpath(folder) for folder in exclude]
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen or is_inside(real, excluded):
            subfolders[:] = []
            continue
        seen.add(real)
        if quarantines is not None:
            quarantines.extend(Path(folder) / name for name in sorted(subfolders) if name.startswith(QUARANTINE_PREFIX))
        subfolders[:] = sorted(name for name in subfolders if not name.startswith(QUARANTINE_PREFIX))
        for name in sorted(names):
            path = Path(folder) / name
            if path.is_file():
                yield path


def stat_signature(path: Path) -> dict:
    """Size, mtime, ctime, inode and device of the main file and its `-wal` (None when absent), and
    when they were read."""
    def entry(stat: os.stat_result) -> list[int]:
        return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]
    taken_ns = time.time_ns()
    main = entry(path.stat())
    try:
        wal = entry(side_file(path, "-wal").stat())
    except FileNotFoundError:
        wal = None
    return {"main": main, "wal": wal, "taken_ns": taken_ns}


def unchanged_since(recorded: dict | None, current: dict) -> bool:
    """Whether the files provably hold the bytes they held when `recorded` was read: the same stat
    (a write changes mtime and ctime, and ctime cannot be set back), and no timestamp so close to the
    moment it was read that a write in the same clock tick could hide behind it (git's "racy" files)."""
    if not recorded or [recorded.get("main"), recorded.get("wal")] != [current["main"], current["wal"]]:
        return False
    stamps = [stamp for entry in (current["main"], current["wal"]) if entry for stamp in entry[1:3]]
    return max(stamps) < recorded["taken_ns"] - RACY_NANOSECONDS


def fingerprint(path: Path, root: Path, known: KnownFile | None = None) -> SourceFile:
    """The file's checksums: those `known` when its stat proves it unchanged since, else read. `path`
    is a real path (see the module docstring), so its `-wal` is the one SQLite uses."""
    stat = stat_signature(path)
    if known is not None and unchanged_since(known.stat, stat):
        sha256, wal_sha256 = known.sha256, known.wal_sha256
    else:
        wal = side_file(path, "-wal")
        sha256, wal_sha256 = sha256_of(path), sha256_of(wal) if stat["wal"] is not None else None
    return SourceFile(path=path, root=root, size_bytes=stat["main"][0], sha256=sha256, wal_sha256=wal_sha256,
                      stat=stat)


def inspect_schema(source: SourceFile, keep_in: Path | None = None) -> None:
    """Fill in kind and table counts from a private copy, or the reason it cannot be read. With
    `keep_in` (a folder), the copy is a hashed, consistent snapshot kept there as `source.snapshot`
    for the load to use instead of copying the file again."""
    path = source.path
    try:
        if keep_in is None:
            with private_copy(path, hashing=False) as copy:  # fingerprint hashed it; only the schema is read here
                tables = list_tables(copy.path)
        else:
            source.snapshot = consolidated_copy(path, Path(tempfile.mkdtemp(dir=keep_in)))
            tables = list_tables(source.snapshot.path)
        source.tables = {table.name: table.row_count for table in tables}
        source.kind = classify({table.name: table.columns for table in tables})
    except sqlite3.DatabaseError as error:
        source.error = f"cannot read as SQLite: {error}"
    except (SourceKeptChanging, OSError) as error:
        source.error = f"cannot copy: {error}"
    except Exception as error:  # whatever a hostile file does, it is named, never a traceback
        source.error = f"cannot read: {type(error).__name__}: {error}"
    if source.error is not None and source.snapshot is not None:
        shutil.rmtree(source.snapshot.path.parent, ignore_errors=True)
        source.snapshot = None


def copies_to_keep(sources: list[SourceFile], folder: Path | None) -> set[Path]:
    """The paths of the sources whose private copies fit, in order, into half the free space of `folder`."""
    if folder is None:
        return set()
    budget, kept = shutil.disk_usage(folder).free // 2, set()
    for source in sources:
        wal_bytes = source.stat["wal"][0] if source.stat and source.stat["wal"] else 0
        budget -= source.size_bytes + wal_bytes
        if budget < 0:
            break
        kept.add(source.path)
    return kept


@dataclass
class Candidate:
    """A file that may be a main database file: its real path, and how discovery reached it."""

    path: Path  # real: every symbolic link resolved
    base: Path  # the root folder it is named relative to
    found_as: Path  # the path under `base` it was first found as without a link below the root, if any
    link_paths: list[Path] = field(default_factory=list)


def reached_through_link(path: Path, base: Path, real: Path) -> bool:
    """Whether `path` (under `base`) reaches `real` through a symbolic link below `base` (a root
    that is itself a link, as the operator named it, does not count)."""
    return Path(os.path.realpath(base)) / path.relative_to(base) != real


def examine(candidate: Candidate, known: KnownFile | None) -> SourceFile | DiscoveryWarning | None:
    """A database file with its checksums, a warning, or None for a file that is not SQLite."""
    path, base = candidate.path, candidate.base
    try:
        is_database = has_sqlite_header(path) or is_wal_only_database(path)
        source = fingerprint(path, base, known) if is_database else None
    except FileNotFoundError:
        return DiscoveryWarning(candidate.found_as, "disappeared while being discovered; skipped")
    except OSError as error:
        if looks_like_database(path):
            source = unreadable_source(path, base, error)
        else:
            return DiscoveryWarning(candidate.found_as, f"cannot be read ({type(error).__name__}: {error}), so "
                                                        "whether it is SQLite is unknown; skipped")
    if source is None:
        if path.suffix.lower() in DATABASE_LOOKING_SUFFIXES:
            if candidate_size(path) == 0:
                return DiscoveryWarning(candidate.found_as, "an empty file (0 bytes: SQLite would open it as an "
                                                            "empty database, with no table to load); skipped")
            return DiscoveryWarning(candidate.found_as, "not a SQLite database (no SQLite header); skipped")
        return None
    source.found_as, source.link_paths = candidate.found_as, list(candidate.link_paths)
    return source


def candidate_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def candidates(roots: list[Path], exclude: list[Path], warnings: list[DiscoveryWarning]) -> list[Candidate]:
    """Every file that may be a main database file, once per real path, in the order first found."""
    found: dict[Path, Candidate | None] = {}  # None: a side file
    for root in roots:
        root = root.absolute()
        if not root.exists():
            warnings.append(DiscoveryWarning(root, "does not exist"))
            continue
        base = root if root.is_dir() else root.parent
        quarantines: list[Path] = []
        for path in walk_files(root, exclude, quarantines):
            path = path.absolute()
            real = Path(os.path.realpath(path))
            if real.name.endswith(EVERY_SIDE_FILE):
                main = real.with_name(real.name.rsplit("-", 1)[0])
                if real.name.endswith("-wal") and not main.exists() and real not in found:
                    warnings.append(DiscoveryWarning(path, "orphan WAL: its main database file is missing, nothing to recover"))
                found.setdefault(real, None)
                continue
            linked = reached_through_link(path, base, real)
            candidate = found.get(real)
            if candidate is None:
                candidate = found[real] = Candidate(real, base, path)
            elif reached_through_link(candidate.found_as, candidate.base, real) and not linked:
                candidate.base, candidate.found_as = base, path  # named after a path without a link
            if linked and path not in candidate.link_paths:
                candidate.link_paths.append(path)
        warnings.extend(DiscoveryWarning(folder.absolute(), QUARANTINE_LEFT) for folder in quarantines)
    return [candidate for candidate in found.values() if candidate is not None]


QUARANTINE_LEFT = ("left by a `consolidate archive --remove-originals` that was interrupted (or that kept a file "
                   "there, as it said): not loaded. A file whose removal the ledger records (`status` shows it "
                   "archived) is in the archive: delete the folder once `consolidate archive --verify` passes on "
                   "it; move any other file back to its place by hand")


def originals_by_identity(sources: list[SourceFile], known: dict[str, KnownFile]) -> dict[tuple, SourceFile]:
    """Among byte-identical files, the one the others are copies of: the file the ledger already holds
    with these bytes as its current load, else one it loaded before (its service's file, which changed),
    else the first in path order. So a copy that appears later, under a path that sorts first, is the copy,
    and the file already loaded is never loaded a second time under the copy's name."""
    def preference(source: SourceFile) -> int:
        remembered = known.get(str(source.path))
        if remembered is None:
            return 2
        return 0 if remembered.identity == source.identity else 1

    originals: dict[tuple, SourceFile] = {}
    for source in sources:
        chosen = originals.get(source.identity)
        if chosen is None or preference(source) < preference(chosen):
            originals[source.identity] = source
    return originals


def discover(roots: list[Path], exclude: list[Path] = (), known: dict[str, KnownFile] | None = None,
             keep_copies_in: Path | None = None,
             loaded: dict[str, KnownFile] | None = None) -> Discovery:
    """Find and classify every database under `roots`, DISCOVERY_JOBS files at a time. A file whose checksums
    equal those `known` (the ledger's current loads) takes its kind and table counts from there
    instead of being copied and counted again: the same bytes hold the same tables; one whose stat
    proves it unchanged since (`unchanged_since`) is not even read. With `keep_copies_in`, the private
    copies made to classify files stay there (`SourceFile.snapshot`) for the load, as long as they
    take at most half the folder's free space: the others are copied again when loaded. Which of
    byte-identical files is the original follows the ledger's current loads: `loaded`, or else `known`
    (originals_by_identity); `loaded` alone reads every file (a caller that trusts no stat)."""
    files: list[SourceFile] = []
    warnings: list[DiscoveryWarning] = []
    paths = candidates(roots, list(exclude), warnings)
    with ThreadPoolExecutor(max_workers=DISCOVERY_JOBS) as pool:
        known = known or {}
        examined = list(pool.map(lambda candidate: examine(candidate, known.get(str(candidate.path))), paths))
        to_inspect, copies = [], []
        for result in examined:
            if isinstance(result, DiscoveryWarning):
                warnings.append(result)
            elif result is not None:
                files.append(result)
        originals = originals_by_identity([source for source in files if source.error is None],
                                          loaded if loaded is not None else known)
        for source in files:
            if source.error is not None:
                continue
            original = originals[source.identity]
            if original is not source:
                source.copy_of = original.path
                copies.append((source, original))
                continue
            remembered = known.get(str(source.path))
            if remembered is not None and remembered.identity == source.identity:
                source.kind, source.tables = remembered.kind, dict(remembered.tables)
            else:
                to_inspect.append(source)
        keep = copies_to_keep(to_inspect, keep_copies_in)
        list(pool.map(lambda source: inspect_schema(source, keep_copies_in if source.path in keep else None), to_inspect))
    for copy, original in copies:
        copy.kind, copy.tables, copy.error = original.kind, original.tables, original.error
    warnings.extend(unreadable_wal_warning(source) for source in files if reads_nothing_from_its_wal(source))
    warnings.extend(DiscoveryWarning(root, "no SQLite database found under it") for root in roots_without_files(roots, files))
    return Discovery(files=files, warnings=warnings)


def roots_without_files(roots: list[Path], files: list[SourceFile]) -> list[Path]:
    """The roots (that exist) under which no database was found: a mistyped root that exists passes silently
    otherwise (nothing to load, nothing to reconcile)."""
    reached = [path for source in files for path in (source.found_as or source.path, source.path, *source.link_paths)]

    def holds_a_file(root: Path) -> bool:
        forms = {root.absolute(), Path(os.path.realpath(root))}
        return any(path in forms or not forms.isdisjoint(path.parents) for path in reached)

    return [root.absolute() for root in roots if root.exists() and not holds_a_file(root)]


def reads_nothing_from_its_wal(source: SourceFile) -> bool:
    """An empty main file beside a WAL from which SQLite reads no table (a WAL of another database, or
    one whose main file was truncated): listed, since SQLite opens it, but its WAL's bytes are lost to it."""
    return (source.error is None and source.copy_of is None and source.size_bytes == 0
            and source.wal_sha256 is not None and not source.tables)


def unreadable_wal_warning(source: SourceFile) -> DiscoveryWarning:
    wal = side_file(source.path, "-wal")
    return DiscoveryWarning(source.found_as or source.path,
                            f"its main file is empty and SQLite reads no table from its WAL ({wal.name}): "
                            "nothing of the WAL can be loaded; listed as an empty database")
