{#- How the compatibility views give values back to applications: the JSON text for `json`, the
    original string for everything kept as a JSON string (text, pickle, ...). -#}
{% macro compat_text_value(value, data_type) -%}
    case when {{ data_type }} = 'json' then {{ value }}::text else {{ value }} #>> '{}' end
{%- endmacro %}

{#-
    on-run-start (create_udfs): extended-memory's `type` of an entry, the one definition that
    compat_extended_memory.memory_store shows and `consolidate rollback` writes back (loader/operate/rollback.py).
    The type names the Python type the application stored the value from (none, str, int, float, bool, dict,
    list, pickle). It is the type kept in the metadata (`extended_memory.type`: the file's, or the one an
    application wrote through the view) when that fits the value, else the type named from the value: `str`
    for a JSON string (and any other value held as text), `int` or `float` for a number (a kept `int` or
    `float` fits either; named `int` when jsonb spells it without a fraction), `bool`, `none` for null,
    `dict` for an object, `list` for an array; `pickle` stays `pickle`, and a kept type stays on a value
    held as binary or as JSON PostgreSQL cannot hold (unsupported_json). Every JSON type other than a
    number fits exactly one type, which is therefore both the kept type when it fits and the named one.
-#}
{% macro create_compat_functions() -%}
{#-
    extended-memory's `value`, as the application stores it: JSON text (its json.dumps of the value, a str
    included: a text value, such as a str set through the client, reads back as a JSON string), except
    pickle (its base64 text) and what JSON cannot hold (binary `\x` hex, unsupported JSON), given as the
    text itself. The view shows it and `consolidate rollback` writes it back.
-#}
create or replace function consolidate.extended_memory_value(value jsonb, data_type text)
returns text
language sql immutable parallel safe
as $fn$
    select case when data_type in ('pickle', 'binary', 'unsupported_json') then value #>> '{}' else value::text end
$fn$;

create or replace function consolidate.extended_memory_type(value jsonb, data_type text, metadata jsonb)
returns text
language sql immutable parallel safe
as $fn$
    select case
        when data_type = 'pickle' then 'pickle'
        when data_type in ('binary', 'unsupported_json') and metadata -> 'extended_memory' ->> 'type' is not null
            then metadata -> 'extended_memory' ->> 'type'
        when data_type is distinct from 'json' then 'str'
        when jsonb_typeof(value) = 'number' then
            case
                when metadata -> 'extended_memory' ->> 'type' in ('int', 'float')
                    then metadata -> 'extended_memory' ->> 'type'
                when value::text ~ '^-?[0-9]+$' then 'int'
                else 'float'
            end
        when jsonb_typeof(value) = 'boolean' then 'bool'
        when jsonb_typeof(value) = 'null' then 'none'
        when jsonb_typeof(value) = 'object' then 'dict'
        when jsonb_typeof(value) = 'array' then 'list'
        else 'str'
    end
$fn$;
{%- endmacro %}


{#-
    The id compat_claude_flow_v3.memory_entries gives an entry: its own claude-flow v3 id, which staging
    keeps in the metadata (claude_flow_v3.id), when it has one, else `unified-<unified_memory.id>`. One
    expression for the view and for unified_memory's index on it (unified_memory_v3_id_idx), so that a
    lookup by id through the view is an index scan.
-#}
{% macro compat_v3_id(metadata, id) -%}
    coalesce({{ metadata }} -> 'claude_flow_v3' ->> 'id', 'unified-' || {{ id }}::text)
{%- endmacro %}

{% macro epoch_milliseconds(timestamp) -%}
    floor(extract(epoch from {{ timestamp }}) * 1000)::bigint
{%- endmacro %}


{#-
    The compatibility views are writable: INSTEAD OF triggers turn an application's INSERT / UPDATE /
    DELETE into writes of the entry (consolidate.write_memory_entry, see macros/memory_writes.sql), with
    the view's shape read back the way the view shows it: a value is JSON when it parses, else text
    (extended-memory's `pickle` type stays the base64 text); epoch seconds (v2) or milliseconds (v3), or
    naive UTC text (extended-memory), become timestamptz. An INSERT of an existing entry replaces its value
    (claude-flow writes with INSERT OR REPLACE); columns an INSERT leaves NULL among created_at, updated_at,
    accessed_at and access_count keep the entry's (or now() / 0 for a new one). An UPDATE writes the
    columns it changes; one that changes only the access columns records a read. id, key and namespace
    cannot change. An `id` given to an INSERT is ignored (ids are the marts'), but for the claude-flow v3
    view's: there the entry keeps it as its v3 id (metadata claude_flow_v3.id, the view's id from then
    on), unless it is of the form `unified-<number>` (the marts' own); an INSERT without one keeps the
    entry's current v3 id. The trigger's argument is the marts' schema.
-#}
{#- In a trigger the text is a constant to the planner, which would fold try_jsonb's cast of it and raise:
    the exception-catching parse is used instead. -#}
{% macro compat_value_kind(text) -%}
    case when {{ text }} is null or consolidate.try_jsonb_strict({{ text }}) is not null then 'json' else 'text' end
{%- endmacro %}


{% macro compat_text_to_jsonb(text) -%}
    coalesce(consolidate.try_jsonb_strict({{ text }}), to_jsonb({{ text }}))
{%- endmacro %}


{% macro compat_given(columns, access_columns=[]) -%}
        if TG_OP = 'UPDATE' then
            {%- for column, fields in columns.items() %}
            if NEW.{{ column }} is distinct from OLD.{{ column }} then given := given || array[{% for f in fields %}'{{ f }}'{{ ", " if not loop.last }}{% endfor %}]::text[]; end if;
            {%- endfor %}
            {%- for column, field in access_columns %}
            if NEW.{{ column }} is distinct from OLD.{{ column }} then accessed := true; end if;
            {%- endfor %}
        end if;
{%- endmacro %}


{#- After compat_given: an UPDATE that changed only the access columns records a read (the entry's
    `namespace`, the read's time `accessed_at`) and writes nothing; otherwise the access columns are given. -#}
{% macro compat_access_only(namespace, accessed_at) -%}
        if given = '{}' then
            if accessed then
                perform consolidate.check_memory_marts_schema(marts_schema);
                perform consolidate.record_memory_access({{ namespace }}, NEW.key,
                    coalesce({{ accessed_at }}, now()), NEW.access_count);
            end if;
            return NEW;
        end if;
        if accessed then given := given || array['accessed_at', 'access_count']; end if;
{%- endmacro %}


{#- What an INSERT gives: the fields `always`, and those of the `optional` (view column, field) pairs whose
    column it does not leave NULL. -#}
{% macro compat_given_on_insert(always, optional) -%}
        given := array[{% for field in always %}'{{ field }}'{{ ", " if not loop.last }}{% endfor %}];
        {%- for column, field in optional %}
        if NEW.{{ column }} is not null then given := given || '{{ field }}'::text; end if;
        {%- endfor %}
{%- endmacro %}


{#- The variables of every compatibility view's trigger, which the steps above and trigger_writes_delete use:
    the marts' schema (the trigger's argument), the view written, the entry's fields given, whether the
    access columns changed. -#}
{% macro compat_trigger_variables() -%}
    marts_schema text := TG_ARGV[0];
    via text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    given text[] := '{}';
    accessed boolean := false;
{%- endmacro %}


{#- The entry's metadata as unified_memory holds it now (into `current_metadata`), for an UPDATE that
    rewrites the view's own fields inside it. -#}
{% macro compat_current_metadata(namespace) -%}
        execute format('select metadata from %I.unified_memory where namespace = $1 and key = $2', marts_schema)
            into current_metadata using {{ namespace }}, NEW.key;
{%- endmacro %}


{#- What the application's own table refuses, refused here too (a rollback could not write it back): a NULL
    in a NOT NULL column, which the marts would otherwise keep as JSON null (an UPDATE: only one it writes). -#}
{% macro compat_refuses_null(columns) -%}
    {%- for column in columns %}
    if NEW.{{ column }} is null and (TG_OP = 'INSERT' or OLD.{{ column }} is not null) then
        raise exception '%.%: % cannot be NULL (the application''s table declares it NOT NULL)',
            TG_TABLE_SCHEMA, TG_TABLE_NAME, '{{ column }}' using errcode = 'not_null_violation';
    end if;
    {%- endfor %}
{%- endmacro %}


{#- extended-memory's times are text: one written that is not a time staging reads (what the view shows) is
    refused, not taken as "not given" (an UPDATE: only a time it changes). -#}
{% macro compat_refuses_unreadable_times(columns) -%}
    {%- for column in columns %}
    if NEW.{{ column }} is not null and (TG_OP = 'INSERT' or NEW.{{ column }} is distinct from OLD.{{ column }})
       and ({{ text_to_timestamptz('NEW.' ~ column) }}) is null then
        raise exception '%.%: % % is not a time (YYYY-MM-DD HH:MM:SS[.ffffff], UTC unless it ends with Z or +HH:MM)',
            TG_TABLE_SCHEMA, TG_TABLE_NAME, '{{ column }}', quote_literal(NEW.{{ column }})
            using errcode = 'invalid_datetime_format';
    end if;
    {%- endfor %}
{%- endmacro %}


{% macro create_compat_write_functions() -%}
create or replace function consolidate.write_compat_memory_entries_v2() returns trigger
language plpgsql as $fn$
declare
    {{ compat_trigger_variables() }}
begin
    {{ trigger_writes_delete('marts_schema', 'OLD.namespace', 'OLD') }}
    {{ compat_refuses_null(['key', 'value']) }}
    if TG_OP = 'UPDATE' then
        {{ trigger_refuses_identity_change() }}
        {{ compat_given({'value': ['value', 'data_type'], 'metadata': ['metadata'], 'created_at': ['created_at'],
                         'updated_at': ['updated_at'], 'ttl': ['ttl'], 'expires_at': ['expires_at']},
                        [('accessed_at', 'accessed_at'), ('access_count', 'access_count')]) }}
        {{ compat_access_only('NEW.namespace', epoch_number_to_timestamptz('NEW.accessed_at::numeric')) }}
    else
        {{ compat_given_on_insert(['value', 'data_type', 'metadata', 'ttl', 'expires_at'],
                                  [('created_at', 'created_at'), ('updated_at', 'updated_at'),
                                   ('accessed_at', 'accessed_at'), ('access_count', 'access_count')]) }}
    end if;
    perform consolidate.write_memory_entry(
        marts_schema, via, 'upsert', coalesce(NEW.namespace, 'default'), NEW.key, given,
        p_value => {{ compat_text_to_jsonb('NEW.value') }},
        p_data_type => {{ compat_value_kind('NEW.value') }},
        p_metadata => {{ compat_text_to_jsonb('NEW.metadata') }},
        p_created_at => {{ epoch_number_to_timestamptz('NEW.created_at::numeric') }},
        p_updated_at => {{ epoch_number_to_timestamptz('NEW.updated_at::numeric') }},
        p_accessed_at => {{ epoch_number_to_timestamptz('NEW.accessed_at::numeric') }},
        p_expires_at => {{ epoch_number_to_timestamptz('NEW.expires_at::numeric') }},
        p_access_count => NEW.access_count,
        p_ttl => NEW.ttl);
    return NEW;
end
$fn$;

create or replace function consolidate.write_compat_memory_entries_v3() returns trigger
language plpgsql as $fn$
declare
    {{ compat_trigger_variables() }}
    entry_namespace text;
    current_metadata jsonb;
    base_metadata jsonb;
    kept_v3_fields jsonb;
    v3_fields jsonb;
    given_v3_id text;
    holder record;
begin
    {{ trigger_writes_delete('marts_schema', 'OLD.namespace', 'OLD') }}
    {{ compat_refuses_null(['key', 'content']) }}
    entry_namespace := coalesce(NEW.namespace, 'default');
    if TG_OP = 'UPDATE' then
        {{ trigger_refuses_identity_change() }}
        {{ compat_given({'content': ['value', 'data_type'], 'metadata': ['metadata'], 'type': ['metadata'],
                         'tags': ['metadata'], 'status': ['metadata'], 'owner_id': ['metadata'],
                         'created_at': ['created_at'], 'updated_at': ['updated_at'], 'expires_at': ['expires_at']},
                        [('last_accessed_at', 'accessed_at'), ('access_count', 'access_count')]) }}
        {{ compat_access_only('entry_namespace', epoch_number_to_timestamptz('NEW.last_accessed_at::numeric')) }}
        {{ compat_current_metadata('entry_namespace') }}
        -- the entry's other v3 fields (its id among them) stay
        kept_v3_fields := case when jsonb_typeof(current_metadata -> 'claude_flow_v3') = 'object'
                               then (current_metadata -> 'claude_flow_v3') - array['type', 'tags', 'status', 'owner_id']
                               else '{}'::jsonb end;
    else
        {{ compat_given_on_insert(['value', 'data_type', 'metadata', 'expires_at'],
                                  [('created_at', 'created_at'), ('updated_at', 'updated_at'),
                                   ('last_accessed_at', 'accessed_at'), ('access_count', 'access_count')]) }}
        -- the v3 id the INSERT gives (v3 addresses its rows by the ids it generates), else the entry's own
        {{ compat_current_metadata('entry_namespace') }}
        given_v3_id := case when NEW.id !~ '^unified--?[0-9]+$' then NEW.id end;
        kept_v3_fields := jsonb_strip_nulls(jsonb_build_object('id', coalesce(
            given_v3_id, current_metadata -> 'claude_flow_v3' ->> 'id')));
        -- an id new to the entry that another entry has is refused, as v3's primary key refuses it (an
        -- UPDATE by that id would change both; two files may have given one id to two entries, each of
        -- which may still be written with it); the lock orders two writers giving one new id
        if given_v3_id is distinct from current_metadata -> 'claude_flow_v3' ->> 'id' and given_v3_id is not null then
            perform pg_advisory_xact_lock(hashtext('consolidate.v3_id'), hashtext(given_v3_id));
            execute format('select namespace, key from %I.unified_memory where {{ compat_v3_id('metadata', 'id') | replace("'", "''") }} = $1 '
                           'and (namespace, key) is distinct from ($2, $3) limit 1', marts_schema)
                into holder using given_v3_id, entry_namespace, NEW.key;
            if holder.key is not null then
                raise exception 'compat_claude_flow_v3.memory_entries: id % is the id of another entry (namespace %, key %): claude-flow v3''s id is its primary key',
                    quote_literal(given_v3_id), quote_literal(holder.namespace), quote_literal(holder.key)
                    using errcode = 'unique_violation';
            end if;
        end if;
    end if;
    -- what claude-flow v3's own table refuses (its CHECKs) is refused here too: a rollback could not write it
    if NEW.type is not null and NEW.type not in ('semantic', 'episodic', 'procedural', 'working', 'pattern')
       and (TG_OP = 'INSERT' or NEW.type is distinct from OLD.type) then
        raise exception 'compat_claude_flow_v3.memory_entries: type % is not one of claude-flow v3''s (semantic, episodic, procedural, working, pattern)', quote_literal(NEW.type)
            using errcode = 'check_violation';
    end if;
    if NEW.status is not null and NEW.status not in ('active', 'archived', 'deleted')
       and (TG_OP = 'INSERT' or NEW.status is distinct from OLD.status) then
        raise exception 'compat_claude_flow_v3.memory_entries: status % is not one of claude-flow v3''s (active, archived, deleted)', quote_literal(NEW.status)
            using errcode = 'check_violation';
    end if;
    -- v3's own fields live in metadata under claude_flow_v3, as staging puts them
    base_metadata := {{ compat_text_to_jsonb('NEW.metadata') }};
    v3_fields := kept_v3_fields
                 || jsonb_strip_nulls(jsonb_build_object('type', NEW.type, 'tags', {{ compat_text_to_jsonb('NEW.tags') }},
                                                         'status', NEW.status, 'owner_id', NEW.owner_id));
    perform consolidate.write_memory_entry(
        marts_schema, via, 'upsert', entry_namespace, NEW.key, given,
        p_value => {{ compat_text_to_jsonb('NEW.content') }},
        p_data_type => {{ compat_value_kind('NEW.content') }},
        p_metadata => {{ attach_to_metadata('base_metadata', 'claude_flow_v3', 'v3_fields') }},
        p_created_at => {{ epoch_number_to_timestamptz('NEW.created_at::numeric') }},
        p_updated_at => {{ epoch_number_to_timestamptz('NEW.updated_at::numeric') }},
        p_accessed_at => {{ epoch_number_to_timestamptz('NEW.last_accessed_at::numeric') }},
        p_expires_at => {{ epoch_number_to_timestamptz('NEW.expires_at::numeric') }},
        p_access_count => NEW.access_count);
    return NEW;
end
$fn$;

create or replace function consolidate.write_compat_memory_store() returns trigger
language plpgsql as $fn$
declare
    {{ compat_trigger_variables() }}
    current_metadata jsonb;
begin
    {{ trigger_writes_delete('marts_schema', "'extended-memory'", 'OLD') }}
    {{ compat_refuses_null(['key', 'value']) }}
    {{ compat_refuses_unreadable_times(['created_at', 'updated_at', 'accessed_at']) }}
    if TG_OP = 'UPDATE' then
        if NEW.key is distinct from OLD.key then
            raise exception 'an entry''s key cannot change (%): delete it and insert a new one', quote_literal(OLD.key);
        end if;
        {{ compat_given({'value': ['value', 'data_type'], 'type': ['value', 'data_type', 'metadata'],
                         'created_at': ['created_at'], 'updated_at': ['updated_at']},
                        [('accessed_at', 'accessed_at'), ('access_count', 'access_count')]) }}
        {{ compat_access_only("'extended-memory'", text_to_timestamptz('NEW.accessed_at')) }}
        {{ compat_current_metadata("'extended-memory'") }}
    else
        {{ compat_given_on_insert(['value', 'data_type', 'metadata'],
                                  [('created_at', 'created_at'), ('updated_at', 'updated_at'),
                                   ('accessed_at', 'accessed_at'), ('access_count', 'access_count')]) }}
    end if;
    perform consolidate.write_memory_entry(
        marts_schema, via, 'upsert', 'extended-memory', NEW.key, given,
        p_value => case when NEW.type = 'pickle' then to_jsonb(NEW.value) else {{ compat_text_to_jsonb('NEW.value') }} end,
        p_data_type => case when NEW.type = 'pickle' then 'pickle' else {{ compat_value_kind('NEW.value') }} end,
        p_metadata => jsonb_build_object('extended_memory',
            coalesce(current_metadata -> 'extended_memory', '{}'::jsonb) || jsonb_build_object('type', NEW.type)),
        p_created_at => {{ text_to_timestamptz('NEW.created_at') }},
        p_updated_at => {{ text_to_timestamptz('NEW.updated_at') }},
        p_accessed_at => {{ text_to_timestamptz('NEW.accessed_at') }},
        p_access_count => NEW.access_count);
    return NEW;
end
$fn$;
{%- endmacro %}


{#- post_hook of a compatibility view: its INSTEAD OF trigger (a view is created anew by every build). -#}
{% macro compat_write_trigger(view, function) -%}
    {{ ensure_trigger(view, 'write_through', 'instead of', 'insert or update or delete',
                      "consolidate." ~ function ~ "('" ~ target.schema ~ "')") }}
{%- endmacro %}
