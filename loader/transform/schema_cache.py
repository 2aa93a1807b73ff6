"""The JSON schemas dbt checks dbt_project.yml and profiles.yml against, kept on disk between processes.

dbt builds each schema from its dataclasses the first time a process validates against it (mashumaro walks
the type of every field of every class the file may hold): 0.4-0.5 s of a process's first invocation on a
2-core machine, all of it before dbt's worker can start a `sync`'s build. `install` has dbt look the schema
up in a folder first, keyed by the class (its module, name and fields) and the versions of Python and of the
packages that define and build the classes; a schema it builds is stored there for the processes after.
A schema decides what dbt accepts, so the folder is the user's own as jinja_cache's is
(HOME/dbt/schema-cache, mode 0700); an entry that is not a JSON object is built again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path

from loader.transform.cache_files import dbt_versions, private_folder, store

FOLDER_VARIABLE = "CONSOLIDATE_SCHEMA_CACHE"


def install(folder: Path) -> None:
    """From now on in this process, dbt's schemas come through the cache in `folder`; as dbt builds them
    when the folder cannot be made, is someone else's, or others may write to it."""
    from dbt_common.dataclass_schema import dbtClassMixin

    current = dbtClassMixin.__dict__["json_schema"]
    dbts_own = getattr(current, "dbts_own", current)
    dbtClassMixin.json_schema = dbts_own
    if not private_folder(folder):
        return
    build = dbts_own.__func__
    versions = "\0".join(dbt_versions())

    @functools.lru_cache  # as dbt's own: once per class and process
    def json_schema(cls) -> dict:
        fields = [(field.name, repr(field.type)) for field in dataclasses.fields(cls)]
        key = hashlib.sha256(f"{versions}\0{cls.__module__}\0{cls.__qualname__}\0{fields!r}".encode()).hexdigest()
        path = folder / key
        try:
            schema = json.loads(path.read_bytes())
            if isinstance(schema, dict):
                return schema
        except (OSError, ValueError):
            pass
        schema = build(cls)
        store(path, json.dumps(schema).encode())
        return schema

    cached = classmethod(json_schema)
    cached.dbts_own = dbts_own
    dbtClassMixin.json_schema = cached
