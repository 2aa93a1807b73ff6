with source as (

    select * from {{ source('consolidate', 'load_files') }}

),

renamed as (

    select
        load_id,
        source_path,
        source_db,
        kind,
        status,
        copy_of,
        error_message,
        source_sha256,
        wal_sha256,
        size_bytes,
        rows_in_sqlite,
        rows_loaded,
        started_at,
        completed_at
    from source

)

select * from renamed
