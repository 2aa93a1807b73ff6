-- Every superseded version points at a winner of the same (key, namespace) that exists in a mart.
with winners as (

    select key, namespace, load_id, source_path, source_table, source_rowid from {{ ref('unified_memory') }}
    union all
    select key, namespace, load_id, source_path, source_table, source_rowid from {{ ref('performance_metrics') }}

)

select history.*
from {{ ref('unified_memory_history') }} as history
left join winners
    on history.key = winners.key
    and history.namespace = winners.namespace
    and history.winner_load_id = winners.load_id
    and history.winner_source_path = winners.source_path
    and history.winner_source_table = winners.source_table
    -- NULL-safe and still hashable (IS NOT DISTINCT FROM would force a nested loop)
    and coalesce(history.winner_source_rowid, 0) = coalesce(winners.source_rowid, 0)
    and (history.winner_source_rowid is null) = (winners.source_rowid is null)
where winners.key is null
