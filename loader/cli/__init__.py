"""The `consolidate` command line: commands that parse, call one library function and render."""

import sys

# The commands that build with dbt.
BUILDING_COMMANDS = {"run", "sync", "build"}


def start_dbt_for(arguments: list[str]) -> None:
    """For a command that builds with dbt, start dbt's worker process before the rest of the tool is
    imported, so it imports dbt on the other core meanwhile (loader/transform/dbt_process.py)."""
    command = next((argument for argument in arguments if not argument.startswith("-")), None)
    if command in BUILDING_COMMANDS and not {"--help", "--no-build"} & set(arguments):
        from loader.transform import dbt_process
        dbt_process.start_worker()


def main() -> None:
    start_dbt_for(sys.argv[1:])
    from loader.cli.commands import main as run_command
    run_command()


def __getattr__(name: str):
    if name == "app":
        from loader.cli.commands import app
        return app
    raise AttributeError(name)
