"""The dbt project's intermediate relations that the Python reads, named once. Staging and intermediate
models get the schema their folder's `+schema` gives (dbt_project.yml, used verbatim by the
generate_schema_name macro). Marts are built in the target's schema (`--schema`) and are named by their
table names (unified_memory, performance_metrics, unified_memory_history, reconciliation), the names the
plan and the applications use."""

from __future__ import annotations

INTERMEDIATE_SCHEMA = "intermediate"

# Every memory version of every load, and the current loads' versions ranked per (key, namespace).
MEMORY_ALL_LOADS = (INTERMEDIATE_SCHEMA, "int_memory_all_loads")
MEMORY_RANKED = (INTERMEDIATE_SCHEMA, "int_memory_ranked")
