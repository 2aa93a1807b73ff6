"""Secret columns of application databases never reach PostgreSQL in clear.

A rule names a column as `app.table.column` and says what the load stores for it:

- `hash`: `hmac-sha256:<hex>` of the value under a key only you hold, so equal secrets stay joinable
  and comparable but cannot be read back;
- `scrub`: the value is JSON holding secrets among other things: every secret inside it is hashed the
  same way and everything else is kept (loader/secret_scrub.py: keys with secret-looking names,
  credential headers given as name/value pairs, `Bearer ...`, URL passwords and secret query
  parameters inside strings); a value that is not JSON is hashed whole. A table with such a column is
  read by the Python reader (load.scrub_reason), where the scrub runs;
- `exclude`: NULL is loaded instead;
- `keep`: the value as it is (the default for every column no rule names).

A rule applies to every file holding a table and a column of those names (compared case-insensitively,
as SQLite does), whatever the file was classified as: a Flowise file without chat tables is `other`
but its `credential.encryptedData` is hashed all the same. `app` only says where the rule comes from.

The default rules cover the secret-bearing columns of n8n (migrations up to 1.12x: `credentials_entity`,
`user`, `user_api_keys`, `variables`, `invalid_auth_token`, `oauth_*`, `settings`, `event_destinations`,
workflows, their history and their executions) and Flowise (up to 3.x: `credential`, `apikey`, `user`,
`variable`, `login_sessions`, `login_method`, flows, assistants, MCP servers, channels, git config,
executions); `DEFAULT_POLICY` lists them.

The key comes from `CONSOLIDATE_SECRET_KEY`, else from `HOME/secret.key`, created with 32 random
bytes (mode 0600) on first use. Override or add rules in a TOML file passed as `--secrets FILE`; a
rule there replaces any default rule for the same table and column:

    [secrets]
    "n8n.credentials_entity.data" = "exclude"
    "flowise.apikey.keyName" = "hash"

Every load records the policy it ran under (`describe`, and its `digest`) in `consolidate.loads`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets as random_source
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from loader import secret_scrub

ACTIONS = ("hash", "scrub", "exclude", "keep")
# Changes whenever what `scrub` does to a document changes, so the recorded digest tells policies apart.
SCRUB_VERSION = 1

DEFAULT_POLICY = {
    # n8n
    "n8n.credentials_entity.data": "hash",
    "n8n.user.password": "hash",
    "n8n.user.apiKey": "hash",
    "n8n.user.mfaSecret": "hash",
    "n8n.user.mfaRecoveryCodes": "hash",
    "n8n.user.resetPasswordToken": "hash",
    "n8n.user_api_keys.apiKey": "hash",
    "n8n.variables.value": "hash",
    "n8n.invalid_auth_token.token": "hash",
    "n8n.oauth_clients.clientSecret": "hash",
    "n8n.oauth_authorization_codes.code": "hash",
    "n8n.oauth_access_tokens.token": "hash",
    "n8n.oauth_refresh_tokens.token": "hash",
    "n8n.settings.value": "scrub",
    "n8n.event_destinations.destination": "scrub",
    "n8n.workflow_entity.nodes": "scrub",
    "n8n.workflow_entity.pinData": "scrub",
    "n8n.workflow_entity.staticData": "scrub",
    "n8n.workflow_history.nodes": "scrub",
    "n8n.execution_data.data": "scrub",
    "n8n.execution_data.workflowData": "scrub",
    "n8n.execution_entity.data": "scrub",
    "n8n.execution_entity.workflowData": "scrub",
    # Flowise
    "flowise.credential.encryptedData": "hash",
    "flowise.apikey.apiKey": "hash",
    "flowise.apikey.apiSecret": "hash",
    "flowise.user.credential": "hash",
    "flowise.user.tempToken": "hash",
    "flowise.variable.value": "hash",
    "flowise.login_sessions.sid": "hash",
    "flowise.login_sessions.sess": "scrub",
    "flowise.login_method.config": "scrub",
    "flowise.chat_flow.flowData": "scrub",
    "flowise.chat_flow.mcpServerConfig": "scrub",
    "flowise.chat_flow.webhookSecret": "hash",
    "flowise.assistant.details": "scrub",
    "flowise.custom_mcp_server.authConfig": "scrub",
    "flowise.channel_account.config": "scrub",
    "flowise.git_config.secret": "hash",
    "flowise.execution.executionData": "scrub",
}

HMAC_BLOCK_SIZE = 64
KEY_ID_LABEL = b"consolidate secret key id"


class PolicyError(ValueError):
    pass


def shape(rule: str) -> tuple[str, str]:
    """(table, column) of `app.table.column`, case-folded."""
    _, table_and_column = rule.split(".", 1)
    table, column = table_and_column.rsplit(".", 1)
    return table.casefold(), column.casefold()


DEFAULT_ACTIONS_BY_SHAPE = {shape(rule): action for rule, action in DEFAULT_POLICY.items()}


@dataclass
class SecretPolicy:
    key: bytes
    rules: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_POLICY))

    def __post_init__(self):
        self.by_shape = {shape(rule): action for rule, action in self.rules.items()}

    def set_rule(self, rule: str, action: str) -> None:
        """Add a rule; it replaces every rule for the same table and column."""
        self.rules = {name: known for name, known in self.rules.items() if shape(name) != shape(rule)}
        self.rules[rule] = action
        self.by_shape[shape(rule)] = action

    def action(self, table: str, column: str) -> str:
        return self.by_shape.get((table.casefold(), column.casefold()), "keep")

    def select_expression(self, table: str, column: str, quoted_column: str) -> str:
        """The DuckDB expression that reads `column` under this policy. `scrub` has none: a table with
        such a column is read by the Python reader (see `stored_value`)."""
        action = self.action(table, column)
        if action == "scrub":
            raise ValueError(f"{table}.{column} is scrubbed in Python, not read by DuckDB")
        if action == "exclude":
            return "NULL"
        if action == "hash":
            return hmac_sha256_expression(self.key, quoted_column)
        return quoted_column

    def stored_value(self, action: str, value: bytes) -> str:
        """What `hash` or `scrub` stores for a value's bytes (the Python reader's and validation's side)."""
        if action == "scrub":
            return secret_scrub.scrub_json_bytes(self.key, value)
        return secret_scrub.keyed_hash(self.key, value)

    def describe(self) -> dict:
        """The rules and how `scrub` finds secrets, with an identifier of the key (never the key)."""
        return {
            "rules": dict(sorted(self.rules.items())),
            "matching": "table and column names, case-insensitively, in every file whatever its kind",
            "scrub": {
                "version": SCRUB_VERSION,
                "secret_names_containing": list(secret_scrub.SECRET_NAME_PARTS),
                "secret_names_ending_with": list(secret_scrub.SECRET_NAME_ENDINGS),
                "secret_names": sorted(secret_scrub.SECRET_NAMES),
                "secret_headers": sorted(secret_scrub.SECRET_HEADERS),
                "secret_query_parameters": sorted(secret_scrub.SECRET_QUERY_PARAMETERS),
                "max_depth": secret_scrub.MAX_DEPTH,
            },
            "key_id": hmac.new(self.key, KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16],
        }

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def default_action(table: str, column: str) -> str:
    """The default policy's action for a column, without a key (validation when no key exists)."""
    return DEFAULT_ACTIONS_BY_SHAPE.get((table.casefold(), column.casefold()), "keep")


def hmac_sha256_expression(key: bytes, value_sql: str) -> str:
    """HMAC-SHA256 (RFC 2104) written in DuckDB SQL, so secrets are hashed inside the scan."""
    block = (key if len(key) <= HMAC_BLOCK_SIZE else hashlib.sha256(key).digest()).ljust(HMAC_BLOCK_SIZE, b"\0")
    inner_pad = bytes(b ^ 0x36 for b in block).hex()
    outer_pad = bytes(b ^ 0x5C for b in block).hex()
    inner = f"unhex(sha256(unhex('{inner_pad}') || encode({value_sql})))"
    return f"CASE WHEN {value_sql} IS NULL THEN NULL ELSE 'hmac-sha256:' || sha256(unhex('{outer_pad}') || {inner}) END"


KEY_VARIABLE = "CONSOLIDATE_SECRET_KEY"


def key_path(home: Path) -> Path:
    return home / "secret.key"


def load_key(home: Path) -> bytes:
    configured = os.environ.get(KEY_VARIABLE)
    if configured:
        return configured.encode()
    path = key_path(home)
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(random_source.token_hex(32))
    return path.read_text().strip().encode()


def load_policy(home: Path, overrides: Path | None = None) -> SecretPolicy:
    policy = SecretPolicy(key=load_key(home))
    if overrides is None:
        return policy
    try:
        entries = tomllib.loads(overrides.read_text()).get("secrets", {})
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise PolicyError(f"{overrides}: {error}") from error
    for name, action in entries.items():
        if action not in ACTIONS or name.count(".") < 2:
            raise PolicyError(f"{overrides}: {name} = {action!r}: expected \"app.table.column\" = "
                              f"one of {', '.join(ACTIONS)}")
        policy.set_rule(name, action)
    return policy


def existing_policy(home: Path, overrides: Path | None = None) -> SecretPolicy | None:
    """The secret policy loads under `home` used, when its key exists; None otherwise (a key is never
    created here: a new one could not reproduce any stored hash)."""
    if not (os.environ.get(KEY_VARIABLE) or key_path(home).exists()):
        return None
    return load_policy(home, overrides)
