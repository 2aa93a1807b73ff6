with source as (

    select * from {{ source('consolidate', 'load_tables') }}

),

renamed as (

    select
        load_id,
        source_path,
        source_table,
        raw_schema,
        raw_table,
        rows_in_sqlite,
        rows_loaded
    from source

)

select * from renamed
