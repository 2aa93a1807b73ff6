{#-
    The memory staging models' SQL, one macro per raw memory table. The staging views
    (models/staging/stg_*) are these over every raw row; the incremental build runs the same SQL over
    the rows of the loads that are new since the last build only (`raw_rows_filter`: a condition on
    the raw table's columns, applied before any parsing).
-#}

{#-
    The steps every memory staging model shares, as the CTEs `source` (the raw rows; those matching
    `raw_rows_filter` only), `parsed` (each value parsed once per row: the memory value in `value_column`,
    and `parses`, pairs of (expression, alias)) and `classified` (the value's kind). The caller goes on
    with its own `normalized`.
-#}
{% macro memory_staging_steps(raw_table, raw_rows_filter, binary_columns, value_column, parses, storage_type=none) %}
    with source as (

        select * from {{ raw_table }}
        {%- if raw_rows_filter %}
        where {{ raw_rows_filter }}
        {%- endif %}

    ),

    parsed as (

        -- Every parse once per row: an OFFSET keeps PostgreSQL from inlining this step into the next ones,
        -- which would repeat each parse wherever its result is used. OFFSET NULL, not the usual OFFSET 0:
        -- PostgreSQL reads 0 (an integer cast to bigint) as an offset to apply, and keeps every step above
        -- it out of the parallel workers.
        select
            source.*,
            {{ binary_columns }} as stg__binary_columns,
            {{ parse_memory_value(value_column, storage_type=storage_type,
                                  is_binary=is_binary(binary_columns, value_column)) }} as stg__parsed_value
            {%- for expression, alias in parses %},
            {{ expression }} as {{ alias }}
            {%- endfor %}
        from source
        offset null

    ),

    classified as (

        select
            parsed.*,
            {{ memory_value_kind(value_column, 'stg__parsed_value', storage_type=storage_type,
                                 is_binary=is_binary('stg__binary_columns', value_column)) }} as stg__value_kind
        from parsed
        offset null

    )
{%- endmacro %}

{% macro stg_claude_flow_v2__memory_entries_sql(raw_memory_entries, raw_rows_filter=none) %}
    {#- `id` is the INTEGER PRIMARY KEY, i.e. SQLite's rowid: it is carried as source_rowid. -#}
    {%- set mapped_columns = ['id', 'key', 'value', 'namespace', 'metadata', 'created_at', 'updated_at',
                              'accessed_at', 'access_count', 'ttl', 'expires_at'] -%}
    {#- v2's INTEGER epoch-second columns; those with a DEFAULT in v2's schema are never NULL by intent. -#}
    {%- set epoch_columns = ['created_at', 'updated_at', 'accessed_at', 'expires_at'] -%}
    {%- set required_epoch_columns = ['created_at', 'updated_at', 'accessed_at'] -%}
    {%- set binary_columns = binary_columns_of('raw_claude_flow_v2', 'memory_entries') -%}

    {%- set parses = [('consolidate.try_jsonb(metadata)', 'stg__parsed_metadata')] -%}
    {%- for column in epoch_columns -%}
        {%- do parses.append(('consolidate.try_numeric(' ~ column ~ ')', 'stg__' ~ column ~ '_number')) -%}
    {%- endfor -%}
    {%- do parses.extend([('consolidate.try_int(access_count)', 'stg__access_count'),
                          ('consolidate.try_int(ttl)', 'stg__ttl')]) %}

    {{ memory_staging_steps(raw_memory_entries, raw_rows_filter, binary_columns, 'value', parses) }},

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
{% endmacro %}

{% macro stg_claude_flow_v3__memory_entries_sql(raw_memory_entries, raw_rows_filter=none) %}
    {#- `embedding` (a JSON float array, kilobytes per row) is deliberately not carried; it stays in raw. -#}
    {%- set mapped_columns = ['id', 'key', 'namespace', 'content', 'type', 'embedding', 'embedding_model',
                              'embedding_dimensions', 'tags', 'metadata', 'owner_id', 'created_at', 'updated_at',
                              'expires_at', 'last_accessed_at', 'access_count', 'status'] -%}
    {#- v3's INTEGER epoch-millisecond columns; created_at and updated_at are NOT NULL in v3's schema. -#}
    {%- set epoch_columns = ['created_at', 'updated_at', 'last_accessed_at', 'expires_at'] -%}
    {%- set required_epoch_columns = ['created_at', 'updated_at'] -%}
    {%- set binary_columns = binary_columns_of('raw_claude_flow_v3', 'memory_entries') -%}

    {%- set parses = [('consolidate.try_jsonb(metadata)', 'stg__parsed_metadata'),
                      ('consolidate.try_jsonb(tags)', 'stg__parsed_tags')] -%}
    {%- for column in epoch_columns -%}
        {%- do parses.append(('consolidate.try_numeric(' ~ column ~ ')', 'stg__' ~ column ~ '_number')) -%}
    {%- endfor -%}
    {%- do parses.extend([('consolidate.try_int(access_count)', 'stg__access_count'),
                          ('consolidate.try_int(embedding_dimensions)', 'stg__embedding_dimensions')]) %}

    {{ memory_staging_steps(raw_memory_entries, raw_rows_filter, binary_columns, 'content', parses) }},

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
{% endmacro %}

{% macro stg_extended_memory__memory_store_sql(raw_memory_store, raw_rows_filter=none) %}
    {%- set mapped_columns = ['key', 'value', 'type', 'created_at', 'updated_at', 'accessed_at', 'access_count'] -%}
    {#- Naive UTC text timestamps (TIMESTAMP columns); accessed_at has a DEFAULT in the store's schema. -#}
    {%- set timestamp_columns = ['created_at', 'updated_at', 'accessed_at'] -%}
    {%- set required_timestamp_columns = ['accessed_at'] -%}
    {%- set binary_columns = binary_columns_of('raw_extended_memory', 'memory_store') -%}

    {%- set parses = [] -%}
    {%- for column in timestamp_columns -%}
        {%- do parses.append((text_to_timestamptz(column), 'stg__' ~ column)) -%}
    {%- endfor -%}
    {%- do parses.append(('consolidate.try_int(access_count)', 'stg__access_count')) %}

    {{ memory_staging_steps(raw_memory_store, raw_rows_filter, binary_columns, 'value', parses,
                            storage_type='type') }},

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
{% endmacro %}
