{#-
    Writes made in PostgreSQL (raw_postgres.memory_writes) as memory versions in the shared shape, beside
    the SQLite rows: source_db 'postgresql', source_table 'memory_writes', source_rowid = write_id, no
    file, no load; loaded_at = written_at. A delete is a tombstone (`deleted`): it takes part in the ranking
    like any version and, when it wins, the entry leaves the marts. Their values are already jsonb, so
    there is no original text (raw_value) and nothing to flag.
-#}

with writes as (

    select * from {{ source('raw_postgres', 'memory_writes') }}

)

select
    key,
    namespace,
    value,
    data_type,
    null::text as raw_value,
    metadata,
    created_at,
    updated_at,
    accessed_at,
    expires_at,
    access_count,
    ttl,
    'memory_writes'::text as source_table,
    null::text as source_path,
    null::text as source_sha256,
    null::text as load_id,
    write_id as source_rowid,
    written_at as loaded_at,
    '{}'::text[] as flags,
    'postgresql'::text as source_db,
    operation = 'delete' as deleted,
    write_id,
    via,
    application_name,
    db_user,
    txid,
    home_source_path
from writes
