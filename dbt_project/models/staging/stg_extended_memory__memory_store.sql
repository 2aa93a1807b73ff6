{%- set raw_memory_store = source('raw_extended_memory', 'memory_store') -%}
{%- set mapped_columns = ['key', 'value', 'type', 'created_at', 'updated_at', 'accessed_at', 'access_count'] -%}

with source as (

    select * from {{ raw_memory_store }}

),

normalized as (

    select
        key,
        -- memory_store has no namespace column
        'extended-memory'::text as namespace,
        {{ normalize_memory_value('value', storage_type='type') }},
        value as raw_value,
        jsonb_build_object(
            'extended_memory',
            jsonb_build_object('type', type) || {{ unmapped_columns(raw_memory_store, mapped_columns) }}
        ) as metadata,
        {{ text_to_timestamptz('created_at') }} as created_at,
        {{ text_to_timestamptz('updated_at') }} as updated_at,
        {{ text_to_timestamptz('accessed_at') }} as accessed_at,
        null::timestamptz as expires_at,
        consolidate.try_int(access_count) as access_count,
        null::integer as ttl,
        'memory_store'::text as source_table,
        _source_path as source_path,
        _source_sha256 as source_sha256,
        _load_id as load_id,
        _source_rowid as source_rowid,
        _loaded_at as loaded_at
    from source

)

select * from normalized
