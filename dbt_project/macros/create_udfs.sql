{#-
    on-run-start: the functions the models call, in the ledger schema `consolidate`. Most are parsing
    helpers that never raise, so one bad raw value can never fail the build. The hot paths are inlinable
    SQL functions.

    On PostgreSQL 16 and later (pg_input_is_valid) with a UTF-8 database and a stack deep enough for
    JSON nested to the depth limit, no parsing function catches an exception: every check comes before
    the parse, so they are PARALLEL SAFE and a full build reads raw with parallel workers
    (int_memory_ranked). Otherwise the rare values the cheap checks cannot vouch for go through
    exception-catching plpgsql functions. Those are PARALLEL UNSAFE, as is whatever calls them: an
    exception block starts a subtransaction, which no process may do while a parallel query runs, the
    leader included ("cannot start subtransactions during a parallel operation").
-#}
{#- How many [ and { a text holds (replace() searches bytes; translate() is ten times slower). -#}
{% macro opening_brackets(t) -%}
    octet_length({{ t }}) - octet_length(replace(replace({{ t }}, '[', ''), '{', ''))
{%- endmacro %}


{% macro create_udfs() %}
    {%- set server_version_num = 0 -%}
    {%- set max_stack_depth_kb = 2048 -%}
    {%- set server_encoding = 'UTF8' -%}
    {%- if execute -%}
        {%- set settings = run_query(
            "select current_setting('server_version_num')::int,
                    pg_size_bytes(current_setting('max_stack_depth')) / 1024,
                    current_setting('server_encoding')"
        ).rows[0] -%}
        {%- set server_version_num = settings[0] -%}
        {%- set max_stack_depth_kb = settings[1] -%}
        {%- set server_encoding = settings[2] -%}
    {%- endif %}
    {#- JSON nested deeper than the stack allows makes even `IS JSON` raise; nesting depth is at most half the
        length, and with the default 2MB stack depth ~12000 parses fine: 5 bytes per kB keeps a 2x margin. -#}
    {%- set json_fast_path_max_bytes = (max_stack_depth_kb * 5) | int -%}
    {#- JSON nested deeper than this is not parsed into jsonb (kept as text, flagged json_too_deep): Python's
        json module, which every reader of the marts uses (validate, the client, psycopg), stops near 1000
        levels. The same number is loader/json_depth.py's MAX_JSON_DEPTH. -#}
    {%- set json_max_depth = 512 -%}
    {%- set container_below_max_depth = 'strict $.**{' ~ json_max_depth ~ '} ? (@.type() == "array" || @.type() == "object")' -%}
    {#- jsonb's parser is safe from the stack on any text nested at most json_max_depth levels when the
        fast path's length (twice the depth it parses safely) covers that depth; convert_from of bytes
        checked as UTF-8 cannot fail in a UTF-8 database. -#}
    {%- set parse_without_exceptions = server_version_num >= 160000
                                       and json_fast_path_max_bytes >= 2 * json_max_depth
                                       and server_encoding == 'UTF8' -%}
    {%- set parse_parallel = 'parallel safe' if parse_without_exceptions else 'parallel unsafe' -%}
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

-- A row's binary_value flags: 'binary_value:<column>' for each column named, in order. A function rather
-- than a subquery in the staging models: a subquery over the row would keep their last step in the leader,
-- out of the parallel workers.
create or replace function consolidate.binary_value_flags(columns text[]) returns text[]
language sql immutable parallel safe
as $fn$
    select array(select 'binary_value:' || binary_column from unnest(columns) as binary_column order by 1)
$fn$;

-- Text -> jsonb, catching every error; the fallback for what try_jsonb cannot check cheaply.
create or replace function consolidate.try_jsonb_strict(t text) returns jsonb
language plpgsql immutable parallel unsafe
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
{% if parse_without_exceptions -%}
-- A text longer than the fast path may nest too deep for the parser's stack: it is only scanned. (Separate
-- statements: SQL does not promise to evaluate the operands of OR in order.)
create or replace function consolidate.json_nested_beyond_limit(t text) returns boolean
language plpgsql stable parallel safe
as $fn$
begin
    if octet_length(t) > {{ json_fast_path_max_bytes }} then
        return consolidate.json_nesting_depth(t) > {{ json_max_depth }};
    end if;
    if pg_input_is_valid(t, 'jsonb') then
        return jsonb_path_exists(t::jsonb, '{{ container_below_max_depth }}');
    end if;
    return consolidate.json_nesting_depth(t) > {{ json_max_depth }};
end
$fn$;
{%- else -%}
create or replace function consolidate.json_nested_beyond_limit(t text) returns boolean
language plpgsql stable parallel unsafe
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
{%- endif %}

-- Whether a text nests deeper than {{ json_max_depth }} levels. Inlined: most texts are decided by their
-- length or their count of opening brackets, without calling anything.
create or replace function consolidate.json_too_deep(t text) returns boolean
language sql stable {{ parse_parallel }}
as $fn$
    select case
        when octet_length(t) > {{ json_max_depth }}
         and {{ opening_brackets('t') }} > {{ json_max_depth }}
            then consolidate.json_nested_beyond_limit(t)
        else false
    end
$fn$;

-- Text -> jsonb unless it nests deeper than {{ json_max_depth }} levels (then NULL, like any text jsonb refuses).
{% if parse_without_exceptions -%}
create or replace function consolidate.try_shallow_jsonb(t text) returns jsonb
language plpgsql stable parallel safe
as $fn$
declare
    parsed jsonb;
begin
    if octet_length(t) > {{ json_fast_path_max_bytes }} then
        if consolidate.json_nesting_depth(t) > {{ json_max_depth }} then
            return null;
        end if;
    end if;
    if not pg_input_is_valid(t, 'jsonb') then
        return null;
    end if;
    parsed := t::jsonb;
    if jsonb_path_exists(parsed, '{{ container_below_max_depth }}') then
        return null;
    end if;
    return parsed;
end
$fn$;
{%- else -%}
create or replace function consolidate.try_shallow_jsonb(t text) returns jsonb
language plpgsql stable parallel unsafe
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
{%- endif %}

{% if server_version_num >= 160000 %}
-- Text -> jsonb when jsonb accepts it and it nests at most {{ json_max_depth }} levels, else NULL.
-- pg_input_is_valid reports jsonb's input errors (not JSON, \u0000, lone UTF-16 surrogates, numbers
-- beyond numeric's range) without raising. Only a text with more opening brackets than the depth limit
-- (and the length a document nested deeper needs) can nest deep enough to exhaust the stack, which
-- raises all the same: those take try_shallow_jsonb, which checks the depth first. With a stack too
-- shallow for the depth limit, long texts take the catching path.
-- STABLE like pg_input_is_valid: an IMMUTABLE SQL function calling it would not be inlined.
create or replace function consolidate.try_jsonb(t text) returns jsonb
language sql stable {{ parse_parallel }}
as $fn$
    select case
        when octet_length(t) > 2 * {{ json_max_depth }} + 1
         and {{ opening_brackets('t') }} > {{ json_max_depth }}
            then consolidate.try_shallow_jsonb(t)
        {%- if not parse_without_exceptions %}
        when octet_length(t) > {{ json_fast_path_max_bytes }} then consolidate.try_jsonb_strict(t)
        {%- endif %}
        when pg_input_is_valid(t, 'jsonb') then t::jsonb
    end
$fn$;
{% else %}
-- PostgreSQL < 16 has no `IS JSON`: every value takes the catching path.
create or replace function consolidate.try_jsonb(t text) returns jsonb
language sql immutable parallel unsafe
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
language sql stable {{ parse_parallel }}
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
-- Base64 as Python's strict decoder (validate's model) takes it, whitespace aside (decode() skips it):
-- whole groups of four, `=` only as the last group's padding; decode() alone would take more.
{% if parse_without_exceptions -%}
-- The decoded bytes must be UTF-8 without NUL, as convert_from demands (RFC 3629, checked on their hex:
-- no overlong forms, surrogates or code points past U+10FFFF).
{%- endif %}
create or replace function consolidate.try_decode_compressed(t text) returns jsonb
language plpgsql stable {{ parse_parallel }}
as $fn$
declare
    payload text;
    bytes bytea;
begin
    if t is null or left(t, 14) <> '__compressed__' then
        return null;
    end if;
    payload := regexp_replace(substr(t, 15), '[ \t\n\r]+', '', 'g');
    if payload !~ '^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$' then
        return null;
    end if;
    bytes := decode(payload, 'base64');
    {%- if parse_without_exceptions %}
    if encode(bytes, 'hex') !~ '{{ utf8_hex_pattern() }}' then
        return null;
    end if;
    {%- endif %}
    return consolidate.try_jsonb(convert_from(bytes, 'UTF8'));
    {%- if not parse_without_exceptions %}
exception when others then
    return null;
    {%- endif %}
end
$fn$;

-- The ledger's current_load_parts, for int_memory_versions. The view is a recursive CTE, and a plan runs a
-- CTE scan only in the leader, so joining the view kept the join, the retired-rows filter and the
-- ranking's sort of every version out of the parallel workers. A plpgsql function is never inlined: each
-- worker reads the few parts itself.
create or replace function consolidate.current_load_parts_scan()
returns table (part_load_id text, source_path text, source_db text)
language plpgsql stable parallel safe rows 20
as $fn$
begin
    return query select parts.part_load_id, parts.source_path, parts.source_db
                 from {{ source('consolidate', 'current_load_parts') }} as parts;
end
$fn$;

-- The compatibility views' own (macros/compat.sql).
{{ create_compat_functions() }}
{% endmacro %}


{#- Lowercase hex of well-formed UTF-8 without NUL (RFC 3629, section 4), as one anchored pattern. -#}
{% macro utf8_hex_pattern() -%}
    {%- set tail = '[89ab][0-9a-f]' -%}
    {%- set characters = [
        '0[1-9a-f]', '[1-7][0-9a-f]',
        '(?:c[2-9a-f]|d[0-9a-f])' ~ tail,
        'e0[ab][0-9a-f]' ~ tail, '(?:e[1-9a-c]|e[ef])' ~ tail ~ tail, 'ed[89][0-9a-f]' ~ tail,
        'f0[9ab][0-9a-f]' ~ tail ~ tail, 'f[1-3]' ~ tail ~ tail ~ tail, 'f48[0-9a-f]' ~ tail ~ tail,
    ] -%}
    ^(?:{{ characters | join('|') }})*$
{%- endmacro %}
