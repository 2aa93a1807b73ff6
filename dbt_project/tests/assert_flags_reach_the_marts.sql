-- Flags recorded in staging reach the marts unchanged, every flag names a known problem and a column,
-- and reconciliation.flagged counts exactly the flagged rows of each file.
-- Versions and mart rows are matched on a number per current load instead of its two long texts
-- (int_memory_ranked holds current loads only; mart rows of other loads are assert_raw_memory_rows_represented_once's).
-- An incremental build after a passing one checks the changed entries and the loads that became current only
-- (macros/incremental_memory.sql memory_test_scope).
-- depends_on: {{ ref('int_memory_load_changes') }}
-- depends_on: {{ ref('int_memory_changed_keys') }}
{%- set scoped = memory_test_scope() == 'incremental' %}

with {% if scoped %}entries as (

    {{ memory_test_entries() }}

),

new_loads as (

    select load_id, source_path from {{ ref('int_memory_load_changes') }} where change = 'new'

),

{% endif %}current_loads as (

    -- every part of each file's current state (consolidate.current_load_parts), numbered by file, with the
    -- file's current load (reconciliation's rows)
    select parts.part_load_id as load_id, parts.source_path, parts.load_id as current_load_id,
           dense_rank() over (order by parts.source_path) as file_no
    from {{ source('consolidate', 'current_load_parts') }} as parts

),

versions as (

    select ranked.load_id, ranked.source_path, ranked.source_table, ranked.source_rowid, ranked.flags
    from {{ ref('int_memory_ranked') }} as ranked
    {%- if scoped %}
    inner join entries on entries.namespace = ranked.namespace and entries.key = ranked.key
    {%- endif %}
    where ranked.load_id is not null  -- written in PostgreSQL: nothing to flag, and no file to match on

),

mart_rows as (

    {% for model in ['unified_memory', 'performance_metrics', 'unified_memory_history'] %}
    select mart.load_id, mart.source_path, mart.source_table, mart.source_rowid, mart.flags, '{{ model }}'::text as model
    from {{ ref(model) }} as mart
    {%- if scoped %}
    inner join entries on entries.namespace = mart.namespace and entries.key = mart.key
    {%- endif %}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

current_mart_rows as (

    select current_loads.file_no, mart_rows.source_table, mart_rows.source_rowid, mart_rows.flags, mart_rows.model
    from mart_rows
    inner join current_loads
        on mart_rows.load_id = current_loads.load_id
        and mart_rows.source_path = current_loads.source_path

),

flags_changed as (

    {%- if scoped %}
    -- Versions and mart rows grouped by their identity rather than joined: an aggregate costs the same
    -- whatever the planner guesses of the scoped inputs (it guesses them small, and the join it then chose,
    -- a nested loop over two CTEs of every changed entry's rows, ran for minutes at 62,500 entries). A group
    -- with a version is wrong when no mart row has its identity or its rows' flags differ; GROUP BY puts
    -- NULLs together, as the join below does. (Over every row the join is the cheaper of the two.)
    select
        'flags differ between int_memory_ranked and '
            || coalesce(string_agg(compared.model, ', '), 'the marts') as problem,
        min(compared.version_source_path) as source_path,
        compared.source_rowid,
        string_agg(compared.flags::text, ', ') filter (where compared.model is null) as expected,
        string_agg(compared.flags::text, ', ') filter (where compared.model is not null) as actual
    from (
        select current_loads.file_no, versions.source_table, versions.source_rowid, versions.flags,
               null::text as model, versions.source_path as version_source_path
        from versions
        left join current_loads
            on versions.load_id = current_loads.load_id
            and versions.source_path = current_loads.source_path
        union all
        select file_no, source_table, source_rowid, flags, model, null::text
        from current_mart_rows
    ) as compared
    group by compared.file_no, compared.source_table, compared.source_rowid
    having count(*) filter (where compared.model is null) > 0
       and (count(*) filter (where compared.model is not null) = 0
            or min(coalesce(compared.flags::text, 'NULL')) <> max(coalesce(compared.flags::text, 'NULL')))
    {%- else %}
    select
        'flags differ between int_memory_ranked and ' || coalesce(mart_rows.model, 'the marts') as problem,
        versions.source_path,
        versions.source_rowid,
        versions.flags::text as expected,
        mart_rows.flags::text as actual
    from versions
    left join current_loads
        on versions.load_id = current_loads.load_id
        and versions.source_path = current_loads.source_path
    left join current_mart_rows as mart_rows
        on current_loads.file_no = mart_rows.file_no
        and versions.source_table = mart_rows.source_table
        -- NULL-safe and still hashable (IS NOT DISTINCT FROM would force a nested loop)
        and coalesce(versions.source_rowid, 0) = coalesce(mart_rows.source_rowid, 0)
        and (versions.source_rowid is null) = (mart_rows.source_rowid is null)
    where mart_rows.flags is distinct from versions.flags
    {%- endif %}

),

unknown_flags as (

    select
        'unknown flag in ' || mart_rows.model as problem,
        mart_rows.source_path,
        mart_rows.source_rowid,
        'one of {{ flag_problems() | join(", ") }}, then :<column>' as expected,
        flag as actual
    from mart_rows
    cross join lateral unnest(mart_rows.flags) as flag
    where flag !~ '^({{ flag_problems() | join("|") }}):.+$'

),

flagged_per_file as (

    {%- if scoped %}
    select current_loads.current_load_id as load_id, ranked.source_path,
           count(*) filter (where cardinality(ranked.flags) > 0) as flagged
    from (select distinct current_loads.current_load_id, current_loads.source_path
          from new_loads
          inner join current_loads
              on current_loads.load_id = new_loads.load_id and current_loads.source_path = new_loads.source_path
         ) as files
    inner join current_loads
        on current_loads.current_load_id = files.current_load_id and current_loads.source_path = files.source_path
    inner join {{ ref('int_memory_ranked') }} as ranked
        on ranked.load_id = current_loads.load_id and ranked.source_path = current_loads.source_path
    group by current_loads.current_load_id, ranked.source_path
    {%- else %}
    -- counted per part first: a parallel aggregate of a few groups, where joining every version to its
    -- file first left a sort of them all to the leader
    select current_loads.current_load_id as load_id, current_loads.source_path, sum(per_part.flagged)::bigint as flagged
    from (
        select ranked.load_id, ranked.source_path, count(*) filter (where cardinality(ranked.flags) > 0) as flagged
        from {{ ref('int_memory_ranked') }} as ranked
        where ranked.load_id is not null
        group by ranked.load_id, ranked.source_path
    ) as per_part
    inner join current_loads
        on per_part.load_id = current_loads.load_id and per_part.source_path = current_loads.source_path
    group by current_loads.current_load_id, current_loads.source_path
    {%- endif %}

),

miscounted as (

    select
        'reconciliation.flagged' as problem,
        reconciliation.source_path,
        null::bigint as source_rowid,
        coalesce(flagged_per_file.flagged, 0)::text as expected,
        reconciliation.flagged::text as actual
    from {{ ref('reconciliation') }} as reconciliation
    {%- if scoped %}
    inner join (
        select distinct current_loads.current_load_id, current_loads.source_path
        from new_loads
        inner join current_loads
            on current_loads.load_id = new_loads.load_id and current_loads.source_path = new_loads.source_path
    ) as new_files
        on new_files.current_load_id = reconciliation.load_id and new_files.source_path = reconciliation.source_path
    {%- endif %}
    left join flagged_per_file
        on reconciliation.load_id = flagged_per_file.load_id
        and reconciliation.source_path = flagged_per_file.source_path
    where reconciliation.flagged is distinct from coalesce(flagged_per_file.flagged, 0)

)

select * from flags_changed
union all
select * from unknown_flags
union all
select * from miscounted
