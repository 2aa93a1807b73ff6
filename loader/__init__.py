"""consolidate: move many SQLite databases into one PostgreSQL schema and prove nothing was lost."""

__version__ = "0.1.0"
