"""The `consolidate` command line: commands that parse, call one library function and render."""

import contextlib
import gc
import sys
from collections.abc import Iterator

# The commands that build with dbt.
BUILDING_COMMANDS = {"run", "sync", "build"}


def start_dbt_for(arguments: list[str]) -> None:
    """For a command that builds with dbt, start dbt's worker process before the rest of the tool is
    imported, so it imports dbt on the other core meanwhile (loader/transform/dbt_process.py)."""
    command = next((argument for argument in arguments if not argument.startswith("-")), None)
    if command in BUILDING_COMMANDS and not {"--help", "--no-build"} & set(arguments):
        from loader.transform import dbt_process
        dbt_process.start_worker()


@contextlib.contextmanager
def starting(arguments: list[str]) -> Iterator[None]:
    """The command's start: dbt's worker started for a command that builds, then the block's imports.

    Each full run of Python's cycle collector scans every object alive, most of them the imported modules'
    (which never become garbage): about 0.3 s of the imports, and 0.3-0.4 s of the collections as the
    process exits, on a 2-core machine. So no collection during the imports (the dbt worker, forked here,
    imports dbt the same way), and what they made is frozen, never scanned again (`finish` freezes the rest
    as the command ends; atexit handlers still run)."""
    gc.disable()
    start_dbt_for(arguments)
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def finish() -> None:
    gc.freeze()


def main() -> None:
    with starting(sys.argv[1:]):
        from loader.cli.commands import main as run_command
    try:
        run_command()
    finally:
        finish()
