-- For EVERY ledger load_tables row of a load that is part of a file's current state (all kinds: memory,
-- n8n, flowise, other), the rows it stored = the raw rows in raw_schema.raw_table with that _load_id and
-- _source_path: rows_loaded, less rows_unchanged for a row-level change load (loader/load/delta.py).
-- The raw tables are only known at execution time, so the UNION ALL is generated from the ledger.

{%- set raw_tables = [] -%}
{%- if execute -%}
    {%- set raw_tables_query -%}
        select distinct load_tables.raw_schema, load_tables.raw_table
        from {{ source('consolidate', 'load_tables') }} as load_tables
        inner join {{ source('consolidate', 'current_load_parts') }} as parts
            on load_tables.load_id = parts.part_load_id
            and load_tables.source_path = parts.source_path
        order by 1, 2
    {%- endset -%}
    {%- set raw_tables = run_query(raw_tables_query).rows -%}
{%- endif %}

with current_loads as (

    select distinct part_load_id as load_id, source_path
    from {{ source('consolidate', 'current_load_parts') }}

),

expected as (

    select load_tables.load_id, load_tables.source_path, load_tables.raw_schema, load_tables.raw_table,
           load_tables.rows_loaded - load_tables.rows_unchanged as rows_loaded
    from {{ source('consolidate', 'load_tables') }} as load_tables
    inner join current_loads
        on load_tables.load_id = current_loads.load_id
        and load_tables.source_path = current_loads.source_path

),

actual as (

    {% for raw_schema, raw_table in raw_tables %}
    select
        '{{ raw_schema | replace("'", "''") }}'::text as raw_schema,
        '{{ raw_table | replace("'", "''") }}'::text as raw_table,
        _load_id as load_id,
        _source_path as source_path,
        count(*) as rows_in_raw
    from {{ quote_identifier(raw_schema) }}.{{ quote_identifier(raw_table) }}
    group by _load_id, _source_path
    {% if not loop.last %}union all{% endif %}
    {% else %}
    select null::text as raw_schema, null::text as raw_table, null::text as load_id, null::text as source_path, null::bigint as rows_in_raw
    where false
    {% endfor %}

),

current_actual as (

    select actual.*
    from actual
    inner join current_loads
        on actual.load_id = current_loads.load_id
        and actual.source_path = current_loads.source_path

)

select
    coalesce(expected.load_id, current_actual.load_id) as load_id,
    coalesce(expected.source_path, current_actual.source_path) as source_path,
    coalesce(expected.raw_schema, current_actual.raw_schema) as raw_schema,
    coalesce(expected.raw_table, current_actual.raw_table) as raw_table,
    expected.rows_loaded,
    coalesce(current_actual.rows_in_raw, 0) as rows_in_raw
from expected
full outer join current_actual
    on expected.load_id = current_actual.load_id
    and expected.source_path = current_actual.source_path
    and expected.raw_schema = current_actual.raw_schema
    and expected.raw_table = current_actual.raw_table
where expected.rows_loaded is distinct from coalesce(current_actual.rows_in_raw, 0)
