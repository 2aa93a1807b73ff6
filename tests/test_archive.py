"""`archive`: only files whose exact bytes were migrated and reconciled go into the zip; the zip
verifies member by member; originals are removed only when everything still checks out.

Trees are consolidated by the real CLI first. Expectations use plain hashlib, zipfile and SQL, never the
archive module's own helpers. The shared real databases are copied to tmp_path before anything could
delete them."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import struct
import tempfile
import zipfile
from pathlib import Path

import pytest
from rich.console import Console
from test_status import add_table

from loader.cli.render import sync_table
from loader.database import Target
from loader.fixtures.sample import write_sample
from loader.operate.archive import ArchiveError, archive, remove_archived_originals, verify_archive
from loader.operate.status import UNCHANGED, status
from loader.pipeline import run, sync
from loader.sources.snapshot import EVERY_SIDE_FILE, ArchiveUnreadable, archived_copy

from conftest import change, consolidate, fetch, independent_row_count, numbered_v2_file, sha256, write_and_run_sample

MAIN_V2 = "opt/sutazaiapp/.swarm/memory.db"
N8N = "opt/sutazaiapp/data/n8n/database.sqlite"
FLOWISE = "opt/sutazaiapp/data/flowise/database.sqlite"
DIND_COPY = "opt/sutazaiapp/docker/dind/.swarm/memory.db"  # discovery finds the backups/ file first
DIND_ORIGINAL = "opt/sutazaiapp/backups/2025-08-19/.swarm/memory.db"
NOT_SQLITE = "opt/sutazaiapp/.swarm/ruvector.db"
ORPHAN_WAL = "opt/sutazaiapp/old/.swarm/memory.db-wal"


@pytest.fixture
def loaded_sample(tmp_path, target, home) -> Path:
    root = tmp_path / "tree"
    write_and_run_sample(root, target, home)
    return root


def sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in EVERY_SIDE_FILE]


def zip_manifest(archive_path: Path) -> dict:
    with zipfile.ZipFile(archive_path) as bundle:
        return json.loads(bundle.read("manifest.json"))


def member_hashes(archive_path: Path) -> dict[str, str]:
    with zipfile.ZipFile(archive_path) as bundle:
        return {name: hashlib.sha256(bundle.read(name)).hexdigest() for name in bundle.namelist()
                if name != "manifest.json"}


def flip_byte_in_member(archive_path: Path, name: str) -> None:
    """Invert one byte in the middle of a member's compressed data (after its local header)."""
    with zipfile.ZipFile(archive_path) as bundle:
        info = bundle.getinfo(name)
    with open(archive_path, "r+b") as handle:
        handle.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", handle.read(4))
        offset = info.header_offset + 30 + name_length + extra_length + info.compress_size // 2
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ 0xFF]))


def reasons_by_path(refusals) -> dict[Path, str]:
    return {Path(item.path): item.reason for item in refusals}


def test_archive_takes_only_passing_files_and_refuses_a_modified_one(loaded_sample, target, tmp_path):
    root = loaded_sample
    add_table(root / N8N)
    originals = {path: sha256(path) for path in root.rglob("*") if path.is_file()}

    report = archive(target, [root], tmp_path / "archives")

    refused = reasons_by_path(report.refused)
    assert set(refused) == {root / N8N}
    assert "changed since its current load" in refused[root / N8N]
    archived = {Path(entry.path): entry for entry in report.archived}
    assert root / MAIN_V2 in archived and root / FLOWISE in archived and len(archived) == 9
    assert sha256(root / DIND_COPY) == sha256(root / DIND_ORIGINAL)
    assert archived[root / DIND_COPY].copy_of == str(root / DIND_ORIGINAL)
    assert {entry.copy_of for path, entry in archived.items() if path != root / DIND_COPY} == {None}

    manifest = zip_manifest(report.archive)
    assert manifest["format"] == "consolidate-archive/1" and manifest["archived_at"]
    hashes = member_hashes(report.archive)
    listed = {member["name"]: member for entry in manifest["files"] for member in entry["members"]}
    assert set(hashes) == set(listed)
    for name, member in listed.items():
        assert hashes[name] == member["sha256"] == originals[Path(member["original"])], name
    main_members = {Path(m["original"]).name for e in manifest["files"] if Path(e["path"]) == root / MAIN_V2
                    for m in e["members"]}
    assert main_members == {"memory.db", "memory.db-wal"}

    recorded = Path(str(report.archive) + ".sha256").read_text().split()
    assert recorded == [sha256(report.archive), report.archive.name]
    assert verify_archive(report.archive) == []
    assert {path: sha256(path) for path in originals} == originals  # nothing touched, nothing removed

    second = archive(target, [root], tmp_path / "archives")  # a folder of archives takes another one
    assert second.archive != report.archive and len(list((tmp_path / "archives").glob("*.zip"))) == 2


def test_verify_names_the_member_whose_bytes_changed(loaded_sample, target, tmp_path):
    report = archive(target, [loaded_sample], tmp_path / "archives")
    assert verify_archive(report.archive) == []
    member = f"files/{FLOWISE}"
    flip_byte_in_member(report.archive, member)

    problems = verify_archive(report.archive)
    assert member in {problem.path for problem in problems}
    assert next(p for p in problems if p.path == member).source == str(loaded_sample / FLOWISE)
    assert {problem.path for problem in problems} <= {member, report.archive.name}


def test_remove_originals_removes_only_passing_files(loaded_sample, target, tmp_path):
    root = loaded_sample
    add_table(root / N8N)
    (root / MAIN_V2).with_name("memory.db-shm").write_bytes(bytes(32768))
    report = archive(target, [root], tmp_path / "archives", remove_originals=True)

    archived = {Path(entry.path) for entry in report.archived}
    assert {Path(removal.path) for removal in report.removals} == archived
    assert all(removal.refused is None for removal in report.removals)
    for path in archived:
        assert not path.exists() and not any(side.exists() for side in sidecars(path)), path
    main_removal = next(r for r in report.removals if Path(r.path) == root / MAIN_V2)
    assert {Path(p).name for p in main_removal.removed} == {"memory.db", "memory.db-wal", "memory.db-shm"}
    assert root / DIND_COPY in archived and not (root / DIND_COPY).exists()
    for kept in (N8N, NOT_SQLITE, ORPHAN_WAL):
        assert (root / kept).exists(), kept
    assert verify_archive(report.archive) == []
    shown = {Path(f.source_path): f for f in status(target).files}
    assert shown[root / DIND_COPY].on_disk == "archived" and shown[root / DIND_ORIGINAL].on_disk == "archived"


def test_a_copy_is_archived_for_the_bytes_its_original_loaded(loaded_sample, target, tmp_path):
    """A byte-identical copy (never loaded) passes on its original's load: refused once its own bytes
    changed, archived while they are the loaded ones even if the original changed since."""
    root = loaded_sample
    copy, original = root / DIND_COPY, root / DIND_ORIGINAL
    copy_bytes = copy.read_bytes()
    add_table(copy)

    first = archive(target, [root], tmp_path / "first")

    reason = reasons_by_path(first.refused)[copy]
    assert f"no longer a byte-identical copy of {original}" in reason and "main file" in reason

    copy.write_bytes(copy_bytes)
    add_table(original)
    second = archive(target, [root], tmp_path / "second", remove_originals=True)

    assert "changed since its current load" in reasons_by_path(second.refused)[original]
    entry = next(entry for entry in second.archived if Path(entry.path) == copy)
    assert entry.copy_of == str(original)
    assert member_hashes(second.archive)[entry.members[0].name] == hashlib.sha256(copy_bytes).hexdigest()
    assert not copy.exists() and original.exists()
    shown = {Path(f.source_path): f for f in status(target).files}
    assert shown[copy].on_disk == "archived" and shown[original].on_disk == "changed"


def test_a_file_loaded_on_its_own_that_became_a_copy_is_checked_against_its_own_load(loaded_sample, target,
                                                                                     home, tmp_path):
    """A file loaded on its own, later overwritten with another file's bytes: the next sync finds it a copy,
    but its own load stays current, so the archive checks it against that load (and refuses it)."""
    root = loaded_sample
    became = root / "opt/sutazaiapp/mcp/claude-flow/.swarm/memory.db"
    shutil.copyfile(root / DIND_ORIGINAL, became)
    synced = sync([root], target, home, quiet=True)
    assert {Path(f.source_path): f.status for f in synced.files}[became] == "copy"

    report = archive(target, [root], tmp_path / "archives", remove_originals=True)

    assert "changed since its current load" in reasons_by_path(report.refused)[became]
    assert became.exists() and became not in {Path(entry.path) for entry in report.archived}


def test_remove_originals_refuses_when_the_archive_does_not_verify(loaded_sample, target, tmp_path):
    report = archive(target, [loaded_sample], tmp_path / "archives")
    flip_byte_in_member(report.archive, f"files/{FLOWISE}")
    before = {path: sha256(path) for path in loaded_sample.rglob("*") if path.is_file()}

    removals = remove_archived_originals(target, report.archive)

    assert len(removals) == len(report.archived)
    assert all(not r.removed and "does not verify" in r.refused for r in removals)
    assert {path: sha256(path) for path in before} == before


def test_remove_originals_refuses_what_the_ledger_no_longer_shows_migrated(tmp_path, target, home):
    """With the marts in a schema of their own (--schema): archive reads reconciliation there."""
    root = tmp_path / "tree"
    assert consolidate("sample", str(root)).returncode == 0
    result = consolidate("run", str(root), "--no-backup", "--schema", "marts", target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    target = Target(target.dsn, schema="marts")
    report = archive(target, [root], tmp_path / "archives")
    assert {Path(entry.path) for entry in report.archived} >= {root / MAIN_V2, root / N8N, root / FLOWISE}
    with target.connect() as connection:
        connection.execute("UPDATE marts.reconciliation SET reconciled = false WHERE source_path = %s",
                           (str(root / MAIN_V2),))
        connection.execute("UPDATE consolidate.load_tables SET rows_loaded = rows_loaded - 1 WHERE source_path = %s",
                           (str(root / N8N),))
    add_table(root / FLOWISE)

    removals = {Path(r.path): r for r in remove_archived_originals(target, report.archive)}

    assert "not reconciled" in removals[root / MAIN_V2].refused
    assert "different number of rows" in removals[root / N8N].refused
    assert "changed since" in removals[root / FLOWISE].refused
    for path in (MAIN_V2, N8N, FLOWISE):
        assert not removals[root / path].removed and (root / path).exists()
    assert (root / MAIN_V2).with_name("memory.db-wal").exists()
    others = [r for path, r in removals.items() if path not in (root / MAIN_V2, root / N8N, root / FLOWISE)]
    assert others and all(r.refused is None and not Path(r.path).exists() for r in others)


def test_archive_refuses_unsuitable_destinations(tmp_path, target):
    root = tmp_path / "tree"
    root.mkdir()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(ArchiveError, match="holds more than consolidate archives"):
        archive(target, [root], occupied)
    with pytest.raises(ArchiveError, match="inside the root"):
        archive(target, [root], root / "archives")
    with pytest.raises(ArchiveError, match=r"/proc/archives cannot be created or written"):  # even for root
        archive(target, [root], Path("/proc/archives"))
    assert (occupied / "notes.txt").read_text() == "mine" and not (root / "archives").exists()


def test_archive_without_a_ledger_refuses_every_file_and_writes_nothing(tmp_path, target):
    root = tmp_path / "tree"
    write_sample(root)
    state = root / ".consolidate"
    (state / "backups").mkdir(parents=True)
    shutil.copyfile(root / FLOWISE, state / "backups" / "database.sqlite")

    report = archive(target, [root], state / "archives", exclude=[state])

    assert report.archive is None and report.archived == []
    assert report.refused and all("no load has run" in r.reason for r in report.refused)
    assert not any(Path(r.path).is_relative_to(state) for r in report.refused)
    assert not (state / "archives").exists()


def test_archive_and_remove_the_real_databases(realdata, target, home, tmp_path):
    root = tmp_path / "realdata"
    shutil.copytree(realdata, root)
    result = consolidate("run", str(root), "--json", target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = json.loads(result.stdout)
    originals = {path: sha256(path) for path in root.rglob("*") if path.is_file()}

    report = archive(target, [root], tmp_path / "archives", remove_originals=True)

    loaded = {Path(f["source_path"]) for f in run["files"] if f["status"] in ("loaded", "copy")}
    assert {Path(entry.path) for entry in report.archived} == loaded
    hashes = member_hashes(report.archive)
    for entry in zip_manifest(report.archive)["files"]:
        for member in entry["members"]:
            assert hashes[member["name"]] == originals[Path(member["original"])]
    for path in loaded:
        assert not path.exists() and not any(side.exists() for side in sidecars(path)), path



def test_a_file_synced_by_a_row_level_change_load_shows_in_status_and_is_archived(tmp_path, target, home):
    """After a change load (only the changed rows stored, loader/load/delta.py), status counts the file's
    rows, not the rows the load stored, and archive takes the file: its current load loaded every row
    SQLite holds and the reconciliation mart reconciled it."""
    root = tmp_path / "tree"
    db = numbered_v2_file(root / "app/.swarm/memory.db", 25)
    first = run([root], target, home, backup_to=None, quiet=True)
    change(db, ("UPDATE memory_entries SET value = '\"changed\"', updated_at = updated_at + 100 WHERE key = 'key-7'",),
           ("DELETE FROM memory_entries WHERE key = 'key-8'",),
           ("INSERT INTO memory_entries (key, value, namespace, created_at, updated_at) "
            "VALUES ('new', '1', 'default', 1750000999, 1750000999)",))
    synced = sync([root], target, home, quiet=True)
    assert synced.build.success, synced.build.failures
    assert fetch(target, "SELECT delta_of FROM consolidate.load_files WHERE load_id = %s",
                 (synced.load_id,)) == [(first.loaded.load_id,)]
    rows = independent_row_count(db, tmp_path / "count")

    (shown,) = status(target).files

    assert (shown.on_disk, shown.current.load_id) == (UNCHANGED, synced.load_id)
    assert shown.current.rows_in_sqlite == shown.current.rows_loaded == rows

    report = archive(target, [root], tmp_path / "archives")

    assert report.refused == [] and [Path(entry.path) for entry in report.archived] == [db]
    assert verify_archive(report.archive) == []


def test_after_the_originals_are_removed_validate_status_sync_and_rollback_read_the_archive(
        realdata, target, home, tmp_path):
    """The plan's end state: every original archived and removed, a byte-identical copy with them (so no
    later sync loads it as a source of its own). The ledger records where each file's
    bytes are now; validate spot-checks them in the archive and passes, status and sync say `archived`
    (not `missing`), rollback of a v2 file with a WAL writes its rows from the archive; an archive
    moved away fails validation, named, until `archive --verify --relocate`; one damaged afterwards fails
    validation, named, and is not relocated; a file put back validates from disk."""
    root = tmp_path / "realdata"
    shutil.copytree(realdata, root)
    shutil.copytree(root / "claude-flow" / "DerAuctor__ct-zen", root / "zz-copies" / "ct-zen")  # WAL and all
    result = consolidate("run", str(root), "--no-backup", "--json", target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ran = json.loads(result.stdout)["files"]
    loaded = [f for f in ran if f["status"] == "loaded"]
    copies = {Path(f["source_path"]) for f in ran if f["status"] == "copy"}
    assert copies == {root / "zz-copies" / "ct-zen" / "memory.db"}
    v2 = next(Path(f["source_path"]) for f in loaded if f["kind"] == "claude-flow-v2"
              and Path(f["source_path"] + "-wal").exists() and Path(f["source_path"] + "-wal").stat().st_size)
    originals = tmp_path / "originals"
    originals.mkdir()
    for part in (v2, v2.with_name(v2.name + "-wal")):
        shutil.copy2(part, originals / part.name)
    original_rows = read_rows(originals / v2.name, "SELECT rowid, * FROM memory_entries ORDER BY rowid")

    report = archive(target, [root], tmp_path / "archives", remove_originals=True)
    removed = {Path(r.path) for r in report.removals if r.removed} - copies
    assert removed == {Path(f["source_path"]) for f in loaded} and not v2.exists()
    assert {Path(r.path) for r in report.removals if r.removed} >= copies and not any(p.exists() for p in copies)

    validated = consolidate("validate", "--json", target=target, home=home)
    assert validated.returncode == 0, validated.stdout[-3000:] + validated.stderr[-3000:]
    files = {Path(f["source_path"]): f for f in json.loads(validated.stdout)["files"]}
    assert {files[path]["checksum_status"] for path in removed} == {"archived"}
    assert all(files[path]["problems"] == [] for path in removed)
    assert files[v2]["spot_checked"] > 0

    shown = {Path(f.source_path): f for f in status(target).files}
    assert {shown[path].on_disk for path in removed | copies} == {"archived"}
    assert {shown[path].archived.archive_path for path in removed} == {str(report.archive)}
    assert {shown[path].archive_exists for path in removed} == {True}

    synced = sync([root], target, home, quiet=True)
    by_path = {Path(f.source_path): f for f in synced.files}
    assert {by_path[path].status for path in removed} == {"archived"} and synced.exit_code == 0
    assert not copies & set(by_path)  # a removed copy is not loaded as a source of its own
    assert by_path[v2].source_db == str(v2.relative_to(root))

    rolled_back = consolidate("rollback", str(v2), "--to", str(tmp_path / "rollback.db"), target=target, home=home)
    assert rolled_back.returncode == 0, rolled_back.stdout[-3000:] + rolled_back.stderr[-3000:]
    assert read_rows(tmp_path / "rollback.db", "SELECT rowid, * FROM memory_entries ORDER BY rowid") == original_rows

    moved_to = tmp_path / "cold" / "moved.zip"  # the archive moved: named by status and validate
    moved_to.parent.mkdir()
    report.archive.rename(moved_to)
    other = next(iter(removed - {v2}))
    assert {Path(f.source_path): f for f in status(target).files}[other].archive_exists is False
    synced_json = consolidate("sync", str(root), "--no-build", "--json", target=target, home=home)
    assert synced_json.returncode == 0, synced_json.stdout[-3000:] + synced_json.stderr[-3000:]
    assert {Path(f["source_path"]): f["archive_exists"] for f in json.loads(synced_json.stdout)["files"]
            if f["status"] == "archived"} == dict.fromkeys(removed, False)
    console = Console(width=400, record=True, file=io.StringIO())
    console.print(sync_table(sync([root], target, home, quiet=True, build=False)))
    assert console.export_text().count("its archive is not there any more") == len(removed)
    moved = consolidate("validate", "--json", target=target, home=home)
    assert moved.returncode == 1
    problems = {Path(f["source_path"]): f["problems"] for f in json.loads(moved.stdout)["files"]}
    assert all(any(str(report.archive) in problem for problem in problems[path]) for path in removed)
    # ... until `archive --verify --relocate` points the ledger at where it is now
    relocated = consolidate("archive", "--verify", str(moved_to), "--relocate", "--json", target=target, home=home)
    assert relocated.returncode == 0, relocated.stdout[-3000:] + relocated.stderr[-3000:]
    assert {Path(r["source_path"]) for r in json.loads(relocated.stdout)["relocated"]} == removed | copies
    assert json.loads(relocated.stdout)["exit_code"] == 0
    again = consolidate("archive", "--verify", str(moved_to), "--relocate", "--json", target=target, home=home)
    assert again.returncode == 0 and json.loads(again.stdout)["relocated"] == []  # already pointed here
    assert consolidate("validate", target=target, home=home).returncode == 0
    # a later `run` backs up what is left under the root; the removed files are not asked to be in it
    again = consolidate("run", str(root), "--rebuild", "--json", target=target, home=home)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]

    member = next(m["name"] for entry in zip_manifest(moved_to)["files"] if Path(entry["path"]) == v2
                  for m in entry["members"] if m["original"] == str(v2))
    flip_byte_in_member(moved_to, member)
    damaged = consolidate("validate", "--json", target=target, home=home)
    assert damaged.returncode == 1
    problems = {Path(f["source_path"]): f["problems"] for f in json.loads(damaged.stdout)["files"]}
    assert any("archive cannot be read" in problem and str(moved_to) in problem for problem in problems[v2])
    assert all(problems[path] == [] for path in removed - {v2})
    refused = consolidate("archive", "--verify", str(moved_to), "--relocate", "--json", target=target, home=home)
    assert refused.returncode == 1 and json.loads(refused.stdout)["relocated"] is None
    assert json.loads(refused.stdout)["exit_code"] == 1

    for part in originals.iterdir():  # put back where it was: what is on disk counts again
        shutil.copy2(part, v2.with_name(part.name))
    restored = consolidate("validate", "--json", target=target, home=home)
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
    assert {Path(f["source_path"]): f["checksum_status"] for f in json.loads(restored.stdout)["files"]}[v2] == "unchanged"
    assert {Path(f.source_path): f for f in status(target).files}[v2].on_disk == UNCHANGED


def test_reading_a_damaged_archive_back_always_says_it_cannot_be_read(tmp_path):
    """Whatever byte of a member is damaged (a bad CRC, a broken deflate stream), a truncated or missing
    archive: validate and rollback get ArchiveUnreadable, never another exception."""
    database = tmp_path / "memory.db"
    connection = sqlite3.connect(database)
    connection.execute("CREATE TABLE memory_entries (key TEXT, value TEXT)")
    connection.executemany("INSERT INTO memory_entries VALUES (?, ?)",
                           [(f"key-{n}", f"value {n} " + "x" * (n % 50)) for n in range(500)])
    connection.commit()
    connection.close()
    archive_path, member = tmp_path / "archive.zip", "files/memory.db"
    with zipfile.ZipFile(archive_path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.write(database, member)
    identity = (sha256(database), None)
    intact = archive_path.read_bytes()
    with zipfile.ZipFile(archive_path) as bundle:
        info = bundle.getinfo(member)
    name_length, extra_length = struct.unpack("<HH", intact[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length

    def read_back(folder: str) -> None:
        (tmp_path / folder).mkdir()
        archived_copy(archive_path, {"": member}, tmp_path / folder, "memory.db", identity)

    read_back("intact")
    damaged_at = range(start, start + info.compress_size, max(1, info.compress_size // 80))
    for offset in damaged_at:
        damaged = bytearray(intact)
        damaged[offset] ^= 0xFF
        archive_path.write_bytes(damaged)
        with pytest.raises(ArchiveUnreadable):
            read_back(f"flipped-{offset}")
    for name, content in (("truncated", intact[:len(intact) // 2]), ("empty", b"")):
        archive_path.write_bytes(content)
        with pytest.raises(ArchiveUnreadable):
            read_back(name)
    archive_path.unlink()
    with pytest.raises(ArchiveUnreadable):
        read_back("missing")


def read_rows(database: Path, query: str) -> list[tuple]:
    """Rows with their SQLite types, read from a private copy (a WAL database is never opened in place)."""
    with tempfile.TemporaryDirectory() as folder:
        for part in database.parent.glob(database.name + "*"):
            shutil.copy2(part, Path(folder) / part.name)
        connection = sqlite3.connect(Path(folder) / database.name)
        try:
            return [tuple((type(value).__name__, value) for value in row) for row in connection.execute(query)]
        finally:
            connection.close()
