{#-
    on-run-start: parsing helpers that never raise, so one bad raw value can never fail the build.
    They live in the ledger schema `consolidate`. The hot paths are inlinable SQL functions; the
    exception-catching plpgsql functions only run for the rare values the cheap checks cannot vouch for.
    Those are PARALLEL RESTRICTED: an exception block starts a subtransaction, which a parallel worker
    cannot do ("cannot start subtransactions during a parallel operation").
-#}
{#- How many [ and { a text holds (replace() searches bytes; translate() is ten times slower). -#}
{% macro opening_brackets(t) -%}
    octet_length({{ t }}) - octet_length(replace(replace({{ t }}, '[', ''), '{', ''))
{%- endmacro %}


{% macro create_udfs() %}
    {%- set server_version_num = 0 -%}
    {%- set max_stack_depth_kb = 2048 -%}
    {%- if execute -%}
        {%- set settings = run_query(
            "select current_setting('server_version_num')::int,
                    pg_size_bytes(current_setting('max_stack_depth')) / 1024"
        ).rows[0] -%}
        {%- set server_version_num = settings[0] -%}
        {%- set max_stack_depth_kb = settings[1] -%}
    {%- endif %}
    {#- JSON nested deeper than the stack allows makes even `IS JSON` raise; nesting depth is at most half the
        length, and with the default 2MB stack depth ~12000 parses fine: 5 bytes per kB keeps a 2x margin. -#}
    {%- set json_fast_path_max_bytes = (max_stack_depth_kb * 5) | int -%}
    {#- JSON nested deeper than this is not parsed into jsonb (kept as text, flagged json_too_deep): Python's
        json module, which every reader of the marts uses (validate, the client, psycopg), stops near 1000
        levels. The same number is loader/json_depth.py's MAX_JSON_DEPTH. -#}
    {%- set json_max_depth = 512 -%}
    {%- set container_below_max_depth = 'strict $.**{' ~ json_max_depth ~ '} ? (@.type() == "array" || @.type() == "object")' -%}
create schema if not exists consolidate;

-- Numeric text (optionally signed, decimal, small exponent) -> numeric; anything else -> NULL.
create or replace function consolidate.try_numeric(t text) returns numeric
language sql immutable parallel safe
as $fn$
    select case
        when octet_length(t) <= 1000
         and t ~ '^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?\s*$'
        then t::numeric
    end
$fn$;

-- Integral numeric text within int4 range -> integer ('3.0' counts: SQLite REAL columns render that way).
create or replace function consolidate.try_int(t text) returns integer
language sql immutable parallel safe
as $fn$
    select case
        when t !~ '^\s*[+-]?[0-9]{1,10}(\.0*)?\s*$' then null
        when t::numeric between -2147483648 and 2147483647 then t::numeric::integer
    end
$fn$;

-- Text -> jsonb, catching every error; the fallback for what try_jsonb cannot check cheaply.
create or replace function consolidate.try_jsonb_strict(t text) returns jsonb
language plpgsql immutable parallel restricted
as $fn$
begin
    return t::jsonb;
exception when others then
    return null;
end
$fn$;

-- How deep the brackets of a text nest, outside its JSON strings: [ and { open, ] and } close. For JSON,
-- the nesting depth of arrays and objects ('1' 0, '[]' 1, '{"a": [1]}' 2), read without parsing.
create or replace function consolidate.json_nesting_depth(t text) returns integer
language plpgsql immutable parallel safe
as $fn$
declare
    brackets bytea := convert_to(regexp_replace(regexp_replace(t, '"(\\.|[^"\\])*"', '', 'g'), '[^][{}]', '', 'g'), 'UTF8');
    depth integer := 0;
    deepest integer := 0;
begin
    for i in 0 .. length(brackets) - 1 loop
        if get_byte(brackets, i) in (91, 123) then
            depth := depth + 1;
            deepest := greatest(deepest, depth);
        else
            depth := depth - 1;
        end if;
    end loop;
    return deepest;
end
$fn$;

-- Whether a text nests deeper than {{ json_max_depth }} levels (json_nesting_depth), for a text with more
-- opening brackets than that (json_too_deep checks this first): JSON jsonb parses is checked on the
-- parsed document (in C), anything else by scanning its text.
create or replace function consolidate.json_nested_beyond_limit(t text) returns boolean
language plpgsql stable parallel restricted
as $fn$
declare
    parsed jsonb;
begin
    begin
        parsed := t::jsonb;
    exception when others then
        return consolidate.json_nesting_depth(t) > {{ json_max_depth }};
    end;
    return jsonb_path_exists(parsed, '{{ container_below_max_depth }}');
end
$fn$;

-- Whether a text nests deeper than {{ json_max_depth }} levels. Inlined: most texts are decided by their
-- length or their count of opening brackets, without calling anything.
create or replace function consolidate.json_too_deep(t text) returns boolean
language sql stable parallel restricted
as $fn$
    select case
        when octet_length(t) > {{ json_max_depth }}
         and {{ opening_brackets('t') }} > {{ json_max_depth }}
            then consolidate.json_nested_beyond_limit(t)
        else false
    end
$fn$;

-- Text -> jsonb unless it nests deeper than {{ json_max_depth }} levels (then NULL, like any text jsonb refuses).
create or replace function consolidate.try_shallow_jsonb(t text) returns jsonb
language plpgsql stable parallel restricted
as $fn$
declare
    parsed jsonb;
begin
    parsed := t::jsonb;
    if jsonb_path_exists(parsed, '{{ container_below_max_depth }}') then
        return null;
    end if;
    return parsed;
exception when others then
    return null;
end
$fn$;

{% if server_version_num >= 160000 %}
-- Text -> jsonb when jsonb accepts it and it nests at most {{ json_max_depth }} levels, else NULL.
-- pg_input_is_valid reports jsonb's input errors (not JSON, \u0000, lone UTF-16 surrogates, numbers
-- beyond numeric's range) without raising; long texts (possibly nested too deep for the stack, which
-- raises all the same) take the catching path, and texts with more opening brackets than the depth
-- limit (and the length a document nested deeper needs) the one that also checks the depth.
-- STABLE like pg_input_is_valid: an IMMUTABLE SQL function calling it would not be inlined.
create or replace function consolidate.try_jsonb(t text) returns jsonb
language sql stable parallel restricted
as $fn$
    select case
        when octet_length(t) > 2 * {{ json_max_depth }} + 1
         and {{ opening_brackets('t') }} > {{ json_max_depth }}
            then consolidate.try_shallow_jsonb(t)
        when octet_length(t) > {{ json_fast_path_max_bytes }} then consolidate.try_jsonb_strict(t)
        when pg_input_is_valid(t, 'jsonb') then t::jsonb
    end
$fn$;
{% else %}
-- PostgreSQL < 16 has no `IS JSON`: every value takes the catching path.
create or replace function consolidate.try_jsonb(t text) returns jsonb
language sql immutable parallel restricted
as $fn$
    select case
        when octet_length(t) > 2 * {{ json_max_depth }} + 1
         and {{ opening_brackets('t') }} > {{ json_max_depth }}
            then consolidate.try_shallow_jsonb(t)
        else consolidate.try_jsonb_strict(t)
    end
$fn$;
{% endif %}

-- For text jsonb rejected (the caller knows): is it JSON that Python's json module accepts? Those are
-- documents using what jsonb refuses: NaN, Infinity, -Infinity, \u0000, lone UTF-16 surrogates, numbers
-- beyond numeric's range. They are neutralised (NaN -> ` null `, which cannot glue onto a neighbouring
-- token; the escapes -> \u0020; huge exponents -> e0; inside strings this only changes the string) and
-- the result parsed again. The first regular expression keeps every other text off the slow path.
create or replace function consolidate.is_python_json(t text) returns boolean
language sql stable parallel restricted
as $fn$
    select t ~ '(NaN|Infinity|\\u(0000|[dD][89abcdefABCDEF])|[eE][+-]?[0-9]{5})'
       and consolidate.try_jsonb(
               regexp_replace(
                   regexp_replace(
                       regexp_replace(t, '-?Infinity|NaN', ' null ', 'g'),
                       '\\u(0000|[dD][89abcdefABCDEF][0-9a-fA-F]{2})', '\\u0020', 'g'),
                   '[eE][+-]?[0-9]{5,}', 'e0', 'g')
           ) is not null
$fn$;

-- claude-flow's `__compressed__<base64 of JSON>` -> that JSON; bad base64, bad UTF-8 or non-JSON -> NULL.
create or replace function consolidate.try_decode_compressed(t text) returns jsonb
language plpgsql stable parallel restricted
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
