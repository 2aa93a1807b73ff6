{#-
    The near cache (loader/serve/near_cache.py) learns of every committed change of unified_memory and
    performance_metrics from these row triggers, which NOTIFY `consolidate_memory_writes`. A full build
    replaces each mart, and its triggers, so the two marts put them back in a post-hook (notify_triggers),
    inside the transaction that swaps the table in. The function they call is created once per dbt
    invocation (on-run-start: notify_function), so the two marts' hooks, which can run at the same moment
    in two threads, never replace it concurrently.
    The statements are those of loader.serve.near_cache.notify_trigger_statements (install_notify_triggers,
    for a database built otherwise); tests/test_near_cache_after_build.py checks that both install the same.
-#}

{% macro notify_function() %}
create schema if not exists {{ adapter.quote(target.schema) }};
CREATE OR REPLACE FUNCTION {{ adapter.quote(target.schema) }}."consolidate_notify_memory_write"() RETURNS trigger LANGUAGE plpgsql AS $body$
DECLARE
    sent integer;
    flush text := json_build_object('schema', TG_TABLE_SCHEMA, 'flush', true)::text;
    payload text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('{{ var("notify_channel") }}', flush);
        RETURN NULL;
    END IF;
    -- a bulk change sends one flush instead of a message per row
    sent := coalesce(nullif(current_setting('consolidate.notified_rows', true), ''), '0')::integer + 1;
    PERFORM set_config('consolidate.notified_rows', sent::text, true);
    IF sent > {{ var('notify_rows_per_transaction') }} THEN
        IF sent = {{ var('notify_rows_per_transaction') }} + 1 THEN
            PERFORM pg_notify('{{ var("notify_channel") }}', flush);
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        payload := json_build_object('schema', TG_TABLE_SCHEMA, 'namespace', OLD.namespace, 'key', OLD.key)::text;
        PERFORM pg_notify('{{ var("notify_channel") }}', CASE WHEN octet_length(payload) > {{ var('notify_max_payload_bytes') }} THEN flush ELSE payload END);
    END IF;
    IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE' AND (NEW.namespace, NEW.key) IS DISTINCT FROM (OLD.namespace, OLD.key) THEN
        payload := json_build_object('schema', TG_TABLE_SCHEMA, 'namespace', NEW.namespace, 'key', NEW.key)::text;
        PERFORM pg_notify('{{ var("notify_channel") }}', CASE WHEN octet_length(payload) > {{ var('notify_max_payload_bytes') }} THEN flush ELSE payload END);
    END IF;
    RETURN NULL;
END
$body$
{% endmacro %}


{#- watched_columns: those whose change a reader can see (an UPDATE of anything else, such as the access
    bookkeeping every tracked read writes, notifies nothing); loader.serve.near_cache.WATCHED_TABLES.
    The triggers are replaced only when they are not in place as these statements make them (their
    digest is each trigger's comment): an incremental build finds them there and runs no DDL on the mart,
    whose DROP TRIGGER would take an ACCESS EXCLUSIVE lock, stalling every reader of the mart behind any
    long query on it and cancelling an autovacuum of it a second later (deadlock_timeout). -#}
{% macro notify_triggers(watched_columns) %}
{%- set function = adapter.quote(this.schema) ~ '."consolidate_notify_memory_write"()' -%}
{%- set triggers = ['consolidate_notify_insert_delete', 'consolidate_notify_update', 'consolidate_notify_truncate'] -%}
{%- set statements -%}
{%- for name in triggers %}
drop trigger if exists {{ name }} on {{ this }};
{%- endfor %}
create trigger consolidate_notify_insert_delete after insert or delete on {{ this }}
    for each row execute function {{ function }};
create trigger consolidate_notify_update after update on {{ this }} for each row when (
    {%- for column in watched_columns %}{{ ' or ' if not loop.first }}old.{{ adapter.quote(column) }} is distinct from new.{{ adapter.quote(column) }}{% endfor -%}
) execute function {{ function }};
create trigger consolidate_notify_truncate after truncate on {{ this }}
    for each statement execute function {{ function }};
{%- for name in triggers %}
alter table {{ this }} enable always trigger {{ name }};
{%- endfor %}
{%- endset -%}
{%- set digest = 'consolidate notify ' ~ local_md5(statements) -%}
do $do$
begin
    if (select count(*) from pg_trigger
        where tgrelid = '{{ this }}'::regclass
          and tgname in ('{{ triggers | join("', '") }}')
          and tgenabled = 'A'
          and obj_description(oid, 'pg_trigger') = '{{ digest }}') = {{ triggers | length }} then
        return;
    end if;
{{ statements | indent(4, first=true) }}
{%- for name in triggers %}
    comment on trigger {{ name }} on {{ this }} is '{{ digest }}';
{%- endfor %}
end
$do$
{% endmacro %}
