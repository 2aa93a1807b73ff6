"""Reading an application's SQLite database, always from a private consistent copy (loader.sources.snapshot)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from loader.apps.applications import MIGRATIONS_TABLE
from loader.apps.convert import decode_text
from loader.apps.migrations import Migration
from loader.sources.snapshot import Snapshot, SourceKeptChanging, private_copy
from loader.sources.sqlite_reader import quote

FETCH_ROWS = 5000


class SourceUnreadable(Exception):
    """The SQLite source could not be copied or read."""


@dataclass
class SourceDatabase:
    """An open private copy of the source, with the checksums of the bytes it was made from."""

    path: Path
    snapshot: Snapshot
    connection: sqlite3.Connection

    def tables(self) -> dict[str, list[str]]:
        """Every table and its columns, in declaration order."""
        names = [name for (name,) in self.connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {name: [row[1] for row in self.connection.execute(f"PRAGMA table_info({quote(name)})")]
                for name in names}

    def count(self, table: str) -> int:
        return self.connection.execute(f"SELECT count(*) FROM {quote(table)}").fetchone()[0]

    def non_null_count(self, table: str, column: str) -> int:
        return self.connection.execute(
            f"SELECT count(*) FROM {quote(table)} WHERE {quote(column)} IS NOT NULL").fetchone()[0]

    def rows(self, table: str, columns: list[str]) -> Iterator[tuple]:
        cursor = self.connection.execute(
            f"SELECT {', '.join(map(quote, columns))} FROM {quote(table)}")
        while batch := cursor.fetchmany(FETCH_ROWS):
            yield from batch

    def autoincrement_high_water(self) -> dict[tuple[str, str], int]:
        """{(table, its INTEGER PRIMARY KEY column): the largest id AUTOINCREMENT has handed out}: SQLite's
        sqlite_sequence, which counts the ids of deleted rows too (never handed out again)."""
        if not self.connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
            return {}
        high_water = {}
        for table, handed_out in self.connection.execute("SELECT name, seq FROM sqlite_sequence"):
            keys = [(row[1], row[2]) for row in self.connection.execute(f"PRAGMA table_info({quote(table)})")
                    if row[5]]
            if len(keys) == 1 and keys[0][1].upper() == "INTEGER" and isinstance(handed_out, int):
                high_water[(table, keys[0][0])] = handed_out
        return high_water

    def migrations(self) -> list[Migration]:
        if MIGRATIONS_TABLE not in self.tables():
            return []
        return [Migration(int(timestamp), str(name)) for timestamp, name in self.connection.execute(
            f"SELECT timestamp, name FROM {MIGRATIONS_TABLE}")]


@contextlib.contextmanager
def open_source(path: Path) -> Iterator[SourceDatabase]:
    """The source as a private consistent copy (main file, WAL replayed), removed on exit. The source
    itself is never opened."""
    if not path.is_file():
        raise SourceUnreadable(f"{path}: " + ("a folder, not a database file (the application's database.sqlite)"
                                              if path.is_dir() else "no such file"))
    try:
        with private_copy(path) as snapshot:
            connection = sqlite3.connect(f"file:{snapshot.path}?mode=ro", uri=True)
            connection.text_factory = decode_text
            try:
                connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
                yield SourceDatabase(path, snapshot, connection)
            finally:
                connection.close()
    except (sqlite3.DatabaseError, OSError, SourceKeptChanging) as error:
        raise SourceUnreadable(f"{path}: {error}") from error
