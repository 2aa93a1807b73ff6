"""A realistic claude-flow v2 corpus at scale: N `.swarm/memory.db` files of M `memory_entries` rows.

    python bench/generate.py OUT --rows 1M [--files 16] [--seed 4] [--jobs 2]

Writes OUT/proj-NN/.swarm/memory.db (the v2 DDL of loader/fixtures/claude_flow_v2.py) and OUT/corpus.json (what was
written: rows per file and namespace, duplicate keys, bytes). Deterministic: the same arguments write
the same rows (every file has its own seeded random stream, so `--jobs` does not change the output).

Value shapes and sizes follow ../shared/realdata (README.md there, and the measured distribution of
its claude-flow files): JSON objects of ~100 B to ~5 KB written by the hooks (`command-metrics`,
`bash:…:pre/post`, `command-results`, `command-history`, `edit:…`, `file-history`, `session…`,
`agent-recommendation`), `__compressed__` + base64 session states of 1-6 KB, some long Markdown
documents (2-12 KB, namespace `default`), JSON scalars and plain text, ~18% `performance-metrics` (plus
a `command-metrics-summary` in every file, the same key everywhere, as in the real files), expired
`agent-assignments` rows (ttl 3600), metadata NULL for about half the rows. About 3% of the rows of
every file but the first repeat a (key, namespace) of the file before it, some newer, some older.

Keys are a pure function of (file, row), so duplicates are exact and known (corpus.json), and keys never
collide by chance: every file has its own time span, and random-looking ids are a bijection of the
row number.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import sqlite3
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

GENERATOR_VERSION = 1
BASE_EPOCH = 1_735_689_600          # 2025-01-01T00:00:00Z
STEP_MS = 1_750                    # one row every 1.75 s of a swarm's activity, per file
DUPLICATE_PER_MILLE = 30           # rows of file f > 0 that repeat a key of file f - 1
INSERT_BATCH = 20_000

# claude-flow v2 (loader/fixtures/claude_flow_v2.py V2_DDL, copied so the generator runs without the package)
V2_TABLE = """
CREATE TABLE memory_entries (
  id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, value TEXT NOT NULL,
  namespace TEXT NOT NULL DEFAULT 'default', metadata TEXT,
  created_at INTEGER DEFAULT (strftime('%s', 'now')), updated_at INTEGER DEFAULT (strftime('%s', 'now')),
  accessed_at INTEGER DEFAULT (strftime('%s', 'now')), access_count INTEGER DEFAULT 0,
  ttl INTEGER, expires_at INTEGER, UNIQUE(key, namespace))"""
V2_INDEX = "CREATE INDEX idx_memory_namespace ON memory_entries(namespace)"
INSERT = ("INSERT INTO memory_entries (id, key, value, namespace, metadata, created_at, updated_at, "
          "accessed_at, access_count, ttl, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)")

# Row kinds and their share (per mille), close to the real files' namespace mix.
KIND_WEIGHTS = (
    ("command-metrics", 180), ("pre-bash", 160), ("post-bash", 120), ("command-results", 120),
    ("command-history", 120), ("pre-edit", 45), ("post-edit", 45), ("file-history", 40),
    ("edit-context", 60), ("session-end", 20), ("session-state", 20), ("session-metrics", 20),
    ("agent-assignment", 20), ("post-task", 10), ("notify", 10), ("markdown", 6), ("odd", 4),
)
KIND_TABLE = tuple(kind for kind, weight in KIND_WEIGHTS for _ in range(weight))
assert len(KIND_TABLE) == 1000
NAMESPACE = {
    "command-metrics": "performance-metrics", "pre-bash": "hooks:pre-bash", "post-bash": "hooks:post-bash",
    "command-results": "command-results", "command-history": "command-history",
    "pre-edit": "hooks:pre-edit", "post-edit": "hooks:post-edit", "file-history": "file-history",
    "edit-context": "coordination", "session-end": "sessions", "session-state": "session-states",
    "session-metrics": "session-metrics", "agent-assignment": "agent-assignments",
    "post-task": "hooks:post-task", "notify": "hooks:notify", "markdown": "default", "odd": "coordination",
}

BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
ID_SPACE = 36 ** 9
ID_MULTIPLIER = 2_654_435_761     # odd and not a multiple of 3: a bijection modulo 36**9

COMMANDS = (
    "docker compose ps", "git status --short", "ls -la /opt/sutazaiapp/scripts/mcp", "pytest -q tests/unit",
    "cat /opt/sutazaiapp/.mcp.json", "docker logs sutazai-backend --tail 50", "make lint",
    "npx claude-flow@alpha hooks pre-task --description build", "curl -s localhost:10010/health",
    "python -m scripts.check_ports", "du -sh /opt/sutazaiapp/data/*", "npm run build",
    "git diff --stat HEAD~1", "## Database Schema (Supabase Postgres)", "- API routes (Next.js App Router)",
    "grep -rn TODO backend/app | head -40", "docker compose up -d --build backend frontend",
    "kubectl get pods -n sutazai -o wide", "rg --files-with-matches 'import torch' agents/",
)
DIRS = ("backend/app", "backend/app/api/v1", "frontend/src/components", "scripts/mcp", "docker",
        "agents/core", ".claude/commands", "tests/unit", "src/personalparakeet/ui", "services/gateway")
MODULES = ("main", "config", "router", "health", "dictation_view", "settings", "wrapper", "models",
           "schemas", "client", "worker", "tasks")
EXTENSIONS = (".py", ".ts", ".tsx", ".json", ".sh", ".yaml", ".md")
ROOTS = ("/opt/sutazaiapp", "/mnt/windows_e/_projects/PersonalParakeet", "/Users/dev/8ship/junie")
AGENTS = ("coder", "reviewer", "tester", "system-admin", "python-developer", "researcher", "architect")
WORDS = ("agent", "swarm", "memory", "backend", "migration", "sqlite", "postgres", "session", "hook",
         "coordination", "the", "a", "of", "to", "and", "is", "with", "for", "deploy", "container",
         "health", "check", "port", "cache", "redis", "queue", "token", "model", "vector", "index",
         "Déploiement", "terminé", "résumé", "naïve", "über", "✅", "→")
ODD_VALUES = ("42", '"quoted"', "null", "true", "plain text, not JSON", "Déploiement terminé ✅",
              "3.14159", "[]")


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    for suffix, factor in (("k", 1_000), ("m", 1_000_000), ("g", 1_000_000_000)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * factor)
    return int(text)


def size_label(rows: int) -> str:
    for factor, suffix in ((1_000_000, "M"), (1_000, "k")):
        if rows >= factor and rows % factor == 0:
            return f"{rows // factor}{suffix}"
    return str(rows)


def mix(file: int, row: int, salt: int = 0) -> int:
    """A cheap, well-spread 32-bit hash of (file, row, salt): the pure part of a row."""
    h = (row * 0x9E3779B1 + file * 0x85EBCA77 + salt * 0xC2B2AE3D) & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x7FEB352D) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 0x846CA68B) & 0xFFFFFFFF
    return h ^ (h >> 16)


def random_id(file: int, row: int) -> str:
    """9 base36 characters that look random and never repeat (a bijection of the global row number)."""
    n = ((file * 100_000_000 + row) * ID_MULTIPLIER + 12_345) % ID_SPACE
    chars = []
    for _ in range(9):
        n, digit = divmod(n, 36)
        chars.append(BASE36[digit])
    return "".join(chars)


def iso_z(epoch_ms: int) -> str:
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


@dataclass(frozen=True)
class Layout:
    files: int
    rows_per_file: int
    seed: int

    def span_ms(self) -> int:
        return (self.rows_per_file + 10) * STEP_MS * 2

    def at_ms(self, file: int, row: int) -> int:
        """Strictly increasing within a file; files occupy disjoint time spans."""
        return (BASE_EPOCH * 1000 + file * self.span_ms() + row * STEP_MS
                + mix(file, row, 1) % (STEP_MS - 1))

    def kind(self, file: int, row: int) -> str:
        return KIND_TABLE[mix(file, row, self.seed) % 1000]

    def is_duplicate(self, file: int, row: int) -> bool:
        return file > 0 and mix(file, row, self.seed + 7) % 1000 < DUPLICATE_PER_MILLE

    def path(self, file: int, row: int) -> str:
        h = mix(file, row, 3)
        return (f"{ROOTS[h % 3]}/{DIRS[(h >> 2) % len(DIRS)]}/{MODULES[(h >> 6) % len(MODULES)]}"
                f"_{random_id(file, row)}{EXTENSIONS[(h >> 10) % len(EXTENSIONS)]}")

    def effective_key(self, file: int, row: int) -> tuple[str, str, str, int]:
        """(kind, key, namespace, origin file) of the row as written: a duplicate takes the key the row of
        the file before holds (itself perhaps a duplicate of an earlier file)."""
        origin = file
        while self.is_duplicate(origin, row):
            origin -= 1
        return (*self.key(origin, row), origin)

    def key(self, file: int, row: int) -> tuple[str, str, str]:
        """(kind, key, namespace) of a row that is not a duplicate: a pure function of (file, row)."""
        kind = self.kind(file, row)
        at_ms = self.at_ms(file, row)
        rid = random_id(file, row)
        namespace = NAMESPACE[kind]
        if kind == "command-metrics":
            key = f"command-metrics:bash-{at_ms}-{rid}"
        elif kind == "pre-bash":
            key = f"bash:bash-{at_ms}-{rid}:pre"
        elif kind == "post-bash":
            key = f"bash:bash-{at_ms}-{rid}:post"
        elif kind == "command-results":
            key = f"command-results:bash-{at_ms}-{rid}"
        elif kind == "command-history":
            key = f"command-history:{at_ms}"
        elif kind == "pre-edit":
            key = f"edit:edit-{at_ms}-{rid}:pre"
        elif kind == "post-edit":
            key = f"edit:edit-{at_ms}-{rid}:post"
        elif kind == "file-history":
            key = f"file-history:{self.path(file, row).replace('/', '_')}:{at_ms}"
        elif kind == "edit-context":
            key = f"edit-context:edit-{at_ms}-{rid}"
        elif kind == "session-end":
            key = f"session:session-{at_ms}-{rid}"
        elif kind == "session-state":
            key = f"session-state:session-{at_ms}-{rid}"
        elif kind == "session-metrics":
            key = f"session-metrics:session-{at_ms}-{rid}"
        elif kind == "agent-assignment":
            key = f"agent-recommendation:{self.path(file, row)}"
        elif kind == "post-task":
            key = f"task:task-{at_ms}-{rid}:completed"
        elif kind == "notify":
            key = f"notification:notify-{at_ms}-{rid}"
        elif kind == "markdown":
            key = f"doc:{rid}:{WORDS[mix(file, row, 5) % 10]}-notes.md"
        else:
            key = f"swarm:{rid}"
        return kind, key, namespace


def compact(document: object) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def markdown(rng: random.Random, target: int) -> str:
    parts = [f"# {sentence(rng, 4).title()}\n"]
    size = len(parts[0])
    while size < target:
        roll = rng.random()
        if roll < 0.2:
            block = f"\n## {sentence(rng, 3).title()}\n\n"
        elif roll < 0.5:
            block = "".join(f"- {sentence(rng, rng.randint(3, 9))}\n" for _ in range(rng.randint(2, 6)))
        elif roll < 0.6:
            block = f"\n```bash\n{rng.choice(COMMANDS)}\n{rng.choice(COMMANDS)}\n```\n"
        else:
            block = sentence(rng, rng.randint(20, 60)) + ".\n\n"
        parts.append(block)
        size += len(block)
    return "".join(parts)


def value_of(kind: str, key: str, rng: random.Random, at_ms: int, layout: Layout, file: int,
             row: int) -> tuple[str, str | None, int | None]:
    """(value, metadata, ttl) of a row of `kind`."""
    stamp = iso_z(at_ms)
    if kind == "command-metrics":
        command = rng.choice(COMMANDS)
        return (f'{{"commandLength":{len(command)},"outputLength":{rng.randrange(0, 4000)},"success":true,'
                f'"duration":{rng.randrange(0, 4500)},"exitCode":0,"timestamp":"{stamp}",'
                f'"complexity":"{rng.choice(("low", "medium", "high"))}"}}', None, None)
    if kind in ("pre-bash", "post-bash", "command-results", "command-history"):
        command = rng.choice(COMMANDS)
        bash_id = key.split(":")[1] if kind != "command-history" else f"bash-{at_ms}"
        if kind == "pre-bash":
            value = {"command": command, "workingDir": f"{ROOTS[row % 3]}/{rng.choice(DIRS)}", "timestamp": stamp,
                     "bashId": bash_id, "safety": "safe", "validationEnabled": True, "resourcesPrepped": True}
            return compact(value), compact({"hookType": "pre-bash", "command": command, "safety": "safe"}), None
        if kind == "post-bash":
            value = {"command": command, "exitCode": "0", "output": sentence(rng, rng.randint(0, 20)),
                     "timestamp": stamp, "bashId": bash_id, "duration": rng.randrange(2, 9000),
                     "outputLength": rng.randrange(0, 20000), "success": True}
            metadata = {"hookType": "post-bash", "command": command, "exitCode": "0", "success": True}
            return compact(value), compact(metadata), None
        if kind == "command-results":
            output = sentence(rng, rng.randint(200, 700)) if rng.random() < 0.06 else ""
            return compact({"command": command, "exitCode": "0", "output": output, "timestamp": stamp,
                            "fullOutput": True}), None, None
        return compact({"command": command, "exitCode": "0", "timestamp": stamp, "success": True,
                        "hasMetrics": "true", "hasResults": "true"}), None, None
    if kind in ("pre-edit", "post-edit", "edit-context", "file-history"):
        path = layout.path(file, row)
        directory, _, base = path.rpartition("/")
        if kind == "file-history":
            return compact({"file": path, "editId": f"edit-{at_ms}-{random_id(file, row)}", "timestamp": stamp,
                            "size": rng.randrange(100, 60000)}), None, None
        if kind == "edit-context":
            value = {"file": path, "editedAt": stamp, "editId": f"edit-{at_ms}-{random_id(file, row)}",
                     "formatted": rng.random() < 0.5, "fileSize": rng.randrange(200, 40000),
                     "directory": directory, "basename": base}
            return compact(value), compact({"type": "edit-context", "file": path}), None
        value = {"file": path, "operation": "edit", "timestamp": stamp, "editId": key.split(":")[1],
                 "validation": {"valid": True, "warnings": []}, "agentType": rng.choice(AGENTS),
                 "backupPath": f"{directory}/.{base}.bak-{at_ms}", "memoryKey": {"__type__": "__undefined__"},
                 "context": {"language": base.rpartition(".")[2], "lines": rng.randrange(10, 2000),
                             "summary": sentence(rng, rng.randint(8, 30))}}
        hook = "pre-edit" if kind == "pre-edit" else "post-edit"
        return compact(value), compact({"hookType": hook, "file": path, "agentType": value["agentType"]}), None
    if kind in ("session-end", "session-state", "session-metrics"):
        session_id = key.split(":", 1)[1]
        if kind == "session-end":
            value = {"endedAt": stamp, "totalTasks": rng.randrange(7), "totalEdits": rng.randrange(40),
                     "totalCommands": rng.randrange(150), "uniqueAgents": rng.randrange(5), "sessionId": session_id,
                     "generateSummary": True, "persistState": True, "exportMetrics": True,
                     "summary": sentence(rng, rng.randint(10, 30))}
            return compact(value), '{"hookType":"session-end"}', None
        if kind == "session-metrics":
            duration = rng.randrange(30_000, 5_000_000)
            value = {"sessionDuration": duration, "sessionDurationHuman": f"{duration // 60_000} minutes",
                     "totalTasks": rng.randrange(6), "totalEdits": rng.randrange(30),
                     "totalCommands": rng.randrange(1, 100), "commandSuccessRate": 100, "timestamp": stamp}
            return compact(value), compact({"type": "performance-metrics", "sessionId": session_id}), None
        edits = [{"key": f"file-history:{layout.path(file, row + k).replace('/', '_')}:{at_ms - k * 9000}",
                  "file": layout.path(file, row + k), "timestamp": iso_z(at_ms - k * 9000)}
                 for k in range(rng.randint(3, 24))]
        state = {"sessionId": session_id, "tasks": [], "edits": edits,
                 "commands": [rng.choice(COMMANDS) for _ in range(rng.randint(1, 12))], "agents": [],
                 "persistedAt": stamp, "fullState": True}
        text = compact(state)
        if rng.random() < 0.8:
            text = "__compressed__" + base64.b64encode(text.encode()).decode("ascii")
        return text, compact({"type": "full-state", "sessionId": session_id}), None
    if kind == "agent-assignment":
        path = layout.path(file, row)
        return compact({"type": rng.choice(AGENTS), "file": path, "extension": "." + path.rpartition(".")[2],
                        "recommended": True}), None, 3600
    if kind == "post-task":
        return compact({"status": "completed", "completedAt": stamp, "duration": rng.choice((None, 1200, 53000)),
                        "taskId": key.split(":")[1]}), '{"hookType":"post-task"}', None
    if kind == "notify":
        return compact({"message": sentence(rng, rng.randint(8, 40)), "level": "info", "timestamp": stamp,
                        "swarmId": f"swarm-{random_id(file, row)}"}), '{"hookType":"notify","level":"info"}', None
    if kind == "markdown":
        return markdown(rng, rng.randint(2_000, 12_000)), None, None
    return rng.choice(ODD_VALUES), None, None


def rows_of(layout: Layout, file: int):
    """Yield the rows of one file (id first); and count what it yields into `stats`."""
    rng = random.Random(f"bench-corpus:{layout.seed}:{file}")
    for row in range(layout.rows_per_file - 1):
        at_ms = layout.at_ms(file, row)
        kind, key, namespace, origin = layout.effective_key(file, row)
        if origin != file:
            # the version in this file is newer 2/3 of the time, older 1/3 (both sides win sometimes)
            shift = rng.randrange(60, 86_400) * (1 if rng.random() < 0.67 else -1)
            at = layout.at_ms(origin, row) // 1000 + shift
        else:
            at = at_ms // 1000
        value, metadata, ttl = value_of(kind, key, rng, at_ms, layout, file, row)
        touched = rng.random() < 0.2
        updated = at + rng.randrange(30, 1800) if touched else at
        accessed = updated + rng.randrange(1, 900) if touched else updated
        yield (row + 1, key, value, namespace, metadata, at, updated, accessed,
               rng.randrange(1, 12) if touched else 0, ttl, at + ttl if ttl else None)
    # the same summary key in every file, as in the real files
    last = layout.at_ms(file, layout.rows_per_file - 1) // 1000
    summary = {"totalCommands": layout.rows_per_file * 18 // 100, "successRate": 1,
               "avgDuration": round(rng.uniform(200, 2000), 2), "lastUpdated": iso_z(last * 1000)}
    first = layout.at_ms(file, 0) // 1000
    yield (layout.rows_per_file, "command-metrics-summary", compact(summary), "performance-metrics", None,
           first, last, last, layout.rows_per_file // 3, None, None)


def file_path(out: Path, file: int) -> Path:
    return out / f"proj-{file:02d}" / ".swarm" / "memory.db"


def write_file(out: Path, layout: Layout, file: int) -> dict:
    path = file_path(out, file)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name("memory.db.partial")
    partial.unlink(missing_ok=True)
    connection = sqlite3.connect(partial, isolation_level=None)
    counts: dict[str, int] = {}
    value_bytes = duplicates = 0
    try:
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-262144")   # 256 MiB: the unique index stays in memory
        connection.execute(V2_TABLE)
        connection.execute("BEGIN")
        batch = []
        for row in rows_of(layout, file):
            batch.append(row)
            counts[row[3]] = counts.get(row[3], 0) + 1
            value_bytes += len(row[2])
            if len(batch) >= INSERT_BATCH:
                connection.executemany(INSERT, batch)
                batch.clear()
        connection.executemany(INSERT, batch)
        connection.execute(V2_INDEX)
        connection.execute("COMMIT")
    finally:
        connection.close()
    partial.rename(path)
    duplicates = sum(1 for row in range(layout.rows_per_file - 1) if layout.is_duplicate(file, row))
    return {"path": str(path.relative_to(out)), "rows": layout.rows_per_file, "bytes": path.stat().st_size,
            "value_bytes": value_bytes, "namespaces": counts, "duplicates_of_previous_file": duplicates}


def generate(out: Path, rows: int, files: int = 16, seed: int = 4, jobs: int | None = None,
             quiet: bool = False) -> dict:
    """Write the corpus (or keep it when corpus.json says it is the same one); return corpus.json's data."""
    if rows % files:
        raise ValueError(f"--rows {rows} is not a multiple of --files {files}")
    layout = Layout(files=files, rows_per_file=rows // files, seed=seed)
    manifest_path = out / "corpus.json"
    wanted = {"generator_version": GENERATOR_VERSION, "rows": rows, "files": files, "seed": seed}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if {k: manifest.get(k) for k in wanted} == wanted and all(
                (out / f["path"]).stat().st_size == f["bytes"] for f in manifest["file_list"]
                if (out / f["path"]).exists()) and all((out / f["path"]).exists() for f in manifest["file_list"]):
            return manifest
        raise FileExistsError(f"{out} holds another corpus ({manifest_path}); remove it first")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    jobs = jobs or min(os.cpu_count() or 1, files)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        written = list(pool.map(write_file, [out] * files, [layout] * files, range(files)))
    namespaces: dict[str, int] = {}
    for f in written:
        for name, count in f["namespaces"].items():
            namespaces[name] = namespaces.get(name, 0) + count
    manifest = {**wanted, "rows_per_file": layout.rows_per_file,
                "bytes": sum(f["bytes"] for f in written), "value_bytes": sum(f["value_bytes"] for f in written),
                "namespaces": dict(sorted(namespaces.items())),
                "duplicate_rows": sum(f["duplicates_of_previous_file"] for f in written),
                "summary_rows": files, "seconds": round(time.perf_counter() - started, 1),
                "file_list": written}
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    if not quiet:
        print(f"wrote {rows:,} rows in {files} files ({manifest['bytes'] / 1e6:,.0f} MB) to {out} "
              f"in {manifest['seconds']} s", file=sys.stderr)
    return manifest


def fingerprint(out: Path) -> str:
    """sha256 over the corpus files' checksums: equal corpora, equal fingerprints."""
    digest = hashlib.sha256()
    manifest = json.loads((out / "corpus.json").read_text())
    for f in manifest["file_list"]:
        file_digest = hashlib.sha256()
        with open(out / f["path"], "rb") as handle:
            while chunk := handle.read(1 << 20):
                file_digest.update(chunk)
        digest.update(f"{f['path']} {file_digest.hexdigest()}\n".encode())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", default="100k", help="memory rows in all (100k, 1M, 10M, ...)")
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=None, help="processes (default: one per core)")
    args = parser.parse_args(argv)
    try:
        generate(args.out, parse_size(args.rows), args.files, args.seed, args.jobs)
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
