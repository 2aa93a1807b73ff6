{%- set raw_memory_entries = source('raw_claude_flow_v3', 'memory_entries') -%}
{#- `embedding` (a JSON float array, kilobytes per row) is deliberately not carried; it stays in raw. -#}
{%- set mapped_columns = ['id', 'key', 'namespace', 'content', 'type', 'embedding', 'embedding_model',
                          'embedding_dimensions', 'tags', 'metadata', 'owner_id', 'created_at', 'updated_at',
                          'expires_at', 'last_accessed_at', 'access_count', 'status'] -%}

with source as (

    select * from {{ raw_memory_entries }}

),

normalized as (

    select
        key,
        coalesce(namespace, 'default') as namespace,
        {{ normalize_memory_value('content') }},
        content as raw_value,
        {{ attach_to_metadata(text_to_jsonb('metadata'), 'claude_flow_v3', '(v3_fields || unmapped_fields)') }} as metadata,
        {{ epoch_to_timestamptz('created_at') }} as created_at,
        {{ epoch_to_timestamptz('updated_at') }} as updated_at,
        {{ epoch_to_timestamptz('last_accessed_at') }} as accessed_at,
        {{ epoch_to_timestamptz('expires_at') }} as expires_at,
        consolidate.try_int(access_count) as access_count,
        null::integer as ttl,
        'memory_entries'::text as source_table,
        _source_path as source_path,
        _source_sha256 as source_sha256,
        _load_id as load_id,
        _source_rowid as source_rowid,
        _loaded_at as loaded_at
    from source
    cross join lateral (
        select
            jsonb_build_object(
                'id', id,
                'type', type,
                'tags', {{ text_to_jsonb('tags') }},
                'status', status,
                'owner_id', owner_id,
                'embedding_model', embedding_model,
                'embedding_dimensions', consolidate.try_int(embedding_dimensions)
            ) as v3_fields,
            {{ unmapped_columns(raw_memory_entries, mapped_columns) }} as unmapped_fields
    ) as extra

)

select * from normalized
