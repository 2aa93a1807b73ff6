"""`consolidate lineage` after a row-level change load (loader/load/delta.py): a row that stayed current in
an earlier load of its file is a current version (winner), a row the change load changed or deleted is
shown as changed or deleted by the load that retired it. Real PostgreSQL, a real SQLite file; expected roles from sqlite3 reads of
private copies of the file before and after its change."""

from __future__ import annotations

import json

from loader.pipeline import load, run, sync
from loader.verify.lineage import versions

from conftest import change, consolidate, fetch, numbered_v2_file, rows_by_rowid


def lineage(key: str, namespace: str, target) -> list[tuple[str, int, str]]:
    return sorted((version.load_id, version.source_rowid, version.role) for version in versions(target, key, namespace))


def test_lineage_after_a_row_level_change_load_shows_rows_of_earlier_parts_as_current(tmp_path, target, home):
    root, copies = tmp_path / "tree", tmp_path / "copies"
    copies.mkdir()
    db = numbered_v2_file(root / "app/.swarm/memory.db", 20)
    first = run([root], target, home, backup_to=None, quiet=True).loaded.load_id
    before = rows_by_rowid(db, copies)
    change(db, ("UPDATE memory_entries SET value = '\"changed\"', updated_at = updated_at + 100 WHERE key = 'key-7'",),
           ("DELETE FROM memory_entries WHERE key = 'key-8'",),
           ("INSERT INTO memory_entries (key, value, namespace, created_at, updated_at) "
            "VALUES ('new', '1', 'default', 1750000999, 1750000999)",))
    after = rows_by_rowid(db, copies)
    synced = sync([root], target, home, quiet=True)
    assert synced.build.success, synced.build.failures
    second = synced.load_id
    assert fetch(target, "SELECT delta_of FROM consolidate.load_files WHERE load_id = %s", (second,)) == [(first,)]

    # by the file's rows: rowid -> key (column 1 after the rowid's own id column) and namespace (3)
    rowid_of = {(row[3], row[1]): rowid for rowid, row in after.items()}
    old_rowid_of = {(row[3], row[1]): rowid for rowid, row in before.items()}
    unchanged = [entry for entry, rowid in rowid_of.items() if before.get(rowid) == after[rowid]]
    assert len(unchanged) == len(after) - 2  # all but the changed and the inserted row
    for namespace, key in unchanged:  # current where they were stored: the first load
        assert lineage(key, namespace, target) == [(first, rowid_of[(namespace, key)], "winner")]
    assert lineage("key-7", "default", target) == sorted(
        [(first, old_rowid_of[("default", "key-7")], "changed in a later load"),
         (second, rowid_of[("default", "key-7")], "winner")])
    assert lineage("key-8", "default", target) == [(first, old_rowid_of[("default", "key-8")],
                                                    "deleted in a later load")]
    # the retired rows name the load that retired them, when it ran, and what it did to them
    started = fetch(target, "SELECT started_at FROM consolidate.load_files WHERE load_id = %s", (second,))[0][0]
    retired = [(v.retired_by, v.retired_at, v.retired_as) for key in ("key-7", "key-8")
               for v in versions(target, key, "default") if v.load_id == first]
    assert retired == [(second, started, "changed"), (second, started, "deleted")]
    for key, retired_as in (("key-7", "changed"), ("key-8", "deleted")):
        told = consolidate("lineage", key, "--namespace", "default", target=target, home=home)
        assert told.returncode == 0 and (f"of load {first}: {retired_as} in app/.swarm/memory.db by load {second}"
                                         in " ".join(told.stdout.split()))
        shown = consolidate("lineage", key, "--namespace", "default", "--json", target=target, home=home)
        assert [v["retired_as"] for v in json.loads(shown.stdout) if v["load_id"] == first] == [retired_as]
    assert lineage("new", "default", target) == [(second, rowid_of[("default", "new")], "winner")]
    shown = consolidate("lineage", "key-1", "--namespace", "default", "--json", target=target, home=home)  # the CLI
    assert shown.returncode == 0, shown.stderr
    assert [(v["load_id"], v["role"]) for v in json.loads(shown.stdout)] == [(first, "winner")]


def test_lineage_between_a_load_and_its_build_shows_the_loaded_rows_as_pending(tmp_path, target, home):
    """`load` without `build` (README: a step of its own): the rows of the file's new current load are not
    ranked yet. They are `pending`, not an `earlier load`, and the marts' winner stays marked as theirs."""
    root = tmp_path / "tree"
    db = numbered_v2_file(root / "app/.swarm/memory.db", 5)
    first = run([root], target, home, backup_to=None, quiet=True).loaded.load_id
    change(db, ("UPDATE memory_entries SET value = '\"changed\"', updated_at = updated_at + 100 WHERE key = 'key-2'",))
    second = load([root], target, home).load_id
    (current,) = fetch(target, "SELECT load_id FROM consolidate.current_loads")
    assert current == (second,) and second != first

    roles = sorted((version.load_id, version.role) for version in versions(target, "key-2", "default"))
    assert roles == sorted([(first, "winner"), (second, "pending")])
    told = consolidate("lineage", "key-2", "--namespace", "default", target=target, home=home)
    assert told.returncode == 0 and "pending" in told.stdout
    assert "`consolidate build` ranks it" in " ".join(told.stderr.split())

    # a full reload (load --force) too: every row of the new load is pending until the build
    forced = load([root], target, home, force=True).load_id
    assert sorted(v.role for v in versions(target, "key-3", "default") if v.load_id == forced) == ["pending"]
    assert sync([root], target, home, quiet=True).build.success
    assert sorted((v.load_id, v.role) for v in versions(target, "key-2", "default")) == sorted(
        [(first, "changed in a later load"), (forced, "winner"), (second, "earlier load")])
