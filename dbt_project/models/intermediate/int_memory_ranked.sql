{#-
    Every current memory version, ranked within its (key, namespace). The winner (version_rank = 1) is
    the latest updated_at; ties go to the latest accessed_at, then to the first in source order
    (source_path, source_table, source_rowid). NULL timestamps lose to any timestamp.
    Aggregates over all versions feed the winner: earliest created_at, latest accessed_at, largest
    access_count. Every version carries a pointer to its winner.
    mart_id numbers the (key, namespace) pairs as their mart numbers its rows: by (namespace, key) for
    unified_memory, by key for performance_metrics (one namespace). Every window below partitions or
    orders by (in_performance_metrics, namespace, key) first, so one sort of these wide rows serves them
    all and the marts do not sort them again.
-#}

with memory_versions as (

    select * from {{ ref('int_memory_versions') }}

),

ranked as (

    select
        memory_versions.*,
        row_number() over newest_first as version_rank,
        count(*) over same_key as version_count,
        min(created_at) over same_key as first_created_at,
        max(accessed_at) over same_key as last_accessed_at,
        max(access_count) over same_key as max_access_count,
        first_value(load_id) over newest_first as winner_load_id,
        first_value(source_path) over newest_first as winner_source_path,
        first_value(source_table) over newest_first as winner_source_table,
        first_value(source_rowid) over newest_first as winner_source_rowid,
        dense_rank() over mart_order as mart_id
    from memory_versions
    window
        same_key as (partition by namespace = '{{ var("performance_metrics_namespace") }}', namespace, key),
        newest_first as (
            partition by namespace = '{{ var("performance_metrics_namespace") }}', namespace, key
            order by
                updated_at desc nulls last,
                accessed_at desc nulls last,
                source_path asc,
                source_table asc,
                source_rowid asc nulls last
        ),
        mart_order as (
            partition by namespace = '{{ var("performance_metrics_namespace") }}'
            order by namespace, key
        )

)

select
    *,
    version_rank = 1 as is_winner
from ranked
