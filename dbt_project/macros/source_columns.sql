{#-
    Lineage columns the loader appends to every raw row (loader/load/raw_contract.py LINEAGE_COLUMNS).
    `_binary_columns` (text[], NULL when none) lists the source columns whose value in that row is stored
    as `\x` + lowercase hex of its exact bytes (a BLOB, text that is not UTF-8, or text holding NUL).
-#}
{% macro lineage_columns() -%}
    {{ return(['_load_id', '_source_path', '_source_sha256', '_source_rowid', '_loaded_at', '_binary_columns']) }}
{%- endmacro %}


{#- A staging model's lineage columns: where each row came from, named as the later models read them. -#}
{% macro staging_lineage(source_table) -%}
    '{{ source_table }}'::text as source_table,
        _source_path as source_path,
        _source_sha256 as source_sha256,
        _load_id as load_id,
        _source_rowid as source_rowid,
        _loaded_at as loaded_at
{%- endmacro %}


{#-
    Raw columns a model does not map explicitly, as one jsonb object (NULLs dropped). The loader adds
    columns a file brings beyond the contract (e.g. claude-flow v3 `provenance_type`); this keeps them
    instead of dropping them silently. Resolved at compile time from the relation's actual columns.
-#}
{% macro unmapped_columns(relation, mapped_columns) -%}
    {%- set excluded = (mapped_columns + lineage_columns()) | map('lower') | list -%}
    {%- set extra = [] -%}
    {%- if execute -%}
        {%- for column in adapter.get_columns_in_relation(relation) -%}
            {%- if column.name | lower not in excluded -%}
                {%- do extra.append(column.name) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {%- if extra | length == 0 -%}
        '{}'::jsonb
    {%- else -%}
        {#- jsonb_build_object takes at most 100 arguments: build in chunks of 50 pairs -#}
        jsonb_strip_nulls(
        {%- for chunk in extra | batch(50) %}
            {% if not loop.first %}|| {% endif %}jsonb_build_object(
            {%- for name in chunk %}
                '{{ name | replace("'", "''") }}', {{ quote_identifier(name) }}::text{{ "," if not loop.last }}
            {%- endfor %}
            )
        {%- endfor %}
        )
    {%- endif -%}
{%- endmacro %}


{#- The kinds of memory files (loader/load/raw_contract.py MEMORY_KINDS says the same). -#}
{% macro memory_kinds() -%}
    {{ return(['claude-flow-v2', 'claude-flow-v3', 'extended-memory']) }}
{%- endmacro %}


{#- The raw memory tables the marts are built from, as (source name, table name)
    (loader/load/raw_contract.py RAW_MEMORY_TABLES says the same). -#}
{% macro memory_raw_tables() -%}
    {{ return([
        ('raw_claude_flow_v2', 'memory_entries'),
        ('raw_claude_flow_v3', 'memory_entries'),
        ('raw_extended_memory', 'memory_store'),
    ]) }}
{%- endmacro %}


{#- The shared column list of the memory staging models, in order. -#}
{% macro memory_version_columns() -%}
    {{ return([
        'key', 'namespace', 'value', 'data_type', 'raw_value', 'metadata',
        'created_at', 'updated_at', 'accessed_at', 'expires_at', 'access_count', 'ttl',
        'source_table', 'source_path', 'source_sha256', 'load_id', 'source_rowid', 'loaded_at', 'flags',
    ]) }}
{%- endmacro %}


{#-
    A PostgreSQL identifier, quoted whatever it holds: embedded double quotes are doubled. (dbt-postgres's
    adapter.quote does not double them, so a table named `say "hi"` would break the statement.)
-#}
{% macro quote_identifier(name) -%}
    "{{ name | replace('"', '""') }}"
{%- endmacro %}
