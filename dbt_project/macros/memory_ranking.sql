{#-
    The dedupe rule and the marts' rows, written once. The dbt models use these macros over every version
    (a full build) or over the versions of the (namespace, key) pairs that changed since the last build
    (an incremental build); the write path (macros/memory_writes.sql: consolidate.write_memory_entry) uses
    them over the versions of the one entry it writes. So a write leaves in the marts exactly what a build
    computes from the same versions.

    A version is a row of a current SQLite load (staging) or a write made in PostgreSQL
    (raw_postgres.memory_writes; a delete is a tombstone, `deleted`). Within a (namespace, key) the winner
    (version_rank 1) is:
      1. the latest updated_at (NULL loses to any time);
      2. then a write made in PostgreSQL before a SQLite row, and the later write before the earlier
         (write_id, the write log's order);
      3. then the latest accessed_at (NULL last);
      4. then source order: source_path, source_table, source_rowid (first wins).
    Aggregates over every version feed the entry: earliest created_at; latest accessed_at and largest
    access_count, reads through the client included (raw_postgres.memory_accesses). A winning tombstone
    means the entry is absent from the marts; every version that is not a winning value is in
    unified_memory_history (a winning tombstone too, as version_rank 1).
-#}

{#- The columns of a version, in order: the staging shape, then where it came from. -#}
{% macro ranked_version_columns() -%}
    {{ return(memory_version_columns() + ['source_db', 'deleted', 'write_id']) }}
{%- endmacro %}


{#- int_memory_ranked's columns, in order: rank_memory_versions selects exactly these. -#}
{% macro ranked_columns() -%}
    {{ return(ranked_version_columns() + [
        'version_rank', 'version_count', 'first_created_at', 'last_accessed_at', 'max_access_count',
        'winner_load_id', 'winner_source_path', 'winner_source_table', 'winner_source_rowid', 'is_winner',
    ]) }}
{%- endmacro %}


{#- Every version of `versions` (a relation or CTE with ranked_version_columns) ranked within its entry. -#}
{% macro rank_memory_versions(versions, accesses) -%}
select
    ranked.*,
    ranked.version_rank = 1 as is_winner
from (
    select
        {%- for column in ranked_version_columns() %}
        versions.{{ column }},
        {%- endfor %}
        row_number() over newest_first as version_rank,
        count(*) over same_entry as version_count,
        min(versions.created_at) over same_entry as first_created_at,
        greatest(max(versions.accessed_at) over same_entry, accesses.accessed_at) as last_accessed_at,
        greatest(max(versions.access_count) over same_entry, accesses.access_count) as max_access_count,
        first_value(versions.load_id) over newest_first as winner_load_id,
        first_value(versions.source_path) over newest_first as winner_source_path,
        first_value(versions.source_table) over newest_first as winner_source_table,
        first_value(versions.source_rowid) over newest_first as winner_source_rowid
    from {{ versions }} as versions
    left join {{ accesses }} as accesses
        on accesses.namespace = versions.namespace
        and accesses.key = versions.key
    window
        same_entry as (partition by versions.namespace, versions.key),
        newest_first as (
            partition by versions.namespace, versions.key
            order by
                versions.updated_at desc nulls last,
                -- NULL for SQLite rows: a write made in PostgreSQL first, the later one first
                versions.write_id desc nulls last,
                versions.accessed_at desc nulls last,
                versions.source_path asc,
                versions.source_table asc,
                versions.source_rowid asc nulls last
        )
) as ranked
{%- endmacro %}


{#- Which mart an entry of `namespace` (an expression) is in. -#}
{% macro memory_mart_of(namespace) -%}
    case when {{ namespace }} = '{{ var("performance_metrics_namespace") }}'
        then 'performance_metrics' else 'unified_memory' end
{%- endmacro %}


{#-
    The FROM and WHERE of a mart's rows: the winning versions (joined to their ids) of the entries in `mart`
    that are not deleted; `filter` (on alias `ranked`) narrows them further.
-#}
{% macro current_entries_of(ranked, entry_ids, mart, filter=none) -%}
from {{ ranked }} as ranked
inner join {{ entry_ids }} as entry_ids
    on entry_ids.namespace = ranked.namespace
    and entry_ids.key = ranked.key
where ranked.is_winner
  and not ranked.deleted
  and ranked.namespace {{ '=' if mart == 'performance_metrics' else '<>' }} '{{ var("performance_metrics_namespace") }}'
  {%- if filter %}
  and {{ filter }}
  {%- endif %}
{%- endmacro %}


{% macro unified_memory_columns() -%}
    {{ return(['id', 'key', 'value', 'namespace', 'data_type', 'metadata', 'source_db', 'source_path',
               'created_at', 'updated_at', 'accessed_at', 'expires_at', 'access_count', 'ttl', 'load_id',
               'source_table', 'source_rowid', 'source_sha256', 'version_count', 'flags']) }}
{%- endmacro %}


{#- unified_memory's rows from the ranked versions `ranked` (alias `ranked` in `filter`). -#}
{% macro unified_memory_rows(ranked, entry_ids, filter=none) -%}
select
    entry_ids.id,
    ranked.key,
    ranked.value,
    ranked.namespace,
    ranked.data_type,
    ranked.metadata,
    ranked.source_db,
    ranked.source_path,
    ranked.first_created_at as created_at,
    ranked.updated_at,
    ranked.last_accessed_at as accessed_at,
    ranked.expires_at,
    ranked.max_access_count as access_count,
    ranked.ttl,
    ranked.load_id,
    ranked.source_table,
    ranked.source_rowid,
    ranked.source_sha256,
    ranked.version_count::integer as version_count,
    ranked.flags
{{ current_entries_of(ranked, entry_ids, 'unified_memory', filter) }}
{%- endmacro %}


{% macro performance_metrics_columns() -%}
    {{ return(['id', 'metric_name', 'metric_value', 'metric_data', '"timestamp"', 'namespace', 'key',
               'source_path', 'source_db', 'load_id', 'source_table', 'source_rowid', 'flags']) }}
{%- endmacro %}


{% macro performance_metrics_rows(ranked, entry_ids, filter=none) -%}
select
    entry_ids.id,
    -- `command-metrics:bash-<ms>-<id>` -> `command-metrics`; keys without ':' are their own name
    split_part(ranked.key, ':', 1) as metric_name,
    consolidate.try_numeric(ranked.value ->> 'duration') as metric_value,
    ranked.value as metric_data,
    coalesce(
        {{ text_to_timestamptz("ranked.value ->> 'timestamp'") }},
        ranked.updated_at,
        ranked.first_created_at
    ) as "timestamp",
    ranked.namespace,
    ranked.key,
    ranked.source_path,
    ranked.source_db,
    ranked.load_id,
    ranked.source_table,
    ranked.source_rowid,
    ranked.flags
{{ current_entries_of(ranked, entry_ids, 'performance_metrics', filter) }}
{%- endmacro %}


{#-
    A history row's id: a function of its version's identity (the write, or the load, file, table and
    rowid), so it is the same however and whenever the row was built, and never renumbered.
-#}
{% macro memory_version_id(relation) -%}
    ('x' || left(md5(concat_ws('|',
        quote_nullable({{ relation }}.write_id), quote_nullable({{ relation }}.load_id),
        quote_nullable({{ relation }}.source_path), quote_nullable({{ relation }}.source_table),
        quote_nullable({{ relation }}.source_rowid))), 16))::bit(64)::bigint
{%- endmacro %}


{% macro unified_memory_history_columns() -%}
    {{ return(['id', 'key', 'namespace', 'value', 'data_type', 'raw_value', 'metadata', 'created_at',
               'updated_at', 'accessed_at', 'expires_at', 'access_count', 'ttl', 'source_db', 'source_path',
               'source_table', 'source_rowid', 'source_sha256', 'load_id', 'loaded_at', 'version_rank',
               'winner_load_id', 'winner_source_path', 'winner_source_table', 'winner_source_rowid', 'flags',
               'deleted']) }}
{%- endmacro %}


{#- Every version that is not an entry's current value: superseded versions, and a winning tombstone. -#}
{% macro unified_memory_history_rows(ranked, filter=none) -%}
select
    {{ memory_version_id('ranked') }} as id,
    ranked.key,
    ranked.namespace,
    ranked.value,
    ranked.data_type,
    ranked.raw_value,
    ranked.metadata,
    ranked.created_at,
    ranked.updated_at,
    ranked.accessed_at,
    ranked.expires_at,
    ranked.access_count,
    ranked.ttl,
    ranked.source_db,
    ranked.source_path,
    ranked.source_table,
    ranked.source_rowid,
    ranked.source_sha256,
    ranked.load_id,
    ranked.loaded_at,
    ranked.version_rank::integer as version_rank,
    ranked.winner_load_id,
    ranked.winner_source_path,
    ranked.winner_source_table,
    ranked.winner_source_rowid,
    ranked.flags,
    ranked.deleted
from {{ ranked }} as ranked
where not (ranked.is_winner and not ranked.deleted)
  {%- if filter %}
  and {{ filter }}
  {%- endif %}
{%- endmacro %}
