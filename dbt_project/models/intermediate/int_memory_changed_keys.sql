{#- Analyzed, so that what joins it is planned by its real size (often a handful of rows). -#}
{{ config(post_hook=['analyze {{ this }}']) }}
{#-
    The entries an incremental build recomputes: those with a version in a new load, a version in a load
    that is no longer current, a version a new change load retired, or a write in the write log that int_memory_ranked does not hold (the
    write path applies its own writes at once, so only rows added to the log some other way). Empty on a
    full build. int_memory_ranked is read as it was before this run.
-#}
{%- set ranked = memory_ranked_relation() -%}
{%- set new_versions = ref('int_memory_new_versions') -%}
{%- set load_changes = ref('int_memory_load_changes') -%}
{%- set write_log = source('raw_postgres', 'memory_writes') -%}

{% if memory_incremental_build() %}

select namespace, key
from {{ new_versions }}

union

select ranked.namespace, ranked.key
from {{ ranked }} as ranked
inner join {{ load_changes }} as gone
    on gone.change = 'gone'
    and gone.load_id = ranked.load_id
    and gone.source_path = ranked.source_path

union

-- versions retired by a new change load (changed or deleted in its snapshot)
select ranked.namespace, ranked.key
from {{ source('consolidate', 'retired_rows') }} as retired
inner join {{ load_changes }} as new_load
    on new_load.change = 'new'
    and new_load.load_id = retired.load_id
    and new_load.source_path = retired.source_path
inner join {{ ranked }} as ranked
    on ranked.load_id = retired.row_load_id
    and ranked.source_path = retired.source_path
    and ranked.source_table = retired.source_table
    and ranked.source_rowid = retired.source_rowid

union

select writes.namespace, writes.key
from {{ write_log }} as writes
where not exists (select 1 from {{ ranked }} as ranked where ranked.write_id = writes.write_id)

{% else %}

select null::text as namespace, null::text as key
where false

{% endif %}
