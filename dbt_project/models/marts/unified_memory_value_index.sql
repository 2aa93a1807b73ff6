{#-
    unified_memory's index for containment queries on value (@>). jsonb_path_ops serves them and builds in
    ~60% of the time of the default jsonb_ops, whose extra key-existence operators (?, ?| and ?&) nothing
    here uses on value. PostgreSQL 16 builds a GIN index in one process: 9-10 s at 1M rows, which the
    tests of a full build no longer wait for (macros/materializations/index.sql).
-#}
{{ config(materialized='index', index='using gin (value jsonb_path_ops)') }}
{{ ref('unified_memory') }}
