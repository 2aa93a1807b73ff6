{{ config(
    materialized='incremental',
    incremental_strategy='replace_keys',
    unique_key=['namespace', 'key'],
    on_schema_change='fail',
    pre_hook=["{{ lock_memory_marts() }}"],
    post_hook=[
        "{{ ensure_index(this, 'unified_memory_expires_at_idx', '(expires_at) where expires_at is not null') }}",
        "{{ ensure_index(this, 'unified_memory_v3_id_idx', '(' ~ compat_v3_id('metadata', 'id') ~ ')') }}",
        "{{ ensure_trigger(this, 'capture_writes', 'before', 'insert or update or delete', 'consolidate.capture_unified_memory_write()') }}",
        "{{ ensure_trigger(this, 'refuse_truncate', 'before', 'truncate', 'consolidate.refuse_writes_to_derived_table()', for_each='statement') }}",
    ],
) }}
-- depends_on: {{ ref('int_memory_changed_keys') }}
{# The winning values of every entry but namespace performance-metrics (macros/memory_ranking.sql). -#}

{{ unified_memory_rows(
    ref('int_memory_ranked'), source('consolidate', 'entry_ids'),
    filter="(ranked.namespace, ranked.key) in (select namespace, key from " ~ ref('int_memory_changed_keys') ~ ")"
           if is_incremental() else none) }}
