"""The Python code Jinja compiles dbt's templates to, kept on disk between processes.

dbt renders every macro a build calls (materializations, tests, hooks, the project's macros) from its
source, and keeps what Jinja compiled only for the life of the process. A one-shot `sync` is one process
with one build, so it compiled all of them every time: about a quarter of its nodes' time on a 2-core
machine. `install` has dbt's Jinja environments keep the compiled code objects (marshal, as Jinja's own
bytecode cache stores them) in a folder, keyed by the template's source, the environment's class and
extensions, and the versions of Python, Jinja and dbt's packages (cache_files.dbt_versions); a later
process loads them instead of compiling. Anything the cache cannot read or write is compiled as before.
What is in the folder runs as dbt's templates do, so it is the user's own (HOME/dbt/jinja-cache, made
with mode 0700), and a folder someone else owns or others may write to is not used.
"""

from __future__ import annotations

import hashlib
import marshal
from pathlib import Path
from types import CodeType

from loader.transform.cache_files import dbt_versions, private_folder, store

FOLDER_VARIABLE = "CONSOLIDATE_JINJA_CACHE"


def install(folder: Path) -> None:
    """From now on in this process, dbt's Jinja environments compile through the cache in `folder`; not
    when the folder cannot be made, is someone else's, or others may write to it."""
    import jinja2
    from dbt_common.clients import jinja as dbt_jinja
    from jinja2.utils import internalcode

    environment_class = dbt_jinja.MacroFuzzEnvironment
    compile_source = getattr(environment_class.compile, "compile_source", environment_class.compile)
    environment_class.compile = compile_source  # as dbt has it, unless the folder can serve
    if not private_folder(folder):
        return  # code others could write is never loaded
    versions = "\0".join([*dbt_versions(), jinja2.__version__])

    @internalcode  # as Jinja's own compile: left out of the tracebacks Jinja shows for a template
    def compile(self, source, name=None, filename=None, raw=False, defer_init=False):
        if not isinstance(source, str) or raw or defer_init or name or filename or dbt_jinja.MACRO_DEBUGGING:
            return compile_source(self, source, name, filename, raw, defer_init)
        key = hashlib.sha256("\0".join([versions, type(self).__qualname__, *sorted(self.extensions),
                                        source]).encode()).hexdigest()
        path = folder / key[:2] / key
        try:
            cached = marshal.loads(path.read_bytes())
            if isinstance(cached, CodeType):
                return cached
        except (OSError, ValueError, EOFError, TypeError):
            pass
        code = compile_source(self, source, name, filename, raw, defer_init)
        store(path, marshal.dumps(code))
        return code

    compile.compile_source = compile_source
    environment_class.compile = compile
