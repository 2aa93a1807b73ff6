"""The `consolidate` command line: commands that parse, call one library function and render."""

from loader.cli.commands import app, main

__all__ = ["app", "main"]
