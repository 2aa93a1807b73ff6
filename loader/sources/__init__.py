"""Where the data comes from: finding SQLite databases, consistent private copies of them, reading their tables."""
