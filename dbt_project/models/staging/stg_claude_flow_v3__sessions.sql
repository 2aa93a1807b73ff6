{%- set raw_sessions = source('raw_claude_flow_v3', 'sessions') -%}
{%- set mapped_columns = ['id', 'state', 'status', 'project_path', 'branch', 'tasks_completed',
                          'patterns_learned', 'created_at', 'updated_at', 'expires_at'] -%}

with source as (

    select * from {{ raw_sessions }}

),

normalized as (

    select
        id as session_id,
        {{ text_to_jsonb('state') }} as state,
        status,
        project_path,
        branch,
        consolidate.try_int(tasks_completed) as tasks_completed,
        consolidate.try_int(patterns_learned) as patterns_learned,
        {{ epoch_to_timestamptz('created_at') }} as created_at,
        {{ epoch_to_timestamptz('updated_at') }} as updated_at,
        {{ epoch_to_timestamptz('expires_at') }} as expires_at,
        {{ unmapped_columns(raw_sessions, mapped_columns) }} as unmapped_fields,
        {{ staging_lineage('sessions') }}
    from source

)

select * from normalized
