{%- set raw_memory_entries = source('raw_claude_flow_v2', 'memory_entries') -%}
{#- `id` is the INTEGER PRIMARY KEY, i.e. SQLite's rowid: it is carried as source_rowid. -#}
{%- set mapped_columns = ['id', 'key', 'value', 'namespace', 'metadata', 'created_at', 'updated_at',
                          'accessed_at', 'access_count', 'ttl', 'expires_at'] -%}
{#- v2's INTEGER epoch-second columns; those with a DEFAULT in v2's schema are never NULL by intent. -#}
{%- set epoch_columns = ['created_at', 'updated_at', 'accessed_at', 'expires_at'] -%}
{%- set required_epoch_columns = ['created_at', 'updated_at', 'accessed_at'] -%}
{%- set binary_columns = binary_columns_of('raw_claude_flow_v2', 'memory_entries') -%}

with source as (

    select * from {{ raw_memory_entries }}

),

parsed as (

    -- Every parse once per row: OFFSET 0 keeps PostgreSQL from inlining this step into the next ones,
    -- which would repeat each parse wherever its result is used.
    select
        source.*,
        {{ binary_columns }} as stg__binary_columns,
        {{ parse_memory_value('value', is_binary=is_binary(binary_columns, 'value')) }} as stg__parsed_value,
        consolidate.try_jsonb(metadata) as stg__parsed_metadata,
        {%- for column in epoch_columns %}
        consolidate.try_numeric({{ column }}) as stg__{{ column }}_number,
        {%- endfor %}
        consolidate.try_int(access_count) as stg__access_count,
        consolidate.try_int(ttl) as stg__ttl
    from source
    offset 0

),

classified as (

    select
        parsed.*,
        {{ memory_value_kind('value', 'stg__parsed_value', is_binary=is_binary('stg__binary_columns', 'value')) }}
            as stg__value_kind
    from parsed
    offset 0

),

normalized as (

    select
        key,
        coalesce(namespace, 'default') as namespace,
        {{ memory_value('value', 'stg__parsed_value', 'stg__value_kind') }} as value,
        {{ memory_data_type('stg__value_kind') }} as data_type,
        value as raw_value,
        {{ attach_to_metadata('coalesce(stg__parsed_metadata, to_jsonb(metadata))', 'claude_flow_v2',
                              unmapped_columns(raw_memory_entries, mapped_columns)) }} as metadata,
        {%- for column in epoch_columns %}
        {{ epoch_number_to_timestamptz('stg__' ~ column ~ '_number') }} as {{ column }},
        {%- endfor %}
        stg__access_count as access_count,
        stg__ttl as ttl,
        {{ staging_lineage('memory_entries') }},
        {%- set flags = [memory_value_flag('stg__value_kind', 'value'),
                         json_column_flag('metadata', 'stg__parsed_metadata', 'stg__binary_columns')] -%}
        {%- for column in epoch_columns -%}
            {%- do flags.extend(epoch_column_flags(column, 'stg__' ~ column ~ '_number', 'seconds',
                                                  required=column in required_epoch_columns)) -%}
        {%- endfor -%}
        {%- do flags.append(integer_column_flag('access_count', 'stg__access_count')) -%}
        {%- do flags.append(integer_column_flag('ttl', 'stg__ttl')) %}
        {{ flags_array(flags, 'stg__binary_columns') }} as flags
    from classified

)

select * from normalized
