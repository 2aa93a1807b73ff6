{{ config(
    materialized='incremental',
    incremental_strategy='replace_keys',
    on_schema_change='fail',
    indexes=[
        {'columns': ['namespace', 'key']},
    ],
    pre_hook=["{{ lock_memory_marts() }}"],
    post_hook=[
        "{{ ensure_index(this, 'int_memory_ranked_write_id_idx', '(write_id) where write_id is not null') }}",
        "{{ ensure_index(this, 'int_memory_ranked_source_row_idx', '(load_id, source_path, source_rowid)') }}",
        "{{ assign_entry_ids(this) }}",
        "{{ refuse_direct_writes(this) }}",
    ],
) }}
-- depends_on: {{ ref('int_memory_changed_keys') }}
-- depends_on: {{ ref('int_memory_new_versions') }}
-- depends_on: {{ ref('int_memory_load_changes') }}
-- depends_on: {{ ref('stg_postgres__memory_writes') }}
{#
    Every current version ranked within its (namespace, key): macros/memory_ranking.sql has the rule.
    Incrementally, the changed entries' versions are gathered again from what is still current of this
    table (rows of loads that are still current and not retired), the new loads' rows and the write log,
    and ranked.
-#}

{% if is_incremental() %}

with changed_keys as (

    select namespace, key from {{ ref('int_memory_changed_keys') }}

),

gone_loads as (

    select load_id, source_path from {{ ref('int_memory_load_changes') }} where change = 'gone'

),

versions as (

    select {% for column in ranked_version_columns() %}kept.{{ column }}{{ ", " if not loop.last }}{% endfor %}
    from {{ this }} as kept
    inner join changed_keys
        on changed_keys.namespace = kept.namespace
        and changed_keys.key = kept.key
    where kept.write_id is null
      and not exists (select 1 from gone_loads
                      where gone_loads.load_id = kept.load_id and gone_loads.source_path = kept.source_path)
      and {{ not_retired('kept') }}

    union all

    select {{ ranked_version_columns() | join(', ') }}
    from {{ ref('int_memory_new_versions') }}

    union all

    select {% for column in ranked_version_columns() %}writes.{{ column }}{{ ", " if not loop.last }}{% endfor %}
    from {{ ref('stg_postgres__memory_writes') }} as writes
    inner join changed_keys
        on changed_keys.namespace = writes.namespace
        and changed_keys.key = writes.key

)

{% else %}

with versions as (

    select {{ ranked_version_columns() | join(', ') }}
    from {{ ref('int_memory_versions') }}

)

{% endif %}

{{ rank_memory_versions('versions', source('raw_postgres', 'memory_accesses')) }}
