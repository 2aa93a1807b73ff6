"""Running alongside the applications: incremental sync (change detection), cutover by service, status,
rollback to a SQLite file, archiving the migrated files."""
