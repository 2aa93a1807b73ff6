"""The declared column types of a SQLite table, from its CREATE TABLE statement parsed with sqlglot.

SQLite keeps whatever type name a CREATE TABLE declared (`datetime(3)`, `boolean`, `varchar(36)`) and
stores any value anyway; the declaration is still the application's intent, which the typed staging
models follow. A statement sqlglot cannot parse, or a column declared without a type, has none.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp


def declared_types(create_table: str | None) -> dict[str, str]:
    """column name -> declared type in sqlglot's normalized spelling (`VARCHAR(36)`, `DATETIME(3)`,
    `BOOLEAN`, `INT`, `TEXT`); columns declared without a type are left out."""
    if not create_table:
        return {}
    try:
        tree = sqlglot.parse_one(create_table, read="sqlite")
    except Exception:  # whatever sqlglot makes of a hostile statement, a load never fails on it
        return {}
    if not isinstance(tree, exp.Create):
        return {}
    return {column.name: column.args["kind"].sql() for column in tree.find_all(exp.ColumnDef)
            if column.args.get("kind") is not None}
