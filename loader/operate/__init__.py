"""Running alongside the applications: incremental sync, status, archiving the migrated files."""
