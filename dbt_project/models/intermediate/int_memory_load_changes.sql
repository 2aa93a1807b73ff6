{#- Analyzed, so that what joins it is planned by its real size (often a handful of rows). -#}
{{ config(post_hook=['analyze {{ this }}']) }}
{#-
    What changed in the loads since the last build of int_memory_ranked: loads that are part of a memory
    file's current state (consolidate.current_load_parts) it does not hold yet (`new`) and loads it holds
    that are no longer part of one (`gone`). A full build (the
    first, or --full-refresh) is one row `full`. int_memory_ranked is read as it was before this run.
-#}
{%- set ranked = memory_ranked_relation() -%}

{% if memory_incremental_build() %}

with recursive built_loads as (

    -- the distinct (load_id, source_path) of int_memory_ranked, one index probe each (a loose index scan:
    -- a handful of loads among a million rows)
    (
        select load_id, source_path from {{ ranked }}
        where load_id is not null
        order by load_id, source_path
        limit 1
    )
    union all
    select next_load.load_id, next_load.source_path
    from built_loads
    cross join lateral (
        select load_id, source_path from {{ ranked }} as ranked
        where (ranked.load_id, ranked.source_path) > (built_loads.load_id, built_loads.source_path)
        order by ranked.load_id, ranked.source_path
        limit 1
    ) as next_load

),

current_memory_loads as (

    -- every part of each memory file's current state (a full load is its only part)
    select part_load_id as load_id, source_path
    from {{ source('consolidate', 'current_load_parts') }}
    where kind in ({% for kind in memory_kinds() %}'{{ kind }}'{{ ", " if not loop.last }}{% endfor %})

),

new_loads as (

    select load_id, source_path from current_memory_loads
    except
    select load_id, source_path from built_loads

),

gone_loads as (

    select load_id, source_path from built_loads
    except
    select load_id, source_path from current_memory_loads

)

select load_id, source_path, 'new'::text as change from new_loads
union all
select load_id, source_path, 'gone'::text as change from gone_loads

{% else %}

select null::text as load_id, null::text as source_path, 'full'::text as change

{% endif %}
