"""Reading and writing the consolidated memory: the Python client and its Redis cache."""
