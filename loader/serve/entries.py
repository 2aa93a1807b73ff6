"""A memory entry as the client reads it and the cache keeps it: the types both share, so neither has
to import the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


class EntryKey(NamedTuple):
    namespace: str
    key: str


@dataclass(frozen=True)
class Entry:
    """A live entry as read from PostgreSQL; seconds_left is None when it never expires; version is its
    updated_at in epoch microseconds (None when unknown), which every write through the client raises;
    text is the value's JSON text as PostgreSQL sent it (None when the value was read decoded)."""

    namespace: str
    key: str
    value: Any
    seconds_left: float | None
    version: int | None = None
    text: str | None = field(default=None, repr=False, compare=False)
