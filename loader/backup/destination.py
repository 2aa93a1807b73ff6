"""Folders the tool writes its copies into (backups, archives): never among the files they copy, built
in a hidden sibling and published when finished, and what a verification of them finds wrong."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Problem:
    """Something a verification (of a backup folder or an archive) found wrong. `path` is relative to
    the folder, or a member of the archive, or the archive's own file name; `source` the original file
    it was copied from."""

    path: str
    problem: str
    source: str | None = None

    def to_json(self) -> dict:
        return {"path": self.path, "problem": self.problem, "source": self.source}


def flush_to_disk(path: Path) -> None:
    """What was written to the file or folder `path` (a folder: its entries) reaches the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def root_overlap(destination: Path, roots: list[Path], exclude: list[Path] = ()) -> str | None:
    """Why `destination` may not be used with `roots`, or None. A folder inside one that discovery
    never searches (`exclude`: the tool's own state folder) is fine."""
    real_destination = destination.resolve()
    if any(real_destination.is_relative_to(folder.resolve()) for folder in exclude):
        return None
    for root in roots:
        real_root = root.resolve()
        if real_root.is_dir() and real_destination.is_relative_to(real_root):
            return f"{destination} is inside the root {root}"
        if real_root.is_relative_to(real_destination):
            return f"the root {root} is inside {destination}"
    return None


def destination_refusal(destination: Path, roots: list[Path], exclude: list[Path], overlap_means: str) -> str | None:
    """Why no copies of `roots` may be written into `destination` at all: it overlaps a root (what that
    would do: `overlap_means`), or it is not a folder; None otherwise."""
    overlap = root_overlap(destination, roots, exclude)
    if overlap:
        return f"{overlap}: {overlap_means}; choose a folder outside the roots"
    if destination.exists() and not destination.is_dir():
        return f"{destination} exists and is not a folder"
    return None


def is_new_or_empty(destination: Path) -> bool:
    return not destination.exists() or not any(destination.iterdir())


def make_staging_folder(destination: Path) -> Path:
    """A hidden sibling folder to build into, so an interrupted run leaves `destination` untouched."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))


def publish_folder(staging: Path, destination: Path) -> None:
    """Put the finished `staging` folder in place of `destination` (missing, empty, or an earlier one,
    which is removed only once the new one is in place)."""
    if not destination.exists():
        os.rename(staging, destination)
    elif not any(destination.iterdir()):
        destination.rmdir()
        os.rename(staging, destination)
    else:
        replaced = Path(tempfile.mkdtemp(prefix=f".{destination.name}.replaced-", dir=destination.parent))
        earlier = replaced / destination.name
        os.rename(destination, earlier)
        try:
            os.rename(staging, destination)
        except OSError:
            os.rename(earlier, destination)  # put the earlier one back
            replaced.rmdir()
            raise
        shutil.rmtree(replaced)


def publish_files(files: list[Path], destination: Path) -> list[Path]:
    """Move finished files, in order, into `destination` (made private if new); return their new paths."""
    destination.mkdir(mode=0o700, parents=True, exist_ok=True)
    published = []
    for path in files:
        os.rename(path, destination / path.name)
        published.append(destination / path.name)
    return published
