with current_loads as (

    select load_id, source_path
    from {{ source('consolidate', 'current_loads') }}

),

memory_sessions as (

    -- claude-flow hooks store one `session:<id>` entry per session in the `sessions` namespace
    select
        substr(key, length('session:') + 1) as session_id,
        value ->> 'agentType' as agent_type,
        value ->> 'topology' as topology,
        first_created_at as created_at,
        coalesce(greatest(updated_at, last_accessed_at), first_created_at) as last_activity,
        value as metadata,
        value ->> 'status' as status,
        source_path,
        source_table,
        source_rowid
    from {{ ref('int_memory_ranked') }}
    where is_winner
      and not deleted
      and namespace = '{{ var("sessions_namespace") }}'
      and key like 'session:_%'

),

table_sessions as (

    select
        sessions.session_id,
        sessions.state ->> 'agentType' as agent_type,
        sessions.state ->> 'topology' as topology,
        sessions.created_at,
        coalesce(sessions.updated_at, sessions.created_at) as last_activity,
        {{ attach_to_metadata('sessions.state', 'claude_flow_v3', "jsonb_build_object(
            'project_path', sessions.project_path,
            'branch', sessions.branch,
            'tasks_completed', sessions.tasks_completed,
            'patterns_learned', sessions.patterns_learned,
            'expires_at', sessions.expires_at
        ) || sessions.unmapped_fields") }} as metadata,
        sessions.status,
        sessions.source_path,
        sessions.source_table,
        sessions.source_rowid
    from {{ ref('stg_claude_flow_v3__sessions') }} as sessions
    inner join current_loads
        on sessions.load_id = current_loads.load_id
        and sessions.source_path = current_loads.source_path

),

all_sessions as (

    select * from memory_sessions
    union all
    select * from table_sessions

),

latest_per_session as (

    select
        *,
        row_number() over (
            partition by session_id
            order by last_activity desc nulls last, source_path, source_table, source_rowid
        ) as session_rank
    from all_sessions

),

final as (

    select
        session_id,
        agent_type,
        topology,
        created_at,
        last_activity,
        metadata,
        status,
        source_path,
        source_table
    from latest_per_session
    where session_rank = 1

)

select * from final
