"""Reading and writing the consolidated memory: the Python client, its Redis cache and the in-process
near cache that PostgreSQL's notifications keep current."""

# The Redis the cache uses unless told otherwise; here, so that the command line can show it without
# importing redis.
DEFAULT_REDIS_URL = "redis://127.0.0.1:10001/0"
