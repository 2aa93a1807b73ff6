{{ config(materialized='view') }}
{#- A view: int_memory_ranked reads it once, so a table would only store every version twice. -#}

with all_memory_versions as (

    select * from {{ ref('int_memory_all_loads') }}

),

current_loads as (

    select load_id, source_path, source_db
    from {{ source('consolidate', 'current_loads') }}

),

current_memory_versions as (

    -- raw keeps the rows of every load; only each file's current load counts
    select
        all_memory_versions.*,
        current_loads.source_db
    from all_memory_versions
    inner join current_loads
        on all_memory_versions.load_id = current_loads.load_id
        and all_memory_versions.source_path = current_loads.source_path

)

select * from current_memory_versions
