-- Every raw memory row of a current load is in exactly one of unified_memory, performance_metrics,
-- unified_memory_history, and nothing else is in them. Identity: load_id, source_path, source_table, source_rowid.

with current_loads as (

    select load_id, source_path
    from {{ source('consolidate', 'current_loads') }}

),

raw_rows as (

    {% for source_name, table_name in memory_raw_tables() %}
    select _load_id as load_id, _source_path as source_path, '{{ table_name }}'::text as source_table, _source_rowid as source_rowid
    from {{ source(source_name, table_name) }}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

current_raw_rows as (

    select raw_rows.load_id, raw_rows.source_path, raw_rows.source_table, raw_rows.source_rowid, count(*) as in_raw
    from raw_rows
    inner join current_loads
        on raw_rows.load_id = current_loads.load_id
        and raw_rows.source_path = current_loads.source_path
    group by 1, 2, 3, 4

),

represented_rows as (

    select load_id, source_path, source_table, source_rowid, count(*) as in_marts, string_agg(model, ', ') as models
    from (
        select load_id, source_path, source_table, source_rowid, 'unified_memory' as model from {{ ref('unified_memory') }}
        union all
        select load_id, source_path, source_table, source_rowid, 'performance_metrics' from {{ ref('performance_metrics') }}
        union all
        select load_id, source_path, source_table, source_rowid, 'unified_memory_history' from {{ ref('unified_memory_history') }}
    ) as mart_rows
    group by 1, 2, 3, 4

)

select
    coalesce(current_raw_rows.load_id, represented_rows.load_id) as load_id,
    coalesce(current_raw_rows.source_path, represented_rows.source_path) as source_path,
    coalesce(current_raw_rows.source_table, represented_rows.source_table) as source_table,
    coalesce(current_raw_rows.source_rowid, represented_rows.source_rowid) as source_rowid,
    current_raw_rows.in_raw,
    represented_rows.in_marts,
    represented_rows.models
from current_raw_rows
full outer join represented_rows
    on current_raw_rows.load_id = represented_rows.load_id
    and current_raw_rows.source_path = represented_rows.source_path
    and current_raw_rows.source_table = represented_rows.source_table
    and current_raw_rows.source_rowid = represented_rows.source_rowid
where current_raw_rows.in_raw is distinct from 1
   or represented_rows.in_marts is distinct from 1
