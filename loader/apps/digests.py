"""Row counts and a digest per table, computed on both sides from the same canonical text.

Every row becomes one line: for each compared column (sorted by name), `N` for NULL or
`<characters>:<canonical text>` (convert.py: the source value after the conversion the copy applies,
and PostgreSQL's rendering of the stored value). A row's hash is sha256 of its line; a table's digest
is sha256 of its rows' hashes in sorted order, so it does not depend on row order. Equal digests mean
the same multiset of rows; when they differ, the rows whose hashes have no twin on the other side are
named by their primary key.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from loader.apps.convert import ConversionError, Converter
from loader.apps.source import FETCH_ROWS, SourceDatabase
from loader.apps.target import TargetSchema

EXAMPLES = 5


def line_of(cells: Iterable[str | None]) -> str:
    return "".join("N" if cell is None else f"{len(cell)}:{cell}" for cell in cells)


def row_hash(cells: Iterable[str | None]) -> bytes:
    return hashlib.sha256(line_of(cells).encode("utf-8", "surrogatepass")).digest()


@dataclass
class TableDigest:
    rows: int = 0
    hashes: Counter = field(default_factory=Counter)
    keys: dict[bytes, str] = field(default_factory=dict)  # a row hash -> that row's primary key

    def add(self, cells: list[str | None], key: str) -> None:
        digest = row_hash(cells)
        self.rows += 1
        self.hashes[digest] += 1
        self.keys.setdefault(digest, key)

    @property
    def digest(self) -> str:
        return hashlib.sha256(b"".join(sorted(self.hashes.elements()))).hexdigest()


def key_text(key_columns: list[str], cells: dict[str, str | None]) -> str:
    return ", ".join(f"{column}={cells[column]!r}" for column in key_columns) or "(no primary key)"


def compared_columns(converters: list[Converter]) -> list[Converter]:
    return sorted(converters, key=lambda c: c.column)


def source_digest(source: SourceDatabase, table: str, converters: list[Converter],
                  key_columns: list[str]) -> TableDigest:
    """The digest of the source table's rows after conversion (raises ConversionError naming the row)."""
    ordered = compared_columns(converters)
    digest = TableDigest()
    for row in source.rows(table, [c.column for c in ordered]):
        cells = {}
        for converter, value in zip(ordered, row):
            try:
                cells[converter.column] = converter.convert(value)[1]
            except ConversionError as error:
                raise ConversionError(f"{table} column {converter.column}: {error}") from None
        digest.add([cells[c.column] for c in ordered], key_text(key_columns, cells))
    return digest


def target_rows(connection: psycopg.Connection, schema: TargetSchema, table: str,
                ordered: list[Converter]) -> Iterator[tuple]:
    rendered = [c.canonical_sql("t") for c in ordered] or [sql.SQL("NULL")]
    query = sql.SQL("SELECT {} FROM {} AS t").format(sql.SQL(", ").join(rendered), schema.relation(table))
    with connection.cursor(name=f"app_copy_verify_{abs(hash(table))}") as cursor:
        cursor.itersize = FETCH_ROWS
        yield from cursor.execute(query)


def target_digest(connection: psycopg.Connection, schema: TargetSchema, table: str,
                  converters: list[Converter], key_columns: list[str]) -> TableDigest:
    ordered = compared_columns(converters)
    digest = TableDigest()
    for row in target_rows(connection, schema, table, ordered):
        cells = {c.column: c.canonical_of_stored(value) for c, value in zip(ordered, row)} if ordered else {}
        digest.add([cells[c.column] for c in ordered], key_text(key_columns, cells))
    return digest


def differences(source: TableDigest, target: TableDigest) -> list[str]:
    """Up to EXAMPLES rows, by primary key, that differ between the two sides."""
    only_source = source.hashes - target.hashes
    only_target = target.hashes - source.hashes
    source_keys = {source.keys[h] for h in only_source}
    target_keys = {target.keys[h] for h in only_target}
    found = [f"row {key}: values differ" for key in sorted(source_keys & target_keys)]
    found += [f"row {key}: missing in the target" for key in sorted(source_keys - target_keys)]
    found += [f"row {key}: in the target, not in the source" for key in sorted(target_keys - source_keys)]
    return found[:EXAMPLES]
