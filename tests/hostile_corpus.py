"""A deterministic hostile corpus for `consolidate run` (issue 3, items 2 and 3).

`write_hostile_corpus(root)` writes the tree below and returns a `HostileCorpus` saying what it wrote:
every file with the status a run must give it ('loaded', 'failed', or 'warning' for files that are no
database to load) and a fragment of the reason, every memory row with the flags and data_type staging
must give it, and every flagged value with its original (text, or exact bytes). Every run writes the
same bytes: no clock, no randomness, and the WAL's salts are fixed.

    memory/v2-dirty/.swarm/memory.db      claude-flow v2: text in INTEGER columns, NULL and unparsable
                                          timestamps, seconds and milliseconds mixed in one column, JSON
                                          Python accepts but jsonb rejects (NaN, Infinity, -Infinity,
                                          \\u0000, lone surrogates, huge exponents), bad __compressed__
                                          payloads, truncated JSON, keys with newlines / tabs / emoji /
                                          combining characters, values of several MB, a flagged
                                          performance metric, a flagged version superseded by v3-dirty
    memory/v3-dirty/.swarm/memory.db      claude-flow v3 (a fork without NOT NULL): seconds in
                                          millisecond columns, NULL created_at / updated_at, text in
                                          INTEGER columns, NaN content, truncated tags
    memory/extended/extended_memory.db    extended-memory: unparsable / impossible / epoch-number text
                                          timestamps, NULL accessed_at, text access_count, NaN JSON
    memory/v2-binary/.swarm/memory.db     invalid UTF-8 in TEXT, BLOBs in TEXT columns (one holding JSON
                                          bytes), TEXT holding NUL, a BLOB key, a BLOB in an INTEGER column
    memory/v3-binary/.swarm/memory.db     a BLOB embedding (float32 bytes), BLOB content
    memory/extended-binary/extended_memory.db   a pickle stored as a BLOB
    apps/typed-text.db                    `other`: text in INTEGER / REAL / DATETIME columns (the row
                                          pgloader drops: 'not a number' in an INTEGER column)
    apps/odd-names.db                     `other`: table and column names with quotes, semicolons,
                                          spaces, reserved words, mixed case, emoji, lineage column names,
                                          a column named rowid, names longer than 63 bytes that collide
                                          once PostgreSQL truncates them (ASCII and multi-byte)
    broken/corrupt.db                     SQLite header, table pages overwritten with garbage -> failed
    broken/truncated.db                   a database cut after its second page -> failed
    broken/not-sqlite.db                  not SQLite at all -> warning
    broken/orphan/memory.db-wal           a real WAL whose main file is gone -> warning

Files whose rows need the loader to store values as `\\x` hex (`_binary_columns`) or to map names
PostgreSQL cannot hold say so in `ExpectedFile.needs`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import sqlite3
import struct
from dataclasses import dataclass, field
from pathlib import Path

from loader.fixtures.claude_flow_v2 import V2_DDL
from loader.fixtures.wal import wal_checksum

PAGE_SIZE = 4096
T0 = 1754378470            # 2025-08-05 07:21:10 UTC, epoch seconds
T0_MS = 1774537423202      # 2026-03-26 15:03:43.202 UTC, epoch milliseconds

# What a file needs from the loader beyond what it did before issue 3.
NEEDS_BINARY = "binary values stored as \\x hex with _binary_columns"
NEEDS_NAMES = "table/column names PostgreSQL cannot hold mapped and recorded in the ledger"

LOADED, FAILED, WARNING = "loaded", "failed", "warning"


class AsText(bytes):
    """Bytes stored with SQLite storage class TEXT (bound through CAST(? AS TEXT)): text that need not
    be valid UTF-8."""


Value = str | int | float | bytes | None


@dataclass(frozen=True)
class ExpectedFile:
    path: Path
    status: str                      # loaded / failed / warning
    kind: str | None = None          # the discovered kind, for loaded files
    reason: str | None = None        # a fragment (lower case) of the reason, for failed files and warnings
    needs: str | None = None         # loader work the file depends on (NEEDS_*), else None
    tables: dict[str, int] = field(default_factory=dict)  # SQLite rows per table, for loaded files


@dataclass(frozen=True)
class MemoryRow:
    """A memory row and what staging must make of it."""

    path: Path
    table: str
    rowid: int
    key: str | bytes
    namespace: str                   # after staging's default
    value: Value                     # the SQLite value of the value column
    data_type: str
    flags: frozenset[str]            # `<problem>:<column>`
    columns: dict[str, Value]        # every SQLite value of the row, by column

    @property
    def needs(self) -> str | None:
        return NEEDS_BINARY if any(is_binary(v) for v in self.columns.values()) else None


@dataclass(frozen=True)
class FlaggedValue:
    """One flag of one row, and the original value of the column it names."""

    path: Path
    table: str
    rowid: int
    flag: str                        # `<problem>:<column>`
    column: str
    original: str | bytes | None     # SQLite's text of the value, or its exact bytes (BLOB, invalid UTF-8, NUL)
    needs: str | None


@dataclass(frozen=True)
class OddTable:
    """A table of the `other` database with hostile names: its columns and rows (SQLite values)."""

    name: str
    columns: list[str]
    rows: list[tuple]


@dataclass
class HostileCorpus:
    root: Path
    files: list[ExpectedFile]
    memory_rows: list[MemoryRow]
    typed_text_rows: list[tuple]     # apps/typed-text.db measurements, as SQLite's text of each value
    odd_tables: list[OddTable]

    def file(self, relative: str) -> ExpectedFile:
        return next(f for f in self.files if f.path == self.root / relative)

    @property
    def loaded(self) -> list[ExpectedFile]:
        return [f for f in self.files if f.status == LOADED]

    @property
    def failed(self) -> list[ExpectedFile]:
        return [f for f in self.files if f.status == FAILED]

    @property
    def warnings(self) -> list[ExpectedFile]:
        return [f for f in self.files if f.status == WARNING]

    @property
    def flagged(self) -> list[FlaggedValue]:
        return [FlaggedValue(row.path, row.table, row.rowid, flag, flag.split(":", 1)[1],
                             sqlite_text(row.columns.get(flag.split(":", 1)[1])), row.needs)
                for row in self.memory_rows for flag in sorted(row.flags)]


def is_binary(value: Value) -> bool:
    """Whether the loader must store the value as `\\x` hex: a BLOB, TEXT that is not UTF-8, TEXT with NUL."""
    if isinstance(value, AsText):
        try:
            return "\x00" in value.decode("utf-8")
        except UnicodeDecodeError:
            return True
    if isinstance(value, bytes):
        return True
    return isinstance(value, str) and "\x00" in value


def sqlite_text(value: Value) -> str | bytes | None:
    """The original as a test compares it: SQLite's text of a number or valid text, else the bytes."""
    if value is None:
        return None
    if is_binary(value):
        return bytes(value) if isinstance(value, bytes) else value.encode("utf-8")
    if isinstance(value, AsText):
        return value.decode("utf-8")
    if isinstance(value, float):
        return repr(value)  # SQLite prints REAL with up to 17 significant digits, as repr does for these
    return str(value)


# ------------------------------------------------------------------------------------------ writing

def insert(connection: sqlite3.Connection, table: str, values: dict[str, Value]) -> None:
    names = ", ".join(quote(name) for name in values)
    marks = ", ".join("CAST(? AS TEXT)" if isinstance(v, AsText) else "?" for v in values.values())
    parameters = [bytes(v) if isinstance(v, AsText) else v for v in values.values()]
    connection.execute(f"INSERT INTO {quote(table)} ({names}) VALUES ({marks})", parameters)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def new_database(path: Path, ddl: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode = DELETE")
    connection.executescript(ddl)
    return connection


def close(connection: sqlite3.Connection) -> None:
    connection.commit()
    connection.close()


def table_counts(path: Path) -> dict[str, int]:
    """Rows per table of a database just written (and closed)."""
    connection = sqlite3.connect(path)
    try:
        names = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: connection.execute(f"SELECT count(*) FROM {quote(name)}").fetchone()[0] for name in names}
    finally:
        connection.close()


# -------------------------------------------------------------------------------------------- DDL


# claude-flow 3.x's memory_entries, as a fork wrote it: created_at / updated_at without NOT NULL.
V3_DDL = """
CREATE TABLE memory_entries (
  id TEXT PRIMARY KEY, key TEXT NOT NULL, namespace TEXT DEFAULT 'default', content TEXT NOT NULL,
  type TEXT DEFAULT 'semantic', embedding TEXT, embedding_model TEXT DEFAULT 'local',
  embedding_dimensions INTEGER, tags TEXT, metadata TEXT, owner_id TEXT,
  created_at INTEGER DEFAULT (strftime('%s', 'now') * 1000),
  updated_at INTEGER DEFAULT (strftime('%s', 'now') * 1000),
  expires_at INTEGER, last_accessed_at INTEGER, access_count INTEGER DEFAULT 0,
  status TEXT DEFAULT 'active', UNIQUE(namespace, key));
CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at INTEGER);
"""

EXTENDED_MEMORY_DDL = """
CREATE TABLE memory_store (
  key TEXT PRIMARY KEY, value TEXT NOT NULL, type TEXT NOT NULL, created_at TIMESTAMP,
  updated_at TIMESTAMP, accessed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, access_count INTEGER DEFAULT 1);
CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
"""


# ----------------------------------------------------------------------------------- memory files

@dataclass
class MemoryFile:
    """Rows of one memory table, written in order with explicit rowids (1, 2, ...)."""

    path: Path
    kind: str
    table: str
    ddl: str
    defaults: dict[str, Value]
    value_column: str
    key_column: str = "key"
    namespace_column: str | None = "namespace"
    default_namespace: str = "default"
    rows: list[tuple[dict[str, Value], str, frozenset[str]]] = field(default_factory=list)
    extra_tables: dict[str, list[dict[str, Value]]] = field(default_factory=dict)

    def add(self, data_type: str = "json", flags: tuple[str, ...] = (), **columns: Value) -> None:
        self.rows.append(({**self.defaults, **columns}, data_type, frozenset(flags)))

    def write(self) -> tuple[ExpectedFile, list[MemoryRow]]:
        connection = new_database(self.path, self.ddl)
        memory_rows = []
        for rowid, (columns, data_type, flags) in enumerate(self.rows, start=1):
            insert(connection, self.table, {"rowid": rowid, **columns})
            namespace = columns.get(self.namespace_column) if self.namespace_column else None
            memory_rows.append(MemoryRow(
                path=self.path, table=self.table, rowid=rowid, key=sqlite_text(columns[self.key_column]),
                namespace=namespace if namespace is not None else self.default_namespace,
                value=columns.get(self.value_column), data_type=data_type, flags=flags, columns=columns))
        for table, rows in self.extra_tables.items():
            for row in rows:
                insert(connection, table, row)
        close(connection)
        tables = table_counts(self.path)
        needs = NEEDS_BINARY if any(row.needs for row in memory_rows) else None
        return ExpectedFile(self.path, LOADED, kind=self.kind, needs=needs, tables=tables), memory_rows


def compressed(document: str) -> str:
    return "__compressed__" + base64.b64encode(document.encode()).decode()


def big_json_value() -> str:
    """About 6.5 MB of JSON."""
    return json.dumps({"chunks": [f"chunk-{i:06d}-" + "x" * 90 for i in range(60_000)]})


def big_text_value() -> str:
    """About 3 MB of Markdown (not JSON), with non-ASCII."""
    return "# Session log\n\n" + "".join(f"- step {i:06d}: déploiement ✅ terminé, rien à signaler\n"
                                         for i in range(50_000))


def v2_dirty(root: Path) -> MemoryFile:
    f = MemoryFile(root / "memory/v2-dirty/.swarm/memory.db", "claude-flow-v2", "memory_entries", V2_DDL,
                   defaults=dict(namespace="default", metadata='{"source": "hostile"}', created_at=T0,
                                 updated_at=T0, accessed_at=T0, access_count=1, ttl=None, expires_at=None),
                   value_column="value")
    f.add(key="clean:plain", value='{"ok": true}')
    # keys a careless pipeline mangles: every one must arrive byte for byte, and stay distinct
    f.add(key="line one\nline two", value='"newline in the key"')
    f.add(key="tab\tseparated\tkey", value='"tabs in the key"')
    f.add(key="emoji 🧠🚀 key", value='"emoji in the key"')
    f.add(key="cafe\u0301", value='"combining acute accent"')
    f.add(key="caf\u00e9", value='"precomposed e-acute: another key"')
    f.add(key="zero\u200bwidth\u200djoiner", value='"zero-width characters"')
    f.add(key="  spaced  ", value='"leading and trailing spaces"')
    f.add(key="\u05e9\u05dc\u05d5\u05dd rtl", value='"right-to-left text"')
    # text (and fractions) in INTEGER columns
    f.add(key="dirty:access-count", value='{"n": 1}', access_count="not a number",
          flags=("non_numeric_integer:access_count",))
    f.add(key="dirty:ttl-fraction", value='{"n": 2}', ttl="3.5", flags=("non_integer_number:ttl",))
    f.add(key="dirty:created-yesterday", value='{"n": 3}', created_at="yesterday",
          flags=("non_numeric_integer:created_at", "unparsable_timestamp:created_at"))
    # NULL in timestamp columns with a DEFAULT; unparsable and out-of-range times
    f.add(key="dirty:null-times", value='{"n": 4}', created_at=None, updated_at=None, accessed_at=None,
          flags=("null_timestamp:created_at", "null_timestamp:updated_at", "null_timestamp:accessed_at"))
    f.add(key="dirty:expires-garbage", value='{"n": 5}', expires_at="2025-13-45T99:00:00Z",
          flags=("non_numeric_integer:expires_at", "unparsable_timestamp:expires_at"))
    f.add(key="dirty:created-far-future", value='{"n": 6}', created_at=10**17,
          flags=("unparsable_timestamp:created_at",))
    # seconds and milliseconds mixed in one column
    ms = (T0 + 7) * 1000 + 123
    f.add(key="mixed:all-milliseconds", value='{"n": 7}', created_at=ms, updated_at=ms, accessed_at=ms,
          flags=("milliseconds_in_seconds_column:created_at", "milliseconds_in_seconds_column:updated_at",
                 "milliseconds_in_seconds_column:accessed_at"))
    f.add(key="mixed:updated-milliseconds", value='{"n": 8}', updated_at=(T0 + 8) * 1000,
          flags=("milliseconds_in_seconds_column:updated_at",))
    # JSON that Python's json module accepts and PostgreSQL's jsonb rejects
    rejected = ("json_rejected_by_postgres:value",)
    f.add(key="json:nan", value="NaN", data_type="unsupported_json", flags=rejected)
    f.add(key="json:infinity", value='{"score": Infinity, "floor": -Infinity}', data_type="unsupported_json",
          flags=rejected)
    f.add(key="json:nul-escape", value='{"text": "nul\\u0000byte"}', data_type="unsupported_json", flags=rejected)
    f.add(key="json:lone-surrogate", value='["lone \\ud800 surrogate"]', data_type="unsupported_json",
          flags=rejected)
    f.add(key="json:huge-exponent", value='{"tiny": 1e-999999}', data_type="unsupported_json", flags=rejected)
    # payloads that are no JSON at all
    f.add(key="compressed:not-json", value=compressed("not json at all"), data_type="text",
          flags=("invalid_compressed:value",))
    f.add(key="compressed:bad-base64", value="__compressed__***", data_type="text",
          flags=("invalid_compressed:value",))
    f.add(key="compressed:good", value=compressed('{"compressed": true}'))
    f.add(key="json:truncated", value='{"unterminated": [1, 2', data_type="text", flags=("malformed_json:value",))
    f.add(key="metadata:nan", value='{"n": 9}', metadata='{"m": NaN}',
          flags=("json_rejected_by_postgres:metadata",))
    f.add(key="metadata:truncated", value='{"n": 10}', metadata='[1,', flags=("malformed_json:metadata",))
    f.add(key="value:empty", value="", data_type="text")
    # values of several MB
    f.add(key="big:json", value=big_json_value())
    f.add(key="big:text", value=big_text_value(), data_type="text")
    # a flagged row moved to performance_metrics, and one superseded by v3-dirty's newer version
    f.add(key="command-metrics:bash-nan", namespace="performance-metrics",
          value='{"duration": NaN, "exitCode": 0}', data_type="unsupported_json", flags=rejected)
    f.add(key="shared:key", value='{"v": NaN}', data_type="unsupported_json", flags=rejected)
    return f


def v3_dirty(root: Path) -> MemoryFile:
    f = MemoryFile(root / "memory/v3-dirty/.swarm/memory.db", "claude-flow-v3", "memory_entries", V3_DDL,
                   defaults=dict(namespace="default", type="semantic", tags='["hostile"]', metadata="{}",
                                 created_at=T0_MS, updated_at=T0_MS, last_accessed_at=None, expires_at=None,
                                 access_count=0, status="active"),
                   value_column="content")
    f.extra_tables = {"metadata": [{"key": "schema_version", "value": "3.0.0", "updated_at": T0_MS}]}
    f.add(id="e01", key="v3:clean", content='{"ok": 1}')
    f.add(id="e02", key="v3:created-in-seconds", content='{"n": 2}', created_at=T0_MS // 1000,
          flags=("seconds_in_milliseconds_column:created_at",))
    f.add(id="e03", key="v3:accessed-in-seconds", content='{"n": 3}', last_accessed_at=T0_MS // 1000 + 60,
          flags=("seconds_in_milliseconds_column:last_accessed_at",))
    f.add(id="e04", key="v3:null-updated", content='{"n": 4}', updated_at=None, flags=("null_timestamp:updated_at",))
    f.add(id="e05", key="v3:null-created", content='{"n": 5}', created_at=None, flags=("null_timestamp:created_at",))
    f.add(id="e06", key="v3:access-count-text", content='{"n": 6}', access_count="lots",
          flags=("non_numeric_integer:access_count",))
    f.add(id="e07", key="v3:nan-content", content="[NaN, Infinity]", data_type="unsupported_json",
          flags=("json_rejected_by_postgres:content",))
    f.add(id="e08", key="v3:tags-truncated", content='{"n": 8}', tags='["unclosed",', flags=("malformed_json:tags",))
    f.add(id="e09", key="shared:key", content='{"v": "newest"}', updated_at=T0_MS + 1000)
    f.add(id="e10", key="v3:null-namespace", namespace=None, content='{"n": 10}')
    f.add(id="e11", key="v3:dimensions-text", content='{"n": 11}', embedding_dimensions="n/a",
          flags=("non_numeric_integer:embedding_dimensions",))
    f.add(id="e12", key="v3:expires-never", content='{"n": 12}', expires_at="never",
          flags=("non_numeric_integer:expires_at", "unparsable_timestamp:expires_at"))
    return f


def extended_dirty(root: Path) -> MemoryFile:
    f = MemoryFile(root / "memory/extended/extended_memory.db", "extended-memory", "memory_store",
                   EXTENDED_MEMORY_DDL,
                   defaults=dict(type="dict", created_at="2025-08-01 20:01:03", updated_at="2025-08-01 20:01:03.449123",
                                 accessed_at="2025-08-01 20:01:03", access_count=1),
                   value_column="value", namespace_column=None, default_namespace="extended-memory")
    f.extra_tables = {"metadata": [{"key": "version", "value": '"1.0"', "updated_at": "2025-08-01 20:00:00"}]}
    f.add(key="em:clean", value='{"a": 1}')
    f.add(key="em:created-words", value='{"a": 2}', created_at="last tuesday",
          flags=("unparsable_timestamp:created_at",))
    f.add(key="em:impossible-date", value='{"a": 3}', updated_at="2025-02-30 10:00:00",
          flags=("unparsable_timestamp:updated_at",))
    f.add(key="em:null-accessed", value='{"a": 4}', accessed_at=None, flags=("null_timestamp:accessed_at",))
    f.add(key="em:access-count-text", value='{"a": 5}', access_count="x", flags=("non_numeric_integer:access_count",))
    f.add(key="em:nan", value='{"v": NaN}', data_type="unsupported_json", flags=("json_rejected_by_postgres:value",))
    f.add(key="em:pickle", type="pickle", value=base64.b64encode(pickle.dumps({"a": 1}, protocol=4)).decode(),
          data_type="pickle")
    f.add(key="em:epoch-in-timestamp", value='{"a": 8}', created_at=T0, flags=("unparsable_timestamp:created_at",))
    f.add(key="em:plain-text", type="str", value="plain words, not JSON", data_type="text")
    return f


def v2_binary(root: Path) -> MemoryFile:
    f = MemoryFile(root / "memory/v2-binary/.swarm/memory.db", "claude-flow-v2", "memory_entries", V2_DDL,
                   defaults=dict(namespace="default", metadata=None, created_at=T0, updated_at=T0, accessed_at=T0,
                                 access_count=1, ttl=None, expires_at=None),
                   value_column="value")
    f.add(key="binary:clean", value='{"ok": true}')
    f.add(key="binary:latin-1-text", value=AsText("café au lait (latin-1)".encode("latin-1")), data_type="binary",
          flags=("binary_value:value",))
    f.add(key="binary:blob", value=b"\x00\x01\x02\xfe\xff", data_type="binary", flags=("binary_value:value",))
    f.add(key="binary:json-in-a-blob", value=b'{"json": "in a blob"}', data_type="binary",
          flags=("binary_value:value",))
    f.add(key="binary:nul-in-text", value="before\x00after", data_type="binary", flags=("binary_value:value",))
    f.add(key=b"blob-key-\xff", value='"a BLOB key"', flags=("binary_value:key",))
    f.add(key="binary:metadata", value='{"n": 1}', metadata=AsText(b'{"m": "\xff"}'), flags=("binary_value:metadata",))
    f.add(key="binary:blob-created-at", value='{"n": 2}', created_at=b"\x01\x02",
          flags=("binary_value:created_at", "non_numeric_integer:created_at", "unparsable_timestamp:created_at"))
    return f


def v3_binary(root: Path) -> MemoryFile:
    f = MemoryFile(root / "memory/v3-binary/.swarm/memory.db", "claude-flow-v3", "memory_entries", V3_DDL,
                   defaults=dict(namespace="default", type="semantic", tags=None, metadata=None, created_at=T0_MS,
                                 updated_at=T0_MS, access_count=0, status="active"),
                   value_column="content")
    f.add(id="b1", key="v3:blob-embedding", content='{"text": "embedded"}',
          embedding=struct.pack("<4f", 0.25, -0.5, 1.0, 0.125), embedding_dimensions=4,
          flags=("binary_value:embedding",))
    f.add(id="b2", key="v3:blob-content", content=b"\x89PNG\r\n\x1a\n", data_type="binary",
          flags=("binary_value:content",))
    return f


def extended_binary(root: Path) -> MemoryFile:
    f = MemoryFile(root / "memory/extended-binary/extended_memory.db", "extended-memory", "memory_store",
                   EXTENDED_MEMORY_DDL,
                   defaults=dict(created_at="2025-08-01 20:01:03", updated_at="2025-08-01 20:01:03",
                                 accessed_at="2025-08-01 20:01:03", access_count=1),
                   value_column="value", namespace_column=None, default_namespace="extended-memory")
    f.add(key="emb:pickle-blob", type="pickle", value=pickle.dumps({"a": [1, 2]}, protocol=4), data_type="binary",
          flags=("binary_value:value",))
    f.add(key="emb:clean", type="int", value="7")
    return f


# ------------------------------------------------------------------------------------ other files

TYPED_TEXT_DDL = """
CREATE TABLE measurements (id INTEGER PRIMARY KEY, reading INTEGER, ratio REAL, taken DATETIME);
"""


def typed_text(root: Path) -> tuple[ExpectedFile, list[tuple]]:
    """The row pgloader drops (text in an INTEGER column) and its REAL and DATETIME cousins."""
    path = root / "apps/typed-text.db"
    rows = [(1, 42, 0.5, "2025-08-01 10:00:00"),
            (2, "not a number", "n/a", "yesterday"),
            (3, 7, 1.25, T0),
            (4, None, "", "2025-02-30 25:61:00")]
    connection = new_database(path, TYPED_TEXT_DDL)
    for row in rows:
        insert(connection, "measurements", dict(zip(("id", "reading", "ratio", "taken"), row)))
    close(connection)
    as_text = [tuple(sqlite_text(value) for value in row) for row in rows]
    return ExpectedFile(path, LOADED, kind="other", tables=table_counts(path)), as_text


LONG_PREFIX = "a_table_name_that_is_far_too_long_for_postgresql_identifiers_ok"  # 63 bytes
assert len(LONG_PREFIX.encode()) == 63


def odd_tables() -> list[OddTable]:
    long_column = "a_column_name_that_is_far_too_long_for_postgresql_identifiers_x"  # 63 bytes
    return [
        OddTable("select", ["from", "where", "order", "group by"], [(1, "a", "b", "c"), (2, "d", "e", "f")]),
        OddTable("Robert'); DROP TABLE students;--", ["a;b", "it's"], [("x;y", "it's"), ("'; --", '"')]),
        OddTable("table with spaces", ["column with spaces", "x y"], [("a b", 1)]),
        OddTable('say "hi"', ['col"quote', '"'], [('q"q', '"')]),
        OddTable("MixedCase", ["CamelColumn", "lowercase"], [("Camel", "lower")]),
        OddTable("📦 boxes", ["🔑", "naïve"], [("key 🔑", "café")]),
        OddTable(LONG_PREFIX + "_first", ["id", "v"], [(1, "first")]),
        OddTable(LONG_PREFIX + "_second", ["id", "v"], [(1, "second"), (2, "second again")]),
        OddTable("wide", [long_column + "_alpha", long_column + "_beta"], [("alpha", "beta")]),
        OddTable("é" * 40, ["ü" * 40, "ü" * 39 + "x"], [("multi", "byte")]),
        OddTable("lineage_clash", ["_load_id", "_source_path", "payload"], [("not a load", "/not/a/path", "p")]),
        OddTable("hides_rowid", ["rowid", "v"], [("my own rowid", "v1"), ("another", "v2")]),
    ]


def odd_names(root: Path) -> tuple[ExpectedFile, list[OddTable]]:
    path = root / "apps/odd-names.db"
    tables = odd_tables()
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode = DELETE")
    for table in tables:
        connection.execute(f"CREATE TABLE {quote(table.name)} ({', '.join(quote(c) for c in table.columns)})")
        for row in table.rows:
            insert(connection, table.name, dict(zip(table.columns, row)))
    close(connection)
    return ExpectedFile(path, LOADED, kind="other", needs=NEEDS_NAMES, tables=table_counts(path)), tables


# ------------------------------------------------------------------------------------ broken files

def populated_v2(path: Path, rows: int) -> None:
    connection = new_database(path, V2_DDL)
    for i in range(rows):
        insert(connection, "memory_entries", dict(key=f"row:{i:05d}", value=json.dumps({"i": i, "pad": "p" * 200})))
    close(connection)


def corrupt(root: Path) -> ExpectedFile:
    """A real database whose pages after the first (schema) page are overwritten with garbage."""
    path = root / "broken/corrupt.db"
    populated_v2(path, 300)
    data = bytearray(path.read_bytes())
    garbage = hashlib.sha256(b"corrupt").digest() * (PAGE_SIZE // 32)
    for offset in range(PAGE_SIZE, len(data), PAGE_SIZE):
        data[offset:offset + PAGE_SIZE] = garbage[:len(data) - offset]
    path.write_bytes(bytes(data))
    return ExpectedFile(path, FAILED, reason="malformed")


def truncated(root: Path) -> ExpectedFile:
    """A real database cut after its second page: the header promises pages the file does not have."""
    path = root / "broken/truncated.db"
    populated_v2(path, 300)
    data = path.read_bytes()
    assert len(data) > 4 * PAGE_SIZE
    path.write_bytes(data[:2 * PAGE_SIZE])
    return ExpectedFile(path, FAILED, reason="malformed")


def not_sqlite(root: Path) -> ExpectedFile:
    path = root / "broken/not-sqlite.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    block = b"".join(hashlib.sha256(f"ruvector:{i}".encode()).digest() for i in range(128))
    path.write_bytes(b"RUVECTOR\x00\x01" + block)
    return ExpectedFile(path, WARNING, reason="not a sqlite database")


def orphan_wal(root: Path) -> ExpectedFile:
    """A valid WAL (one commit frame holding a real page 1) next to no main file."""
    path = root / "broken/orphan/memory.db-wal"
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name("scratch.db")
    connection = new_database(scratch, V2_DDL)
    close(connection)
    page = scratch.read_bytes()[:PAGE_SIZE]
    scratch.unlink()
    salt1, salt2 = 0x0BADC0DE, 0x5EED5EED
    header = struct.pack(">IIII", 0x377F0683, 3007000, PAGE_SIZE, 0) + struct.pack(">II", salt1, salt2)
    c0, c1 = wal_checksum(header, ">")  # big-endian words: magic 0x377f0683
    header += struct.pack(">II", c0, c1)
    frame_start = struct.pack(">II", 1, 1)  # page 1, commit frame (database size 1 page)
    f0, f1 = wal_checksum(frame_start + page, ">", c0, c1)
    frame = frame_start + struct.pack(">IIII", salt1, salt2, f0, f1) + page
    path.write_bytes(header + frame)
    return ExpectedFile(path, WARNING, reason="orphan")


def unkeyable_memory_files(root: Path) -> list[ExpectedFile]:
    """Memory files one row of which the marts cannot key, each failed with that row named (the rest of the
    run builds): a NULL key (a v2 table without NOT NULL), a key longer than PostgreSQL indexes, a claude-flow
    v3 id as long, and a memory table without a rowid to trace its rows by."""
    files = []
    loose = root / "unkeyable/null-key/memory.db"
    connection = new_database(loose, V2_DDL.replace("key TEXT NOT NULL", "key TEXT"))
    insert(connection, "memory_entries", dict(key="fine", value='"kept out with its file"'))
    insert(connection, "memory_entries", dict(key=None, value='"no key"'))
    insert(connection, "memory_entries", dict(key="blob", value=b"\x00\xff"))  # the file goes through CSV
    close(connection)
    files.append(ExpectedFile(loose, FAILED, reason="table memory_entries rowid 2: its key is null"))

    long_key = "".join(hashlib.sha512(str(i).encode()).hexdigest() for i in range(40))  # 5,120 bytes, no repeats
    path = root / "unkeyable/long-key/memory.db"
    connection = new_database(path, V2_DDL)
    insert(connection, "memory_entries", dict(key=long_key, value="1", namespace="long"))
    close(connection)
    files.append(ExpectedFile(path, FAILED, reason=f"rowid 1: its namespace and key ({len(long_key) + 4} bytes)"))

    path = root / "unkeyable/long-v3-id/memory.db"
    connection = new_database(path, V3_DDL)
    connection.execute("INSERT INTO memory_entries (id, key, content) VALUES (?, 'k', 'v')", ("entry_" + long_key,))
    close(connection)
    files.append(ExpectedFile(path, FAILED, reason=f"or its id ({len(long_key) + 6} bytes) are too long"))

    path = root / "unkeyable/without-rowid/memory.db"
    connection = new_database(path, V2_DDL.replace("id INTEGER PRIMARY KEY AUTOINCREMENT, ", "").replace(
        "UNIQUE(key, namespace)", "PRIMARY KEY(key, namespace)").replace(");", ") WITHOUT ROWID;", 1))
    insert(connection, "memory_entries", dict(key="a", value="1"))
    insert(connection, "memory_entries", dict(key="b", value="2"))
    close(connection)
    files.append(ExpectedFile(path, FAILED, reason="table 'memory_entries' has no rowid"))
    return files


# --------------------------------------------------------------------------------------------- all

def write_hostile_corpus(root: Path) -> HostileCorpus:
    """Write the corpus under `root` (which must not exist or be empty) and describe it."""
    root = root.absolute()
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    files: list[ExpectedFile] = []
    memory_rows: list[MemoryRow] = []
    for make in (v2_dirty, v3_dirty, extended_dirty, v2_binary, v3_binary, extended_binary):
        expected, rows = make(root).write()
        files.append(expected)
        memory_rows += rows
    typed, typed_rows = typed_text(root)
    odd, tables = odd_names(root)
    files += [typed, odd, corrupt(root), truncated(root), not_sqlite(root), orphan_wal(root),
              *unkeyable_memory_files(root)]
    return HostileCorpus(root=root, files=files, memory_rows=memory_rows, typed_text_rows=typed_rows,
                         odd_tables=tables)
