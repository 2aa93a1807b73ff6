with source as (

    select * from {{ source('raw_extended_memory', 'metadata') }}

),

normalized as (

    select
        key,
        {{ text_to_jsonb('value') }} as value,
        value as raw_value,
        {{ text_to_timestamptz('updated_at') }} as updated_at,
        {{ staging_lineage('metadata') }}
    from source

)

select * from normalized
