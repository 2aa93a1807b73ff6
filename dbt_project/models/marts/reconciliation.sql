{#-
    Per current source file with memory tables: SQLite rows (ledger) = its current raw rows (its current
    load's parts, minus retired rows) = kept + superseded + moved,
    and how many of those rows carry a flag (a problem recorded in staging; the row is loaded all the same).

    Kept incrementally: when the invocation before this one reconciled with the same project
    (reconciliation_can_continue), a build recounts only the files whose counts may have changed since: a
    new current load, or rows among the entries this build recomputed or PostgreSQL wrote since (their
    winner, so where their rows are counted, may have changed). Otherwise it counts every file.
    It counts with every write in PostgreSQL excluded (lock_memory_marts_for_counting), so no write is in
    flight between the marts it counts and the write watermark the next build starts from.
-#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='source_path',
    on_schema_change='fail',
    pre_hook=["{{ lock_memory_marts_for_counting() }}"],
    post_hook=[
        "{{ drop_files_no_longer_current(this) }}",
        "{{ mark_build_reconciled() }}",
    ],
) }}
{%- set count_changes_only = is_incremental() and reconciliation_can_continue() %}
-- depends_on: {{ ref('int_memory_changed_keys') }}
-- depends_on: {{ ref('int_memory_ranked') }}
-- depends_on: {{ source('raw_postgres', 'memory_writes') }}

with current_loads as (

    select load_id, source_path, source_db, kind
    from {{ source('consolidate', 'current_loads') }}

),

memory_tables_in_ledger as (

    select
        load_tables.load_id,
        load_tables.source_path,
        sum(load_tables.rows_in_sqlite) as rows_in_sqlite
    from {{ ref('stg_consolidate__load_tables') }} as load_tables
    where (load_tables.raw_schema, load_tables.raw_table) in (
        {%- for source_name, table_name in memory_raw_tables() %}
        {%- set relation = source(source_name, table_name) %}
        ('{{ relation.schema }}', '{{ relation.identifier }}'){{ "," if not loop.last }}
        {%- endfor %}
    )
    group by load_tables.load_id, load_tables.source_path

),

all_memory_files as (

    select
        current_loads.*,
        memory_tables_in_ledger.rows_in_sqlite
    from current_loads
    inner join memory_tables_in_ledger
        on current_loads.load_id = memory_tables_in_ledger.load_id
        and current_loads.source_path = memory_tables_in_ledger.source_path

),

{% if count_changes_only %}
changed_entries as (

    select namespace, key from {{ ref('int_memory_changed_keys') }}
    union
    select namespace, key from {{ source('raw_postgres', 'memory_writes') }}
    where write_id > ({{ reconciled_write_watermark() }})

),

files_to_count as (

    select all_memory_files.source_path
    from all_memory_files
    where not exists (
        select 1 from {{ this }} as counted
        where counted.source_path = all_memory_files.source_path
          and counted.load_id = all_memory_files.load_id
    )
    union
    select ranked.source_path
    from {{ ref('int_memory_ranked') }} as ranked
    inner join changed_entries
        on ranked.namespace = changed_entries.namespace
        and ranked.key = changed_entries.key
    where ranked.source_path is not null

),

memory_files as (

    select * from all_memory_files
    where source_path in (select source_path from files_to_count)

),
{% else %}
memory_files as (

    select * from all_memory_files

),
{% endif %}

parts as (

    select load_id, source_path, part_load_id
    from {{ source('consolidate', 'current_load_parts') }}
    where source_path in (select source_path from memory_files)

),

raw_rows as (

    {% for source_name, table_name in memory_raw_tables() %}
    select _load_id as load_id, _source_path as source_path, '{{ table_name }}'::text as source_table,
           _source_rowid as source_rowid
    from {{ source(source_name, table_name) }}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

{% if count_changes_only %}
-- A file whose current load is a change load applied right on the load it was counted at: raw is
-- append-only, so its count is that count, plus the rows the change load stored, minus the rows it retired.
counted_before as (

    select memory_files.load_id, memory_files.source_path, counted.rows_in_raw
    from memory_files
    inner join {{ source('consolidate', 'load_files') }} as current_load
        on current_load.load_id = memory_files.load_id
        and current_load.source_path = memory_files.source_path
    inner join {{ this }} as counted
        on counted.source_path = memory_files.source_path
        and counted.load_id = current_load.delta_of

),

changed_on_top as (

    select
        counted_before.load_id,
        counted_before.source_path,
        counted_before.rows_in_raw
        {%- for source_name, table_name in memory_raw_tables() %}
        + (select count(*) from {{ source(source_name, table_name) }} as stored
           where stored._load_id = counted_before.load_id and stored._source_path = counted_before.source_path)
        {%- endfor %}
        - (select count(*) from {{ source('consolidate', 'retired_rows') }} as retired
           where retired.load_id = counted_before.load_id and retired.source_path = counted_before.source_path
             and (retired.raw_schema, retired.raw_table) in (
                 {%- for source_name, table_name in memory_raw_tables() %}
                 {%- set relation = source(source_name, table_name) %}
                 ('{{ relation.schema }}', '{{ relation.identifier }}'){{ "," if not loop.last }}
                 {%- endfor %}
             ))
        as rows_in_raw
    from counted_before

),

-- A file counted at its current load already (its rows moved between marts, say, by a write in PostgreSQL):
-- its raw count stands, since raw is append-only and only a later load of the file retires rows.
counted_at_current_load as (

    select memory_files.load_id, memory_files.source_path, counted.rows_in_raw
    from memory_files
    inner join {{ this }} as counted
        on counted.source_path = memory_files.source_path
        and counted.load_id = memory_files.load_id

),
{% endif %}

raw_counts as (

    -- a file's current rows: its parts' raw rows that no change load retired
    select parts.load_id, parts.source_path, count(*) as rows_in_raw
    from raw_rows
    inner join parts
        on raw_rows.load_id = parts.part_load_id
        and raw_rows.source_path = parts.source_path
    where {{ not_retired('raw_rows') }}
    {%- if count_changes_only %}
      and parts.source_path not in (select source_path from counted_before
                                    union all
                                    select source_path from counted_at_current_load)
    {%- endif %}
    group by parts.load_id, parts.source_path
    {%- if count_changes_only %}

    union all

    select load_id, source_path, rows_in_raw from changed_on_top

    union all

    select load_id, source_path, rows_in_raw from counted_at_current_load
    {%- endif %}

),

{% for model, count_name in [
    ('unified_memory', 'kept'),
    ('unified_memory_history', 'superseded'),
    ('performance_metrics', 'moved'),
] %}
{{ count_name }}_counts as (

    select
        parts.load_id,
        parts.source_path,
        count(*) as {{ count_name }},
        count(*) filter (where cardinality(mart.flags) > 0) as flagged
    from {{ ref(model) }} as mart
    inner join parts
        on mart.load_id = parts.part_load_id
        and mart.source_path = parts.source_path
    {#- a few files: unified_memory by its source_db index (below); performance_metrics and
        unified_memory_history by their (load_id, source_path) index (ensure_index in each) #}
    {%- if model == 'unified_memory' and count_changes_only %}
    -- a few files: by its source_db index (the names the files' parts were loaded under)
    where mart.source_db in (
        select part_load.source_db
        from {{ source('consolidate', 'load_files') }} as part_load
        inner join parts as file_parts
            on part_load.load_id = file_parts.part_load_id
            and part_load.source_path = file_parts.source_path
    )
    {%- endif %}
    group by parts.load_id, parts.source_path

),

{% endfor %}
final as (

    select
        memory_files.source_path,
        memory_files.source_db,
        memory_files.kind,
        memory_files.load_id,
        memory_files.rows_in_sqlite::bigint as rows_in_sqlite,
        coalesce(raw_counts.rows_in_raw, 0) as rows_in_raw,
        coalesce(kept_counts.kept, 0) as kept,
        coalesce(superseded_counts.superseded, 0) as superseded,
        coalesce(moved_counts.moved, 0) as moved,
        coalesce(kept_counts.flagged, 0) + coalesce(superseded_counts.flagged, 0)
            + coalesce(moved_counts.flagged, 0) as flagged
    from memory_files
    left join raw_counts
        on memory_files.load_id = raw_counts.load_id and memory_files.source_path = raw_counts.source_path
    left join kept_counts
        on memory_files.load_id = kept_counts.load_id and memory_files.source_path = kept_counts.source_path
    left join superseded_counts
        on memory_files.load_id = superseded_counts.load_id and memory_files.source_path = superseded_counts.source_path
    left join moved_counts
        on memory_files.load_id = moved_counts.load_id and memory_files.source_path = moved_counts.source_path

)

select
    source_path,
    source_db,
    kind,
    load_id,
    rows_in_sqlite,
    rows_in_raw,
    kept,
    superseded,
    moved,
    flagged,
    rows_in_sqlite = rows_in_raw and rows_in_raw = kept + superseded + moved as reconciled
from final
