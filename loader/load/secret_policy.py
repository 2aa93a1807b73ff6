"""Secret columns of application databases never reach PostgreSQL in clear.

Default policy, per (schema kind, table, column):

| kind    | table              | column(s)                                  | action |
|---------|--------------------|--------------------------------------------|--------|
| n8n     | credentials_entity | data                                       | hash   |
| n8n     | user               | password, apiKey, mfaSecret, mfaRecoveryCodes | hash |
| flowise | credential         | encryptedData                              | hash   |
| flowise | apikey             | apiKey, apiSecret                          | hash   |
| flowise | user               | credential, tempToken                      | hash   |

`hash` replaces the value by `hmac-sha256:<hex>` of it under a key only you hold, so equal secrets
stay joinable and comparable but cannot be read back; `exclude` loads NULL instead; `keep` loads the
value as it is. The key comes from `CONSOLIDATE_SECRET_KEY`, else from `HOME/secret.key`, created
with 32 random bytes (mode 0600) on first use. Override any entry in a TOML file passed as
`--secrets FILE`:

    [secrets]
    "n8n.credentials_entity.data" = "exclude"
    "flowise.apikey.keyName" = "hash"
"""

from __future__ import annotations

import hashlib
import os
import secrets as random_source
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ACTIONS = ("hash", "exclude", "keep")

DEFAULT_POLICY = {
    "n8n.credentials_entity.data": "hash",
    "n8n.user.password": "hash",
    "n8n.user.apiKey": "hash",
    "n8n.user.mfaSecret": "hash",
    "n8n.user.mfaRecoveryCodes": "hash",
    "flowise.credential.encryptedData": "hash",
    "flowise.apikey.apiKey": "hash",
    "flowise.apikey.apiSecret": "hash",
    "flowise.user.credential": "hash",
    "flowise.user.tempToken": "hash",
}

HMAC_BLOCK_SIZE = 64


class PolicyError(ValueError):
    pass


@dataclass
class SecretPolicy:
    key: bytes
    actions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_POLICY))

    def action(self, kind: str, table: str, column: str) -> str:
        return self.actions.get(f"{kind}.{table}.{column}", "keep")

    def select_expression(self, kind: str, table: str, column: str, quoted_column: str) -> str:
        """The DuckDB expression that reads `column` under this policy."""
        action = self.action(kind, table, column)
        if action == "exclude":
            return "NULL"
        if action == "hash":
            return hmac_sha256_expression(self.key, quoted_column)
        return quoted_column


def hmac_sha256_expression(key: bytes, value_sql: str) -> str:
    """HMAC-SHA256 (RFC 2104) written in DuckDB SQL, so secrets are hashed inside the scan."""
    block = (key if len(key) <= HMAC_BLOCK_SIZE else hashlib.sha256(key).digest()).ljust(HMAC_BLOCK_SIZE, b"\0")
    inner_pad = bytes(b ^ 0x36 for b in block).hex()
    outer_pad = bytes(b ^ 0x5C for b in block).hex()
    inner = f"unhex(sha256(unhex('{inner_pad}') || encode({value_sql})))"
    return f"CASE WHEN {value_sql} IS NULL THEN NULL ELSE 'hmac-sha256:' || sha256(unhex('{outer_pad}') || {inner}) END"


def load_key(home: Path) -> bytes:
    configured = os.environ.get("CONSOLIDATE_SECRET_KEY")
    if configured:
        return configured.encode()
    path = home / "secret.key"
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
            raise PolicyError(f"{overrides}: {name} = {action!r}: expected \"kind.table.column\" = "
                              f"one of {', '.join(ACTIONS)}")
        policy.actions[name] = action
    return policy
