"""What `consolidate` exits with: one meaning per code (README, "Exit codes")."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    # Everything reconciled, verified or done.
    OK = 0
    # Something checked did not hold: a count did not reconcile, a dbt model or test failed, a
    # verification (backup, archive, validation) found problems, a file or a removal was refused.
    NOT_RECONCILED = 1
    # Bad usage: arguments, a DSN that cannot be used (unreadable, no such database or role, a wrong or
    # missing password), a secrets file, a destination that may not be used, nothing to validate.
    USAGE = 2
    # A SQLite source could not be read (or backed up); it is named with the reason.
    SOURCE_UNREADABLE = 3
    # PostgreSQL unavailable, or lost mid-run (nothing half-done is kept: run the same command again).
    DATABASE_UNAVAILABLE = 4
    # Refused before writing anything: `app-copy` into a schema whose application version differs or
    # that already holds application data; `cutover` of a file whose bytes are not its current load's;
    # `rollback` of a file that changed since its last sync, was never loaded or whose marts are not built;
    # `forget` of a file still on disk, not in the ledger or removed by `archive`.
    REFUSED = 5
    # What was asked for does not exist (`lineage KEY` with no such entry).
    NOT_FOUND = 6
    # The Redis cache cannot be reached (`cache warm`, `cache stats`; `sync` / `run --redis-url`: the marts were
    # built, but Redis could not be told what changed: the next build told empties it).
    CACHE_UNAVAILABLE = 7
    # Interrupted (Ctrl-C, SIGINT): what the command had committed stays, the step it was in is rolled back.
    INTERRUPTED = 130
