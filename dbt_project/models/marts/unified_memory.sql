with winners as (

    select *
    from {{ ref('int_memory_ranked') }}
    where is_winner
      and namespace <> '{{ var("performance_metrics_namespace") }}'

),

final as (

    select
        mart_id as id,
        key,
        value,
        namespace,
        data_type,
        metadata,
        source_db,
        source_path,
        first_created_at as created_at,
        updated_at,
        last_accessed_at as accessed_at,
        expires_at,
        max_access_count as access_count,
        ttl,
        load_id,
        source_table,
        source_rowid,
        source_sha256,
        version_count::integer as version_count,
        flags
    from winners

)

select * from final
