{{ config(alias='memory_entries', schema='compat_claude_flow_v3', materialized='view',
          post_hook=["{{ compat_write_trigger(this, 'write_compat_memory_entries_v3') }}"]) }}

{#-
    claude-flow v3's `memory_entries`, read from unified_memory, for applications of the v3 shape
    (search_path = compat_claude_flow_v3): content as text (the same rule as compat.memory_entries),
    times in epoch milliseconds, v3's own fields (type, tags, status, owner_id) taken back out of the
    metadata staging kept them in. Embeddings stay in raw (raw_claude_flow_v3.memory_entries).
    id: the entry's own v3 id (what the application holds and addresses the row by) when it has one,
    else `unified-<unified_memory.id>` (compat_v3_id; unified_memory_v3_id_idx serves `where id = ...`).
-#}

with entries as (

    select
        {{ compat_v3_id('metadata', 'id') }} as id,
        key,
        namespace,
        {{ compat_text_value('value', 'data_type') }} as content,
        metadata -> 'claude_flow_v3' as v3_fields,
        -- another file's metadata may be a JSON scalar or array, which holds no claude_flow_v3 to take out
        case when jsonb_typeof(metadata) = 'object' then metadata - 'claude_flow_v3' else metadata end as metadata,
        created_at,
        updated_at,
        expires_at,
        accessed_at,
        access_count
    from {{ ref('unified_memory') }}

)

select
    id,
    key,
    namespace,
    content,
    coalesce(v3_fields ->> 'type', 'semantic') as type,
    v3_fields ->> 'tags' as tags,
    metadata::text as metadata,
    v3_fields ->> 'owner_id' as owner_id,
    {{ epoch_milliseconds('created_at') }} as created_at,
    {{ epoch_milliseconds('updated_at') }} as updated_at,
    {{ epoch_milliseconds('expires_at') }} as expires_at,
    {{ epoch_milliseconds('accessed_at') }} as last_accessed_at,
    access_count,
    coalesce(v3_fields ->> 'status', 'active') as status
from entries
