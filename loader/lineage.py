"""Where a memory entry came from: every version of it across files and loads."""
