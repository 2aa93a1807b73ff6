with load_files as (

    select * from {{ ref('stg_consolidate__load_files') }}

),

table_counts as (

    select
        load_id,
        source_path,
        jsonb_object_agg(source_table, rows_loaded) as table_counts
    from {{ ref('stg_consolidate__load_tables') }}
    group by load_id, source_path

),

final as (

    select
        row_number() over (order by load_files.started_at, load_files.load_id, load_files.source_path)::bigint as id,
        load_files.load_id,
        load_files.source_path as source_file,
        load_files.source_db,
        load_files.kind,
        case when load_files.status = 'loaded' then coalesce(load_files.rows_loaded, 0) else 0 end as records_migrated,
        load_files.rows_in_sqlite,
        load_files.started_at as migration_started,
        load_files.completed_at as migration_completed,
        load_files.status,
        load_files.error_message,
        load_files.source_sha256 as checksum,
        load_files.wal_sha256 as wal_checksum,
        load_files.copy_of,
        coalesce(table_counts.table_counts, '{}'::jsonb) as table_counts
    from load_files
    left join table_counts
        on load_files.load_id = table_counts.load_id
        and load_files.source_path = table_counts.source_path

)

select * from final
