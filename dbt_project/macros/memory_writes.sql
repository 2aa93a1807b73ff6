{#-
    on-run-start: the write path of PostgreSQL as the system of record. Every write to a memory entry made
    in PostgreSQL goes through consolidate.write_memory_entry, which in one transaction (the caller's)
      1. takes the advisory locks `consolidate.marts` shared (a build's model holds its table's exclusively) and a lock on
         the entry, so writes to one entry are serialized and never interleave with a build;
      2. appends the write to raw_postgres.memory_writes (a delete as a tombstone);
      3. gives a new entry its id (consolidate.entry_ids);
      4. recomputes the entry's rows of int_memory_ranked, unified_memory / performance_metrics and
         unified_memory_history from its versions, with the same SQL as a build (macros/memory_ranking.sql).
    So the write is visible at once to its own transaction (and to all at its commit), and any later build
    (incremental or full) computes the same rows from the same versions. The one other writer of the log is
    a sync, which records there a delete made in SQLite that outranks a write made in PostgreSQL
    (loader/load/delta.py, via `sqlite delete`); the build that follows applies it, as it applies any
    change a sync loads.

    The write's updated_at: the one given (else now()), raised to one microsecond after the entry's current
    updated_at when that is not earlier (a source clock ahead of PostgreSQL's): every write moves its entry's
    updated_at strictly forward, which is the version the Redis cache compares (loader/serve/cache.py). The
    write is therefore always the entry's new winner when it is made; a SQLite
    version synced later wins over it only if its updated_at is later still. Fields not given are the
    entry's current ones (a new entry: created_at and accessed_at now(), access_count 0, no metadata, no
    expiry). A delete of an entry that has no value (absent or already deleted) writes nothing. An
    entry's claude-flow v3 id (metadata claude_flow_v3.id: the id compat_claude_flow_v3.memory_entries
    shows it by) is kept by a write that gives an object metadata without `claude_flow_v3` (e.g.
    MemoryClient.set(..., metadata={...})); a metadata that names claude_flow_v3 is written as given.

    A write's home file (memory_writes.home_source_path, what ties an entry a service creates to its file for
    `consolidate rollback`): MemoryClient(..., source=FILE) passes it; any other write (a client without
    source=, the views, DML on the marts) takes the session's `consolidate.source` setting (`SET
    consolidate.source = 'FILE'`, or `options='-c consolidate.source=FILE'` in the connection string): the
    file's absolute path as the ledger records it, a memory file the ledger has loaded.

    Paths: loader.serve.client.MemoryClient (set, delete; get records the access: consolidate.read_memory_entry),
    INSTEAD OF triggers on the three compatibility views, and BEFORE triggers on unified_memory and
    performance_metrics (DML on them is applied through this function and the statement reports 0 rows;
    id, key and namespace cannot change; lineage columns are computed). int_memory_ranked and
    unified_memory_history refuse DML. The functions are created for the marts of this build's schema.
-#}

{% macro create_memory_write_functions() -%}
{%- set perf = var('performance_metrics_namespace') -%}
{%- set ranked = api.Relation.create(database=target.database, schema='intermediate', identifier='int_memory_ranked') -%}
{%- set writes_view = api.Relation.create(database=target.database, schema='staging', identifier='stg_postgres__memory_writes') -%}
{%- set write_log = api.Relation.create(database=target.database, schema='raw_postgres', identifier='memory_writes') -%}
{%- set accesses = api.Relation.create(database=target.database, schema='raw_postgres', identifier='memory_accesses') -%}
{%- set entry_ids = api.Relation.create(database=target.database, schema='consolidate', identifier='entry_ids') -%}
{%- set unified = api.Relation.create(database=target.database, schema=target.schema, identifier='unified_memory') -%}
{%- set metrics = api.Relation.create(database=target.database, schema=target.schema, identifier='performance_metrics') -%}
{%- set history = api.Relation.create(database=target.database, schema=target.schema, identifier='unified_memory_history') -%}
{%- set this_entry = "ranked.namespace = p_namespace and ranked.key = p_key" -%}
{%- set marts_schema = "'" ~ (target.schema | replace("'", "''")) ~ "'" -%}

-- Derived tables refuse DML unless a build or the write path is maintaining them.
create or replace function consolidate.refuse_writes_to_derived_table() returns trigger
language plpgsql as $fn$
begin
    if coalesce(current_setting('consolidate.maintaining_marts', true), '') = 'on' then
        return null;
    end if;
    raise exception '%.% is derived from the versions of every entry: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        using hint = 'Write through loader.serve.client.MemoryClient, compat.memory_entries or DML on unified_memory / '
                     'performance_metrics; every such write is kept in raw_postgres.memory_writes.';
end
$fn$;

create or replace function consolidate.check_memory_marts_schema(p_schema text) returns void
language plpgsql as $fn$
begin
    if p_schema is distinct from {{ marts_schema }} then
        raise exception 'the memory marts are built in schema %, not %', {{ marts_schema }}, p_schema
            using hint = 'Run consolidate build --schema ' || coalesce(p_schema, '?') || ' to build them there.';
    end if;
end
$fn$;

-- Recompute one entry's rows of int_memory_ranked and the memory marts from its versions.
create or replace function consolidate.refresh_memory_entry(p_namespace text, p_key text) returns void
language plpgsql as $fn$
declare
    previous_setting text := current_setting('consolidate.maintaining_marts', true);
begin
    perform set_config('consolidate.maintaining_marts', 'on', true);

    with old_versions as (
        delete from {{ ranked }} as ranked
        where {{ this_entry }}
        returning {{ ranked_version_columns() | join(', ') }}
    ),
    versions as (
        select {{ ranked_version_columns() | join(', ') }} from old_versions where write_id is null
        union all
        select {{ ranked_version_columns() | join(', ') }} from {{ writes_view }} as writes
        where writes.namespace = p_namespace and writes.key = p_key
    )
    insert into {{ ranked }} ({{ ranked_columns() | join(', ') }})
    {{ rank_memory_versions('versions', accesses) }};

    {{ replace_entry_row(unified, unified_memory_columns(), unified_memory_rows(ranked, entry_ids, filter=this_entry), this_entry) }}

    {{ replace_entry_row(metrics, performance_metrics_columns(), performance_metrics_rows(ranked, entry_ids, filter=this_entry), this_entry) }}

    delete from {{ history }} as ranked where {{ this_entry }};
    insert into {{ history }} ({{ unified_memory_history_columns() | join(', ') }})
    {{ unified_memory_history_rows(ranked, filter=this_entry) }};

    perform set_config('consolidate.maintaining_marts', coalesce(previous_setting, ''), true);
end
$fn$;

-- The locks every write holds until its transaction ends.
create or replace function consolidate.lock_memory_entry(p_namespace text, p_key text) returns void
language sql as $fn$
    select pg_advisory_xact_lock_shared({{ memory_mart_lock_key('mart_table') }})
    from unnest(array[{% for table_name in memory_mart_tables() %}'{{ table_name }}'{{ ", " if not loop.last }}{% endfor %}]) as mart_table;
    select pg_advisory_xact_lock(hashtext('consolidate.entry'), hashtext(p_namespace || chr(31) || p_key));
$fn$;

-- A write (upsert or delete) of one entry. p_given names the fields the writer gives (value, data_type,
-- metadata, created_at, updated_at, accessed_at, expires_at, access_count, ttl); the others are the
-- entry's current ones. Returns the write's write_id, or NULL when nothing was written.
-- The file a write is tied to (memory_writes.home_source_path) is a memory file the ledger has loaded, named as
-- the ledger records it (its absolute path): no rollback could hold entries tied to any other path. `named_by`
-- says what gave the path (MemoryClient checks its source= here too). Found by the ledger's load_files_by_path.
create or replace function consolidate.check_home_file(p_path text, p_named_by text) returns void
language plpgsql stable as $fn$
begin
    if not exists (
        select 1 from consolidate.load_files as loaded
        where loaded.source_path = p_path and loaded.status = 'loaded'
          and loaded.kind in ({% for kind in memory_kinds() %}'{{ kind }}'{{ ", " if not loop.last }}{% endfor %})
    ) then
        raise exception '% is %, a path at which the ledger has no loaded memory file', p_named_by, quote_literal(p_path)
            using errcode = 'invalid_parameter_value',
                  hint = 'Name the file by its absolute path as the ledger records it (`consolidate status --json`: '
                         'source_path): entries tied to any other path could not be rolled back to the file.';
    end if;
end
$fn$;

create or replace function consolidate.write_memory_entry(
    p_schema text,
    p_via text,
    p_operation text,
    p_namespace text,
    p_key text,
    p_given text[] default '{}',
    p_value jsonb default null,
    p_data_type text default null,
    p_metadata jsonb default null,
    p_created_at timestamptz default null,
    p_updated_at timestamptz default null,
    p_accessed_at timestamptz default null,
    p_expires_at timestamptz default null,
    p_access_count integer default null,
    p_ttl integer default null,
    p_home_source_path text default null
) returns bigint
language plpgsql as $fn$
declare
    -- the entry's newest version and its aggregates (all NULL when it has no version)
    newest_deleted boolean;
    newest_value jsonb;
    newest_data_type text;
    newest_metadata jsonb;
    newest_updated_at timestamptz;
    newest_expires_at timestamptz;
    newest_ttl integer;
    first_created_at timestamptz;
    last_accessed_at timestamptz;
    max_access_count integer;
    has_value boolean;
    entry_known boolean;
    stamped_updated_at timestamptz;
    written_metadata jsonb := p_metadata;
    new_write_id bigint;
    home_file text := coalesce(p_home_source_path, nullif(current_setting('consolidate.source', true), ''));
begin
    perform consolidate.check_memory_marts_schema(p_schema);
    if p_home_source_path is null and home_file is not null then
        perform consolidate.check_home_file(home_file, 'consolidate.source');
    end if;
    if p_operation is null or p_operation not in ('upsert', 'delete') then
        raise exception 'a memory write is an upsert or a delete, not %', coalesce(p_operation, 'NULL');
    end if;
    if p_key is null or p_namespace is null then
        raise exception 'a memory entry needs a key and a namespace (key %, namespace %)',
            coalesce(quote_literal(p_key), 'NULL'), coalesce(quote_literal(p_namespace), 'NULL');
    end if;
    perform consolidate.lock_memory_entry(p_namespace, p_key);

    select ranked.deleted, ranked.value, ranked.data_type, ranked.metadata, ranked.updated_at, ranked.expires_at,
           ranked.ttl, ranked.first_created_at, ranked.last_accessed_at, ranked.max_access_count
    into newest_deleted, newest_value, newest_data_type, newest_metadata, newest_updated_at, newest_expires_at,
         newest_ttl, first_created_at, last_accessed_at, max_access_count
    from {{ ranked }} as ranked
    where {{ this_entry }} and ranked.version_rank = 1;
    entry_known := found;
    has_value := found and not newest_deleted;
    stamped_updated_at := greatest(
        coalesce(case when 'updated_at' = any(p_given) then p_updated_at end, now()),
        newest_updated_at + interval '1 microsecond');

    if p_operation = 'delete' then
        if not has_value then
            return null;
        end if;
        insert into {{ write_log }} (via, operation, key, namespace, updated_at, home_source_path)
        values (p_via, 'delete', p_key, p_namespace, stamped_updated_at, home_file)
        returning write_id into new_write_id;
    else
        if not ('value' = any(p_given) or has_value) then
            raise exception 'the new memory entry (%, %) needs a value', quote_literal(p_namespace), quote_literal(p_key);
        end if;
        -- the entry's claude-flow v3 id (its id in compat_claude_flow_v3.memory_entries, which the application
        -- addresses it by) outlives a write of an object metadata that does not name claude_flow_v3
        if 'metadata' = any(p_given) and has_value and jsonb_typeof(p_metadata) = 'object'
           and not p_metadata ? 'claude_flow_v3' and jsonb_typeof(newest_metadata -> 'claude_flow_v3') = 'object'
           and newest_metadata -> 'claude_flow_v3' ->> 'id' is not null then
            written_metadata := p_metadata || jsonb_build_object('claude_flow_v3',
                jsonb_build_object('id', newest_metadata -> 'claude_flow_v3' -> 'id'));
        end if;
        insert into {{ write_log }} (via, operation, key, namespace, value, data_type, metadata, created_at,
                                     updated_at, accessed_at, expires_at, access_count, ttl, home_source_path,
                                     given)
        values (
            p_via, 'upsert', p_key, p_namespace,
            case when 'value' = any(p_given) then coalesce(p_value, 'null'::jsonb) else newest_value end,
            case when 'data_type' = any(p_given) then p_data_type
                 when 'value' = any(p_given) then
                     -- a pickle's base64 text written back unchanged without a type (the client reads it
                     -- as a string) stays a pickle
                     case when jsonb_typeof(p_value) = 'string' and newest_data_type = 'pickle'
                               and p_value = newest_value then 'pickle'
                          when jsonb_typeof(p_value) = 'string' then 'text' else 'json' end
                 else newest_data_type end,
            case when 'metadata' = any(p_given) then written_metadata when has_value then newest_metadata end,
            case when 'created_at' = any(p_given) then p_created_at else coalesce(first_created_at, now()) end,
            stamped_updated_at,
            case when 'accessed_at' = any(p_given) then p_accessed_at when entry_known then last_accessed_at
                 else now() end,  -- an entry never read keeps none; a new one is read as it is written
            case when 'expires_at' = any(p_given) then p_expires_at when has_value then newest_expires_at end,
            case when 'access_count' = any(p_given) then p_access_count else coalesce(max_access_count, 0) end,
            case when 'ttl' = any(p_given) then p_ttl when has_value then newest_ttl end,
            home_file,
            p_given)
        returning write_id into new_write_id;
    end if;

    if not exists (select 1 from {{ entry_ids }} as known where known.namespace = p_namespace and known.key = p_key) then
        perform pg_advisory_xact_lock(hashtext('consolidate.entry_ids'));
        insert into {{ entry_ids }} (namespace, key, mart, id)
        select p_namespace, p_key, mart.name, coalesce(max(known.id), 0) + 1
        from (select {{ memory_mart_of('p_namespace') }} as name) as mart
        left join {{ entry_ids }} as known on known.mart = mart.name
        group by mart.name;
    end if;

    perform consolidate.refresh_memory_entry(p_namespace, p_key);
    -- performance_metrics holds the value of a metric, not its expiry: a write that changes only that leaves
    -- its row (whose triggers tell the caches) as it was, so the caches are told here
    if p_namespace = '{{ var("performance_metrics_namespace") }}' then
        perform pg_notify('{{ var("notify_channel") }}', case
            when octet_length(json_build_object('schema', p_schema, 'namespace', p_namespace, 'key', p_key)::text)
                 > {{ var('notify_max_payload_bytes') }}
            then json_build_object('schema', p_schema, 'flush', true)::text
            else json_build_object('schema', p_schema, 'namespace', p_namespace, 'key', p_key)::text end);
    end if;
    return new_write_id;
end
$fn$;

-- A read of an entry through the client: its accessed_at becomes p_accessed_at (if later) and its
-- access_count p_access_count (if larger; NULL: one more than now). Kept in raw_postgres.memory_accesses.
create or replace function consolidate.record_memory_access(
    p_namespace text, p_key text, p_accessed_at timestamptz default now(), p_access_count integer default null
) returns void
language plpgsql as $fn$
declare
    previous_setting text := current_setting('consolidate.maintaining_marts', true);
    current_count integer;
    new_count integer;
begin
    perform consolidate.lock_memory_entry(p_namespace, p_key);
    select ranked.max_access_count into current_count
    from {{ ranked }} as ranked where {{ this_entry }} and ranked.version_rank = 1;
    if not found then
        return;
    end if;
    new_count := coalesce(p_access_count, coalesce(current_count, 0) + 1);
    insert into {{ accesses }} as accesses (namespace, key, accessed_at, access_count)
    values (p_namespace, p_key, p_accessed_at, new_count)
    on conflict (namespace, key) do update set
        accessed_at = greatest(accesses.accessed_at, excluded.accessed_at),
        access_count = greatest(accesses.access_count, excluded.access_count);

    perform set_config('consolidate.maintaining_marts', 'on', true);
    update {{ ranked }} as ranked set
        last_accessed_at = greatest(ranked.last_accessed_at, p_accessed_at),
        max_access_count = greatest(ranked.max_access_count, new_count)
    where {{ this_entry }};
    -- a mart row locked is an UPDATE or DELETE on the mart waiting for this entry's lock (its trigger takes
    -- it after the row's): waiting for the row would deadlock. It recomputes the row once this commits,
    -- this access included (memory_accesses).
    update {{ unified }} as ranked set
        accessed_at = greatest(ranked.accessed_at, p_accessed_at),
        access_count = greatest(ranked.access_count, new_count)
    where {{ this_entry }}
      and ranked.ctid in (select free.ctid from {{ unified }} as free
                          where free.namespace = p_namespace and free.key = p_key for update skip locked);
    perform set_config('consolidate.maintaining_marts', coalesce(previous_setting, ''), true);
end
$fn$;

-- The live value of an entry (either mart), with the seconds it has left (NULL: no expiry) and its version
-- (updated_at in epoch microseconds, what the cache compares); with p_track_access, the read is recorded
-- (record_memory_access). Dropped first: an earlier build's function returned fewer columns.
drop function if exists consolidate.read_memory_entry(text, text, text, boolean);
create function consolidate.read_memory_entry(
    p_schema text, p_namespace text, p_key text, p_track_access boolean default true
) returns table (namespace text, key text, value jsonb, seconds_left double precision, version bigint)
language plpgsql as $fn$
#variable_conflict use_column
declare
    found_value jsonb;
    found_expires_at timestamptz;
    found_updated_at timestamptz;
begin
    perform consolidate.check_memory_marts_schema(p_schema);
    select ranked.value, ranked.expires_at, ranked.updated_at into found_value, found_expires_at, found_updated_at
    from {{ ranked }} as ranked
    where {{ this_entry }} and ranked.is_winner and not ranked.deleted
      and (ranked.expires_at is null or ranked.expires_at > now());
    if not found then
        return;
    end if;
    if p_track_access then
        perform consolidate.record_memory_access(p_namespace, p_key);
    end if;
    return query select p_namespace, p_key, found_value, extract(epoch from found_expires_at - now())::float8,
        (extract(epoch from found_updated_at) * 1000000)::bigint;
end
$fn$;

{{ create_mart_capture_functions() }}
{{ create_compat_write_functions() }}
{%- endmacro %}


{#- The steps the write-through triggers share (these on the marts, macros/compat.sql's on the compatibility
    views); each trigger function declares `via`, the table or view written. -#}

{#- A build or the write path itself maintaining the marts: the row goes through as it is. -#}
{% macro trigger_lets_maintenance_through() -%}
    if coalesce(current_setting('consolidate.maintaining_marts', true), '') = 'on' then
        return case when TG_OP = 'DELETE' then OLD else NEW end;
    end if;
{%- endmacro %}


{#- A DELETE deletes the entry (`namespace`, OLD.key) of the marts in schema `marts_schema`; the trigger returns `returned`. -#}
{% macro trigger_writes_delete(marts_schema, namespace, returned) -%}
    if TG_OP = 'DELETE' then
        perform consolidate.write_memory_entry({{ marts_schema }}, via, 'delete', {{ namespace }}, OLD.key);
        return {{ returned }};
    end if;
{%- endmacro %}


{#- An UPDATE cannot change an entry's id, key or namespace. -#}
{% macro trigger_refuses_identity_change() -%}
        if (NEW.id, NEW.key, NEW.namespace) is distinct from (OLD.id, OLD.key, OLD.namespace) then
            raise exception 'an entry''s id, key and namespace cannot change (id %): delete it and insert a new one', OLD.id;
        end if;
{%- endmacro %}


{#-
    DML on the marts, captured: an INSERT is an upsert of the row's entry (columns left NULL are not
    given); an UPDATE gives the columns it changes (if only accessed_at / access_count change, it is a
    read: record_memory_access); a DELETE is a delete. An UPDATE that leaves updated_at as it was is a
    write made now (like a write through the client); one that sets it gives that time (raised to the
    entry's current one when not later).
-#}
{% macro create_mart_capture_functions() -%}
{%- set content_columns = ['value', 'data_type', 'metadata', 'created_at', 'updated_at', 'expires_at', 'ttl'] -%}
{%- set computed_columns = ['source_db', 'source_path', 'load_id', 'source_table', 'source_rowid', 'source_sha256',
                            'version_count', 'flags'] -%}
create or replace function consolidate.capture_unified_memory_write() returns trigger
language plpgsql as $fn$
declare
    given text[] := '{}';
    via text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
begin
    {{ trigger_lets_maintenance_through() }}
    {{ trigger_writes_delete('TG_TABLE_SCHEMA', 'OLD.namespace', 'null') }}
    if TG_OP = 'UPDATE' then
        {{ trigger_refuses_identity_change() }}
        {%- for column in computed_columns %}
        if NEW.{{ column }} is distinct from OLD.{{ column }} then
            raise exception '%.{{ column }} is computed by consolidate (the winning version''s lineage), not written', via;
        end if;
        {%- endfor %}
        {%- for column in content_columns + ['accessed_at', 'access_count'] %}
        if NEW.{{ column }} is distinct from OLD.{{ column }} then given := given || '{{ column }}'::text; end if;
        {%- endfor %}
        if given = '{}' then
            return null;
        end if;
        if not given && array[{% for c in content_columns %}'{{ c }}'{{ ", " if not loop.last }}{% endfor %}]::text[] then
            perform consolidate.lock_memory_entry(NEW.namespace, NEW.key);
            perform consolidate.record_memory_access(NEW.namespace, NEW.key,
                coalesce(NEW.accessed_at, OLD.accessed_at, now()), NEW.access_count);
            return null;
        end if;
    else
        {%- for column in content_columns + ['accessed_at', 'access_count'] %}
        if NEW.{{ column }} is not null then given := given || '{{ column }}'::text; end if;
        {%- endfor %}
        given := given || 'value'::text;
    end if;
    perform consolidate.write_memory_entry(
        TG_TABLE_SCHEMA, via, 'upsert', NEW.namespace, NEW.key, given,
        p_value => NEW.value, p_data_type => NEW.data_type, p_metadata => NEW.metadata,
        p_created_at => NEW.created_at, p_updated_at => NEW.updated_at, p_accessed_at => NEW.accessed_at,
        p_expires_at => NEW.expires_at, p_access_count => NEW.access_count, p_ttl => NEW.ttl);
    return null;
end
$fn$;

create or replace function consolidate.capture_performance_metrics_write() returns trigger
language plpgsql as $fn$
declare
    via text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
begin
    {{ trigger_lets_maintenance_through() }}
    {{ trigger_writes_delete('TG_TABLE_SCHEMA', 'OLD.namespace', 'null') }}
    if TG_OP = 'UPDATE' and (row(NEW.*) is distinct from row(OLD.*))
       and (NEW.id, NEW.key, NEW.namespace, NEW.metric_name, NEW.metric_value, NEW."timestamp", NEW.source_path,
            NEW.source_db, NEW.load_id, NEW.source_table, NEW.source_rowid, NEW.flags)
           is distinct from
           (OLD.id, OLD.key, OLD.namespace, OLD.metric_name, OLD.metric_value, OLD."timestamp", OLD.source_path,
            OLD.source_db, OLD.load_id, OLD.source_table, OLD.source_rowid, OLD.flags) then
        raise exception '%: only metric_data can be written (the other columns are derived from it, the key and the lineage)', via;
    end if;
    if coalesce(NEW.namespace, '{{ var("performance_metrics_namespace") }}') <> '{{ var("performance_metrics_namespace") }}' then
        raise exception '% holds namespace {{ var("performance_metrics_namespace") }} only, not %', via, NEW.namespace;
    end if;
    if TG_OP = 'UPDATE' and NEW.metric_data is not distinct from OLD.metric_data then
        return null;
    end if;
    perform consolidate.write_memory_entry(
        TG_TABLE_SCHEMA, via, 'upsert', '{{ var("performance_metrics_namespace") }}', NEW.key, array['value'],
        p_value => NEW.metric_data);
    return null;
end
$fn$;
{%- endmacro %}


{#- The statements of refresh_memory_entry that replace the entry's row of a mart with one row per entry: updated
    in place when the entry keeps its row (see replace_keys in macros/incremental_memory.sql), else deleted or inserted. -#}
{% macro replace_entry_row(mart, columns, rows, this_entry) -%}
    update {{ mart }} as target
    set ({{ columns | join(', ') }}) = ({% for column in columns %}fresh.{{ column }}{{ ", " if not loop.last }}{% endfor %})
    from ({{ rows }}) as fresh
    where target.namespace = p_namespace and target.key = p_key;
    if not found then
        delete from {{ mart }} as ranked where {{ this_entry }};
        insert into {{ mart }} ({{ columns | join(', ') }})
        {{ rows }};
    end if;
{%- endmacro %}
