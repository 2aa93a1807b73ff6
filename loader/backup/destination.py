"""Folders the tool writes its copies into (backups, archives): never among the files they copy."""

from __future__ import annotations

import tempfile
from pathlib import Path


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


def make_staging_folder(destination: Path) -> Path:
    """A hidden sibling folder to build into, so an interrupted run leaves `destination` untouched."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
