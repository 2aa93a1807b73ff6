{{ stg_claude_flow_v3__memory_entries_sql(source('raw_claude_flow_v3', 'memory_entries')) }}
