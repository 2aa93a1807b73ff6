{#-
    Row flags of the memory staging models: a text[] naming every problem of the row as
    `<problem>:<source column>` (the column as it is named in SQLite and in raw, where the original value
    is kept untouched). Empty when the row is clean. The problems:

      non_numeric_integer            an INTEGER column (by the source schema) holds text that is no number
      non_integer_number             an INTEGER column holds a number that is no int4 integer (3.5, 1e12)
      unparsable_timestamp           a timestamp column holds a value that gives no time (text, |epoch| >= 1e14,
                                     impossible dates); the typed column is NULL
      null_timestamp                 NULL in a timestamp column the source schema declares NOT NULL or
                                     with a DEFAULT (so the application never meant it to be missing)
      milliseconds_in_seconds_column the magnitude rule read epoch milliseconds in a seconds column (v2)
      seconds_in_milliseconds_column the magnitude rule read epoch seconds in a milliseconds column (v3)
      json_rejected_by_postgres      JSON Python accepts but jsonb rejects (NaN, Infinity, \u0000, lone
                                     surrogates, huge exponents): kept as a JSON string, data_type unsupported_json
      malformed_json                 text that starts like JSON ({, [ or ") but is not JSON (e.g. truncated)
      json_too_deep                  brackets nested deeper than 512 levels (outside JSON strings): not parsed,
                                     kept as a JSON string of the text, data_type text
      invalid_compressed             a `__compressed__` payload that does not decode to JSON
      binary_value                   the loader stored the value as `\x` + hex of its exact bytes (a BLOB,
                                     text that is not UTF-8, or text holding NUL): listed in _binary_columns
-#}

{% macro flag_problems() -%}
    {{ return(['non_numeric_integer', 'non_integer_number', 'unparsable_timestamp', 'null_timestamp',
               'milliseconds_in_seconds_column', 'seconds_in_milliseconds_column', 'json_rejected_by_postgres',
               'malformed_json', 'json_too_deep', 'invalid_compressed', 'binary_value']) }}
{%- endmacro %}


{#-
    The raw table's `_binary_columns` (loader/load/raw_contract.py LINEAGE_COLUMNS), or a NULL text[] when the
    table predates it: resolved at compile time from the table's actual columns. The table is found
    through the graph rather than source(), which a unit test replaces by its fixture (and a unit test's
    context has no graph: there the raw schemas are named like their sources, see _sources.yml).
-#}
{% macro binary_columns_of(source_name, table_name) -%}
    {%- set found = [] -%}
    {%- if execute -%}
        {%- set relations = [] -%}
        {%- for node in (graph.get('sources') or {}).values()
                if node.source_name == source_name and node.name == table_name -%}
            {%- do relations.append(api.Relation.create(database=node.database, schema=node.schema,
                                                        identifier=node.identifier)) -%}
        {%- endfor -%}
        {%- if not relations -%}
            {%- do relations.append(api.Relation.create(database=target.database, schema=source_name,
                                                        identifier=table_name)) -%}
        {%- endif -%}
        {%- for column in adapter.get_columns_in_relation(relations[0]) if column.name == '_binary_columns' -%}
            {%- do found.append(column.name) -%}
        {%- endfor -%}
    {%- endif -%}
    {{- '_binary_columns' if found else 'null::text[]' -}}
{%- endmacro %}


{#- Whether source column `column_name` of this row is stored as `\x<hex>` (never NULL). -#}
{% macro is_binary(binary_columns, column_name) -%}
    coalesce('{{ column_name }}' = any({{ binary_columns }}), false)
{%- endmacro %}


{#- Flags of an epoch INTEGER column: `number` is consolidate.try_numeric(column), computed once. -#}
{% macro epoch_column_flags(column_name, number, unit, required=false) -%}
    {%- set flags = [
        "case when " ~ column_name ~ " is not null and " ~ number ~ " is null then 'non_numeric_integer:" ~ column_name ~ "' end",
        "case when " ~ column_name ~ " is not null and not coalesce(abs(" ~ number ~ ") < " ~ epoch_unusable_from() ~ ", false) then 'unparsable_timestamp:" ~ column_name ~ "' end",
    ] -%}
    {%- if unit == 'seconds' -%}
        {%- do flags.append("case when abs(" ~ number ~ ") >= " ~ epoch_milliseconds_from() ~ " and abs(" ~ number ~ ") < " ~ epoch_unusable_from() ~ " then 'milliseconds_in_seconds_column:" ~ column_name ~ "' end") -%}
    {%- elif unit == 'milliseconds' -%}
        {%- do flags.append("case when abs(" ~ number ~ ") < " ~ epoch_milliseconds_from() ~ " then 'seconds_in_milliseconds_column:" ~ column_name ~ "' end") -%}
    {%- else -%}
        {{ exceptions.raise_compiler_error("epoch unit must be seconds or milliseconds, not " ~ unit) }}
    {%- endif -%}
    {%- if required -%}
        {%- do flags.append("case when " ~ column_name ~ " is null then 'null_timestamp:" ~ column_name ~ "' end") -%}
    {%- endif -%}
    {{ return(flags) }}
{%- endmacro %}


{#- Flags of a text timestamp column: `parsed` is text_to_timestamptz(column), computed once. -#}
{% macro text_timestamp_flags(column_name, parsed, required=false) -%}
    {%- set flags = [
        "case when " ~ column_name ~ " is not null and " ~ parsed ~ " is null then 'unparsable_timestamp:" ~ column_name ~ "' end",
    ] -%}
    {%- if required -%}
        {%- do flags.append("case when " ~ column_name ~ " is null then 'null_timestamp:" ~ column_name ~ "' end") -%}
    {%- endif -%}
    {{ return(flags) }}
{%- endmacro %}


{#- The flag of an INTEGER column: `integer` is consolidate.try_int(column), computed once. -#}
{% macro integer_column_flag(column_name, integer) -%}
    case when {{ column_name }} is not null and {{ integer }} is null then
        case when consolidate.try_numeric({{ column_name }}) is null
            then 'non_numeric_integer:{{ column_name }}'
            else 'non_integer_number:{{ column_name }}'
        end
    end
{%- endmacro %}


{#- The flag of a JSON text column other than the value: `parsed` is consolidate.try_jsonb(column). -#}
{% macro json_column_flag(column_name, parsed, binary_columns) -%}
    case when {{ column_name }} is not null and {{ parsed }} is null and not {{ is_binary(binary_columns, column_name) }} then
        case {{ json_text_problem(column_name) }}
            when 'unsupported_json' then 'json_rejected_by_postgres:{{ column_name }}'
            when 'malformed_json' then 'malformed_json:{{ column_name }}'
            when 'too_deep_json' then 'json_too_deep:{{ column_name }}'
        end
    end
{%- endmacro %}


{#- The flags column: the given flag expressions (NULL = no problem) in order, then binary_value per binary column. -#}
{% macro flags_array(expressions, binary_columns) -%}
    array_remove(array[
        {%- for expression in expressions %}
        {{ expression }}{{ "," if not loop.last }}
        {%- endfor %}
    ]::text[], null)
    || case
        when {{ binary_columns }} is null then '{}'::text[]
        else consolidate.binary_value_flags({{ binary_columns }})
    end
{%- endmacro %}
