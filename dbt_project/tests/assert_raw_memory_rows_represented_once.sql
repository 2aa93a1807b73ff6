-- Every raw memory row of a current load, and every write in the write log (raw_postgres.memory_writes), is in
-- exactly one of unified_memory, performance_metrics, unified_memory_history, and nothing else is in them.
-- Identity: load_id, source_path, source_table, source_rowid (for a write: source_table memory_writes, rowid =
-- write_id, no load).
-- Rows are grouped by (file_no, source_table, source_rowid): a number per current load stands in for its
-- two long texts, which makes the two million-row aggregations several times cheaper.

with current_loads as (

    select load_id, source_path, row_number() over (order by source_path) as file_no
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

    select current_loads.file_no, raw_rows.source_table, raw_rows.source_rowid, count(*) as in_raw
    from raw_rows
    inner join current_loads
        on raw_rows.load_id = current_loads.load_id
        and raw_rows.source_path = current_loads.source_path
    group by 1, 2, 3

),

mart_rows as (

    select load_id, source_path, source_table, source_rowid, 'unified_memory' as model from {{ ref('unified_memory') }}
    union all
    select load_id, source_path, source_table, source_rowid, 'performance_metrics' from {{ ref('performance_metrics') }}
    union all
    select load_id, source_path, source_table, source_rowid, 'unified_memory_history' from {{ ref('unified_memory_history') }}

),

represented_rows as (

    select current_loads.file_no, mart_rows.source_table, mart_rows.source_rowid,
           count(*) as in_marts, string_agg(mart_rows.model, ', ') as models
    from mart_rows
    inner join current_loads
        on mart_rows.load_id = current_loads.load_id
        and mart_rows.source_path = current_loads.source_path
    group by 1, 2, 3

),

rows_of_current_loads as (

    select
        current_loads.load_id,
        current_loads.source_path,
        compared.source_table,
        compared.source_rowid,
        compared.in_raw,
        compared.in_marts,
        compared.models
    from (
        select
            coalesce(current_raw_rows.file_no, represented_rows.file_no) as file_no,
            coalesce(current_raw_rows.source_table, represented_rows.source_table) as source_table,
            coalesce(current_raw_rows.source_rowid, represented_rows.source_rowid) as source_rowid,
            current_raw_rows.in_raw,
            represented_rows.in_marts,
            represented_rows.models
        from current_raw_rows
        full outer join represented_rows
            on current_raw_rows.file_no = represented_rows.file_no
            and current_raw_rows.source_table = represented_rows.source_table
            and current_raw_rows.source_rowid = represented_rows.source_rowid
        where current_raw_rows.in_raw is distinct from 1
           or represented_rows.in_marts is distinct from 1
    ) as compared
    inner join current_loads
        on compared.file_no = current_loads.file_no

),

rows_of_other_loads as (

    -- mart rows of no current load have no raw row to match
    select mart_rows.load_id, mart_rows.source_path, mart_rows.source_table, mart_rows.source_rowid,
           null::bigint as in_raw, 1::bigint as in_marts, mart_rows.model as models
    from mart_rows
    left join current_loads
        on mart_rows.load_id = current_loads.load_id
        and mart_rows.source_path = current_loads.source_path
    where current_loads.file_no is null
      and not (mart_rows.load_id is null and mart_rows.source_table = 'memory_writes')

),

written_rows as (

    select mart_rows.source_rowid as write_id, count(*) as in_marts, string_agg(mart_rows.model, ', ') as models
    from mart_rows
    where mart_rows.load_id is null and mart_rows.source_table = 'memory_writes'
    group by 1

),

rows_of_the_write_log as (

    select null::text as load_id, null::text as source_path, 'memory_writes'::text as source_table,
           coalesce(writes.write_id, written_rows.write_id) as source_rowid,
           case when writes.write_id is null then null else 1 end::bigint as in_raw,
           written_rows.in_marts, written_rows.models
    from {{ source('raw_postgres', 'memory_writes') }} as writes
    full outer join written_rows
        on written_rows.write_id = writes.write_id
    where writes.write_id is null
       or written_rows.in_marts is distinct from 1

)

select * from rows_of_current_loads
union all
select * from rows_of_other_loads
union all
select * from rows_of_the_write_log
