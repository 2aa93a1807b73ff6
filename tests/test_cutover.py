"""`consolidate cutover` (recorded, shown in `status`, undone) and split brain: a cut-over file that
changes afterwards is still loaded by `sync`, which warns and names the entries written on both sides.
Real PostgreSQL, real SQLite files, the CLI run as a user runs it; expectations from plain SQL and sqlite3."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from loader.serve.client import MemoryClient

from conftest import consolidate, fetch, read_private_copy, v2_file, write

T0 = 1_750_000_000  # epoch seconds


def run_json(*arguments: str, target, home: Path, expect: int = 0) -> dict | list:
    result = consolidate(*arguments, "--json", target=target, home=home)
    assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout) if expect == 0 else result


def file_status(target, home: Path, path: Path) -> dict:
    report = run_json("status", target=target, home=home)
    return next(f for f in report["files"] if f["source_path"] == str(path))


def test_cutover_is_recorded_shown_in_status_refused_for_a_changed_file_and_undone(realdata, tmp_path, target, home):
    tree = tmp_path / "tree"
    shutil.copytree(realdata / "claude-flow/00greena__emoji-monogram-generator", tree / "app")
    source = tree / "app/memory.db"
    other = v2_file(tree / "other/memory.db", [("k", '"v"', "default", T0)])
    run_json("run", str(tree), "--no-backup", target=target, home=home)
    assert file_status(target, home, source)["cut_over"] is None

    (outcome,) = run_json("cutover", str(source), "--note", "coder agents", target=target, home=home)

    assert outcome["outcome"] == "cut over" and outcome["source_path"] == str(source)
    (recorded,) = fetch(target, "SELECT cutover_id, action, recorded_at, recorded_by, note, load_id, source_sha256 "
                                "FROM consolidate.cutovers")
    (current,) = fetch(target, "SELECT load_id, source_sha256 FROM consolidate.current_loads WHERE source_path = %s",
                       (str(source),))
    assert recorded[1] == "cutover" and recorded[4] == "coder agents" and recorded[3]
    assert (recorded[5], recorded[6]) == current
    shown = file_status(target, home, source)["cut_over"]
    assert shown["cut_over_at"] == recorded[2].isoformat() and shown["cut_over_by"] == recorded[3]
    assert shown["split_brain_loads"] == 0
    assert file_status(target, home, other)["cut_over"] is None
    assert run_json("status", target=target, home=home)["totals"]["cut_over_files"] == 1
    human = consolidate("status", target=target, home=home)
    assert "1 cut over" in human.stderr

    (again,) = run_json("cutover", str(source), target=target, home=home)
    assert again["outcome"] == "already cut over" and again["cutover"]["cutover_id"] == recorded[0]

    write(other, "UPDATE memory_entries SET value = '\"changed\"'")  # changed since its load
    refused = run_json("cutover", str(other), str(tree / "never-loaded.db"), target=target, home=home,
                       expect=5)  # refused, nothing recorded
    message = " ".join(refused.stderr.split())  # however the terminal width wrapped it
    assert "changed since its current load" in message and "no such file" in message
    document = json.loads(refused.stdout)  # --json: the refusal as a document too
    assert document["exit_code"] == 5 and "changed since its current load" in document["refused"]
    assert fetch(target, "SELECT count(*) FROM consolidate.cutovers") == [(1,)]

    (undone,) = run_json("cutover", "--undo", str(source), target=target, home=home)
    assert undone["outcome"] == "undone"
    assert file_status(target, home, source)["cut_over"] is None
    assert [row[0] for row in fetch(target, "SELECT action FROM consolidate.cutovers ORDER BY cutover_id")] == \
        ["cutover", "undo"]


def test_a_cut_over_file_that_changes_is_still_loaded_and_reported_as_split_brain(tmp_path, target, home):
    tree = tmp_path / "tree"
    source = v2_file(tree / "app/.swarm/memory.db", [("shared", '"sqlite 1"', "default", T0),
                                                       ("untouched", '"same"', "default", T0)])
    run_json("sync", str(tree), target=target, home=home)
    run_json("cutover", str(source), target=target, home=home)
    write(source, "PRAGMA user_version = 7")  # new bytes, the same rows: no split brain
    assert run_json("sync", str(tree), "--no-build", target=target, home=home)["split_brain"] == []
    assert fetch(target, "SELECT changed FROM consolidate.split_brain") == [(False,)]
    with MemoryClient(target.dsn, source=str(source), track_access=False) as memory:
        memory.set("shared", "written in postgresql")
        memory.set("postgresql only", {"n": 1})
    # the service still writes to its file: the same key, and one of its own
    write(source, "UPDATE memory_entries SET value = '\"sqlite 2\"', updated_at = ? WHERE key = 'shared'", (T0 + 60,))
    write(source, "INSERT INTO memory_entries (key, value, namespace, created_at, updated_at, accessed_at) "
                  "VALUES ('sqlite only', '\"s\"', 'default', ?, ?, ?)", (T0 + 60,) * 3)

    report = run_json("sync", str(tree), target=target, home=home)

    (split,) = report["split_brain"]
    assert split["source_path"] == str(source) and split["sqlite_entries"] == 2
    assert split["other_rows"] == 0  # a number, like the entries' count
    (both,) = split["written_on_both_sides"]
    assert (both["namespace"], both["key"], both["sqlite_change"], both["postgres_writes"]) == \
        ("default", "shared", "updated", 1)
    # loaded all the same: the file's new row is in the marts, and both versions of `shared` are kept
    assert fetch(target, "SELECT value FROM unified_memory WHERE key = 'sqlite only'") == [("s",)]
    versions = fetch(target, "SELECT value FROM unified_memory WHERE key = 'shared' UNION ALL "
                             "SELECT value FROM unified_memory_history WHERE key = 'shared'")
    assert {"sqlite 2", "written in postgresql"} <= {value for (value,) in versions}
    stored = fetch(target, "SELECT load_id, changed, sqlite_entries, entries FROM consolidate.split_brain")
    assert [(s[0], s[1], s[2], [(e["namespace"], e["key"]) for e in s[3]]) for s in stored if s[1]] == \
        [(report["load_id"], True, 2, [("default", "shared")])]
    assert file_status(target, home, source)["cut_over"]["split_brain_loads"] == 1

    human = consolidate("sync", str(tree), "--no-build", target=target, home=home)  # no change since: no warning
    assert human.returncode == 0, human.stderr
    assert "split brain" not in human.stdout + human.stderr
    write(source, "UPDATE memory_entries SET value = '\"sqlite 3\"', updated_at = ? WHERE key = 'shared'", (T0 + 90,))
    human = consolidate("sync", str(tree), "--no-build", target=target, home=home)
    assert "split brain" in human.stderr and "default/shared" in human.stderr
    write(source, "DELETE FROM memory_entries WHERE key = 'untouched'")  # the file's alone: named as deleted
    human = consolidate("sync", str(tree), target=target, home=home)
    assert "deleted in SQLite" in human.stderr and "default/untouched" in human.stderr, human.stderr
    assert fetch(target, "SELECT count(*) FROM unified_memory WHERE key = 'untouched'") == [(0,)]


def entry_rows(path: Path, folder: Path) -> dict[int, tuple]:
    """rowid -> ((namespace, key), the whole row) of the file's memory_entries, from a private copy."""
    return {row[0]: ((row[1] or "default", row[2]), row) for row in read_private_copy(
        path, folder, "SELECT rowid, namespace, key, * FROM memory_entries")}


def entries_changed(before: dict[int, tuple], after: dict[int, tuple]) -> dict[tuple[str, str], str]:
    """(namespace, key) -> inserted / updated / deleted, as the split-brain check names a change: an
    entry some row of which changed, was deleted or inserted (by rowid and content)."""
    gone = {before[r][0] for r in before if after.get(r) != before[r]}
    new = {after[r][0] for r in after if before.get(r) != after[r]}
    return {entry: "updated" if entry in gone and entry in new else "inserted" if entry in new else "deleted"
            for entry in gone | new}


def test_split_brain_after_row_level_change_loads_compares_the_file_states(tmp_path, target, home):
    """The cutover's baseline is itself a row-level change load, and so are the loads after it: each
    check compares the file's whole state at the baseline with its whole state at the load (rows deleted
    or changed by an earlier change load after the cutover count still), not the rows each load stored."""
    tree = tmp_path / "tree"
    source = v2_file(tree / "app/.swarm/memory.db", [(f"k{n}", f'"v{n}"', "default", T0) for n in range(6)])
    first = run_json("sync", str(tree), target=target, home=home)
    write(source, "UPDATE memory_entries SET value = '\"v0 again\"', updated_at = ? WHERE key = 'k0'", (T0 + 10,))
    baseline = run_json("sync", str(tree), target=target, home=home)
    assert fetch(target, "SELECT delta_of FROM consolidate.load_files WHERE load_id = %s",
                 (baseline["load_id"],)) == [(first["load_id"],)]
    run_json("cutover", str(source), target=target, home=home)
    at_cutover = entry_rows(source, tmp_path / "copy")
    with MemoryClient(target.dsn, source=str(source), track_access=False) as memory:
        for key in ("k1", "k2", "k3"):  # k1 is changed in SQLite too, k2 deleted, k3 left as it is
            memory.set(key, "written in postgresql")
    write(source, "UPDATE memory_entries SET value = '\"sqlite\"', updated_at = ? WHERE key = 'k1'", (T0 + 60,))
    write(source, "DELETE FROM memory_entries WHERE key IN ('k2', 'k5')")  # k5: only ever in the file
    write(source, "INSERT INTO memory_entries (key, value, namespace, created_at, updated_at, accessed_at) "
                  "VALUES ('k-new', '\"s\"', 'default', ?, ?, ?)", (T0 + 60,) * 3)
    changed = entries_changed(at_cutover, entry_rows(source, tmp_path / "copy"))
    assert changed == {("default", "k1"): "updated", ("default", "k2"): "deleted", ("default", "k5"): "deleted",
                       ("default", "k-new"): "inserted"}

    report = run_json("sync", str(tree), "--no-build", target=target, home=home)

    assert fetch(target, "SELECT delta_of FROM consolidate.load_files WHERE load_id = %s",
                 (report["load_id"],)) == [(baseline["load_id"],)]
    (split,) = report["split_brain"]
    assert split["sqlite_entries"] == len(changed)
    written = {("default", key) for key in ("k1", "k2", "k3")}
    assert [(e["namespace"], e["key"], e["sqlite_change"], e["postgres_writes"]) for e in split["written_on_both_sides"]] \
        == [(*entry, change, 1) for entry, change in sorted(changed.items()) if entry in written]
    # the entries the file deleted that PostgreSQL did not write: named, since their file version left the marts
    deleted_only = [{"namespace": namespace, "key": key} for (namespace, key), change in sorted(changed.items())
                    if change == "deleted" and (namespace, key) not in written]
    assert split["deleted_in_sqlite"] == deleted_only == [{"namespace": "default", "key": "k5"}]
    assert fetch(target, "SELECT deleted_entries FROM consolidate.split_brain WHERE load_id = %s",
                 (report["load_id"],)) == [(deleted_only,)]

    # one more change load: still compared with the baseline (k2's deletion by the load before counts)
    write(source, "UPDATE memory_entries SET value = '\"later\"', updated_at = ? WHERE key = 'k4'", (T0 + 90,))
    changed = entries_changed(at_cutover, entry_rows(source, tmp_path / "copy"))
    later = run_json("sync", str(tree), "--no-build", target=target, home=home)
    assert fetch(target, "SELECT delta_of FROM consolidate.load_files WHERE load_id = %s",
                 (later["load_id"],)) == [(report["load_id"],)]
    (split,) = later["split_brain"]
    assert split["sqlite_entries"] == len(changed) == 5
    assert [(e["namespace"], e["key"], e["sqlite_change"]) for e in split["written_on_both_sides"]] == \
        [(*entry, change) for entry, change in sorted(changed.items()) if entry in written]
    assert split["deleted_in_sqlite"] == deleted_only
