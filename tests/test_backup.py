"""Backups: consistent single-file copies of every readable database, a manifest, and verify().

Expectations are computed independently (conftest `read_private_copy`, plain sqlite3, hashlib), never
with the backup module's own helpers."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import loader
from loader.backup.backup import BackupError, backup, verify
from loader.sources import snapshot as snapshot_module
from loader.sources.discover import discover

from conftest import read_private_copy

CHRIS = "claude-flow/ChrisRoyse__myclaudeflowsetup/memory.db"
JUNIE = "claude-flow/Cornjebus__junie/memory.db"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hashes_of_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under root, side files (-wal, -shm) included."""
    return {path.relative_to(root).as_posix(): sha256(path)
            for path in sorted(root.rglob("*")) if path.is_file()}


def quoted(name: str, mark: str) -> str:
    return mark + name.replace(mark, mark + mark) + mark


def independent_counts(source: Path, folder: Path) -> dict[str, int]:
    """Rows per ordinary table of `source` (WAL replayed), read from a private copy with plain sqlite3."""
    names = [name for (name,) in read_private_copy(
        source, folder, "SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND sql NOT LIKE 'CREATE VIRTUAL TABLE%'")]
    if not names:
        return {}
    query = " UNION ALL ".join(f"SELECT {quoted(n, chr(39))}, count(*) FROM {quoted(n, chr(34))}" for n in names)
    return dict(read_private_copy(source, folder, query))


def query_file(path: Path, query: str) -> list[tuple]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def make_database(path: Path, rows: int, journal_mode: str = "delete") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA journal_mode={journal_mode}")
    connection.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT)")
    connection.executemany("INSERT INTO items (note) VALUES (?)", [(f"row {i}",) for i in range(rows)])
    connection.commit()
    connection.close()


def add_row(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("INSERT INTO items (note) VALUES ('added')")
    connection.commit()
    connection.close()


@pytest.fixture(scope="module")
def real_backup(realdata, tmp_path_factory):
    before = hashes_of_tree(realdata)
    destination = tmp_path_factory.mktemp("real-backup") / "backup"
    seen = []
    manifest = backup([realdata], destination, on_file=seen.append)
    after = hashes_of_tree(realdata)
    return {"manifest": manifest, "destination": destination, "before": before, "after": after,
            "seen": seen, "entries": {entry.source_db: entry for entry in manifest.files}}


def test_every_readable_database_is_backed_up(real_backup, realdata):
    readable = {source.source_db for source in discover([realdata]).files if source.copy_of is None and source.error is None}
    entries = real_backup["entries"]
    assert {db for db, entry in entries.items() if entry.status == "backed-up"} == readable
    assert len(readable) == 18
    for source_db in readable:
        assert (real_backup["destination"] / source_db).is_file(), source_db
        assert entries[source_db].backup == source_db  # one root: the tree under it, kept
    assert [entry.source_db for entry in real_backup["seen"]] == [e.source_db for e in real_backup["manifest"].files]


def test_row_counts_equal_independent_counts_of_the_sources(real_backup, realdata, tmp_path):
    for source_db, entry in real_backup["entries"].items():
        expected = independent_counts(realdata / source_db, tmp_path / "expected")
        assert entry.tables == expected, source_db
        backup_file = real_backup["destination"] / entry.backup
        assert independent_counts(backup_file, tmp_path / "actual") == expected, source_db


def test_rows_that_live_only_in_the_wal_are_in_the_backup(real_backup, realdata, tmp_path):
    main_only = tmp_path / "main-only.db"
    shutil.copyfile(realdata / CHRIS, main_only)  # no -wal beside it: what the main file alone holds
    rows_in_main_file = query_file(main_only, "SELECT count(*) FROM memory_entries")[0][0]
    with_wal = read_private_copy(realdata / CHRIS, tmp_path / "chris", "SELECT count(*) FROM memory_entries")[0][0]
    in_backup = query_file(real_backup["destination"] / CHRIS, "SELECT count(*) FROM memory_entries")[0][0]
    assert rows_in_main_file < with_wal == in_backup
    keys = "SELECT key, namespace FROM memory_entries ORDER BY 1, 2"
    assert query_file(real_backup["destination"] / CHRIS, keys) == read_private_copy(
        realdata / CHRIS, tmp_path / "chris", keys)


def test_no_source_byte_changes(real_backup, realdata):
    assert real_backup["after"] == real_backup["before"]
    assert any(name.endswith("-shm") for name in real_backup["after"])
    assert any(name.endswith("-wal") for name in real_backup["after"])
    published = {}
    for line in (realdata / "MANIFEST.tsv").read_text().splitlines()[1:]:
        fields = line.split("\t")
        published[fields[0]] = fields[-1]
    for path, digest in published.items():
        assert real_backup["after"][path] == digest, path


def test_each_backup_is_one_self_contained_rollback_journal_file(real_backup):
    destination = real_backup["destination"]
    files = sorted(path.relative_to(destination).as_posix() for path in destination.rglob("*") if path.is_file())
    assert files == sorted(["manifest.json"] + [e.backup for e in real_backup["manifest"].backed_up])
    for entry in real_backup["manifest"].backed_up:
        header = (destination / entry.backup).read_bytes()[:100]
        assert header[18:20] == b"\x01\x01", entry.backup  # 1 = rollback journal, 2 would be WAL
        assert query_file(destination / entry.backup, "PRAGMA journal_mode") == [("delete",)]


def test_manifest_records_sources_backups_and_warnings(real_backup, realdata):
    destination = real_backup["destination"]
    data = json.loads((destination / "manifest.json").read_text())
    assert data["version"] == loader.__version__ and data["created_at"]
    assert data["summary"] == {"backed-up": 18, "copy": 0, "failed": 0}
    for item in data["files"]:
        original = Path(item["path"])
        assert original == realdata / item["source_db"]
        assert item["sha256"] == sha256(original)
        wal = original.with_name(original.name + "-wal")
        assert item["wal_sha256"] == (sha256(wal) if wal.exists() else None)
        assert item["backup_sha256"] == sha256(destination / item["backup"])
        assert item["status"] == "backed-up" and item["reason"] is None
    by_db = {item["source_db"]: item for item in data["files"]}
    assert by_db[CHRIS]["kind"] == "claude-flow-v2" and by_db[CHRIS]["wal_sha256"]


def test_non_sqlite_files_and_orphan_wals_are_not_backed_up(real_backup, realdata):
    destination = real_backup["destination"]
    recorded = {entry.path for entry in real_backup["manifest"].files}
    assert not any(path.name == "ruvector.db" for path in recorded)
    assert not list(destination.rglob("ruvector.db"))
    assert not (destination / "claude-flow/Hulupeep__tidetimes").exists()
    warned = {Path(w["path"]).relative_to(realdata).as_posix(): w["reason"] for w in real_backup["manifest"].warnings}
    assert "not a SQLite database" in warned["claude-flow/AbdallaTarek__JsonFormatter/ruvector.db"]
    assert "orphan WAL" in warned["claude-flow/Hulupeep__tidetimes/memory.db-wal"]


def test_verify_accepts_a_good_backup(real_backup):
    assert verify(real_backup["destination"]) == []


@pytest.fixture
def backup_copy(real_backup, tmp_path) -> Path:
    """A copy of the real backup that a test may damage."""
    copy = tmp_path / "backup"
    shutil.copytree(real_backup["destination"], copy)
    return copy


def test_verify_names_a_backup_with_a_flipped_byte(backup_copy, realdata):
    damaged = backup_copy / JUNIE
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    problems = verify(backup_copy)
    assert problems and {p.path for p in problems} == {JUNIE}
    assert any("sha256" in p.problem for p in problems)
    assert problems[0].source == str(realdata / JUNIE)
    assert problems[0].to_json()["path"] == JUNIE


def test_verify_names_a_deleted_backup_and_an_unlisted_file(backup_copy):
    (backup_copy / CHRIS).unlink()
    (backup_copy / "claude-flow/stray.db").write_bytes(b"x")
    problems = {p.path: p.problem for p in verify(backup_copy)}
    assert set(problems) == {CHRIS, "claude-flow/stray.db"}
    assert "missing" in problems[CHRIS]
    assert "not recorded" in problems["claude-flow/stray.db"]


def test_verify_recounts_rows(backup_copy):
    manifest_path = backup_copy / "manifest.json"
    data = json.loads(manifest_path.read_text())
    entry = next(item for item in data["files"] if item["source_db"] == JUNIE)
    entry["tables"]["memory_entries"] += 1
    manifest_path.write_text(json.dumps(data))
    (problem,) = verify(backup_copy)
    assert problem.path == JUNIE and "memory_entries" in problem.problem


def test_verify_of_a_folder_without_manifest(tmp_path):
    (problem,) = verify(tmp_path)
    assert problem.path == "manifest.json"


def test_byte_identical_copy_is_recorded_as_copy(tmp_path, realdata):
    for folder in ("a", "b"):
        (tmp_path / "root" / folder).mkdir(parents=True)
        shutil.copyfile(realdata / JUNIE, tmp_path / "root" / folder / "memory.db")
    manifest = backup([tmp_path / "root"], tmp_path / "backup")
    first, second = manifest.files
    assert (first.source_db, first.status) == ("a/memory.db", "backed-up")
    assert (second.source_db, second.status, second.copy_of) == ("b/memory.db", "copy", first.path)
    assert second.backup is None and "byte-identical copy" in second.reason
    assert not (tmp_path / "backup" / "b").exists()
    assert verify(tmp_path / "backup") == []


def test_unreadable_database_is_recorded_as_failed(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "broken.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 5000)
    make_database(tmp_path / "root" / "good.db", rows=3)
    manifest = backup([tmp_path / "root"], tmp_path / "backup")
    statuses = {entry.source_db: (entry.status, entry.reason) for entry in manifest.files}
    assert statuses["good.db"] == ("backed-up", None)
    assert statuses["broken.db"][0] == "failed" and "SQLite" in statuses["broken.db"][1]
    assert not (tmp_path / "backup" / "broken.db").exists()
    assert verify(tmp_path / "backup") == []


def test_roots_with_the_same_relative_paths_do_not_collide(tmp_path):
    make_database(tmp_path / "alpha" / "app" / "data.db", rows=2)
    make_database(tmp_path / "beta" / "app" / "data.db", rows=5)
    manifest = backup([tmp_path / "alpha", tmp_path / "beta"], tmp_path / "backup")
    assert [entry.backup for entry in manifest.files] == ["1-alpha/app/data.db", "2-beta/app/data.db"]
    assert [entry.tables for entry in manifest.files] == [{"items": 2}, {"items": 5}]
    assert verify(tmp_path / "backup") == []


def test_verify_refuses_a_manifest_path_outside_the_folder(tmp_path):
    """A manifest entry `../outside.db` that matches the file outside in every checksum and count is still
    refused, unread, through the library and the CLI (exit 1, the entry named)."""
    make_database(tmp_path / "root" / "app.db", rows=3)
    make_database(tmp_path / "root" / "other.db", rows=2)
    folder = tmp_path / "backup"
    backup([tmp_path / "root"], folder)
    shutil.move(folder / "app.db", tmp_path / "outside.db")
    manifest_path = folder / "manifest.json"
    data = json.loads(manifest_path.read_text())
    next(item for item in data["files"] if item["backup"] == "app.db")["backup"] = "../outside.db"
    manifest_path.write_text(json.dumps(data))

    (problem,) = verify(folder)

    assert problem.path == "../outside.db" and "outside" in problem.problem and "refused" in problem.problem
    result = subprocess.run([sys.executable, "-m", "loader", "backup", "--verify", str(folder)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "../outside.db" in result.stderr and "refused" in result.stderr


# ---------------------------------------------------------------------------------- destination rules

def test_refuses_a_non_empty_folder_that_is_not_a_backup(tmp_path):
    make_database(tmp_path / "root" / "app.db", rows=1)
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "notes.txt").write_text("mine")
    with pytest.raises(BackupError, match="not a backup"):
        backup([tmp_path / "root"], tmp_path / "backup")
    assert [p.name for p in (tmp_path / "backup").iterdir()] == ["notes.txt"]


def test_writes_into_an_empty_existing_folder(tmp_path):
    make_database(tmp_path / "root" / "app.db", rows=1)
    (tmp_path / "backup").mkdir()
    backup([tmp_path / "root"], tmp_path / "backup")
    assert verify(tmp_path / "backup") == []


def test_rerun_is_refused_unless_overwrite_and_then_replaces_the_backup(tmp_path):
    source = tmp_path / "root" / "app.db"
    make_database(source, rows=2)
    backup([tmp_path / "root"], tmp_path / "backup")
    add_row(source)
    with pytest.raises(BackupError, match="already holds a backup"):
        backup([tmp_path / "root"], tmp_path / "backup")
    assert query_file(tmp_path / "backup" / "app.db", "SELECT count(*) FROM items") == [(2,)]
    manifest = backup([tmp_path / "root"], tmp_path / "backup", overwrite=True)
    assert manifest.files[0].tables == {"items": 3}
    assert query_file(tmp_path / "backup" / "app.db", "SELECT count(*) FROM items") == [(3,)]
    assert verify(tmp_path / "backup") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup", "root"]  # no staging left behind


def test_overwrite_refuses_a_backup_folder_holding_unlisted_files(tmp_path):
    make_database(tmp_path / "root" / "app.db", rows=1)
    backup([tmp_path / "root"], tmp_path / "backup")
    (tmp_path / "backup" / "notes.txt").write_text("mine")
    with pytest.raises(BackupError, match=r"notes\.txt"):
        backup([tmp_path / "root"], tmp_path / "backup", overwrite=True)
    assert (tmp_path / "backup" / "notes.txt").read_text() == "mine"


def test_refuses_a_destination_inside_a_root(tmp_path):
    make_database(tmp_path / "root" / "app.db", rows=1)
    with pytest.raises(BackupError, match="inside the root"):
        backup([tmp_path / "root"], tmp_path / "root" / "backup")
    assert not (tmp_path / "root" / "backup").exists()


def test_a_destination_that_cannot_be_created_is_refused_by_name(tmp_path):
    make_database(tmp_path / "root" / "app.db", rows=1)
    with pytest.raises(BackupError, match=r"/proc/backup cannot be created or written"):  # even for root
        backup([tmp_path / "root"], Path("/proc/backup"))


def test_an_interrupted_run_leaves_no_partial_backup(tmp_path):
    make_database(tmp_path / "root" / "app.db", rows=1)

    def interrupt(entry):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backup([tmp_path / "root"], tmp_path / "backup", on_file=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


# ------------------------------------------------------------------------------- writers during backup

def copy_then_write(monkeypatch, source: Path, times: int) -> list[int]:
    """Make the backup's copy step see a writer: after each of the first `times` copies, add a row."""
    real_copy = snapshot_module.copy_database
    calls = []

    def copy_and_write(path, folder, *options):
        copied = real_copy(path, folder, *options)
        if folder.name.startswith("consolidate-backup-"):  # the backup's copy, not discovery's
            calls.append(1)
            if len(calls) <= times:
                add_row(source)
        return copied

    monkeypatch.setattr(snapshot_module, "copy_database", copy_and_write)
    return calls


def test_copy_is_retried_when_the_source_changes_during_it(tmp_path, monkeypatch):
    source = tmp_path / "root" / "app.db"
    make_database(source, rows=3)
    calls = copy_then_write(monkeypatch, source, times=1)
    (entry,) = backup([tmp_path / "root"], tmp_path / "backup").files
    assert len(calls) == 2 and entry.copy_attempts == 2
    assert entry.status == "backed-up" and entry.tables == {"items": 4}
    assert entry.sha256 == sha256(source)
    assert query_file(tmp_path / "backup" / "app.db", "SELECT count(*) FROM items") == [(4,)]


def test_a_source_that_keeps_changing_is_recorded_as_failed(tmp_path, monkeypatch):
    source = tmp_path / "root" / "app.db"
    make_database(source, rows=3)
    copy_then_write(monkeypatch, source, times=99)
    (entry,) = backup([tmp_path / "root"], tmp_path / "backup", attempts=3).files
    assert entry.status == "failed" and "changed while being copied" in entry.reason
    assert entry.copy_attempts == 3 and entry.backup is None
    assert not (tmp_path / "backup" / "app.db").exists()
    assert verify(tmp_path / "backup") == []


WRITER = textwrap.dedent("""
    import os, sqlite3, sys, time
    database, stop, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA wal_autocheckpoint=100")  # checkpoints happen during the test too
    connection.execute("CREATE TABLE IF NOT EXISTS batches (batch INTEGER, item INTEGER, payload BLOB)")
    batch = 0
    while not os.path.exists(stop) and batch < 3000:
        for _ in range(5):  # a burst of transactions back to back, then a quiet moment
            connection.execute("BEGIN")
            for item in range(rows):
                connection.execute("INSERT INTO batches VALUES (?, ?, randomblob(300))", (batch, item))
            connection.execute("COMMIT")
            batch += 1
        if batch == 10:
            print("ready", flush=True)
        time.sleep(0.02)
    print(batch, flush=True)
""")


def test_backup_while_another_process_writes_is_consistent(tmp_path):
    rows_per_transaction = 20
    database, stop = tmp_path / "live" / "app.db", tmp_path / "stop"
    database.parent.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(database), str(stop), str(rows_per_transaction)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        manifests = [backup([database.parent], tmp_path / f"backup-{n}", attempts=20) for n in range(5)]
    finally:
        stop.touch()
        writer.wait(timeout=30)
    committed = int(writer.stdout.read().split()[-1])
    for n, manifest in enumerate(manifests):
        (entry,) = manifest.files
        assert entry.status == "backed-up", entry.reason
        assert entry.wal_sha256 is not None  # taken from the main file and the WAL the writer was using
        backup_file = tmp_path / f"backup-{n}" / "app.db"
        per_batch = dict(query_file(backup_file, "SELECT batch, count(*) FROM batches GROUP BY batch"))
        assert set(per_batch.values()) == {rows_per_transaction}  # every transaction whole, or absent
        assert sorted(per_batch) == list(range(len(per_batch)))  # and a prefix of the commits
        assert 10 <= len(per_batch) <= committed
        assert entry.tables == {"batches": rows_per_transaction * len(per_batch)}
        assert verify(tmp_path / f"backup-{n}") == []


def test_verify_of_a_mangled_manifest_names_it(backup_copy):
    data = json.loads((backup_copy / "manifest.json").read_text())
    del data["files"][0]["sha256"]
    (backup_copy / "manifest.json").write_text(json.dumps(data))
    (problem,) = verify(backup_copy)
    assert problem.path == "manifest.json" and "sha256" in problem.problem
