{{ config(
    materialized='incremental',
    incremental_strategy='replace_keys',
    on_schema_change='fail',
    indexes=[{'columns': ['namespace', 'key']}],
    pre_hook=["{{ lock_memory_marts() }}"],
    post_hook=[
        "{{ ensure_index(this, 'unified_memory_history_source_file_idx', '(load_id, source_path)') }}",
        "{{ refuse_direct_writes(this) }}",
    ],
) }}
-- depends_on: {{ ref('int_memory_changed_keys') }}
{# Every version that is not an entry's current value (macros/memory_ranking.sql). -#}

{{ unified_memory_history_rows(
    ref('int_memory_ranked'),
    filter="(ranked.namespace, ranked.key) in (select namespace, key from " ~ ref('int_memory_changed_keys') ~ ")"
           if is_incremental() else none) }}
