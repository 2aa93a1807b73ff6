with superseded_versions as (

    select *
    from {{ ref('int_memory_ranked') }}
    where not is_winner

),

final as (

    select
        row_number() over (order by namespace, key, version_rank)::bigint as id,
        key,
        namespace,
        value,
        data_type,
        raw_value,
        metadata,
        created_at,
        updated_at,
        accessed_at,
        expires_at,
        access_count,
        ttl,
        source_db,
        source_path,
        source_table,
        source_rowid,
        source_sha256,
        load_id,
        loaded_at,
        version_rank::integer as version_rank,
        winner_load_id,
        winner_source_path,
        winner_source_table,
        winner_source_rowid,
        flags
    from superseded_versions

)

select * from final
