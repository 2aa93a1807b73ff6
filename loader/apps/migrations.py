"""Do the source and the target schema come from the same application version?

Both applications keep a `migrations` table (id, timestamp, name) per database. The SQLite and the
PostgreSQL lists are not identical: a few migrations exist for one database type only, and the same
migration may carry another timestamp on each (Flowise's Init is 1693835579790 on SQLite and
1693891895163 on PostgreSQL) or another name (n8n). So a migration on one side has a counterpart on
the other when they share the timestamp or the name without its timestamp, and the versions match
when every migration of each side has a counterpart, except those known to exist for that database
type only (applications.Application.*_only_migrations).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from loader.apps.applications import Application

TRAILING_TIMESTAMP = re.compile(r"^(.*?)(\d{13})$")


@dataclass(frozen=True)
class Migration:
    timestamp: int
    name: str

    @property
    def stem(self) -> str:
        """The name without its trailing timestamp, lower-cased (n8n spells some differently per database)."""
        match = TRAILING_TIMESTAMP.match(self.name)
        return (match.group(1) if match else self.name).lower()

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.timestamp / 1000, timezone.utc).strftime("%Y-%m-%d")

    def __str__(self) -> str:
        return f"{self.name} ({self.when})"


@dataclass(frozen=True)
class VersionCheck:
    source_newest: Migration | None
    target_newest: Migration | None
    source_only: tuple[Migration, ...]   # migrations of the source the target lacks (not SQLite-only ones)
    target_only: tuple[Migration, ...]   # migrations of the target the source lacks (not PostgreSQL-only ones)
    message: str | None                  # None: the versions match

    @property
    def matches(self) -> bool:
        return self.message is None

    def to_json(self) -> dict:
        return {"matches": self.matches,
                "source_newest": str(self.source_newest) if self.source_newest else None,
                "target_newest": str(self.target_newest) if self.target_newest else None,
                "source_only": [m.name for m in self.source_only],
                "target_only": [m.name for m in self.target_only], "message": self.message}


def without_counterpart(side: list[Migration], other: list[Migration], specific: frozenset[str]) -> list[Migration]:
    timestamps = {m.timestamp for m in other}
    stems = {m.stem for m in other}
    specific_stems = {name.lower() for name in specific}
    return [m for m in side if m.timestamp not in timestamps and m.stem not in stems and m.stem not in specific_stems]


def newest(migrations: list[Migration]) -> Migration | None:
    return max(migrations, key=lambda m: m.timestamp, default=None)


def compare(application: Application, source: list[Migration], target: list[Migration], schema: str) -> VersionCheck:
    """Whether `source` (the SQLite database's migrations) and `target` (the schema's) come from the
    same version of `application`; when not, a message naming the newest migration of each side and
    what to do."""
    source_only = without_counterpart(source, target, application.sqlite_only_migrations)
    target_only = without_counterpart(target, source, application.postgres_only_migrations)
    source_newest, target_newest = newest(source), newest(target)
    message = None
    if not target:
        message = (f"schema {schema} has no {application.name} migrations: start {application.name} once "
                   f"against it ({application.postgres_settings}) so it builds its own schema, then run app-copy")
    elif not source:
        message = f"the source has no migrations table rows: it is not a database {application.name} has started on"
    elif source_only or target_only:
        newer = "source" if newest(source_only or [Migration(0, "")]).timestamp >= \
            newest(target_only or [Migration(0, "")]).timestamp else "target"
        advice = (f"the source was written by a newer {application.name}: start that newer version once against "
                  f"schema {schema} ({application.postgres_settings}) so it migrates the schema, then run app-copy again"
                  if newer == "source" else
                  f"schema {schema} was made by a newer {application.name}: start that newer version once on (a copy "
                  f"of) the SQLite source so it migrates it, or rebuild the schema with the source's version")
        differing = ", ".join(m.name for m in (source_only + target_only)[:6])
        message = (f"{application.name} versions differ: the source's newest migration is {source_newest}, schema "
                   f"{schema}'s is {target_newest} (without counterpart: {differing}); {advice}. Nothing was written.")
    return VersionCheck(source_newest, target_newest, tuple(source_only), tuple(target_only), message)
