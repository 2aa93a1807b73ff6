"""The one-statement copy a user could pick instead of `consolidate load`: DuckDB attaches each SQLite
file and PostgreSQL, and `CREATE TABLE pg.fNN AS SELECT * FROM file.memory_entries` copies the rows
(DuckDB's postgres extension sends them by binary COPY). No ledger, no checksums, no private copy, no
lineage: the sharpest anchor for what moving the bytes costs.

    python -m bench.duckdb_anchor --dsn DSN FILE...

Extensions come from their PyPI wheels (the project's pins), as the loader loads them: nothing is
downloaded. Prints the rows copied.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb
import duckdb_extension_postgres_scanner
import duckdb_extension_sqlite_scanner
from psycopg.conninfo import make_conninfo

from loader.sources.sqlite_reader import extension_path, literal


def copy_files(dsn: str, files: list[Path]) -> int:
    duck = duckdb.connect(config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"})
    for package, name in ((duckdb_extension_sqlite_scanner, "sqlite_scanner"),
                          (duckdb_extension_postgres_scanner, "postgres_scanner")):
        duck.execute(f"LOAD {literal(extension_path(package, name).as_posix())}")
    duck.execute(f"ATTACH {literal(make_conninfo(dsn))} AS pg (TYPE postgres)")
    for number, path in enumerate(files):
        duck.execute(f"ATTACH {literal(path.as_posix())} AS f{number:02d} (TYPE sqlite, READ_ONLY)")
        duck.execute(f"CREATE TABLE pg.public.f{number:02d} AS SELECT * FROM f{number:02d}.memory_entries")
    return sum(duck.execute(f"SELECT count(*) FROM pg.public.f{number:02d}").fetchone()[0]
               for number in range(len(files)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print(copy_files(args.dsn, args.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
