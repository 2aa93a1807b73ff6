"""The schema cache (loader/transform/schema_cache.py): dbt validates dbt_project.yml and profiles.yml
against JSON schemas it builds from its dataclasses; through the cache, a second process loads the schema
the first built, equal to dbt's own and rejecting what dbt's own rejects; a damaged entry is built again,
and a folder others may write is never loaded from."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from conftest import REPO

# Through the cache in argv[1] (none when argv[1] is "-"): validates a project with a version of the
# wrong type and a good one; prints how many schemas mashumaro built meanwhile, the project schema, and
# the error dbt raised for the bad project.
SCRIPT = """
import json, sys
from pathlib import Path
import mashumaro.jsonschema.builder as builder
from dbt_common.dataclass_schema import ValidationError
from dbt.contracts.project import Project
from loader.transform import schema_cache
built = []
build = builder.build_json_schema
import dbt_common.dataclass_schema as dataclass_schema
dataclass_schema.build_json_schema = lambda *arguments, **options: built.append(1) or build(*arguments, **options)
if sys.argv[1] != "-":
    schema_cache.install(Path(sys.argv[1]))
project = {"name": "consolidate", "version": "1.0", "profile": "consolidate", "config-version": 2}
Project.validate(project)
try:
    Project.validate({**project, "version": ["not", "a", "version"]})
    error = None
except ValidationError as raised:
    error = str(raised)
print(json.dumps({"built": len(built), "schema": Project.json_schema(), "error": error}))
"""


def validate(folder: Path | str) -> dict:
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(folder)], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def entries(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file())


def test_a_second_process_loads_the_schema_the_first_built_and_validates_the_same(tmp_path):
    dbts_own = validate("-")
    assert dbts_own["built"] == 1 and dbts_own["error"] and "version" in dbts_own["error"]

    folder = tmp_path / "schema-cache"
    first = validate(folder)
    assert first == dbts_own
    assert len(entries(folder)) == 1
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    second = validate(folder)
    assert second == {**dbts_own, "built": 0}


def test_a_damaged_entry_is_built_again_and_replaced(tmp_path):
    folder = tmp_path / "schema-cache"
    dbts_own = validate(folder)
    entry, = entries(folder)
    for damage in (b"", b"{not json", b"[1, 2]", b"null", entry.read_bytes()[:20]):
        entry.write_bytes(damage)
        assert validate(folder) == dbts_own
        assert validate(folder) == {**dbts_own, "built": 0}


def test_a_folder_others_may_write_is_never_loaded_from(tmp_path):
    folder = tmp_path / "schema-cache"
    dbts_own = validate(folder)
    entry, = entries(folder)
    entry.write_text(json.dumps({"type": "object"}))  # a schema that accepts anything
    folder.chmod(0o777)
    assert validate(folder) == dbts_own
    folder.chmod(0o700)
    accepted = validate(folder)
    assert accepted["built"] == 0 and accepted["error"] is None  # the folder's own entry is used again


def test_a_folder_that_cannot_be_made_validates_as_dbt_does(tmp_path):
    not_a_folder = tmp_path / "schema-cache"
    not_a_folder.write_text("a file where the folder would be")
    dbts_own = validate("-")
    for _ in range(2):
        assert validate(not_a_folder) == dbts_own
    assert not_a_folder.read_text() == "a file where the folder would be"
