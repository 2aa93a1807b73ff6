"""What app-copy knows about each application: how to recognise it, which rows its first start writes,
and which of its migrations exist for one database type only."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Application:
    name: str
    # Tables only this application has (either one identifies it, on SQLite and in PostgreSQL).
    marker_tables: frozenset[str]
    # Tables the application fills by itself when it first starts on an empty database (default
    # settings, a shell owner, a personal project, seeded roles). Rows there are replaced by the
    # source's when the source has its own; table -> SQL condition for rows that are real data
    # after all (an owner who set an e-mail address, a team project), or None.
    first_start_tables: dict[str, str | None]
    # Migration names (without their timestamp) that exist for one database type only: a migration
    # without counterpart on the other side is a version difference unless it is one of these.
    sqlite_only_migrations: frozenset[str] = field(default_factory=frozenset)
    postgres_only_migrations: frozenset[str] = field(default_factory=frozenset)
    # The environment variables that point the application at a PostgreSQL schema (for messages).
    postgres_settings: str = ""
    # Tables of the SQLite file whose rows the application keeps elsewhere on PostgreSQL, or not at all,
    # and that need not move: table -> what they hold and what happens without them.
    transient_tables: dict[str, str] = field(default_factory=dict)


N8N = Application(
    name="n8n",
    marker_tables=frozenset({"workflow_entity", "execution_entity", "credentials_entity"}),
    first_start_tables={
        "settings": None,
        "user": "email IS NOT NULL OR password IS NOT NULL",
        "project": "type <> 'personal'",
        "project_relation": None,
        "role": None,
        "scope": None,
        "role_scope": None,
    },
    sqlite_only_migrations=frozenset({"AddWaitColumn"}),
    postgres_only_migrations=frozenset({
        "AddwaitTill", "IncreaseTypeVarcharLimit", "AddMissingPrimaryKeyOnExecutionData",
        "MigrateToTimestampTz", "FixExecutionMetadataSequence",
    }),
    postgres_settings="DB_TYPE=postgresdb DB_POSTGRESDB_HOST/PORT/DATABASE/USER/PASSWORD DB_POSTGRESDB_SCHEMA",
)

FLOWISE = Application(
    name="flowise",
    marker_tables=frozenset({"chat_flow", "chat_message"}),
    first_start_tables={"role": None},
    postgres_only_migrations=frozenset({"FieldTypes", "ModifyExecutionSessionIdFieldType"}),
    postgres_settings="DATABASE_TYPE=postgres DATABASE_HOST/PORT/NAME/USER/PASSWORD",
    # Flowise 3's express-session store (connect-sqlite3); on PostgreSQL it is connect-pg-simple's
    # public.login_sessions (dist/enterprise/middleware/passport/SessionPersistance.js)
    transient_tables={"login_sessions": "login sessions, not copied: Flowise keeps them in public.login_sessions "
                                        "on PostgreSQL, and its users sign in again"},
)

APPLICATIONS = (N8N, FLOWISE)


def recognise(tables: set[str]) -> Application | None:
    """The application whose tables these are (n8n first: a database with both is not expected)."""
    for application in APPLICATIONS:
        if application.marker_tables & tables:
            return application
    return None


# Tables app-copy never copies: SQLite's own, and the migrations each side keeps for its own database type.
MIGRATIONS_TABLE = "migrations"


def is_copied_table(name: str) -> bool:
    return name != MIGRATIONS_TABLE and not name.startswith("sqlite_")
