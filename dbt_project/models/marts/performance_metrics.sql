{{ config(
    materialized='incremental',
    incremental_strategy='replace_keys',
    unique_key=['namespace', 'key'],
    on_schema_change='fail',
    pre_hook=["{{ lock_memory_marts() }}"],
    post_hook=[
        "{{ ensure_index(this, 'performance_metrics_source_file_idx', '(load_id, source_path)') }}",
        "{{ ensure_trigger(this, 'capture_writes', 'before', 'insert or update or delete', 'consolidate.capture_performance_metrics_write()') }}",
        "{{ ensure_trigger(this, 'refuse_truncate', 'before', 'truncate', 'consolidate.refuse_writes_to_derived_table()', for_each='statement') }}",
    ],
) }}
-- depends_on: {{ ref('int_memory_changed_keys') }}
{# The winning values of namespace performance-metrics (macros/memory_ranking.sql). -#}

{{ performance_metrics_rows(
    ref('int_memory_ranked'), source('consolidate', 'entry_ids'),
    filter="(ranked.namespace, ranked.key) in (select namespace, key from " ~ ref('int_memory_changed_keys') ~ ")"
           if is_incremental() else none) }}
