{#-
    on-run-start: parsing helpers that never raise, so one bad raw value can never fail the build.
    They live in the ledger schema `consolidate`. The hot paths are inlinable SQL functions; the
    exception-catching plpgsql functions only run for the rare values the cheap checks cannot vouch for.
-#}
{% macro create_udfs() %}
    {%- set server_version_num = 0 -%}
    {%- if execute -%}
        {%- set server_version_num = run_query("select current_setting('server_version_num')::int").columns[0].values()[0] -%}
    {%- endif %}
create schema if not exists consolidate;

-- Numeric text (optionally signed, decimal, small exponent) -> numeric; anything else -> NULL.
create or replace function consolidate.try_numeric(t text) returns numeric
language sql immutable parallel safe
as $fn$
    select case
        when length(t) <= 1000
         and t ~ '^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?\s*$'
        then t::numeric
    end
$fn$;

-- Integral numeric text within int4 range -> integer ('3.0' counts: SQLite REAL columns render that way).
create or replace function consolidate.try_int(t text) returns integer
language sql immutable parallel safe
as $fn$
    select case
        when consolidate.try_numeric(t) between -2147483648 and 2147483647
         and consolidate.try_numeric(t) = trunc(consolidate.try_numeric(t))
        then consolidate.try_numeric(t)::integer
    end
$fn$;

-- Text -> jsonb, catching every error; the fallback for what try_jsonb cannot check cheaply.
create or replace function consolidate.try_jsonb_strict(t text) returns jsonb
language plpgsql immutable parallel safe
as $fn$
begin
    return t::jsonb;
exception when others then
    return null;
end
$fn$;

{% if server_version_num >= 160000 %}
-- Text -> jsonb when it is JSON, else NULL. `IS JSON` accepts a few documents jsonb rejects
-- (\u0000, lone UTF-16 surrogates, numbers beyond numeric's range): those take the catching path.
create or replace function consolidate.try_jsonb(t text) returns jsonb
language sql immutable parallel safe
as $fn$
    select case
        when t is not json then null
        when t ~ '\\u(0000|[dD][89abcdefABCDEF])|[eE][+-]?[0-9]{5}' then consolidate.try_jsonb_strict(t)
        else t::jsonb
    end
$fn$;
{% else %}
-- PostgreSQL < 16 has no `IS JSON`: every value takes the catching path.
create or replace function consolidate.try_jsonb(t text) returns jsonb
language sql immutable parallel safe
as $fn$
    select consolidate.try_jsonb_strict(t)
$fn$;
{% endif %}

-- claude-flow's `__compressed__<base64 of JSON>` -> that JSON; bad base64, bad UTF-8 or non-JSON -> NULL.
create or replace function consolidate.try_decode_compressed(t text) returns jsonb
language plpgsql immutable parallel safe
as $fn$
begin
    if t is null or left(t, 14) <> '__compressed__' then
        return null;
    end if;
    return consolidate.try_jsonb(convert_from(decode(substr(t, 15), 'base64'), 'UTF8'));
exception when others then
    return null;
end
$fn$;
{% endmacro %}
