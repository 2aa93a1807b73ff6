{%- set raw_memory_store = source('raw_extended_memory', 'memory_store') -%}
{%- set mapped_columns = ['key', 'value', 'type', 'created_at', 'updated_at', 'accessed_at', 'access_count'] -%}
{#- Naive UTC text timestamps (TIMESTAMP columns); accessed_at has a DEFAULT in the store's schema. -#}
{%- set timestamp_columns = ['created_at', 'updated_at', 'accessed_at'] -%}
{%- set required_timestamp_columns = ['accessed_at'] -%}
{%- set binary_columns = binary_columns_of('raw_extended_memory', 'memory_store') -%}

with source as (

    select * from {{ raw_memory_store }}

),

parsed as (

    -- Every parse once per row: OFFSET 0 keeps PostgreSQL from inlining this step into the next ones,
    -- which would repeat each parse wherever its result is used.
    select
        source.*,
        {{ binary_columns }} as stg__binary_columns,
        {{ parse_memory_value('value', storage_type='type', is_binary=is_binary(binary_columns, 'value')) }}
            as stg__parsed_value,
        {%- for column in timestamp_columns %}
        {{ text_to_timestamptz(column) }} as stg__{{ column }},
        {%- endfor %}
        consolidate.try_int(access_count) as stg__access_count
    from source
    offset 0

),

classified as (

    select
        parsed.*,
        {{ memory_value_kind('value', 'stg__parsed_value', storage_type='type',
                             is_binary=is_binary('stg__binary_columns', 'value')) }} as stg__value_kind
    from parsed
    offset 0

),

normalized as (

    select
        key,
        -- memory_store has no namespace column
        'extended-memory'::text as namespace,
        {{ memory_value('value', 'stg__parsed_value', 'stg__value_kind') }} as value,
        {{ memory_data_type('stg__value_kind') }} as data_type,
        value as raw_value,
        jsonb_build_object(
            'extended_memory',
            jsonb_build_object('type', type) || {{ unmapped_columns(raw_memory_store, mapped_columns) }}
        ) as metadata,
        stg__created_at as created_at,
        stg__updated_at as updated_at,
        stg__accessed_at as accessed_at,
        null::timestamptz as expires_at,
        stg__access_count as access_count,
        null::integer as ttl,
        {{ staging_lineage('memory_store') }},
        {%- set flags = [memory_value_flag('stg__value_kind', 'value')] -%}
        {%- for column in timestamp_columns -%}
            {%- do flags.extend(text_timestamp_flags(column, 'stg__' ~ column,
                                                    required=column in required_timestamp_columns)) -%}
        {%- endfor -%}
        {%- do flags.append(integer_column_flag('access_count', 'stg__access_count')) %}
        {{ flags_array(flags, 'stg__binary_columns') }} as flags
    from classified

)

select * from normalized
