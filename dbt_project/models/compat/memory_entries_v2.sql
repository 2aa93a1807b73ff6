{{ config(alias='memory_entries', schema='compat', materialized='view',
          post_hook=["{{ compat_write_trigger(this, 'write_compat_memory_entries_v2') }}"]) }}

{#-
    claude-flow v2's `memory_entries`, read from the consolidated marts, for the cutover: an application
    pointed at PostgreSQL (search_path = compat) reads the rows it used to read from SQLite.
      - value: the JSON text for data_type `json` (normalized by jsonb: key order and spacing may differ
        from the original), the original string for `text`, the base64 string for `pickle`
      - times: whole epoch seconds (floor), as v2 stored them
      - id: unified_memory's id; performance_metrics rows get their negated id, so the two never collide
-#}

with unified_entries as (

    select
        id,
        key,
        value,
        data_type,
        namespace,
        metadata,
        created_at,
        updated_at,
        accessed_at,
        access_count,
        ttl,
        expires_at
    from {{ ref('unified_memory') }}

),

metric_winners as (

    select *
    from {{ ref('int_memory_ranked') }}
    where is_winner
      and namespace = '{{ var("performance_metrics_namespace") }}'

),

metric_entries as (

    select
        -metrics.id as id,
        metrics.key,
        metrics.metric_data as value,
        coalesce(winners.data_type, 'json') as data_type,
        metrics.namespace,
        winners.metadata,
        coalesce(winners.first_created_at, metrics."timestamp") as created_at,
        coalesce(winners.updated_at, metrics."timestamp") as updated_at,
        winners.last_accessed_at as accessed_at,
        winners.max_access_count as access_count,
        winners.ttl,
        winners.expires_at
    from {{ ref('performance_metrics') }} as metrics
    left join metric_winners as winners
        on winners.key = metrics.key
        and winners.namespace = metrics.namespace

),

entries as (

    select * from unified_entries
    union all
    select * from metric_entries

)

select
    id,
    key,
    {{ compat_text_value('value', 'data_type') }} as value,
    namespace,
    metadata::text as metadata,
    floor(extract(epoch from created_at))::bigint as created_at,
    floor(extract(epoch from updated_at))::bigint as updated_at,
    floor(extract(epoch from accessed_at))::bigint as accessed_at,
    access_count,
    ttl,
    floor(extract(epoch from expires_at))::bigint as expires_at
from entries
