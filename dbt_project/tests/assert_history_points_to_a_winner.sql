-- Every history row points at the winning version of its (key, namespace): a mart row, or, when the winner
-- is a delete made in PostgreSQL, that delete's own history row (version_rank 1). Versions written in
-- PostgreSQL have no load and no file: NULLs compare equal here.
-- An incremental build after a passing one checks the entries it changed (macros/incremental_memory.sql
-- memory_test_scope): the history and the winner of any other entry are as that build left them.
{%- set scoped = memory_test_scope() == 'incremental' %}
-- depends_on: {{ ref('int_memory_changed_keys') }}
with {% if scoped %}entries as (

    {{ memory_test_entries() }}

),

{% endif %}winners as (

    {% for model, condition in [('unified_memory', none), ('performance_metrics', none),
                                ('unified_memory_history', 'mart.version_rank = 1 and mart.deleted')] %}
    select mart.key, mart.namespace, mart.load_id, mart.source_path, mart.source_table, mart.source_rowid
    from {{ ref(model) }} as mart
    {%- if scoped %}
    inner join entries on entries.namespace = mart.namespace and entries.key = mart.key
    {%- endif %}
    {%- if condition %}
    where {{ condition }}
    {%- endif %}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

)

select history.*
from {{ ref('unified_memory_history') }} as history
{%- if scoped %}
inner join entries on entries.namespace = history.namespace and entries.key = history.key
{%- endif %}
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
