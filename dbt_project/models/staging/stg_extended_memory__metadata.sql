with source as (

    select * from {{ source('raw_extended_memory', 'metadata') }}

),

normalized as (

    select
        key,
        {{ text_to_jsonb('value') }} as value,
        value as raw_value,
        {{ text_to_timestamptz('updated_at') }} as updated_at,
        'metadata'::text as source_table,
        _source_path as source_path,
        _source_sha256 as source_sha256,
        _load_id as load_id,
        _source_rowid as source_rowid,
        _loaded_at as loaded_at
    from source

)

select * from normalized
