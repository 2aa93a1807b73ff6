"""Write a small, deterministic sample tree shaped like the plan's inventory.

`write_sample(root)` writes the tree below (paths relative to `root`) and returns the paths of the
SQLite main files it wrote. Every run writes the same bytes: all data comes from seeded
`random.Random` instances and fixed timestamps, and the random salts SQLite puts in a `-wal` file are
replaced by fixed ones (the WAL checksums are recomputed, so SQLite reads the file as its own).
It refuses to write into an existing, non-empty `root`.

    opt/sutazaiapp/.swarm/memory.db (+ memory.db-wal)      claude-flow v2, WAL mode, 400 rows
    opt/sutazaiapp/docker/dind/.swarm/memory.db            claude-flow v2, 120 rows
    opt/sutazaiapp/backups/2025-08-19/.swarm/memory.db     byte-identical copy of the dind file
    opt/sutazaiapp/mcp/{claude-flow,ruv-swarm,task-master}/.swarm/memory.db
                                                           claude-flow v2, 12 / 20 / 28 rows
    opt/sutazaiapp/backend/.swarm/memory.db                claude-flow v3 (memory_entries, sessions,
                                                           metadata), timestamps in milliseconds
    opt/sutazaiapp/data/mcp/extended-memory/extended_memory.db
                                                           extended-memory (memory_store, metadata)
    opt/sutazaiapp/data/n8n/database.sqlite                n8n-shaped app database
    opt/sutazaiapp/data/flowise/database.sqlite            Flowise-shaped app database
    opt/sutazaiapp/.swarm/ruvector.db                      not SQLite (4096 pseudo-random bytes)
    opt/sutazaiapp/old/.swarm/memory.db-wal                orphan WAL, no main file next to it

Traps the sample contains, on purpose:

- WAL-only rows: the main memory.db is in WAL mode and its last 20 rows exist only in `memory.db-wal`
  (there is no `-shm`). Reading the main file alone misses them; opening the file in place with
  sqlite3 checkpoints the WAL into it and rewrites both files, so always open a private copy of the
  main file together with its `-wal`.
- A "seconds" column holding milliseconds: exactly one row of the main file (namespace `sessions`)
  has created_at/updated_at/accessed_at in epoch milliseconds; every other v2 timestamp is in seconds.
- Cross-file duplicates of (key, namespace) with different values. Between the main file and the dind
  file there are 15: 6 where dind's updated_at is newer (dind wins), 5 where it is older (main wins;
  one of those main rows lives only in the WAL, so ignoring the WAL makes the stale dind value win),
  2 with the same updated_at and different accessed_at (one won by each side), 1 with the same
  updated_at and the same accessed_at (only source order can decide), and 1 duplicating the
  millisecond row with a seconds timestamp 30 minutes later in real time (dind wins, but compared
  naively the millisecond value looks far newer). The v3 backend file shares 4 (key, namespace)
  pairs with the main file (2 newer, 2 older, in milliseconds), and the three mcp files share a
  couple of keys with the main, dind and each other, never with equal timestamps.
- A byte-identical copy (the backups/ file) that must be recognised as a copy and not loaded twice.
- Values of every shape: JSON objects (most), JSON scalars (`42`, `"quoted"`, `null`), plain strings
  that are not JSON (Markdown, prose, non-ASCII), and `__compressed__` followed by base64 of a JSON
  document (not actually compressed). `metadata` is JSON object text or NULL.
- Expired rows: `agent-assignments` rows have ttl=3600 and expires_at=created_at+3600, long past.
  They are data, not garbage.
- claude-flow v3 uses epoch milliseconds everywhere, has a row whose namespace is NULL, and keeps
  `sessions` (state = JSON object text) and `metadata` tables next to memory_entries.
- extended-memory: no namespace column; `type` is one of none/str/int/float/bool/dict/list/pickle;
  `value` is json.dumps of the value, except `pickle` rows, which hold base64 of a pickle (never
  unpickle it); times are naive UTC text mixing `YYYY-MM-DD HH:MM:SS.ffffff` and
  `YYYY-MM-DD HH:MM:SS`.
- n8n and Flowise: timestamps as naive text like `2025-08-01 20:01:03.449`; credentials, API keys
  and password hashes (fake, but shaped like real ones) sit in ordinary columns.
- `ruvector.db` is named like a database but is not SQLite; `old/.swarm/memory.db-wal` is a real WAL
  whose main file is gone (nothing is recoverable from it: report it, do not load it).
"""

from __future__ import annotations

import base64
import functools
import json
import pickle
import random
import shutil
import sqlite3
import struct
import tempfile
from dataclasses import astuple, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

SQLITE_HEADER = b"SQLite format 3\x00"
PAGE_SIZE = 4096
# A WAL's magic number says in which byte order its checksums read 32-bit words.
WAL_MAGIC_LITTLE_ENDIAN = 0x377F0682
WAL_MAGIC_BIG_ENDIAN = 0x377F0683
WAL_HEADER_SIZE = 32
WAL_FRAME_HEADER_SIZE = 24
# SQLite draws WAL salts at random; the sample pins them to these ("cons", "olid").
PINNED_WAL_SALTS = (0x636F6E73, 0x6F6C6964)

APP = Path("opt/sutazaiapp")
MAIN_V2 = APP / ".swarm/memory.db"
DIND_V2 = APP / "docker/dind/.swarm/memory.db"
BACKUP_OF_DIND = APP / "backups/2025-08-19/.swarm/memory.db"
BACKEND_V3 = APP / "backend/.swarm/memory.db"
EXTENDED_MEMORY = APP / "data/mcp/extended-memory/extended_memory.db"
N8N = APP / "data/n8n/database.sqlite"
FLOWISE = APP / "data/flowise/database.sqlite"
RUVECTOR = APP / ".swarm/ruvector.db"
ORPHAN_WAL = APP / "old/.swarm/memory.db-wal"
MCP_CLAUDE_FLOW = APP / "mcp/claude-flow/.swarm/memory.db"
MCP_RUV_SWARM = APP / "mcp/ruv-swarm/.swarm/memory.db"
MCP_TASK_MASTER = APP / "mcp/task-master/.swarm/memory.db"


# --------------------------------------------------------------------------------------------- DDL

V2_DDL = """
CREATE TABLE memory_entries (
  id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, value TEXT NOT NULL,
  namespace TEXT NOT NULL DEFAULT 'default', metadata TEXT,
  created_at INTEGER DEFAULT (strftime('%s', 'now')), updated_at INTEGER DEFAULT (strftime('%s', 'now')),
  accessed_at INTEGER DEFAULT (strftime('%s', 'now')), access_count INTEGER DEFAULT 0,
  ttl INTEGER, expires_at INTEGER, UNIQUE(key, namespace));
CREATE INDEX idx_memory_namespace ON memory_entries(namespace);
"""

# Copied verbatim from a claude-flow 3.x memory.db (memory_entries, its indexes, sessions, metadata).
V3_DDL = """
CREATE TABLE memory_entries (
  id TEXT PRIMARY KEY,
  key TEXT NOT NULL,
  namespace TEXT DEFAULT 'default',
  content TEXT NOT NULL,
  type TEXT DEFAULT 'semantic' CHECK(type IN ('semantic', 'episodic', 'procedural', 'working', 'pattern')),

  -- Vector embedding for semantic search (stored as JSON array)
  embedding TEXT,
  embedding_model TEXT DEFAULT 'local',
  embedding_dimensions INTEGER,

  -- Metadata
  tags TEXT, -- JSON array
  metadata TEXT, -- JSON object
  owner_id TEXT,

  -- Timestamps
  created_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now') * 1000),
  updated_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now') * 1000),
  expires_at INTEGER,
  last_accessed_at INTEGER,

  -- Access tracking for hot/cold detection
  access_count INTEGER DEFAULT 0,

  -- Status
  status TEXT DEFAULT 'active' CHECK(status IN ('active', 'archived', 'deleted')),

  UNIQUE(namespace, key)
);
CREATE INDEX idx_memory_namespace ON memory_entries(namespace);
CREATE INDEX idx_memory_key ON memory_entries(key);
CREATE INDEX idx_memory_type ON memory_entries(type);
CREATE INDEX idx_memory_status ON memory_entries(status);
CREATE INDEX idx_memory_created ON memory_entries(created_at);
CREATE INDEX idx_memory_accessed ON memory_entries(last_accessed_at);
CREATE INDEX idx_memory_owner ON memory_entries(owner_id);
CREATE TABLE sessions (
  id TEXT PRIMARY KEY,

  -- Session state
  state TEXT NOT NULL, -- JSON object with full session state
  status TEXT DEFAULT 'active' CHECK(status IN ('active', 'paused', 'completed', 'expired')),

  -- Context
  project_path TEXT,
  branch TEXT,

  -- Metrics
  tasks_completed INTEGER DEFAULT 0,
  patterns_learned INTEGER DEFAULT 0,

  -- Timestamps
  created_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now') * 1000),
  updated_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now') * 1000),
  expires_at INTEGER
);
CREATE TABLE metadata (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  updated_at INTEGER DEFAULT (strftime('%s', 'now') * 1000)
);
"""

EXTENDED_MEMORY_DDL = """
CREATE TABLE memory_store (
  key TEXT PRIMARY KEY, value TEXT NOT NULL, type TEXT NOT NULL, created_at TIMESTAMP,
  updated_at TIMESTAMP, accessed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, access_count INTEGER DEFAULT 1);
CREATE TABLE metadata (
  key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
"""

N8N_DDL = """
CREATE TABLE workflow_entity (id TEXT PRIMARY KEY, name TEXT, active BOOLEAN, nodes TEXT, connections TEXT,
  createdAt DATETIME, updatedAt DATETIME);
CREATE TABLE credentials_entity (id TEXT PRIMARY KEY, name TEXT, data TEXT, type TEXT, createdAt DATETIME,
  updatedAt DATETIME);
CREATE TABLE execution_entity (id INTEGER PRIMARY KEY AUTOINCREMENT, workflowId TEXT, finished BOOLEAN,
  mode TEXT, startedAt DATETIME, stoppedAt DATETIME, status TEXT);
CREATE TABLE "user" (id TEXT PRIMARY KEY, email TEXT, firstName TEXT, lastName TEXT, password TEXT,
  createdAt DATETIME, updatedAt DATETIME);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT, loadOnStartup BOOLEAN);
CREATE TABLE migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp INTEGER, name TEXT);
"""

FLOWISE_DDL = """
CREATE TABLE chat_flow (id TEXT PRIMARY KEY, name TEXT, flowData TEXT, deployed BOOLEAN,
  createdDate DATETIME, updatedDate DATETIME);
CREATE TABLE chat_message (id TEXT PRIMARY KEY, role TEXT, chatflowid TEXT, content TEXT,
  createdDate DATETIME);
CREATE TABLE credential (id TEXT PRIMARY KEY, name TEXT, credentialName TEXT, encryptedData TEXT,
  createdDate DATETIME, updatedDate DATETIME);
CREATE TABLE apikey (id TEXT PRIMARY KEY, apiKey TEXT, apiSecret TEXT, keyName TEXT, updatedDate DATETIME);
CREATE TABLE migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp INTEGER, name TEXT);
"""


# ------------------------------------------------------------------------------- time and text helpers


def _utc_epoch(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=timezone.utc).timestamp())


MAIN_START = _utc_epoch(2025, 8, 14, 9)
WAL_TAIL_START = _utc_epoch(2025, 8, 20, 7)
DIND_START = _utc_epoch(2025, 8, 18, 8)
MCP_CLAUDE_FLOW_START = _utc_epoch(2025, 8, 10, 14)
MCP_RUV_SWARM_START = _utc_epoch(2025, 8, 12, 11)
MCP_TASK_MASTER_START = _utc_epoch(2025, 8, 22, 16)
ORPHAN_WAL_START = _utc_epoch(2025, 8, 5, 10)
BACKEND_V3_START = _utc_epoch(2025, 8, 21, 9)
EXTENDED_MEMORY_START = _utc_epoch(2025, 8, 3, 12)
N8N_START = _utc_epoch(2025, 8, 1, 20)
FLOWISE_START = _utc_epoch(2025, 8, 2, 15)
DAY = 86_400

BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _rng(label: str) -> random.Random:
    """An independent, reproducible random stream per purpose (str seeds do not depend on hashing)."""
    return random.Random(f"consolidate-sample:{label}")


def _json(value: object) -> str:
    """JSON the way the JavaScript writers produce it: compact, non-ASCII kept as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _iso_z(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def _naive_text(epoch_seconds: int, fraction: str = "") -> str:
    """Naive UTC text, `YYYY-MM-DD HH:MM:SS` plus an optional `.fraction`."""
    text = datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{fraction}" if fraction else text


def _random_id(rng: random.Random, length: int = 9, alphabet: str = BASE36) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def _uuid(rng: random.Random) -> str:
    hexdigits = _random_id(rng, 32, "0123456789abcdef")
    parts = (hexdigits[:8], hexdigits[8:12], "4" + hexdigits[13:16], hexdigits[16:20], hexdigits[20:])
    return "-".join(parts)


def _with_millis(rng: random.Random, epoch_seconds: int) -> int:
    return epoch_seconds * 1000 + rng.randrange(1000)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _revised(value: str, revised_by: str) -> str:
    """A different version of a JSON-object value, as another copy of the swarm would have written it."""
    document = json.loads(value)
    document["revisedBy"] = revised_by
    return _json(document)


# ------------------------------------------------------------------------------ vocabulary (small)

COMMANDS = (
    "docker compose ps", "git status --short", "ls -la /opt/sutazaiapp/scripts/mcp",
    "pytest -q tests/unit", "cat /opt/sutazaiapp/.mcp.json", "docker logs sutazai-backend --tail 50",
    "npx claude-flow@alpha hooks pre-task", "curl -s localhost:10010/health", "make lint",
    "rm -f /tmp/sutazai-*.lock", "python -m scripts.check_ports", "du -sh /opt/sutazaiapp/data/*",
)
PROJECT_DIRS = ("backend/app", "frontend/src", "scripts/mcp", "docker", "agents/core", ".claude",
                "tests/unit")
PROJECT_FILES = ("main.py", "config.yaml", "settings.local.json", "Dockerfile", "wrapper.sh", "router.ts",
                 "README.md", "requirements.txt", "health.py", "compose.yml")
AGENT_TYPES = ("coder", "reviewer", "tester", "system-admin", "config-specialist", "researcher")
TOPOLOGIES = ("mesh", "hierarchical", "ring", "star")


def _project_file(rng: random.Random) -> str:
    return f"/opt/sutazaiapp/{rng.choice(PROJECT_DIRS)}/{rng.choice(PROJECT_FILES)}"


# --------------------------------------------------------------------------- claude-flow v2 rows


@dataclass(frozen=True)
class V2Row:
    """One memory_entries row of claude-flow v2, in insert-column order (id is assigned by SQLite)."""

    key: str
    value: str
    namespace: str
    metadata: str | None
    created_at: int
    updated_at: int
    accessed_at: int
    access_count: int
    ttl: int | None
    expires_at: int | None


V2_COLUMNS = tuple(field.name for field in fields(V2Row))


def _v2_row(key: str, value: str, namespace: str, at: int, metadata: str | None = None,
            ttl: int | None = None) -> V2Row:
    return V2Row(key=key, value=value, namespace=namespace, metadata=metadata, created_at=at,
                 updated_at=at, accessed_at=at, access_count=0, ttl=ttl,
                 expires_at=at + ttl if ttl is not None else None)


def _session_id(rng: random.Random, at: int) -> str:
    return f"session-{_with_millis(rng, at)}-{_random_id(rng)}"


def _command_metrics_row(rng: random.Random, at: int) -> V2Row:
    at_ms = _with_millis(rng, at)
    command = rng.choice(COMMANDS)
    value = {"commandLength": len(command), "outputLength": 0, "success": True,
             "duration": rng.randint(2, 4500), "exitCode": 0, "timestamp": _iso_z(at_ms),
             "complexity": "low"}
    return _v2_row(f"command-metrics:bash-{at_ms}-{_random_id(rng)}", _json(value),
                   "performance-metrics", at)


def _session_end_row(rng: random.Random, at: int) -> V2Row:
    session_id = _session_id(rng, at)
    value = {"endedAt": _iso_z(at * 1000), "totalTasks": rng.randint(0, 6),
             "totalEdits": rng.randint(0, 14), "totalCommands": rng.randint(0, 120),
             "uniqueAgents": rng.randint(0, 4), "sessionId": session_id, "generateSummary": True,
             "persistState": True}
    if rng.random() < 0.5:
        value["agentType"] = rng.choice(AGENT_TYPES)
        value["topology"] = rng.choice(TOPOLOGIES)
    return _v2_row(f"session:{session_id}", _json(value), "sessions", at,
                   metadata=_json({"hookType": "session-end"}))


def _session_state_row(rng: random.Random, at: int) -> V2Row:
    session_id = _session_id(rng, at)
    state = {"sessionId": session_id, "tasks": [],
             "edits": [{"file": _project_file(rng), "timestamp": _iso_z(at * 1000 - 60_000)}],
             "commands": [rng.choice(COMMANDS) for _ in range(rng.randint(1, 4))], "agents": [],
             "persistedAt": _iso_z(at * 1000), "fullState": True}
    text = _json(state)
    if rng.random() < 0.6:
        text = "__compressed__" + base64.b64encode(text.encode()).decode("ascii")
    return _v2_row(f"session-state:{session_id}", text, "session-states", at,
                   metadata=_json({"type": "full-state", "sessionId": session_id}))


def _session_metrics_row(rng: random.Random, at: int) -> V2Row:
    session_id = _session_id(rng, at)
    duration_ms = rng.randint(30_000, 3_600_000)
    value = {"sessionDuration": duration_ms, "sessionDurationHuman": f"{duration_ms // 60_000} minutes",
             "totalTasks": rng.randint(0, 5), "totalEdits": rng.randint(0, 9),
             "totalCommands": rng.randint(1, 90), "commandSuccessRate": 100,
             "timestamp": _iso_z(at * 1000)}
    return _v2_row(f"session-metrics:{session_id}", _json(value), "session-metrics", at,
                   metadata=_json({"type": "performance-metrics", "sessionId": session_id}))


def _command_history_row(rng: random.Random, at: int) -> V2Row:
    at_ms = _with_millis(rng, at)
    value = {"command": rng.choice(COMMANDS), "exitCode": "0", "timestamp": _iso_z(at_ms),
             "success": True, "hasMetrics": "true", "hasResults": "true"}
    return _v2_row(f"command-history:{at_ms}", _json(value), "command-history", at)


def _pre_bash_row(rng: random.Random, at: int) -> V2Row:
    at_ms = _with_millis(rng, at)
    bash_id = f"bash-{at_ms}-{_random_id(rng)}"
    command = rng.choice(COMMANDS)
    value = {"command": command, "workingDir": f"/opt/sutazaiapp/{rng.choice(PROJECT_DIRS)}",
             "timestamp": _iso_z(at_ms), "bashId": bash_id, "safety": "safe",
             "validationEnabled": True, "resourcesPrepped": True}
    metadata = {"hookType": "pre-bash", "command": command, "safety": "safe"}
    return _v2_row(f"bash:{bash_id}:pre", _json(value), "hooks:pre-bash", at, metadata=_json(metadata))


def _edit_context_row(rng: random.Random, at: int) -> V2Row:
    at_ms = _with_millis(rng, at)
    edit_id = f"edit-{at_ms}-{_random_id(rng)}"
    path = _project_file(rng)
    directory, _, basename = path.rpartition("/")
    value = {"file": path, "editedAt": _iso_z(at_ms), "editId": edit_id,
             "formatted": rng.random() < 0.5, "fileSize": rng.randint(200, 40_000),
             "directory": directory, "basename": basename}
    return _v2_row(f"edit-context:{edit_id}", _json(value), "coordination", at,
                   metadata=_json({"type": "edit-context", "file": path}))


def _agent_assignment_row(rng: random.Random, at: int) -> V2Row:
    path = _project_file(rng)
    value = {"type": rng.choice(AGENT_TYPES), "file": path, "extension": "." + path.rpartition(".")[2],
             "recommended": True}
    return _v2_row(f"agent-recommendation:{path}", _json(value), "agent-assignments", at, ttl=3600)


V2_ROW_MAKERS: dict[str, Callable[[random.Random, int], V2Row]] = {
    "performance-metrics": _command_metrics_row,
    "sessions": _session_end_row,
    "session-states": _session_state_row,
    "session-metrics": _session_metrics_row,
    "command-history": _command_history_row,
    "hooks:pre-bash": _pre_bash_row,
    "coordination": _edit_context_row,
    "agent-assignments": _agent_assignment_row,
}

# Values that are not JSON objects: (namespace, key prefix, value). Plan kind "odd" takes the next one.
ODD_VALUES = (
    ("default", "notes", "# Notes\n- item\n- check the dind swarm before pruning"),
    ("default", "readme", "## Swarm status\n\nAll agents **idle**. Next: `consolidate load`.\n"),
    ("default", "handoff", "Déploiement terminé ✅ — reprise demain"),
    ("coordination", "swarm:counter", "42"),
    ("coordination", "swarm:label", '"quoted"'),
    ("coordination", "swarm:last-error", "null"),
    ("command-history", "command-history:note", "plain text, not JSON"),
)


def _odd_value_row(rng: random.Random, at: int, template: tuple[str, str, str]) -> V2Row:
    namespace, key_prefix, value = template
    return _v2_row(f"{key_prefix}:{_random_id(rng)}", value, namespace, at)


def _touched(rng: random.Random, row: V2Row) -> V2Row:
    """The row as it looks after later updates and reads."""
    updated_at = row.created_at + rng.randint(30, 1800)
    return replace(row, updated_at=updated_at, accessed_at=updated_at + rng.randint(1, 900),
                   access_count=rng.randint(1, 12))


def _activity_rows(rng: random.Random, start: int, plan: dict[str, int], taken: set[tuple],
                   gap: tuple[int, int] = (5, 120)) -> list[V2Row]:
    """Rows of one swarm's activity: `plan` counts rows per kind, shuffled along a ticking clock.

    `taken` holds every (key, namespace) of the whole sample, so files never share a key by chance:
    the only cross-file duplicates are the ones made on purpose.
    """
    kinds = [kind for kind, count in plan.items() for _ in range(count)]
    rng.shuffle(kinds)
    odd_values: Iterator[tuple[str, str, str]] = iter(ODD_VALUES)
    rows, at = [], start
    for kind in kinds:
        at += rng.randint(*gap)
        if kind == "odd":
            make = functools.partial(_odd_value_row, template=next(odd_values))
        else:
            make = V2_ROW_MAKERS[kind]
        row = make(rng, at)
        while (row.key, row.namespace) in taken:
            row = make(rng, at)
        taken.add((row.key, row.namespace))
        rows.append(_touched(rng, row) if rng.random() < 0.15 else row)
    return rows


def _metrics_summary_row(rows: list[V2Row]) -> V2Row:
    metrics = [row for row in rows if row.namespace == "performance-metrics"]
    durations = [json.loads(row.value)["duration"] for row in metrics]
    first, last = metrics[0].created_at, metrics[-1].created_at
    value = {"totalCommands": len(metrics), "successRate": 1,
             "avgDuration": round(sum(durations) / len(durations), 2), "lastUpdated": _iso_z(last * 1000)}
    return replace(_v2_row("command-metrics-summary", _json(value), "performance-metrics", first),
                   updated_at=last, accessed_at=last, access_count=2 * len(metrics))


def _millisecond_trap_row(rng: random.Random, at: int, taken: set[tuple]) -> V2Row:
    """A sessions row whose seconds columns hold epoch milliseconds."""
    row = _session_end_row(rng, at)
    taken.add((row.key, row.namespace))
    created_ms = _with_millis(rng, at)
    return replace(row, created_at=created_ms, updated_at=created_ms + 2_500,
                   accessed_at=created_ms + 7_250, access_count=3)


MAIN_PLAN = {"performance-metrics": 70, "sessions": 24, "session-states": 20, "session-metrics": 20,
             "command-history": 74, "hooks:pre-bash": 74, "coordination": 59, "agent-assignments": 30,
             "odd": len(ODD_VALUES)}                                       # + trap + summary = 380
WAL_TAIL_PLAN = {"performance-metrics": 3, "command-history": 5, "hooks:pre-bash": 5,
                 "coordination": 4, "sessions": 2, "agent-assignments": 1}  # 20
DIND_PLAN = {"performance-metrics": 19, "sessions": 8, "session-states": 6, "session-metrics": 6,
             "command-history": 20, "hooks:pre-bash": 20, "coordination": 16, "agent-assignments": 10}  # 105
MCP_CLAUDE_FLOW_PLAN = {"performance-metrics": 2, "command-history": 3, "hooks:pre-bash": 3,
                        "coordination": 2}                                 # 10 (+2 duplicates)
MCP_RUV_SWARM_PLAN = {"performance-metrics": 4, "sessions": 3, "session-states": 2,
                      "command-history": 4, "coordination": 3, "agent-assignments": 2}  # 18 (+2)
MCP_TASK_MASTER_PLAN = {"performance-metrics": 5, "sessions": 3, "session-metrics": 3,
                        "command-history": 6, "hooks:pre-bash": 6, "coordination": 3}  # 26 (+2)
ORPHAN_WAL_PLAN = {"command-history": 3, "hooks:pre-bash": 3}


@dataclass
class MainV2Rows:
    checkpointed: list[V2Row]  # in the main file
    wal_only: list[V2Row]      # only in memory.db-wal
    millisecond_trap: V2Row


def _main_v2_rows(taken: set[tuple]) -> MainV2Rows:
    rng = _rng("main-v2")
    rows = _activity_rows(rng, MAIN_START, MAIN_PLAN, taken, gap=(60, 2400))
    middle = len(rows) // 2
    trap = _millisecond_trap_row(rng, rows[middle].created_at + 7, taken)
    rows.insert(middle + 1, trap)
    rows.append(_metrics_summary_row(rows))
    taken.add(("command-metrics-summary", "performance-metrics"))
    wal_only = _activity_rows(rng, WAL_TAIL_START, WAL_TAIL_PLAN, taken, gap=(20, 300))
    return MainV2Rows(checkpointed=rows, wal_only=wal_only, millisecond_trap=trap)


# ---------------------------------------------------------------------- deliberate duplicates


class DonorPool:
    """Rows other files may duplicate, handed out at most once so duplicate cases never overlap."""

    def __init__(self, rng: random.Random, rows: list[V2Row]):
        self._rows = [row for row in rows if row.ttl is None and _is_json_object(row.value)]
        rng.shuffle(self._rows)

    def take(self, accept: Callable[[V2Row], bool] = lambda row: True) -> V2Row:
        for index, row in enumerate(self._rows):
            if accept(row):
                return self._rows.pop(index)
        raise LookupError("no donor row left that fits")


def _rival(row: V2Row, revised_by: str, updated_at: int, accessed_at: int | None = None,
           created_at: int | None = None) -> V2Row:
    """Another file's version of `row`: same (key, namespace), different value and times."""
    return replace(row, value=_revised(row.value, revised_by),
                   created_at=min(row.created_at, updated_at) if created_at is None else created_at,
                   updated_at=updated_at, accessed_at=updated_at if accessed_at is None else accessed_at,
                   access_count=row.access_count + 1)


def _newer_rival(rng: random.Random, row: V2Row, revised_by: str) -> V2Row:
    return _rival(row, revised_by, updated_at=row.updated_at + rng.randint(3600, DAY))


def _older_rival(rng: random.Random, row: V2Row, revised_by: str) -> V2Row:
    return _rival(row, revised_by, updated_at=row.updated_at - rng.randint(600, DAY))


def _dind_rivals(rng: random.Random, main: MainV2Rows, donors: DonorPool) -> list[V2Row]:
    """The 15 dind rows that duplicate main-file rows, one group per tie-breaking case."""
    def settled_before_dind(row: V2Row) -> bool:
        return row.updated_at < DIND_START - DAY

    def read_after_update(row: V2Row) -> bool:
        return settled_before_dind(row) and row.accessed_at > row.updated_at

    newer = [_newer_rival(rng, donors.take(settled_before_dind), "dind") for _ in range(6)]
    older = [_older_rival(rng, donors.take(settled_before_dind), "dind") for _ in range(4)]
    wal_row = DonorPool(rng, main.wal_only).take()
    older_than_wal_row = _rival(wal_row, "dind",
                                updated_at=wal_row.updated_at - rng.randint(2 * DAY, 3 * DAY))
    tie_read_later = donors.take(settled_before_dind)
    tie_read_earlier = donors.take(read_after_update)
    full_tie = donors.take(settled_before_dind)
    trap = main.millisecond_trap
    return [
        *newer, *older, older_than_wal_row,
        _rival(tie_read_later, "dind", updated_at=tie_read_later.updated_at,
               accessed_at=tie_read_later.accessed_at + rng.randint(60, 600)),
        _rival(tie_read_earlier, "dind", updated_at=tie_read_earlier.updated_at,
               accessed_at=tie_read_earlier.updated_at),
        _rival(full_tie, "dind", updated_at=full_tie.updated_at, accessed_at=full_tie.accessed_at),
        _rival(trap, "dind", updated_at=trap.updated_at // 1000 + 1800, created_at=trap.created_at // 1000),
    ]


def _interleave(rng: random.Random, rows: list[V2Row], extra: list[V2Row]) -> list[V2Row]:
    merged = list(rows)
    for row in extra:
        merged.insert(rng.randint(0, len(merged)), row)
    return merged


# ------------------------------------------------------------------------------ claude-flow v3 rows


@dataclass(frozen=True)
class V3Entry:
    """One memory_entries row of claude-flow v3 (all times in epoch milliseconds)."""

    id: str
    key: str
    namespace: str | None
    content: str
    type: str
    embedding: str | None
    embedding_model: str
    embedding_dimensions: int | None
    tags: str | None
    metadata: str | None
    owner_id: str | None
    created_at: int
    updated_at: int
    expires_at: int | None
    last_accessed_at: int | None
    access_count: int
    status: str


V3_COLUMNS = tuple(field.name for field in fields(V3Entry))
V3_EMBEDDING_DIMENSIONS = 8


def _embedding(rng: random.Random) -> str:
    return _json([round(rng.uniform(-0.2, 0.2), 6) for _ in range(V3_EMBEDDING_DIMENSIONS)])


def _v3_entry(rng: random.Random, at_ms: int, key: str, namespace: str | None, content: str, kind: str,
              tags: list[str], with_embedding: bool, expires_at: int | None = None) -> V3Entry:
    updated_at = at_ms + (rng.randint(1_000, 600_000) if rng.random() < 0.3 else 0)
    read = rng.random() < 0.5
    return V3Entry(
        id=f"entry_{at_ms}_{_random_id(rng, 6)}", key=key, namespace=namespace, content=content, type=kind,
        embedding=_embedding(rng) if with_embedding else None,
        embedding_model="onnx" if with_embedding else "local",
        embedding_dimensions=V3_EMBEDDING_DIMENSIONS if with_embedding else None,
        tags=_json(tags), metadata=_json({"source": "hooks"}) if rng.random() < 0.3 else "{}",
        owner_id=rng.choice((None, None, "agent-coder-1", "agent-reviewer-2")),
        created_at=at_ms, updated_at=updated_at, expires_at=expires_at,
        last_accessed_at=updated_at + rng.randint(0, 3_600_000) if read else None,
        access_count=rng.randint(1, 20) if read else 0,
        status="archived" if rng.random() < 0.1 else "active")


def _v3_command_metrics(rng: random.Random, at_ms: int) -> V3Entry:
    command = rng.choice(COMMANDS)
    content = {"commandLength": len(command), "outputLength": 0, "success": True,
               "duration": rng.randint(2, 4500), "exitCode": 0, "timestamp": _iso_z(at_ms),
               "complexity": "low"}
    return _v3_entry(rng, at_ms, f"command-metrics:bash-{at_ms}-{_random_id(rng)}", "performance-metrics",
                     _json(content), "procedural", ["metrics", "bash"], with_embedding=False)


def _v3_semantic_note(rng: random.Random, at_ms: int) -> V3Entry:
    topic = rng.choice(("ports", "mcp-wrappers", "deploy", "agents", "backups", "monitoring"))
    if rng.random() < 0.5:
        content = _json({"topic": topic, "summary": f"{topic} notes for sutazaiapp",
                         "confidence": rng.randint(1, 9) / 10})
    else:
        content = f"# {topic}\n\n- {rng.choice(COMMANDS)}\n- see {_project_file(rng)}\n"
    return _v3_entry(rng, at_ms, f"knowledge:{topic}:{_random_id(rng, 6)}", "sutazai", content, "semantic",
                     ["sutazai", topic], with_embedding=True)


def _v3_pattern(rng: random.Random, at_ms: int) -> V3Entry:
    content = {"trigger": rng.choice(COMMANDS), "action": f"assign {rng.choice(AGENT_TYPES)}",
               "confidence": round(rng.uniform(0.3, 0.95), 3)}
    return _v3_entry(rng, at_ms, f"pattern:{_random_id(rng, 8)}", "patterns", _json(content), "pattern",
                     ["routing"], with_embedding=True)


def _v3_episode(rng: random.Random, at_ms: int) -> V3Entry:
    content = {"episode": f"session-{at_ms}", "outcome": rng.choice(("success", "partial", "failure")),
               "steps": rng.randint(1, 30)}
    return _v3_entry(rng, at_ms, f"episode:{at_ms}", "episodes", _json(content), "episodic",
                     ["session"], with_embedding=rng.random() < 0.5)


def _v3_working(rng: random.Random, at_ms: int) -> V3Entry:
    content = {"task": rng.choice(COMMANDS), "agent": rng.choice(AGENT_TYPES)}
    return _v3_entry(rng, at_ms, f"scratch:{_random_id(rng, 8)}", "swarm", _json(content), "working",
                     ["scratch"], with_embedding=False, expires_at=at_ms + 3_600_000)


V3_ROW_MAKERS: dict[str, Callable[[random.Random, int], V3Entry]] = {
    "performance-metrics": _v3_command_metrics,
    "semantic": _v3_semantic_note,
    "pattern": _v3_pattern,
    "episodic": _v3_episode,
    "working": _v3_working,
}
BACKEND_V3_PLAN = {"performance-metrics": 16, "semantic": 22, "pattern": 14, "episodic": 12, "working": 11}


def _v3_version_of(rng: random.Random, row: V2Row, updated_at_seconds: int) -> V3Entry:
    """The backend's v3 copy of a v2 row: same (key, namespace), revised content, milliseconds."""
    at_ms = _with_millis(rng, min(row.created_at, updated_at_seconds))
    entry = _v3_entry(rng, at_ms, row.key, row.namespace, _revised(row.value, "backend-v3"), "semantic",
                      ["migrated-from-v2"], with_embedding=False)
    return replace(entry, updated_at=_with_millis(rng, updated_at_seconds), last_accessed_at=None,
                   access_count=0)


def _null_namespace_entry(rng: random.Random, at_ms: int) -> V3Entry:
    return _v3_entry(rng, at_ms, "orphan-note", None, "Written by a v3 client that passed namespace=null.",
                     "working", [], with_embedding=False)


def _backend_v3_entries(taken: set[tuple], donors: DonorPool) -> list[V3Entry]:
    rng = _rng("backend-v3")
    kinds = [kind for kind, count in BACKEND_V3_PLAN.items() for _ in range(count)]
    rng.shuffle(kinds)
    entries, at = [], BACKEND_V3_START
    for kind in kinds:
        at += rng.randint(20, 900)
        entry = V3_ROW_MAKERS[kind](rng, _with_millis(rng, at))
        while (entry.key, entry.namespace) in taken:
            entry = V3_ROW_MAKERS[kind](rng, _with_millis(rng, at))
        taken.add((entry.key, entry.namespace))
        entries.append(entry)
    for direction in (+1, -1, +1, -1):  # two newer, two older than the main file's version
        row = donors.take()
        updated_at = row.updated_at + direction * rng.randint(DAY, 2 * DAY)
        entries.insert(rng.randint(0, len(entries)), _v3_version_of(rng, row, updated_at))
    entries.insert(rng.randint(0, len(entries)), _null_namespace_entry(rng, _with_millis(rng, at + 60)))
    return entries


V3_SESSION_COLUMNS = ("id", "state", "status", "project_path", "branch", "tasks_completed",
                      "patterns_learned", "created_at", "updated_at", "expires_at")


def _backend_v3_sessions(rng: random.Random) -> list[tuple]:
    rows = []
    for index, status in enumerate(("completed", "completed", "paused", "active", "expired")):
        created = _with_millis(rng, BACKEND_V3_START + index * 5400)
        session_id = f"session-{created}-{_random_id(rng)}"
        state = {"sessionId": session_id, "agents": rng.sample(AGENT_TYPES, 2),
                 "topology": rng.choice(TOPOLOGIES), "openTasks": rng.randint(0, 4)}
        updated = created + rng.randint(60_000, 5_000_000)
        expires = created + 86_400_000 if status in ("active", "expired") else None
        branch = rng.choice(("main", "v3-migration"))
        rows.append((session_id, _json(state), status, "/opt/sutazaiapp", branch, rng.randint(0, 15),
                     rng.randint(0, 4), created, updated, expires))
    return rows


def _backend_v3_metadata() -> list[tuple]:
    at_ms = BACKEND_V3_START * 1000
    return [("schema_version", "3.0.0", at_ms), ("backend", "hybrid", at_ms),
            ("created_at", _iso_z(at_ms + 515), at_ms), ("vector_embeddings", "enabled", at_ms),
            ("pattern_learning", "enabled", at_ms)]


# ------------------------------------------------------------------------------ extended memory rows

EXTENDED_TYPES = ("none", "str", "int", "float", "bool", "dict", "list", "pickle")
EXTENDED_AREAS = ("project", "agent", "user", "task", "cache")
EXTENDED_TOPICS = ("sutazai", "deploy", "ports", "preferences", "roadmap", "ollama", "monitoring", "backups")


EXTENDED_MEMORY_COLUMNS = ("key", "value", "type", "created_at", "updated_at", "accessed_at", "access_count")


def _extended_value(rng: random.Random, kind: str) -> str:
    """The stored text for a value of `kind`: json.dumps, or base64 of a pickle for `pickle`."""
    if kind == "pickle":
        payload = {"agent": rng.choice(AGENT_TYPES), "score": rng.randint(0, 100)}
        return base64.b64encode(pickle.dumps(payload, protocol=4)).decode("ascii")
    python_value = {
        "none": lambda: None,
        "str": lambda: rng.choice(("prefer docker compose v2", "ollama on :10104", "Zeitplan: 03:00 UTC")),
        "int": lambda: rng.randint(-5, 10_000),
        "float": lambda: round(rng.uniform(0, 100), 3),
        "bool": lambda: rng.random() < 0.5,
        "dict": lambda: {"owner": rng.choice(AGENT_TYPES), "priority": rng.randint(1, 5),
                         "tags": ["sutazai"]},
        "list": lambda: [rng.choice(COMMANDS) for _ in range(rng.randint(0, 3))],
    }[kind]()
    return json.dumps(python_value)


def _extended_time(rng: random.Random, epoch_seconds: int) -> str:
    """Either format the application writes: with microseconds or without."""
    return _naive_text(epoch_seconds, f"{rng.randrange(1_000_000):06d}" if rng.random() < 0.5 else "")


def _extended_memory_rows(rng: random.Random) -> list[tuple]:
    kinds = list(EXTENDED_TYPES) * 5
    rng.shuffle(kinds)
    rows, keys, at = [], set(), EXTENDED_MEMORY_START
    for kind in kinds:
        at += rng.randint(60, 7200)
        key = f"{rng.choice(EXTENDED_AREAS)}:{rng.choice(EXTENDED_TOPICS)}:{_random_id(rng, 4)}"
        while key in keys:
            key = f"{rng.choice(EXTENDED_AREAS)}:{rng.choice(EXTENDED_TOPICS)}:{_random_id(rng, 4)}"
        keys.add(key)
        updated = at + (rng.randint(10, DAY) if rng.random() < 0.4 else 0)
        accessed = updated + rng.randint(0, 2 * DAY)
        rows.append((key, _extended_value(rng, kind), kind, _extended_time(rng, at),
                     _extended_time(rng, updated), _extended_time(rng, accessed), rng.randint(1, 25)))
    return rows


def _extended_memory_metadata() -> list[tuple]:
    return [("schema_version", "1.2", _naive_text(EXTENDED_MEMORY_START)),
            ("created_by", "extended-memory-mcp", _naive_text(EXTENDED_MEMORY_START)),
            ("last_cleanup", "2025-08-19 03:00:00", _naive_text(_utc_epoch(2025, 8, 19, 3), "000412"))]


# ------------------------------------------------------------------------------- n8n and Flowise rows


def _app_time(rng: random.Random, epoch_seconds: int) -> str:
    """The TypeORM text format both apps use: `2025-08-01 20:01:03.449`."""
    return _naive_text(epoch_seconds, f"{rng.randrange(1000):03d}")


def _n8n_tables(rng: random.Random) -> dict[str, list[tuple]]:
    at = N8N_START
    workflow_ids = [_random_id(rng, 16, ALNUM) for _ in range(3)]
    workflows = []
    names = ("Nightly backup", "Health alerts", "Agent intake")
    for index, (workflow_id, name) in enumerate(zip(workflow_ids, names)):
        nodes = [{"id": _uuid(rng), "name": "Schedule Trigger", "type": "n8n-nodes-base.scheduleTrigger",
                  "position": [0, 0], "parameters": {}},
                 {"id": _uuid(rng), "name": "HTTP Request", "type": "n8n-nodes-base.httpRequest",
                  "position": [220, 0], "parameters": {"url": "http://backend:8000/health"}}]
        connections = {"Schedule Trigger": {"main": [[{"node": "HTTP Request", "type": "main", "index": 0}]]}}
        created = _app_time(rng, at + index * 3600)
        workflows.append((workflow_id, name, index % 2, _json(nodes), _json(connections), created,
                          _app_time(rng, at + index * 3600 + 900)))
    credentials = [(_random_id(rng, 16, ALNUM), name, "U2FsdGVkX1" + _random_id(rng, 54, ALNUM), kind,
                    _app_time(rng, at + 600), _app_time(rng, at + 600))
                   for name, kind in (("Backend token", "httpHeaderAuth"), ("Ops mailbox", "smtp"))]
    executions = []
    for index in range(6):
        started = at + DAY + index * 3600
        status = "error" if index == 4 else "success"
        executions.append((rng.choice(workflow_ids), int(status == "success"),
                           rng.choice(("trigger", "manual", "webhook")), _app_time(rng, started),
                           _app_time(rng, started + rng.randint(1, 40)), status))
    users = [(_uuid(rng), "owner@sutazai.local", "Ops", "Owner", "$2a$10$" + _random_id(rng, 53, ALNUM),
              _app_time(rng, at - 3600), _app_time(rng, at))]
    settings = [("userManagement.isInstanceOwnerSetUp", "true", 1), ("ui.banners.dismissed", '["V1"]', 1),
                ("features.ldap", '{"loginEnabled":false}', 1)]
    migrations = [(1588102412422, "InitialMigration1588102412422"),
                  (1592445003908, "WebhookModel1592445003908"),
                  (1594825041918, "CreateIndexStoppedAt1594825041918"),
                  (1607431743768, "MakeStoppedAtNullable1607431743768")]
    return {"workflow_entity": workflows, "credentials_entity": credentials, "execution_entity": executions,
            "user": users, "settings": settings, "migrations": migrations}


N8N_COLUMNS = {
    "workflow_entity": ("id", "name", "active", "nodes", "connections", "createdAt", "updatedAt"),
    "credentials_entity": ("id", "name", "data", "type", "createdAt", "updatedAt"),
    "execution_entity": ("workflowId", "finished", "mode", "startedAt", "stoppedAt", "status"),
    "user": ("id", "email", "firstName", "lastName", "password", "createdAt", "updatedAt"),
    "settings": ("key", "value", "loadOnStartup"),
    "migrations": ("timestamp", "name"),
}


def _api_secret(rng: random.Random) -> str:
    """Shaped like Flowise's stored secret: a hex hash, a dot, a hex salt."""
    return _random_id(rng, 64, "0123456789abcdef") + "." + _random_id(rng, 32, "0123456789abcdef")


def _flowise_tables(rng: random.Random) -> dict[str, list[tuple]]:
    at = FLOWISE_START
    flows = []
    for index, name in enumerate(("Docs QA", "Ops assistant")):
        node = {"id": "chatOllama_0", "data": {"name": "chatOllama", "inputs": {"model": "tinyllama"}}}
        flow_data = {"nodes": [node], "edges": []}
        flows.append((_uuid(rng), name, index % 2, _json(flow_data), _app_time(rng, at + index * 900),
                      _app_time(rng, at + index * 900 + 300)))
    messages = []
    for index in range(6):
        role = "userMessage" if index % 2 == 0 else "apiMessage"
        content = ("How do I restart the backend?" if role == "userMessage"
                   else "Run `docker compose restart backend`.")
        messages.append((_uuid(rng), role, flows[index % 2][0], content,
                         _app_time(rng, at + 3600 + index * 45)))
    credentials = [(_uuid(rng), "ollama-local", "ollamaApi", "U2FsdGVkX1" + _random_id(rng, 40, ALNUM),
                    _app_time(rng, at), _app_time(rng, at))]
    apikeys = [(_uuid(rng), _random_id(rng, 43, ALNUM), _api_secret(rng), name, _app_time(rng, at + 120))
               for name in ("DefaultKey", "ci")]
    migrations = [(1693835579790, "Init1693835579790"), (1693920824108, "ModifyChatFlow1693920824108"),
                  (1693921865247, "ModifyChatMessage1693921865247")]
    return {"chat_flow": flows, "chat_message": messages, "credential": credentials, "apikey": apikeys,
            "migrations": migrations}


FLOWISE_COLUMNS = {
    "chat_flow": ("id", "name", "flowData", "deployed", "createdDate", "updatedDate"),
    "chat_message": ("id", "role", "chatflowid", "content", "createdDate"),
    "credential": ("id", "name", "credentialName", "encryptedData", "createdDate", "updatedDate"),
    "apikey": ("id", "apiKey", "apiSecret", "keyName", "updatedDate"),
    "migrations": ("timestamp", "name"),
}


# ---------------------------------------------------------------------------------- SQLite writing


def _open_new_db(path: Path, journal_mode: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    return conn


def _insert(conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    column_list = ", ".join(f'"{column}"' for column in columns)
    placeholders = ", ".join("?" for _ in columns)
    conn.execute("BEGIN")
    conn.executemany(f'INSERT INTO "{table}" ({column_list}) VALUES ({placeholders})', rows)
    conn.execute("COMMIT")


def _insert_v2_rows(conn: sqlite3.Connection, rows: list[V2Row]) -> None:
    _insert(conn, "memory_entries", V2_COLUMNS, [astuple(row) for row in rows])


def _write_db(path: Path, ddl: str, tables: dict[str, tuple[tuple[str, ...], list[tuple]]]) -> None:
    """A rollback-journal (DELETE mode) database holding `tables` ({name: (columns, rows)})."""
    conn = _open_new_db(path, journal_mode="delete")
    try:
        conn.executescript(ddl)
        for table, (columns, rows) in tables.items():
            _insert(conn, table, columns, rows)
    finally:
        conn.close()


def _write_v2_db(path: Path, rows: list[V2Row]) -> None:
    _write_db(path, V2_DDL, {"memory_entries": (V2_COLUMNS, [astuple(row) for row in rows])})


def _write_v2_db_with_wal_tail(path: Path, checkpointed: list[V2Row], wal_only: list[V2Row]) -> None:
    """A WAL-mode v2 database whose `wal_only` rows exist only in `<path>-wal`.

    Built in a scratch directory: the rows are checkpointed into the main file, the tail is committed
    with automatic checkpoints off, and both files are copied while the connection is still open
    (closing the last connection would checkpoint the WAL into the main file and delete it).
    """
    with tempfile.TemporaryDirectory(prefix="consolidate-sample-") as scratch:
        work = Path(scratch) / "memory.db"
        conn = _open_new_db(work, journal_mode="wal")
        try:
            conn.executescript(V2_DDL)
            _insert_v2_rows(conn, checkpointed)
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                raise RuntimeError("could not checkpoint the sample WAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            _insert_v2_rows(conn, wal_only)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(work, path)
            wal = Path(f"{work}-wal").read_bytes()
        finally:
            conn.close()
    Path(f"{path}-wal").write_bytes(_pin_wal_salts(wal))


def _orphan_wal_bytes(taken: set[tuple]) -> bytes:
    """The WAL of a small v2 database whose schema and rows were never checkpointed."""
    rows = _activity_rows(_rng("orphan-wal"), ORPHAN_WAL_START, ORPHAN_WAL_PLAN, taken)
    with tempfile.TemporaryDirectory(prefix="consolidate-sample-") as scratch:
        work = Path(scratch) / "memory.db"
        conn = _open_new_db(work, journal_mode="wal")
        try:
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.executescript(V2_DDL)
            _insert_v2_rows(conn, rows)
            wal = Path(f"{work}-wal").read_bytes()
        finally:
            conn.close()
    return _pin_wal_salts(wal)


# ---------------------------------------------------------------------------- WAL salt pinning


def _wal_checksum(data: bytes, word_order: str, s0: int, s1: int) -> tuple[int, int]:
    """SQLite's WAL checksum (file format section 4.1), continued from (s0, s1)."""
    words = struct.unpack(f"{word_order}{len(data) // 4}I", data)
    for index in range(0, len(words), 2):
        s0 = (s0 + words[index] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[index + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _frame_checksum(frame: bytes, word_order: str, previous: tuple[int, int]) -> tuple[int, int]:
    """A frame's checksum: over its first 8 header bytes and its page, chained from `previous`."""
    chained = _wal_checksum(frame[:8], word_order, *previous)
    return _wal_checksum(frame[WAL_FRAME_HEADER_SIZE:], word_order, *chained)


def _pin_wal_salts(wal: bytes, salts: tuple[int, int] = PINNED_WAL_SALTS) -> bytes:
    """`wal` with its random salts replaced by `salts` and every checksum recomputed.

    Checks first that every frame is valid under the original salts, so pinning can never revive a
    stale frame. The result is what SQLite would have written had its random generator drawn `salts`.
    """
    magic, _version, page_size, _checkpoint_seq, *old_salts, old_s0, old_s1 = struct.unpack(
        ">8I", wal[:WAL_HEADER_SIZE])
    if magic not in (WAL_MAGIC_LITTLE_ENDIAN, WAL_MAGIC_BIG_ENDIAN):
        raise ValueError("not a WAL file")
    word_order = "<" if magic == WAL_MAGIC_LITTLE_ENDIAN else ">"
    frame_size = WAL_FRAME_HEADER_SIZE + page_size
    if (len(wal) - WAL_HEADER_SIZE) % frame_size:
        raise ValueError("WAL ends in a partial frame")
    if _wal_checksum(wal[:24], word_order, 0, 0) != (old_s0, old_s1):
        raise ValueError("WAL header checksum mismatch")

    header = bytearray(wal[:WAL_HEADER_SIZE])
    struct.pack_into(">2I", header, 16, *salts)
    new_sums = _wal_checksum(bytes(header[:24]), word_order, 0, 0)
    struct.pack_into(">2I", header, 24, *new_sums)
    old_sums = (old_s0, old_s1)
    pinned = bytearray(header)
    for offset in range(WAL_HEADER_SIZE, len(wal), frame_size):
        frame = bytearray(wal[offset:offset + frame_size])
        frame_salts = struct.unpack_from(">2I", frame, 8)
        old_sums = _frame_checksum(frame, word_order, old_sums)
        if list(frame_salts) != old_salts or struct.unpack_from(">2I", frame, 16) != old_sums:
            raise ValueError(f"WAL frame at offset {offset} is not valid; refusing to pin salts")
        struct.pack_into(">2I", frame, 8, *salts)
        new_sums = _frame_checksum(frame, word_order, new_sums)
        struct.pack_into(">2I", frame, 16, *new_sums)
        pinned += frame
    return bytes(pinned)


# ---------------------------------------------------------------------------------- other files


def _not_sqlite_bytes() -> bytes:
    data = _rng("ruvector").randbytes(4096)
    assert not data.startswith(SQLITE_HEADER[:4])
    return data


def _ensure_empty_root(root: Path) -> None:
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"refusing to write the sample into {root}: it exists and is not an empty directory")
    root.mkdir(parents=True, exist_ok=True)


# ------------------------------------------------------------------------------------ entry point


def write_sample(root: Path) -> list[Path]:
    """Write the sample tree under `root` (which must be missing or empty).

    Returns the paths of the SQLite main files written, sorted. The `-wal` next to the main
    memory.db, ruvector.db and the orphan WAL are written too but are not in the list.
    """
    root = Path(root)
    _ensure_empty_root(root)
    taken: set[tuple] = set()  # every (key, namespace) of every claude-flow file, to keep keys apart
    _write_claude_flow_files(root, taken)
    _write_other_app_files(root)
    _write_files_that_are_not_databases(root, taken)
    return sorted(root / relative for relative in (
        MAIN_V2, DIND_V2, BACKUP_OF_DIND, MCP_CLAUDE_FLOW, MCP_RUV_SWARM, MCP_TASK_MASTER, BACKEND_V3,
        EXTENDED_MEMORY, N8N, FLOWISE))


def _write_claude_flow_files(root: Path, taken: set[tuple]) -> None:
    main = _main_v2_rows(taken)
    _write_v2_db_with_wal_tail(root / MAIN_V2, main.checkpointed, main.wal_only)

    # One stream decides every deliberate duplicate; each main row is duplicated at most once.
    duplicates_rng = _rng("duplicates")
    donors = DonorPool(duplicates_rng, [row for row in main.checkpointed if row is not main.millisecond_trap])

    dind_own = _write_v2_file(root / DIND_V2, "dind-v2", DIND_START, DIND_PLAN, taken,
                              lambda own: _dind_rivals(duplicates_rng, main, donors))
    (root / BACKUP_OF_DIND).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / DIND_V2, root / BACKUP_OF_DIND)

    def rivals_of_main_rows(revised_by: str) -> Callable[[list[V2Row]], list[V2Row]]:
        return lambda own: [_newer_rival(duplicates_rng, donors.take(), revised_by),
                            _older_rival(duplicates_rng, donors.take(), revised_by)]

    claude_flow_own = _write_v2_file(root / MCP_CLAUDE_FLOW, "mcp-claude-flow", MCP_CLAUDE_FLOW_START,
                                     MCP_CLAUDE_FLOW_PLAN, taken, rivals_of_main_rows("mcp-claude-flow"))
    def rivals_of_dind_and_claude_flow_rows(own: list[V2Row]) -> list[V2Row]:
        dind_row = DonorPool(duplicates_rng, dind_own).take()
        claude_flow_row = DonorPool(duplicates_rng, claude_flow_own).take()
        return [_newer_rival(duplicates_rng, dind_row, "mcp-ruv-swarm"),
                _older_rival(duplicates_rng, claude_flow_row, "mcp-ruv-swarm")]

    _write_v2_file(root / MCP_RUV_SWARM, "mcp-ruv-swarm", MCP_RUV_SWARM_START, MCP_RUV_SWARM_PLAN, taken,
                   rivals_of_dind_and_claude_flow_rows)
    _write_v2_file(root / MCP_TASK_MASTER, "mcp-task-master", MCP_TASK_MASTER_START, MCP_TASK_MASTER_PLAN,
                   taken, rivals_of_main_rows("mcp-task-master"))

    _write_db(root / BACKEND_V3, V3_DDL, {
        "memory_entries": (V3_COLUMNS, [astuple(entry) for entry in _backend_v3_entries(taken, donors)]),
        "sessions": (V3_SESSION_COLUMNS, _backend_v3_sessions(_rng("backend-v3-tables"))),
        "metadata": (("key", "value", "updated_at"), _backend_v3_metadata()),
    })


def _write_v2_file(path: Path, label: str, start: int, plan: dict[str, int], taken: set[tuple],
                   make_rivals: Callable[[list[V2Row]], list[V2Row]]) -> list[V2Row]:
    """A v2 file of its own activity plus rows duplicating other files; returns its own rows."""
    rng = _rng(label)
    own = _activity_rows(rng, start, plan, taken)
    _write_v2_db(path, _interleave(rng, own, make_rivals(own)))
    return own


def _write_other_app_files(root: Path) -> None:
    _write_db(root / EXTENDED_MEMORY, EXTENDED_MEMORY_DDL, {
        "memory_store": (EXTENDED_MEMORY_COLUMNS, _extended_memory_rows(_rng("extended-memory"))),
        "metadata": (("key", "value", "updated_at"), _extended_memory_metadata()),
    })
    n8n_rows = _n8n_tables(_rng("n8n"))
    _write_db(root / N8N, N8N_DDL, {table: (N8N_COLUMNS[table], rows) for table, rows in n8n_rows.items()})
    flowise_rows = _flowise_tables(_rng("flowise"))
    _write_db(root / FLOWISE, FLOWISE_DDL,
              {table: (FLOWISE_COLUMNS[table], rows) for table, rows in flowise_rows.items()})


def _write_files_that_are_not_databases(root: Path, taken: set[tuple]) -> None:
    (root / RUVECTOR).write_bytes(_not_sqlite_bytes())
    (root / ORPHAN_WAL).parent.mkdir(parents=True, exist_ok=True)
    (root / ORPHAN_WAL).write_bytes(_orphan_wal_bytes(taken))
