{#-
    What changed in the loads since the last build of int_memory_ranked: memory files' current loads it
    does not hold yet (`new`) and loads it holds that are no longer current (`gone`). A full build (the
    first, or --full-refresh) is one row `full`. int_memory_ranked is read as it was before this run.
-#}
{%- set ranked = memory_ranked_relation() -%}
{%- set current_loads = source('consolidate', 'current_loads') -%}

{% if memory_incremental_build() %}

with built_loads as (

    select load_id, source_path
    from {{ ranked }}
    where write_id is null
    group by load_id, source_path

),

current_memory_loads as (

    select load_id, source_path
    from {{ current_loads }}
    where kind in ('claude-flow-v2', 'claude-flow-v3', 'extended-memory')

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
