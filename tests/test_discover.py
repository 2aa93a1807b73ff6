"""Discovery: SQLite recognised by header, classified by schema, copies and traps reported."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3

from loader.sources.discover import discover

REAL_KINDS = {
    # Facts from the real data's README and the files' own schemas.
    "claude-flow/Cornjebus__junie/memory.db": "claude-flow-v2",
    "claude-flow/ChrisRoyse__myclaudeflowsetup/memory.db": "claude-flow-v2",
    "claude-flow/DrBalls__drballs-custom-claude-code-commands/memory.db": "claude-flow-v2",
    "claude-flow/ApexSlayer43__apex-os/memory.db": "claude-flow-v3",
    "claude-flow/ApexSlayer43__apex-os/claude_memory.db": "claude-flow-v3",
    "n8n/sutazai__sutazaiapp/database.sqlite": "n8n",
    "flowise/sutazai__sutazaiapp/database.sqlite": "flowise",
    "flowise/Peeragogy__Peeragogy_ChatBot/database.sqlite": "flowise",
}


def test_real_files_are_classified_by_schema(realdata):
    found = {f.source_db: f for f in discover([realdata]).files}
    for source_db, kind in REAL_KINDS.items():
        assert found[source_db].kind == kind, source_db


def test_side_files_and_non_sqlite_are_never_listed_as_databases(realdata):
    found = discover([realdata])
    names = {f.path.name for f in found.files}
    assert not any(n.endswith(("-wal", "-shm", "-journal")) for n in names)
    assert "ruvector.db" not in names
    reasons = {w.path.relative_to(realdata).as_posix(): w.reason for w in found.warnings}
    assert "not a SQLite database" in reasons["claude-flow/AbrahamTad__abraham-career-ops/ruvector.db"]
    assert "orphan WAL" in reasons["claude-flow/Hulupeep__tidetimes/memory.db-wal"]


def test_schema_that_lives_only_in_the_wal_is_found(realdata):
    source = {f.source_db: f for f in discover([realdata]).files}[
        "claude-flow/DerAuctor__ct-zen/memory.db"]
    assert "memory_entries" in source.tables


def test_identical_main_files_with_different_wals_are_not_copies(realdata):
    # DrBalls and DerAuctor share a byte-identical 4 KiB main file; their WALs differ.
    found = {f.source_db: f for f in discover([realdata]).files}
    a = found["claude-flow/DrBalls__drballs-custom-claude-code-commands/memory.db"]
    b = found["claude-flow/DerAuctor__ct-zen/memory.db"]
    assert a.sha256 == b.sha256 and a.wal_sha256 != b.wal_sha256
    assert a.copy_of is None and b.copy_of is None


def test_byte_identical_copy_is_marked_and_not_loaded(tmp_path, realdata):
    original = realdata / "claude-flow/Cornjebus__junie/memory.db"
    for folder in ("a/.swarm", "b/.swarm"):
        (tmp_path / folder).mkdir(parents=True)
        shutil.copyfile(original, tmp_path / folder / "memory.db")
    found = discover([tmp_path])
    first, second = found.files
    assert first.copy_of is None and second.copy_of == first.path
    assert [f for f in found.files if f.copy_of is None and f.error is None] == [first]


def test_symlink_loop_terminates(tmp_path, realdata):
    (tmp_path / "data").mkdir()
    shutil.copyfile(realdata / "claude-flow/00greena__emoji-monogram-generator/memory.db",
                    tmp_path / "data" / "memory.db")
    os.symlink(tmp_path, tmp_path / "data" / "loop")
    found = discover([tmp_path])
    assert [f.path.name for f in found.files] == ["memory.db"]


def test_header_not_name_decides(tmp_path, realdata):
    shutil.copyfile(realdata / "claude-flow/00greena__emoji-monogram-generator/memory.db",
                    tmp_path / "notes.bin")
    (tmp_path / "fake.sqlite").write_bytes(b"not a database at all" * 10)
    found = discover([tmp_path])
    assert [f.path.name for f in found.files] == ["notes.bin"]
    assert [w.path.name for w in found.warnings] == ["fake.sqlite"]


def test_an_empty_database_looking_file_is_warned_about_as_empty(tmp_path):
    (tmp_path / "memory.db").write_bytes(b"")
    (tmp_path / "other.db").write_bytes(b"x")
    reasons = {w.path.name: w.reason for w in discover([tmp_path]).warnings}
    assert "an empty file (0 bytes" in reasons["memory.db"] and "no SQLite header" in reasons["other.db"]


def test_corrupt_database_is_listed_with_its_reason(tmp_path):
    (tmp_path / "broken.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 5000)
    (source,) = discover([tmp_path]).files
    assert source.error and "SQLite" in source.error


def test_a_file_whose_stat_proves_it_unchanged_is_not_read_again(tmp_path):
    from loader.ledger import KnownFile
    from loader.sources.discover import stat_signature
    folder = tmp_path / "tree"
    folder.mkdir()
    database = folder / "memory.db"
    connection = sqlite3.connect(database)
    connection.execute("CREATE TABLE memory_store (k TEXT)")
    connection.commit()
    connection.close()
    real_sha = hashlib.sha256(database.read_bytes()).hexdigest()

    def discovered_sha(recorded_stat: dict) -> str:
        # a checksum no file has: seeing it back means the file was not read
        known = {str(database): KnownFile("f" * 64, None, "extended-memory", {"memory_store": 0}, recorded_stat)}
        (found,) = discover([folder], known=known).files
        return found.sha256

    recorded = stat_signature(database)
    long_after = dict(recorded, taken_ns=recorded["taken_ns"] + 3600 * 10**9)
    assert discovered_sha(long_after) == "f" * 64
    # taken in the same instant the file was written: a write in that clock tick could hide behind it
    assert discovered_sha(recorded) == real_sha
    with open(database, "ab") as handle:
        handle.write(b"\0")
    assert discovered_sha(long_after) == hashlib.sha256(database.read_bytes()).hexdigest()


def test_an_empty_main_file_whose_wal_sqlite_cannot_read_is_warned_about(tmp_path):
    """A truncated main file beside its WAL, and one beside a WAL of garbage: SQLite opens both as
    empty databases (checked here on a copy), so discovery lists them and says their WAL is lost."""
    donor = tmp_path / "donor.db"
    with sqlite3.connect(donor) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        (tmp_path / "root").mkdir()
        shutil.copyfile(tmp_path / "donor.db-wal", tmp_path / "root" / "truncated.db-wal")
    (tmp_path / "root" / "truncated.db").write_bytes(b"")
    (tmp_path / "root" / "garbage.db").write_bytes(b"")
    (tmp_path / "root" / "garbage.db-wal").write_bytes(b"not a wal" * 50)
    probe = tmp_path / "probe"
    probe.mkdir()
    for name in ("truncated.db", "truncated.db-wal"):
        shutil.copyfile(tmp_path / "root" / name, probe / name)
    with sqlite3.connect(probe / "truncated.db") as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)

    found = discover([tmp_path / "root"])
    assert sorted(f.path.name for f in found.files) == ["garbage.db", "truncated.db"]
    reasons = {w.path.name: w.reason for w in found.warnings}
    for name in ("garbage.db", "truncated.db"):
        assert f"SQLite reads no table from its WAL ({name}-wal)" in reasons[name]



def test_a_root_under_which_no_database_is_found_is_a_warning(tmp_path):
    """A mistyped root that exists (an empty folder, one of other files) would load nothing and pass."""
    empty, other, with_db = tmp_path / "empty", tmp_path / "other", tmp_path / "with-db"
    empty.mkdir()
    other.mkdir()
    (other / "notes.txt").write_text("not a database")
    (with_db / ".swarm").mkdir(parents=True)
    with sqlite3.connect(with_db / ".swarm" / "memory.db") as connection:
        connection.execute("CREATE TABLE memory_entries (key TEXT)")
    connection.close()
    found = discover([empty, other, with_db])
    assert [f.path.parent.parent for f in found.files] == [with_db]
    assert sorted(w.path for w in found.warnings if w.reason == "no SQLite database found under it") \
        == sorted([empty, other])
    assert not [w for w in discover([with_db]).warnings if "no SQLite database" in w.reason]
    # a root that is a link to a folder another root holds too: its databases are found (once)
    (tmp_path / "link").symlink_to(with_db)
    for roots in ([with_db, tmp_path / "link"], [tmp_path / "link", with_db]):
        assert not [w for w in discover(roots).warnings if "no SQLite database" in w.reason], roots


def test_a_quarantine_folder_an_interrupted_archive_left_is_not_a_source(tmp_path):
    """kill -9 of `archive --remove-originals` can leave a file's parts in its quarantine folder, inside
    the root: loading them would make a second source of the archived file's rows."""
    tree = tmp_path / "tree"
    (tree / "app" / ".swarm").mkdir(parents=True)
    for folder in (tree / "app" / ".swarm", tree / "app" / ".swarm" / ".consolidate-quarantine-20261204T000000Z-ab12"):
        folder.mkdir(exist_ok=True)
        with sqlite3.connect(folder / "memory.db") as connection:
            connection.execute("CREATE TABLE memory_entries (key TEXT)")
        connection.close()
    found = discover([tree])
    assert [f.path for f in found.files] == [tree / "app" / ".swarm" / "memory.db"]
    (warning,) = [w for w in found.warnings if "archive --remove-originals" in w.reason]
    assert warning.path.name.startswith(".consolidate-quarantine-") and "not loaded" in warning.reason
