{%- set raw_memory_entries = source('raw_claude_flow_v2', 'memory_entries') -%}
{#- `id` is the INTEGER PRIMARY KEY, i.e. SQLite's rowid: it is carried as source_rowid. -#}
{%- set mapped_columns = ['id', 'key', 'value', 'namespace', 'metadata', 'created_at', 'updated_at',
                          'accessed_at', 'access_count', 'ttl', 'expires_at'] -%}

with source as (

    select * from {{ raw_memory_entries }}

),

normalized as (

    select
        key,
        coalesce(namespace, 'default') as namespace,
        {{ normalize_memory_value('value') }},
        value as raw_value,
        {{ attach_to_metadata(text_to_jsonb('metadata'), 'claude_flow_v2',
                              unmapped_columns(raw_memory_entries, mapped_columns)) }} as metadata,
        {{ epoch_to_timestamptz('created_at') }} as created_at,
        {{ epoch_to_timestamptz('updated_at') }} as updated_at,
        {{ epoch_to_timestamptz('accessed_at') }} as accessed_at,
        {{ epoch_to_timestamptz('expires_at') }} as expires_at,
        consolidate.try_int(access_count) as access_count,
        consolidate.try_int(ttl) as ttl,
        'memory_entries'::text as source_table,
        _source_path as source_path,
        _source_sha256 as source_sha256,
        _load_id as load_id,
        _source_rowid as source_rowid,
        _loaded_at as loaded_at
    from source

)

select * from normalized
