{{ config(materialized='view') }}
{#-
    Every current version: each file's current rows (its current load's parts, minus retired rows), and every write made in PostgreSQL
    (stg_postgres__memory_writes). A full build ranks all of them; a view, since int_memory_ranked reads it
    once and a table would only store every version twice.
-#}
-- depends_on: {{ source('consolidate', 'current_load_parts') }}

with all_memory_versions as (

    select * from {{ ref('int_memory_all_loads') }}

),

current_parts as (

    -- the ledger's current_load_parts, read so that the parallel workers can join it (macros/create_udfs.sql)
    select part_load_id, source_path, source_db
    from consolidate.current_load_parts_scan()

),

current_memory_versions as (

    -- raw keeps the rows of every load; only each file's current rows count: its current load's parts'
    -- rows that no later change load retired
    select
        all_memory_versions.*,
        current_parts.source_db,
        false as deleted,
        null::bigint as write_id
    from all_memory_versions
    inner join current_parts
        on all_memory_versions.load_id = current_parts.part_load_id
        and all_memory_versions.source_path = current_parts.source_path
    where {{ not_retired('all_memory_versions') }}

),

postgres_versions as (

    select {{ ranked_version_columns() | join(', ') }}
    from {{ ref('stg_postgres__memory_writes') }}

)

select * from current_memory_versions
union all
select * from postgres_versions
