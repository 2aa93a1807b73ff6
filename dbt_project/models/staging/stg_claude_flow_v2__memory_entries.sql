{{ stg_claude_flow_v2__memory_entries_sql(source('raw_claude_flow_v2', 'memory_entries')) }}
