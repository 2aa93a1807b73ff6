"""Files a dbt process keeps for the processes after it (loader/transform/jinja_cache.py,
schema_cache.py): in a folder that is the user's own, each written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

# The packages whose code shapes what is kept: dbt's own (its classes, the adapters' credentials) and
# mashumaro, which builds their schemas.
DBT_PACKAGES = ("dbt-core", "dbt-common", "dbt-adapters", "dbt-postgres", "mashumaro")


def dbt_versions() -> list[str]:
    """The interpreter's version and DBT_PACKAGES' versions: part of every key of what is kept."""
    return [sys.version, *(version(package) for package in DBT_PACKAGES)]


def private_folder(folder: Path) -> bool:
    """Make `folder` (mode 0700) when it is missing; whether it can be used: what is in it is loaded as
    dbt's own, so not when it cannot be made, is someone else's, or others may write to it."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        owner = folder.stat()
    except OSError:
        return False
    return owner.st_uid == os.getuid() and not owner.st_mode & 0o022


def store(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all (a concurrent process may read it meanwhile)."""
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    except OSError:
        return
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
