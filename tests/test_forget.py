"""`consolidate forget`: a file deleted outside `archive` is accepted as gone. Before, `validate` failed on
it for good; after, its rows stay in the marts, validate checks their counts and passes, status and sync
say `forgotten`; a file put back on disk counts from disk again. Trees are consolidated by the real CLI;
expectations are counted with SQL on the marts before the deletion, never taken from forget's output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import consolidate, fetch, write_and_run_sample

MAIN_V2 = "opt/sutazaiapp/.swarm/memory.db"  # a WAL database
N8N = "opt/sutazaiapp/data/n8n/database.sqlite"


def files_of(result) -> dict[Path, dict]:
    return {Path(f["source_path"]): f for f in json.loads(result.stdout)["files"]}


def test_a_file_deleted_outside_archive_can_be_accepted_as_gone(tmp_path, target, home):
    root = tmp_path / "tree"
    write_and_run_sample(root, target, home)
    gone = root / MAIN_V2
    rows_from_it = fetch(target, "SELECT count(*) FROM unified_memory WHERE source_path = %s", (str(gone),))
    assert rows_from_it[0][0] > 0
    kept = tmp_path / "kept"
    kept.mkdir()
    for part in (gone, gone.with_name(gone.name + "-wal")):
        shutil.copy2(part, kept / part.name)

    refused = consolidate("forget", str(gone), "--json", target=target, home=home)
    assert refused.returncode == 5 and "still on disk" in refused.stderr  # nothing to accept yet
    for part in gone.parent.glob("memory.db*"):
        part.unlink()
    missing = consolidate("validate", "--json", target=target, home=home)
    assert missing.returncode == 1 and files_of(missing)[gone]["checksum_status"] == "missing"

    unknown = consolidate("forget", str(gone), str(root / "never/loaded.db"), target=target, home=home)
    assert unknown.returncode == 5 and "knows no file by that path" in unknown.stderr  # all or none
    assert fetch(target, "SELECT count(*) FROM consolidate.forgotten_files") == [(0,)]
    linked = tmp_path / "link"
    linked.symlink_to(root)
    forgotten = consolidate("forget", str(linked / MAIN_V2), "--note", "service retired", "--json",
                            target=target, home=home)
    assert forgotten.returncode == 0, forgotten.stdout[-2000:] + forgotten.stderr[-2000:]
    (outcome,) = json.loads(forgotten.stdout)
    assert (outcome["source_path"], outcome["outcome"], outcome["forgotten"]["note"]) == \
        (str(gone), "forgotten", "service retired")

    validated = consolidate("validate", "--json", target=target, home=home)
    assert validated.returncode == 0, validated.stdout[-3000:] + validated.stderr[-3000:]
    file = files_of(validated)[gone]
    assert file["checksum_status"] == "forgotten" and file["problems"] == [] and file["spot_checked"] == 0
    assert fetch(target, "SELECT count(*) FROM unified_memory WHERE source_path = %s", (str(gone),)) == rows_from_it
    shown = json.loads(consolidate("status", "--json", target=target, home=home).stdout)
    assert {Path(f["source_path"]): f["on_disk"] for f in shown["files"]}[gone] == "forgotten"
    assert shown["totals"]["forgotten_files"] == 1 and shown["totals"]["missing_files"] == 0
    synced = consolidate("sync", str(root), "--json", target=target, home=home)
    assert synced.returncode == 0, synced.stdout[-3000:] + synced.stderr[-3000:]
    assert files_of(synced)[gone]["status"] == "forgotten"
    # a backup made now cannot hold it, and is not asked to
    assert consolidate("backup", str(root), "--to", str(tmp_path / "backup")).returncode == 0
    with_backup = consolidate("validate", "--backup", str(tmp_path / "backup"), target=target, home=home)
    assert with_backup.returncode == 0, with_backup.stdout[-3000:] + with_backup.stderr[-3000:]
    again = consolidate("forget", str(gone), "--json", target=target, home=home)
    assert again.returncode == 0 and json.loads(again.stdout)[0]["outcome"] == "already forgotten"

    for part in kept.iterdir():  # put back: what is on disk counts again
        shutil.copy2(part, gone.with_name(part.name))
    restored = consolidate("validate", "--json", target=target, home=home)
    assert restored.returncode == 0 and files_of(restored)[gone]["checksum_status"] == "unchanged"
    assert files_of(restored)[gone]["spot_checked"] > 0


def test_a_copy_or_a_failed_file_deleted_by_hand_can_be_forgotten(tmp_path, target, home):
    """Neither has a current load (no rows depend on it), so status alone said `missing` for good."""
    root = tmp_path / "tree"
    write_and_run_sample(root, target, home)
    copy = next(Path(f["source_path"]) for f in status_files(target, home).values() if f["status"] == "copy")
    broken = root / "broken/memory.db"
    broken.parent.mkdir()
    half = copy.read_bytes()[:copy.stat().st_size // 2]
    broken.write_bytes(half)
    assert consolidate("sync", str(root), target=target, home=home).returncode == 3  # broken fails to load
    assert status_files(target, home)[broken]["status"] == "failed"
    copy.unlink()
    broken.unlink()
    shown = status_files(target, home)
    assert (shown[copy]["on_disk"], shown[broken]["on_disk"]) == ("missing", "missing")
    totals = json.loads(consolidate("status", "--json", target=target, home=home).stdout)["totals"]
    assert (totals["missing_files"], totals["failed_files"]) == (2, 1)

    forgotten = consolidate("forget", str(copy), str(broken), "--json", target=target, home=home)

    assert forgotten.returncode == 0, forgotten.stdout[-2000:] + forgotten.stderr[-2000:]
    assert [o["outcome"] for o in json.loads(forgotten.stdout)] == ["forgotten", "forgotten"]
    shown = status_files(target, home)
    assert (shown[copy]["on_disk"], shown[broken]["on_disk"]) == ("forgotten", "forgotten")
    totals = json.loads(consolidate("status", "--json", target=target, home=home).stdout)["totals"]
    assert (totals["missing_files"], totals["forgotten_files"], totals["failed_files"]) == (0, 2, 0)
    validated = consolidate("validate", target=target, home=home)
    assert validated.returncode == 0, validated.stdout[-3000:] + validated.stderr[-3000:]
    # the failed file comes back and fails again: the ledger's latest word is a new load, the forget is void
    broken.write_bytes(half + b"\0")
    assert consolidate("sync", str(root), target=target, home=home).returncode == 3
    broken.unlink()
    assert status_files(target, home)[broken]["on_disk"] == "missing"


def status_files(target, home) -> dict[Path, dict]:
    result = consolidate("status", "--json", target=target, home=home)
    assert result.returncode == 0, result.stderr[-2000:]
    return files_of(result)

