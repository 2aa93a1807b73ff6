"""The sample tree: deterministic bytes and the traps it promises. No database server needed.

Expectations are computed with sqlite3 over private copies (main file plus its `-wal`), never over
the written files in place: opening a WAL database in place checkpoints and rewrites it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from loader.fixtures.sample import write_sample
from loader.sources.snapshot import SQLITE_HEADER

REPO = Path(__file__).resolve().parent.parent
APP = Path("opt/sutazaiapp")
MAIN = APP / ".swarm/memory.db"
DIND = APP / "docker/dind/.swarm/memory.db"
BACKUP = APP / "backups/2025-08-19/.swarm/memory.db"
BACKEND_V3 = APP / "backend/.swarm/memory.db"
EXTENDED = APP / "data/mcp/extended-memory/extended_memory.db"
N8N = APP / "data/n8n/database.sqlite"
FLOWISE = APP / "data/flowise/database.sqlite"
SMALL_V2 = [APP / f"mcp/{name}/.swarm/memory.db" for name in ("claude-flow", "ruv-swarm", "task-master")]
RUVECTOR = APP / ".swarm/ruvector.db"
ORPHAN_WAL = APP / "old/.swarm/memory.db-wal"

AUGUST_2025 = (int(datetime(2025, 8, 1, tzinfo=timezone.utc).timestamp()),
               int(datetime(2025, 9, 1, tzinfo=timezone.utc).timestamp()))
# A v2 "seconds" column whose value is above this holds milliseconds.
MILLISECONDS_THRESHOLD = 100_000_000_000


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    tree = tmp_path_factory.mktemp("sample") / "tree"
    write_sample(tree)
    return tree


@pytest.fixture
def sqlite_copy(tmp_path):
    """Opens private copies: sqlite_copy(main, with_wal=True, attach={alias: path}) -> connection."""
    connections = []
    counter = iter(range(1_000_000))

    def open_copy(source: Path, with_wal: bool = True,
                  attach: dict[str, Path] | None = None) -> sqlite3.Connection:
        connection = sqlite3.connect(_private_copy(source, tmp_path / f"copy{next(counter)}", with_wal))
        for alias, other in (attach or {}).items():
            other_copy = _private_copy(other, tmp_path / f"copy{next(counter)}")
            connection.execute(f"ATTACH DATABASE ? AS {alias}", (str(other_copy),))
        connections.append(connection)
        return connection

    yield open_copy
    for connection in connections:
        connection.close()


def _private_copy(source: Path, folder: Path, with_wal: bool = True) -> Path:
    folder.mkdir(parents=True)
    copy = folder / source.name
    shutil.copyfile(source, copy)
    wal = source.with_name(source.name + "-wal")
    if with_wal and wal.exists():
        shutil.copyfile(wal, folder / wal.name)
    return copy


def _tree_digests(tree: Path) -> dict[str, str]:
    return {str(path.relative_to(tree)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(tree.rglob("*")) if path.is_file()}


def _scalar(connection: sqlite3.Connection, query: str):
    return connection.execute(query).fetchone()[0]


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------ the tree as a whole


def test_every_file_has_the_same_bytes_on_every_run(tmp_path):
    write_sample(tmp_path / "here")
    # Once more in another interpreter with another string-hash seed.
    script = ("import sys, pathlib; from loader.fixtures.sample import write_sample; "
              "write_sample(pathlib.Path(sys.argv[1]))")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "there")], check=True, cwd=REPO,
                   env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)})
    here, there = _tree_digests(tmp_path / "here"), _tree_digests(tmp_path / "there")
    assert here == there
    assert str(MAIN) + "-wal" in here  # the WAL too: its random salts are pinned


def test_returns_the_sqlite_main_files_it_wrote(tmp_path, sqlite_copy):
    written = write_sample(tmp_path / "tree")
    expected = {MAIN, DIND, BACKUP, BACKEND_V3, EXTENDED, N8N, FLOWISE, *SMALL_V2}
    assert {path.relative_to(tmp_path / "tree") for path in written} == expected
    for path in written:
        assert path.read_bytes()[:16] == SQLITE_HEADER, path
        assert _scalar(sqlite_copy(path), "SELECT count(*) FROM sqlite_master WHERE type = 'table'") > 0


def test_refuses_a_non_empty_root(tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not an empty directory"):
        write_sample(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["keep.txt"]


def test_refuses_a_root_that_is_a_file(tmp_path):
    (tmp_path / "tree").write_text("")
    with pytest.raises(FileExistsError):
        write_sample(tmp_path / "tree")


def test_an_interrupted_sample_leaves_nothing_behind_and_can_be_written_again(tmp_path, monkeypatch):
    """Ctrl-C halfway (here: as the application files start, after the claude-flow files): the files
    written so far go, so that the same command runs again (a non-empty folder is refused)."""
    from loader.fixtures import sample

    def interrupted(root):
        assert any(root.rglob("memory.db"))  # the claude-flow files were written
        raise KeyboardInterrupt

    monkeypatch.setattr(sample, "write_other_app_files", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_sample(tmp_path / "tree")
    assert list((tmp_path / "tree").iterdir()) == []
    monkeypatch.undo()
    assert len(write_sample(tmp_path / "tree")) == 10


def test_writes_into_an_existing_empty_directory(tmp_path):
    written = write_sample(tmp_path)
    databases = sorted(path for path in tmp_path.rglob("*")
                       if path.is_file() and path.read_bytes()[:16] == SQLITE_HEADER)
    assert written == databases and len(written) == 10


# ------------------------------------------------------------------------------------ the main file


def test_main_file_has_rows_only_in_its_wal(root, sqlite_copy):
    main = root / MAIN
    assert main.read_bytes()[18:20] == b"\x02\x02"  # WAL mode in the header
    assert main.with_name("memory.db-wal").exists()
    assert not main.with_name("memory.db-shm").exists()
    count = "SELECT count(*), max(id) FROM memory_entries"
    main_alone = sqlite_copy(main, with_wal=False).execute(count).fetchone()
    with_wal = sqlite_copy(main).execute(count).fetchone()
    assert main_alone[0] < with_wal[0]
    assert with_wal[0] - main_alone[0] == 20
    assert with_wal == (400, 400)


def test_main_file_holds_exactly_one_millisecond_row(root, sqlite_copy):
    rows = sqlite_copy(root / MAIN).execute(
        "SELECT namespace, created_at, updated_at, accessed_at FROM memory_entries "
        "WHERE max(created_at, updated_at, accessed_at) > ?", (MILLISECONDS_THRESHOLD,)).fetchall()
    assert len(rows) == 1
    namespace, *times = rows[0]
    assert namespace == "sessions"
    for value in times:
        assert value > MILLISECONDS_THRESHOLD
        assert AUGUST_2025[0] <= value // 1000 < AUGUST_2025[1]


def test_every_other_v2_timestamp_is_august_2025_in_seconds(root, sqlite_copy):
    for relative in (MAIN, DIND, *SMALL_V2):
        rows = sqlite_copy(root / relative).execute(
            "SELECT created_at, updated_at, accessed_at FROM memory_entries "
            "WHERE max(created_at, updated_at, accessed_at) < ?", (MILLISECONDS_THRESHOLD,)).fetchall()
        assert rows
        assert all(AUGUST_2025[0] <= value < AUGUST_2025[1] for row in rows for value in row), relative


def test_main_file_values_come_in_every_shape(root, sqlite_copy):
    connection = sqlite_copy(root / MAIN)
    rows = connection.execute("SELECT key, value, namespace, metadata FROM memory_entries").fetchall()
    values = [value for _, value, _, _ in rows]
    compressed = [value for value in values if value.startswith("__compressed__")]
    assert len(compressed) >= 3
    documents = [json.loads(base64.b64decode(value[len("__compressed__"):])) for value in compressed]
    assert all(isinstance(document, dict) for document in documents)
    assert any(value.startswith("# Notes\n- item") for value in values)
    assert {"42", '"quoted"'} <= set(values)
    assert sum(not _is_json(value) for value in values) > len(compressed)  # Markdown and prose too
    assert all(metadata is None or isinstance(json.loads(metadata), dict) for *_, metadata in rows)
    assert any(metadata is None for *_, metadata in rows) and any(metadata for *_, metadata in rows)

    namespaces = {namespace for _, _, namespace, _ in rows}
    assert {"performance-metrics", "sessions", "session-states", "session-metrics", "command-history",
            "hooks:pre-bash", "coordination", "agent-assignments"} <= namespaces
    metrics = [key for key, _, namespace, _ in rows if namespace == "performance-metrics"]
    assert 0.15 <= len(metrics) / len(rows) <= 0.21
    assert "command-metrics-summary" in metrics
    assert all(re.fullmatch(r"command-metrics:bash-\d{13}-[0-9a-z]{9}", key)
               for key in metrics if key != "command-metrics-summary")
    sessions = [json.loads(value) for key, value, namespace, _ in rows
                if namespace == "sessions" and key.startswith("session:session-")]
    assert all({"sessionId", "endedAt", "totalCommands"} <= set(session) for session in sessions)
    assert any("agentType" in session and "topology" in session for session in sessions)
    assert any("agentType" not in session for session in sessions)


def test_agent_assignments_are_expired_rows(root, sqlite_copy):
    rows = sqlite_copy(root / MAIN).execute(
        "SELECT ttl, created_at, expires_at FROM memory_entries "
        "WHERE namespace = 'agent-assignments'").fetchall()
    assert rows
    assert all(ttl == 3600 and expires_at == created_at + 3600 for ttl, created_at, expires_at in rows)


# ------------------------------------------------------------------------------ copies and impostors


def test_backup_is_a_byte_identical_copy_of_the_dind_file(root):
    assert (root / BACKUP).read_bytes() == (root / DIND).read_bytes()


def test_ruvector_db_is_not_sqlite(root, sqlite_copy):
    data = (root / RUVECTOR).read_bytes()
    assert len(data) == 4096
    assert not data.startswith(SQLITE_HEADER)
    with pytest.raises(sqlite3.DatabaseError):
        sqlite_copy(root / RUVECTOR).execute("SELECT count(*) FROM sqlite_master").fetchone()


def test_orphan_wal_has_no_main_file_but_is_a_valid_wal(root, tmp_path):
    orphan = root / ORPHAN_WAL
    assert not orphan.with_name("memory.db").exists()
    assert orphan.read_bytes()[:4] == bytes.fromhex("377f0682")
    # Next to an empty WAL-mode main file, SQLite accepts every frame (salts and checksums are right).
    main = tmp_path / "memory.db"
    empty = sqlite3.connect(main)
    empty.execute("PRAGMA page_size=4096")
    empty.execute("PRAGMA journal_mode=WAL")
    empty.close()
    assert not (tmp_path / "memory.db-wal").exists()
    shutil.copyfile(orphan, tmp_path / "memory.db-wal")
    connection = sqlite3.connect(main)
    try:
        assert connection.execute("SELECT count(*) FROM memory_entries").fetchone()[0] == 6
    finally:
        connection.close()


# -------------------------------------------------------------------------- duplicates across files


def _normalized(column: str) -> str:
    return f"(CASE WHEN {column} > {MILLISECONDS_THRESHOLD} THEN {column} / 1000 ELSE {column} END)"


def test_dind_duplicates_main_rows_with_every_tie_case(root, sqlite_copy):
    connection = sqlite_copy(root / MAIN, attach={"dind": root / DIND})
    main_only_max_id = _scalar(sqlite_copy(root / MAIN, with_wal=False), "SELECT max(id) FROM memory_entries")
    pairs = connection.execute(f"""
        SELECT m.id, m.value = d.value, m.updated_at, d.updated_at,
               {_normalized('m.updated_at')}, d.updated_at, {_normalized('m.accessed_at')}, d.accessed_at
        FROM main.memory_entries AS m JOIN dind.memory_entries AS d USING (key, namespace)""").fetchall()
    assert len(pairs) == 15
    assert not any(same_value for _, same_value, *_ in pairs)

    cases = []
    for main_id, _, raw_main, raw_dind, main_updated, dind_updated, main_accessed, dind_accessed in pairs:
        if dind_updated != main_updated:
            case = "dind newer" if dind_updated > main_updated else "dind older"
            if raw_main > MILLISECONDS_THRESHOLD:
                case += ", looks older unless normalized"
                assert raw_dind < raw_main
        elif dind_accessed != main_accessed:
            case = "tie, dind read later" if dind_accessed > main_accessed else "tie, dind read earlier"
        else:
            case = "full tie"
        if main_id > main_only_max_id:
            case += ", main row only in WAL"
        cases.append(case)
    assert sorted(cases) == sorted(
        ["dind newer"] * 6 + ["dind older"] * 4 + ["dind older, main row only in WAL",
         "tie, dind read later", "tie, dind read earlier", "full tie",
         "dind newer, looks older unless normalized"])


def test_v3_backend_shares_keys_with_main_newer_and_older(root, sqlite_copy):
    connection = sqlite_copy(root / MAIN, attach={"v3": root / BACKEND_V3})
    pairs = connection.execute("""
        SELECT m.updated_at, v.updated_at, m.value = v.content FROM main.memory_entries AS m
        JOIN v3.memory_entries AS v ON v.key = m.key AND v.namespace = m.namespace""").fetchall()
    assert len(pairs) == 4
    assert sorted(v3_ms > main_s * 1000 for main_s, v3_ms, _ in pairs) == [False, False, True, True]
    assert not any(same for *_, same in pairs)


def test_small_v2_files_share_a_couple_of_keys_with_other_files(root, sqlite_copy):
    def keys(relative: Path) -> set[tuple[str, str]]:
        return set(sqlite_copy(root / relative).execute("SELECT key, namespace FROM memory_entries"))

    others = {relative: keys(relative) for relative in (MAIN, DIND, *SMALL_V2)}
    for relative in SMALL_V2:
        assert 10 <= len(others[relative]) <= 30
        elsewhere = set().union(*(found for other, found in others.items() if other != relative))
        shared = elsewhere & others[relative]
        assert 1 <= len(shared) <= 3, relative


# --------------------------------------------------------------------------------- other schemas


def test_v3_backend_uses_milliseconds_and_has_a_null_namespace(root, sqlite_copy):
    connection = sqlite_copy(root / BACKEND_V3)
    columns = [row[1] for row in connection.execute("PRAGMA table_info(memory_entries)")]
    assert columns == ["id", "key", "namespace", "content", "type", "embedding", "embedding_model",
                       "embedding_dimensions", "tags", "metadata", "owner_id", "created_at", "updated_at",
                       "expires_at", "last_accessed_at", "access_count", "status"]
    times = connection.execute("SELECT created_at, updated_at FROM memory_entries").fetchall()
    assert len(times) == 80
    assert all(AUGUST_2025[0] <= value // 1000 < AUGUST_2025[1] for row in times for value in row)
    assert _scalar(connection, "SELECT count(*) FROM memory_entries WHERE namespace IS NULL") == 1
    namespaces = {namespace for (namespace,) in connection.execute("SELECT namespace FROM memory_entries")}
    assert "performance-metrics" in namespaces
    states = connection.execute("SELECT state FROM sessions").fetchall()
    assert len(states) == 5 and all(isinstance(json.loads(state), dict) for (state,) in states)
    assert dict(connection.execute("SELECT key, value FROM metadata"))["schema_version"] == "3.0.0"


def test_extended_memory_types_values_and_time_formats(root, sqlite_copy):
    rows = sqlite_copy(root / EXTENDED).execute(
        "SELECT type, value, created_at, updated_at, accessed_at FROM memory_store").fetchall()
    assert len(rows) == 40
    assert {kind for kind, *_ in rows} == {"none", "str", "int", "float", "bool", "dict", "list", "pickle"}
    for kind, value, *_ in rows:
        if kind == "pickle":
            assert base64.b64decode(value, validate=True)[:2] == b"\x80\x04"  # protocol 4; never unpickled
        else:
            assert _is_json(value), (kind, value)
    times = [value for _, _, *moments in rows for value in moments]
    with_fraction = [value for value in times if re.fullmatch(r"2025-08-\d\d \d\d:\d\d:\d\d\.\d{6}", value)]
    without = [value for value in times if re.fullmatch(r"2025-08-\d\d \d\d:\d\d:\d\d", value)]
    assert with_fraction and without and len(with_fraction) + len(without) == len(times)


@pytest.mark.parametrize("relative, tables, time_column", [
    (N8N, {"workflow_entity", "credentials_entity", "execution_entity", "user", "settings", "migrations"},
     ("workflow_entity", "createdAt")),
    (FLOWISE, {"chat_flow", "chat_message", "credential", "apikey", "migrations"},
     ("chat_message", "createdDate")),
])
def test_app_databases_have_their_tables_and_text_timestamps(root, sqlite_copy, relative, tables,
                                                              time_column):
    connection = sqlite_copy(root / relative)
    found = {name for (name,) in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    assert found == tables
    assert all(_scalar(connection, f'SELECT count(*) FROM "{table}"') > 0 for table in tables)
    table, column = time_column
    values = [value for (value,) in connection.execute(f'SELECT "{column}" FROM "{table}"')]
    assert values and all(re.fullmatch(r"2025-08-\d\d \d\d:\d\d:\d\d\.\d{3}", value) for value in values)
