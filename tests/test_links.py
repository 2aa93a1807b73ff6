"""Symbolic links: a file reached through a link is loaded once, under its real path, with its real
`-wal`; nothing is ever deleted through a link or outside the roots; and the deletion of originals
keeps any bytes that changed between the check and the move.

Real CLI runs against a real PostgreSQL, on private copies of the shared real databases. Expected row
counts come from sqlite3 on other private copies; checksums from plain hashlib."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import zipfile
from pathlib import Path

from loader.operate import archive as archive_module
from loader.operate.archive import archive, remove_archived_originals
from loader.sources.discover import discover

from conftest import consolidate, fetch, sha256

WAL_ONLY_ROWS = "claude-flow/ChrisRoyse__myclaudeflowsetup"  # rows that live only in its -wal
PLAIN_V2 = "claude-flow/00greena__emoji-monogram-generator"
OTHER_V2 = "claude-flow/Agentist-Elder__transformers-predictions"
THIRD_V2 = "claude-flow/Bexshmex__GuitarSettings"


def private_copy_of(realdata: Path, name: str, folder: Path, file_name: str = "memory.db") -> Path:
    """The database of `name` (main file and -wal) copied into `folder` as `file_name`."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal"):
        original = realdata / name / ("memory.db" + suffix)
        if original.exists():
            shutil.copyfile(original, folder / (file_name + suffix))
    return folder / file_name


def memory_rows(database: Path) -> int:
    connection = sqlite3.connect(database)
    try:
        return connection.execute("SELECT count(*) FROM memory_entries").fetchone()[0]
    finally:
        connection.close()


def expected_rows(realdata: Path, name: str, scratch: Path, with_wal: bool = True) -> int:
    """memory_entries rows of a private copy (with its -wal, or the main file alone)."""
    copy = scratch / "memory.db"
    scratch.mkdir(parents=True)
    shutil.copyfile(realdata / name / "memory.db", copy)
    if with_wal:
        shutil.copyfile(realdata / name / "memory.db-wal", scratch / "memory.db-wal")
    try:
        return memory_rows(copy)
    finally:
        shutil.rmtree(scratch)


def run(root: Path, target, home: Path) -> dict:
    result = consolidate("run", str(root), "--json", target=target, home=home)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout)


def test_discovery_finds_the_wal_beside_the_real_file_and_records_the_link(realdata, tmp_path):
    real = private_copy_of(realdata, WAL_ONLY_ROWS, tmp_path / "elsewhere")
    link = tmp_path / "root" / ".swarm" / "memory.db"
    link.parent.mkdir(parents=True)
    os.symlink(real, link)
    os.symlink(real, tmp_path / "root" / "second-link.db")

    found = discover([tmp_path / "root"])

    assert [source.path for source in found.files] == [real]  # once, under its real path
    source = found.files[0]
    assert source.wal_sha256 == sha256(real.with_name("memory.db-wal"))
    assert sorted(source.link_paths) == sorted([link, tmp_path / "root" / "second-link.db"])
    assert source.source_db in {".swarm/memory.db", "second-link.db"}  # named after a path under the root


def test_a_linked_wal_database_loads_every_row_reconciles_and_is_archived_whole(realdata, tmp_path, target, home):
    real = private_copy_of(realdata, WAL_ONLY_ROWS, tmp_path / "elsewhere")
    before = {path: sha256(path) for path in real.parent.iterdir()}
    expected = expected_rows(realdata, WAL_ONLY_ROWS, tmp_path / "expected")
    assert expected > expected_rows(realdata, WAL_ONLY_ROWS, tmp_path / "main-only", with_wal=False)
    root = tmp_path / "root"
    link = root / ".swarm" / "memory.db"
    link.parent.mkdir(parents=True)
    os.symlink(real, link)

    outcome = run(root, target, home)

    assert [(f["source_path"], f["status"]) for f in outcome["files"]] == [(str(real), "loaded")]
    assert fetch(target, "SELECT count(*) FROM raw_claude_flow_v2.memory_entries WHERE _source_path = %s",
                 (str(real),)) == [(expected,)]
    assert fetch(target, "SELECT source_path, wal_sha256, link_paths FROM consolidate.load_files") == [
        (str(real), before[real.with_name("memory.db-wal")], [str(link)])]
    assert fetch(target, "SELECT rows_in_sqlite, reconciled FROM public.reconciliation WHERE source_path = %s",
                 (str(real),)) == [(expected, True)]
    backups = list((home / "backups").glob("*/.swarm/memory.db"))
    assert len(backups) == 1 and memory_rows(backups[0]) == expected
    assert {path: sha256(path) for path in real.parent.iterdir()} == before  # the source never changed

    report = archive(target, [root], tmp_path / "archives")

    assert [entry.path for entry in report.archived] == [str(real)] and report.refused == []
    extracted = tmp_path / "extracted"
    with zipfile.ZipFile(report.archive) as bundle:
        names = sorted(name for name in bundle.namelist() if name != "manifest.json")
        assert names == ["files/.swarm/memory.db", "files/.swarm/memory.db-wal"]
        bundle.extractall(extracted, members=names)
    assert memory_rows(extracted / "files" / ".swarm" / "memory.db") == expected


def test_remove_originals_never_deletes_through_a_link_or_outside_the_roots(realdata, tmp_path, target, home):
    outside = tmp_path / "outside"
    behind_folder_link = private_copy_of(realdata, PLAIN_V2, outside / "folder")
    behind_file_link = private_copy_of(realdata, OTHER_V2, outside, "linked.db")
    root = tmp_path / "root"
    inside = private_copy_of(realdata, THIRD_V2, root / "inside")
    os.symlink(outside / "folder", root / "linked-folder")
    os.symlink(behind_file_link, root / "linked.db")
    outside_before = {path: sha256(path) for path in outside.rglob("*") if path.is_file()}
    run(root, target, home)

    report = archive(target, [root], tmp_path / "archives", remove_originals=True)

    assert {entry.path for entry in report.archived} == {str(inside), str(behind_folder_link), str(behind_file_link)}
    removals = {removal.path: removal for removal in report.removals}
    for linked in (behind_folder_link, behind_file_link):
        assert removals[str(linked)].removed == [], linked
        assert "symbolic link" in removals[str(linked)].refused, linked
    assert removals[str(inside)].refused is None and removals[str(inside)].removed == [str(inside)]
    assert not inside.exists()
    assert {path: sha256(path) for path in outside.rglob("*") if path.is_file()} == outside_before
    assert (root / "linked-folder").is_symlink() and (root / "linked.db").is_symlink()
    assert not list(root.rglob(".consolidate-quarantine-*")) and not list(outside.rglob(".consolidate-quarantine-*"))


def test_remove_originals_refuses_an_archived_path_that_now_goes_through_a_link(realdata, tmp_path, target, home):
    """A folder replaced by a link after archiving: the path still names the archived bytes, but through a link."""
    root = tmp_path / "root"
    private_copy_of(realdata, PLAIN_V2, root / "data")
    run(root, target, home)
    report = archive(target, [root], tmp_path / "archives")
    moved = tmp_path / "moved-away"
    os.rename(root / "data", moved)
    os.symlink(moved, root / "data")

    [removal] = remove_archived_originals(target, report.archive)

    assert removal.removed == [] and "symbolic link" in removal.refused
    assert (moved / "memory.db").exists()


def test_bytes_changed_between_the_check_and_the_move_are_kept_and_named(realdata, tmp_path, target, home,
                                                                         monkeypatch):
    root = tmp_path / "root"
    database = private_copy_of(realdata, PLAIN_V2, root)
    run(root, target, home)
    report = archive(target, [root], tmp_path / "archives")
    move = archive_module.move_into_quarantine

    def write_then_move(folder, quarantine, names):
        # An application writes after the checksums were checked, just before the files are moved.
        with open(database, "ab") as handle:
            handle.write(b"written by an application at the last moment")
        return move(folder, quarantine, names)

    monkeypatch.setattr(archive_module, "move_into_quarantine", write_then_move)

    [removal] = remove_archived_originals(target, report.archive)

    changed = database.read_bytes()
    assert removal.removed == []
    assert "main file changed" in removal.refused and "put back" in removal.refused
    assert changed.endswith(b"written by an application at the last moment")
    assert not list(root.glob(".consolidate-quarantine-*"))


def test_changed_bytes_stay_in_quarantine_when_a_new_file_took_their_place(realdata, tmp_path, target, home,
                                                                             monkeypatch):
    root = tmp_path / "root"
    database = private_copy_of(realdata, PLAIN_V2, root)
    run(root, target, home)
    report = archive(target, [root], tmp_path / "archives")
    move = archive_module.move_into_quarantine

    def move_then_write(folder, quarantine, names):
        moved = move(folder, quarantine, names)
        # The application still had the file open and wrote to it, then created a new database in its place.
        [quarantined] = root.glob(".consolidate-quarantine-*/memory.db")
        with open(quarantined, "ab") as handle:
            handle.write(b"late write")
        database.write_bytes(b"a new file")
        return moved

    monkeypatch.setattr(archive_module, "move_into_quarantine", move_then_write)

    [removal] = remove_archived_originals(target, report.archive)

    [quarantined] = root.glob(".consolidate-quarantine-*/memory.db")
    assert removal.removed == [] and "main file changed" in removal.refused
    assert str(quarantined.parent) in removal.refused
    assert quarantined.read_bytes().endswith(b"late write")
    assert database.read_bytes() == b"a new file"
