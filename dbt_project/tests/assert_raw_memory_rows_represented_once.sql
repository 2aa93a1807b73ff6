-- Every current raw memory row (of a current load's parts, not retired), and every write in the write log (raw_postgres.memory_writes), is in
-- exactly one of unified_memory, performance_metrics, unified_memory_history, and nothing else is in them.
-- Identity: load_id, source_path, source_table, source_rowid (for a write: source_table memory_writes, rowid =
-- write_id, no load).
-- Rows are grouped by (file_no, source_table, source_rowid): a number per current load stands in for its
-- two long texts, which makes the two million-row aggregations several times cheaper.

-- depends_on: {{ ref('int_memory_load_changes') }}
-- depends_on: {{ ref('int_memory_changed_keys') }}
-- A parent reconciliation does not have (a source, which dbt never skips): dbt holds a model until every test
-- whose parents are all upstream of it passes, so without it reconciliation (and the flags test after it)
-- would wait for this test. They read the marts independently and run side by side.
-- depends_on: {{ source('consolidate', 'loads') }}
{%- set ranked = ref('int_memory_ranked') %}
{% if memory_test_scope() == 'incremental' %}

-- An incremental build after a passing one (macros/incremental_memory.sql memory_test_scope): every raw row
-- of the loads that became current is a version in int_memory_ranked (counted per load), no version of a
-- load that stopped being current is left, and every version of the changed entries is in exactly one
-- mart row and nothing else is in them.

with new_loads as (

    select load_id, source_path from {{ ref('int_memory_load_changes') }} where change = 'new'

),

-- counted load by load (lateral): each count reads its load's rows by index, however few the planner
-- expects (a change load stores only the rows that changed)
raw_counts as (

    {% for source_name, table_name in memory_raw_tables() %}
    select new_loads.load_id, new_loads.source_path, counted.rows_in_raw
    from new_loads
    cross join lateral (
        select count(*) as rows_in_raw
        from {{ source(source_name, table_name) }} as raw_rows
        where raw_rows._load_id = new_loads.load_id and raw_rows._source_path = new_loads.source_path
          and not exists (
              select 1 from {{ source('consolidate', 'retired_rows') }} as retired
              where retired.row_load_id = raw_rows._load_id and retired.source_path = raw_rows._source_path
                and retired.source_table = '{{ table_name }}' and retired.source_rowid = raw_rows._source_rowid
          )
    ) as counted
    where counted.rows_in_raw > 0
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

ranked_counts as (

    select new_loads.load_id, new_loads.source_path, counted.versions
    from new_loads
    cross join lateral (
        select count(*) as versions
        from {{ ranked }} as ranked
        where ranked.load_id = new_loads.load_id and ranked.source_path = new_loads.source_path
    ) as counted
    where counted.versions > 0

),

new_loads_compared as (

    select coalesce(raw.load_id, ranked.load_id) as load_id, coalesce(raw.source_path, ranked.source_path) as source_path,
           null::text as source_table, null::bigint as source_rowid, raw.rows_in_raw as in_raw,
           ranked.versions as in_marts, 'int_memory_ranked (rows of the load)'::text as models
    from (select load_id, source_path, sum(rows_in_raw) as rows_in_raw from raw_counts group by 1, 2) as raw
    full outer join ranked_counts as ranked
        on ranked.load_id = raw.load_id and ranked.source_path = raw.source_path
    where raw.rows_in_raw is distinct from ranked.versions

),

gone_versions as (

    select ranked.load_id, ranked.source_path, ranked.source_table, ranked.source_rowid,
           null::bigint as in_raw, 1::bigint as in_marts, 'int_memory_ranked (a load no longer current)'::text as models
    from {{ ranked }} as ranked
    inner join {{ ref('int_memory_load_changes') }} as gone
        on gone.change = 'gone' and gone.load_id = ranked.load_id and gone.source_path = ranked.source_path

    union all

    select ranked.load_id, ranked.source_path, ranked.source_table, ranked.source_rowid,
           null::bigint as in_raw, 1::bigint as in_marts, 'int_memory_ranked (a version retired by a change load)'::text as models
    from {{ source('consolidate', 'retired_rows') }} as retired
    inner join new_loads on new_loads.load_id = retired.load_id and new_loads.source_path = retired.source_path
    inner join {{ ranked }} as ranked
        on ranked.load_id = retired.row_load_id and ranked.source_path = retired.source_path
        and ranked.source_table = retired.source_table and ranked.source_rowid = retired.source_rowid

),

entries as (

    {{ memory_test_entries() }}

),

versions as (

    select ranked.load_id, ranked.source_path, ranked.source_table, ranked.source_rowid
    from entries
    inner join {{ ranked }} as ranked on ranked.namespace = entries.namespace and ranked.key = entries.key

),

mart_rows as (

    {% for model in ['unified_memory', 'performance_metrics', 'unified_memory_history'] %}
    select mart.load_id, mart.source_path, mart.source_table, mart.source_rowid, '{{ model }}'::text as model
    from entries
    inner join {{ ref(model) }} as mart on mart.namespace = entries.namespace and mart.key = entries.key
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

represented as (

    select load_id, source_path, source_table, source_rowid, count(*) as in_marts, string_agg(model, ', ') as models
    from mart_rows
    group by 1, 2, 3, 4

),

entries_compared as (

    select coalesce(versions.load_id, represented.load_id), coalesce(versions.source_path, represented.source_path),
           coalesce(versions.source_table, represented.source_table),
           coalesce(versions.source_rowid, represented.source_rowid),
           case when versions.source_table is null then null else 1 end::bigint as in_raw,
           represented.in_marts, represented.models
    from versions
    full outer join represented
        on coalesce(represented.load_id, '') = coalesce(versions.load_id, '')
        and coalesce(represented.source_path, '') = coalesce(versions.source_path, '')
        and represented.source_table = versions.source_table
        and coalesce(represented.source_rowid, 0) = coalesce(versions.source_rowid, 0)
    where versions.source_table is null or represented.in_marts is distinct from 1

)

select * from new_loads_compared
union all
select * from gone_versions
union all
select * from entries_compared

{% else %}

with current_loads as (

    select load_id, source_path, row_number() over (order by source_path) as file_no
    from {{ source('consolidate', 'current_loads') }}

),

parts as (

    -- every load whose rows make up a file's current state, with the file's number
    select parts.part_load_id, parts.source_path, current_loads.file_no
    from {{ source('consolidate', 'current_load_parts') }} as parts
    inner join current_loads
        on parts.load_id = current_loads.load_id
        and parts.source_path = current_loads.source_path

),

raw_rows as (

    {% for source_name, table_name in memory_raw_tables() %}
    select _load_id as load_id, _source_path as source_path, '{{ table_name }}'::text as source_table, _source_rowid as source_rowid
    from {{ source(source_name, table_name) }}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

current_raw_rows as (

    select parts.file_no, raw_rows.source_table, raw_rows.source_rowid, count(*) as in_raw
    from raw_rows
    inner join parts
        on raw_rows.load_id = parts.part_load_id
        and raw_rows.source_path = parts.source_path
    where {{ not_retired('raw_rows') }}
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

    select parts.file_no, mart_rows.source_table, mart_rows.source_rowid,
           count(*) as in_marts, string_agg(mart_rows.model, ', ') as models
    from mart_rows
    inner join parts
        on mart_rows.load_id = parts.part_load_id
        and mart_rows.source_path = parts.source_path
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
    left join parts
        on mart_rows.load_id = parts.part_load_id
        and mart_rows.source_path = parts.source_path
    where parts.file_no is null
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

{% endif %}
