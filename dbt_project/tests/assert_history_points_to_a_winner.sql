-- Every history row points at the winning version of its (key, namespace): a mart row, or, when the winner
-- is a delete made in PostgreSQL, that delete's own history row (version_rank 1). Versions written in
-- PostgreSQL have no load and no file: NULLs compare equal here.
with winners as (

    select key, namespace, load_id, source_path, source_table, source_rowid from {{ ref('unified_memory') }}
    union all
    select key, namespace, load_id, source_path, source_table, source_rowid from {{ ref('performance_metrics') }}
    union all
    select key, namespace, load_id, source_path, source_table, source_rowid
    from {{ ref('unified_memory_history') }}
    where version_rank = 1 and deleted

)

select history.*
from {{ ref('unified_memory_history') }} as history
left join winners
    on history.key = winners.key
    and history.namespace = winners.namespace
    -- NULL-safe and still hashable (IS NOT DISTINCT FROM would force a nested loop)
    and coalesce(history.winner_load_id, '') = coalesce(winners.load_id, '')
    and coalesce(history.winner_source_path, '') = coalesce(winners.source_path, '')
    and history.winner_source_table = winners.source_table
    and coalesce(history.winner_source_rowid, 0) = coalesce(winners.source_rowid, 0)
    and (history.winner_source_rowid is null) = (winners.source_rowid is null)
where winners.key is null
