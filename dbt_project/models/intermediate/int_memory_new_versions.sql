{#- Analyzed, so that what joins it is planned by its real size (often a handful of rows). -#}
{{ config(post_hook=['analyze {{ this }}']) }}
{#-
    The versions of the loads new since the last build (int_memory_load_changes), through the same staging
    SQL as the staging views but over those loads' raw rows only (found by the raw tables' _load_id index).
    Empty on a full build, which reads int_memory_versions instead.
-#}
{%- set load_changes = ref('int_memory_load_changes') -%}
{#- The sources the staging SQL reads, named here so that dbt records them whichever branch runs. -#}
{%- for source_name, table_name in memory_raw_tables() -%}{%- do source(source_name, table_name) -%}{%- endfor -%}
{%- set new_loads = [] -%}
{%- if execute and memory_incremental_build() -%}
    {%- set new_loads = run_query("select load_id, source_path from " ~ load_changes
                                  ~ " where change = 'new' order by 1, 2").rows -%}
{%- endif -%}

{% if new_loads %}

{%- set raw_rows_filter -%}
    _load_id in ({% for load_id, _ in new_loads %}{{ "'" ~ (load_id | replace("'", "''")) ~ "'" }}{{ ", " if not loop.last }}{% endfor %})
    and (_load_id, _source_path) in (
        {%- for load_id, source_path in new_loads %}
        ({{ "'" ~ (load_id | replace("'", "''")) ~ "'" }}, {{ "'" ~ (source_path | replace("'", "''")) ~ "'" }}){{ "," if not loop.last }}
        {%- endfor %}
    )
{%- endset %}

with new_versions as (

    {% for source_name, table_name in memory_raw_tables() %}
    select {{ memory_version_columns() | join(', ') }}
    from ({{ memory_staging_sql(source_name, table_name, raw_rows_filter) }}) as staged
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

)

select
    new_versions.*,
    parts.source_db,
    false as deleted,
    null::bigint as write_id
from new_versions
inner join {{ source('consolidate', 'current_load_parts') }} as parts
    on new_versions.load_id = parts.part_load_id
    and new_versions.source_path = parts.source_path
-- a row of a new change load that a later one (loaded before this build too) changed again is retired
where {{ not_retired('new_versions') }}

{% else %}

select {{ ranked_version_columns() | join(', ') }}
from {{ ref('int_memory_versions') }}
where false

{% endif %}
