{%- set raw_memory_entries = source('raw_claude_flow_v3', 'memory_entries') -%}
{#- `embedding` (a JSON float array, kilobytes per row) is deliberately not carried; it stays in raw. -#}
{%- set mapped_columns = ['id', 'key', 'namespace', 'content', 'type', 'embedding', 'embedding_model',
                          'embedding_dimensions', 'tags', 'metadata', 'owner_id', 'created_at', 'updated_at',
                          'expires_at', 'last_accessed_at', 'access_count', 'status'] -%}
{#- v3's INTEGER epoch-millisecond columns; created_at and updated_at are NOT NULL in v3's schema. -#}
{%- set epoch_columns = ['created_at', 'updated_at', 'last_accessed_at', 'expires_at'] -%}
{%- set required_epoch_columns = ['created_at', 'updated_at'] -%}
{%- set binary_columns = binary_columns_of('raw_claude_flow_v3', 'memory_entries') -%}

with source as (

    select * from {{ raw_memory_entries }}

),

parsed as (

    -- Every parse once per row: OFFSET 0 keeps PostgreSQL from inlining this step into the next ones,
    -- which would repeat each parse wherever its result is used.
    select
        source.*,
        {{ binary_columns }} as stg__binary_columns,
        {{ parse_memory_value('content', is_binary=is_binary(binary_columns, 'content')) }} as stg__parsed_value,
        consolidate.try_jsonb(metadata) as stg__parsed_metadata,
        consolidate.try_jsonb(tags) as stg__parsed_tags,
        {%- for column in epoch_columns %}
        consolidate.try_numeric({{ column }}) as stg__{{ column }}_number,
        {%- endfor %}
        consolidate.try_int(access_count) as stg__access_count,
        consolidate.try_int(embedding_dimensions) as stg__embedding_dimensions
    from source
    offset 0

),

classified as (

    select
        parsed.*,
        {{ memory_value_kind('content', 'stg__parsed_value', is_binary=is_binary('stg__binary_columns', 'content')) }}
            as stg__value_kind
    from parsed
    offset 0

),

normalized as (

    select
        key,
        coalesce(namespace, 'default') as namespace,
        {{ memory_value('content', 'stg__parsed_value', 'stg__value_kind') }} as value,
        {{ memory_data_type('stg__value_kind') }} as data_type,
        content as raw_value,
        {{ attach_to_metadata('coalesce(stg__parsed_metadata, to_jsonb(metadata))', 'claude_flow_v3',
                              '(v3_fields || unmapped_fields)') }} as metadata,
        {{ epoch_number_to_timestamptz('stg__created_at_number') }} as created_at,
        {{ epoch_number_to_timestamptz('stg__updated_at_number') }} as updated_at,
        {{ epoch_number_to_timestamptz('stg__last_accessed_at_number') }} as accessed_at,
        {{ epoch_number_to_timestamptz('stg__expires_at_number') }} as expires_at,
        stg__access_count as access_count,
        null::integer as ttl,
        {{ staging_lineage('memory_entries') }},
        {%- set flags = [memory_value_flag('stg__value_kind', 'content'),
                         json_column_flag('metadata', 'stg__parsed_metadata', 'stg__binary_columns'),
                         json_column_flag('tags', 'stg__parsed_tags', 'stg__binary_columns')] -%}
        {%- for column in epoch_columns -%}
            {%- do flags.extend(epoch_column_flags(column, 'stg__' ~ column ~ '_number', 'milliseconds',
                                                  required=column in required_epoch_columns)) -%}
        {%- endfor -%}
        {%- do flags.append(integer_column_flag('access_count', 'stg__access_count')) -%}
        {%- do flags.append(integer_column_flag('embedding_dimensions', 'stg__embedding_dimensions')) %}
        {{ flags_array(flags, 'stg__binary_columns') }} as flags
    from classified
    cross join lateral (
        select
            jsonb_build_object(
                'id', id,
                'type', type,
                'tags', coalesce(stg__parsed_tags, to_jsonb(tags)),
                'status', status,
                'owner_id', owner_id,
                'embedding_model', embedding_model,
                'embedding_dimensions', stg__embedding_dimensions
            ) as v3_fields,
            {{ unmapped_columns(raw_memory_entries, mapped_columns) }} as unmapped_fields
    ) as extra

)

select * from normalized
