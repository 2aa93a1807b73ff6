"""The shape of what `load` writes into PostgreSQL: the raw schemas (its ledger rows: loader.ledger).

This is the contract between the loader and the dbt project. Raw tables keep every source column as
TEXT (the original value, untouched; staging does the typing) plus the lineage columns below. The
memory tables the dbt models read are created up front with their known columns, so the models compile
even when no file of that kind was found; columns a file brings beyond these are added on arrival.

Values: every value is its text (SQLite's own text of it: what `CAST(x AS TEXT)` gives, numbers
included), except a value PostgreSQL text cannot hold as it is: a BLOB, TEXT that is not valid UTF-8,
or TEXT containing NUL. Such a value is stored as `\\x` followed by the lowercase hex of its exact bytes,
and the row's `_binary_columns` lists the raw columns of that row stored so (NULL when none), so
`decode(substr(value, 3), 'hex')` gives the original bytes back.

Names: SQLite names are kept as they are when PostgreSQL can hold them (see `raw_name`); others are
mapped deterministically, and `consolidate.load_tables.raw_table` / `consolidate.load_columns` record
every table's and column's raw name.
"""

from __future__ import annotations

import hashlib

from psycopg import sql

# Schema kinds a discovered file is classified into, and the raw schema each one loads into.
RAW_SCHEMAS = {
    "claude-flow-v2": "raw_claude_flow_v2",
    "claude-flow-v3": "raw_claude_flow_v3",
    "extended-memory": "raw_extended_memory",
    "n8n": "raw_n8n",
    "flowise": "raw_flowise",
    "other": "raw_other",
}

# The kinds of memory files (their rows are memory entries: the marts' input) and each one's memory table.
# The dbt project's memory_kinds() and memory_raw_tables() (macros/source_columns.sql) say the same.
MEMORY_TABLES = {"claude-flow-v2": "memory_entries", "claude-flow-v3": "memory_entries",
                 "extended-memory": "memory_store"}
MEMORY_KINDS = frozenset(MEMORY_TABLES)
# The namespace of a raw memory row (of its `namespace` column), as the staging models give it
# (dbt_project/macros/memory_staging.sql: the same rule).
MEMORY_NAMESPACES = {"claude-flow-v2": sql.SQL("coalesce(namespace, 'default')"),
                     "claude-flow-v3": sql.SQL("coalesce(namespace, 'default')"),
                     "extended-memory": sql.SQL("'extended-memory'::text")}

# Lineage columns on every raw row, in this order, after the source columns.
LINEAGE_COLUMNS = [
    ("_load_id", "text NOT NULL"),
    ("_source_path", "text NOT NULL"),
    ("_source_sha256", "text NOT NULL"),
    ("_source_rowid", "bigint"),
    ("_loaded_at", "timestamptz NOT NULL"),
    # The raw columns whose value in this row is `\x` + hex of its bytes (see the docstring); NULL: none.
    ("_binary_columns", "text[]"),
]
LINEAGE_NAMES = frozenset(name for name, _ in LINEAGE_COLUMNS)
# A row's content: its source columns and which of them are hex of bytes (`_binary_columns`, lineage that
# describes the value itself), never the lineage that names its load. A row's digest (sync's change
# detection, split brain) and a change load's comparison (loader/load/delta.py) read these.
CONTENT_LINEAGE = ("_binary_columns",)
NOT_CONTENT = LINEAGE_NAMES - set(CONTENT_LINEAGE)

# PostgreSQL silently truncates identifiers to NAMEDATALEN - 1 bytes.
MAX_IDENTIFIER_BYTES = 63
# PostgreSQL's MaxHeapAttributeNumber: a raw table holds a source table's columns plus LINEAGE_COLUMNS.
POSTGRES_MAX_COLUMNS = 1600
HASH_SUFFIX_HEX = 8
# Appended to a source column whose name is a lineage column's (then mapped by raw_name as usual).
LINEAGE_CLASH_SUFFIX = "__source"


def name_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_SUFFIX_HEX]


def raw_name(name: str) -> str:
    """The PostgreSQL name of a SQLite table or column: the name itself when it is 1 to 63 bytes of
    UTF-8; otherwise (longer, which PostgreSQL would truncate, or empty, which it refuses) its longest
    prefix cut on a character boundary that leaves room for `_` + the first 8 hex digits of
    sha256(name), so distinct names that share their first 63 bytes stay distinct."""
    encoded = name.encode("utf-8", "surrogatepass")
    if 0 < len(encoded) <= MAX_IDENTIFIER_BYTES:
        return name
    room = MAX_IDENTIFIER_BYTES - 1 - HASH_SUFFIX_HEX
    prefix = encoded[:room].decode("utf-8", "ignore")  # drops a character cut in the middle
    return f"{prefix}_{name_hash(name)}"


def raw_column_names(columns: list[str]) -> list[str]:
    """The raw column of each source column, in order. A name PostgreSQL holds as it is (`raw_name`
    keeps it) and that is no lineage column's stays. Then, in column order, every other column gets
    raw_name(name), or raw_name(name + '__source') for a lineage column's name; if that is taken
    (by a lineage column or another column), raw_name(name + '__2'), '__3', ... until one is free."""
    kept = {column for column in columns if column not in LINEAGE_NAMES and raw_name(column) == column}
    taken = set(LINEAGE_NAMES) | kept
    mapped = []
    for column in columns:
        if column in kept:
            mapped.append(column)
            continue
        candidate = raw_name(column + LINEAGE_CLASH_SUFFIX if column in LINEAGE_NAMES else column)
        counter = 1
        while candidate in taken:
            counter += 1
            candidate = raw_name(f"{column}__{counter}")
        taken.add(candidate)
        mapped.append(candidate)
    return mapped

# Tables the dbt models read; always present, even if empty.
CORE_RAW_TABLES = {
    ("raw_claude_flow_v2", "memory_entries"): [
        "id", "key", "value", "namespace", "metadata", "created_at", "updated_at", "accessed_at",
        "access_count", "ttl", "expires_at",
    ],
    ("raw_claude_flow_v3", "memory_entries"): [
        "id", "key", "namespace", "content", "type", "embedding", "embedding_model",
        "embedding_dimensions", "tags", "metadata", "owner_id", "created_at", "updated_at",
        "expires_at", "last_accessed_at", "access_count", "status",
    ],
    ("raw_claude_flow_v3", "sessions"): [
        "id", "state", "status", "project_path", "branch", "tasks_completed", "patterns_learned",
        "created_at", "updated_at", "expires_at",
    ],
    ("raw_extended_memory", "memory_store"): [
        "key", "value", "type", "created_at", "updated_at", "accessed_at", "access_count",
    ],
    ("raw_extended_memory", "metadata"): ["key", "value", "updated_at"],
}

# Raw memory tables are read per load and file by the incremental build (the rows of the loads new since
# the last build) and by reconciliation (one file's rows): an index on (_load_id, _source_path) finds them
# without scanning every earlier load or the other files of a load (raw_tables.bootstrap; it replaces the
# index on _load_id alone of earlier versions).
RAW_MEMORY_TABLES = [(RAW_SCHEMAS[kind], table) for kind, table in MEMORY_TABLES.items()]
RAW_MEMORY_INDEX = ("{table}__load_file", "(_load_id, _source_path)")
REPLACED_RAW_MEMORY_INDEX = "{table}__load_id"
