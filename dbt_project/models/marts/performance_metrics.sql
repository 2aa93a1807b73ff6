with metric_winners as (

    select *
    from {{ ref('int_memory_ranked') }}
    where is_winner
      and namespace = '{{ var("performance_metrics_namespace") }}'

),

final as (

    select
        mart_id as id,
        -- `command-metrics:bash-<ms>-<id>` -> `command-metrics`; keys without ':' are their own name
        split_part(key, ':', 1) as metric_name,
        consolidate.try_numeric(value ->> 'duration') as metric_value,
        value as metric_data,
        coalesce(
            {{ text_to_timestamptz("value ->> 'timestamp'") }},
            updated_at,
            first_created_at
        ) as "timestamp",
        namespace,
        key,
        source_path,
        source_db,
        load_id,
        source_table,
        source_rowid,
        flags
    from metric_winners

)

select * from final
