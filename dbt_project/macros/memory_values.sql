{#-
    The `value` and `data_type` columns shared by every memory staging model, in two steps so each value
    is parsed once per row (the steps live in separate, fenced CTEs of the model; see memory_staging.sql):

      parse_memory_value   -> the parsed jsonb, or NULL          (step 1)
      memory_value_kind    -> what the raw value is               (step 2, from the raw text and step 1)
      memory_value / memory_data_type / memory_value_flag         (final, from the kind)

    kind               value                               data_type         flag
    null               JSON null                           json
    binary             the `\x<hex>` text as a JSON string  binary            binary_value:<col> (from _binary_columns)
    pickle             the base64 text as a JSON string     pickle            (extended-memory `type` = pickle; never unpickled)
    json               the parsed JSON (also a decoded      json
                       `__compressed__` base64 document)
    invalid_compressed the text as a JSON string            text              invalid_compressed:<col>
    unsupported_json   the text as a JSON string            unsupported_json  json_rejected_by_postgres:<col>
                       (JSON Python accepts, jsonb rejects: NaN, ±Infinity, \u0000, lone surrogates, huge exponents)
    malformed_json     the text as a JSON string            text              malformed_json:<col>
                       (opens like a JSON object, array or string but is no JSON at all, e.g. truncated)
    too_deep_json      the text as a JSON string            text              json_too_deep:<col>
                       (brackets nested deeper than 512 levels outside JSON strings: not parsed, since
                       Python's json, which every reader of the marts uses, stops near 1000 levels)
    text               the text as a JSON string            text
    The original text is kept alongside as raw_value, and untouched in raw.
-#}
{% macro parse_memory_value(raw_value, storage_type=none, is_binary='false') -%}
    case
        when {{ raw_value }} is null or {{ is_binary }} then null
        {% if storage_type -%}
        when coalesce({{ storage_type }} = 'pickle', false) then null
        {% endif -%}
        when left({{ raw_value }}, 14) = '__compressed__' then consolidate.try_decode_compressed({{ raw_value }})
        else consolidate.try_jsonb({{ raw_value }})
    end
{%- endmacro %}


{% macro memory_value_kind(raw_value, parsed_value, storage_type=none, is_binary='false') -%}
    case
        when {{ raw_value }} is null then 'null'
        when {{ is_binary }} then 'binary'
        {% if storage_type -%}
        when coalesce({{ storage_type }} = 'pickle', false) then 'pickle'
        {% endif -%}
        when {{ parsed_value }} is not null then 'json'
        when left({{ raw_value }}, 14) = '__compressed__' then 'invalid_compressed'
        else {{ json_text_problem(raw_value) }}
    end
{%- endmacro %}


{#-
    For text consolidate.try_jsonb rejected: 'too_deep_json' (consolidate.json_too_deep: nested deeper than the
    limit, JSON or not), 'unsupported_json', 'malformed_json' or 'text' (plain text, no problem).
    Malformed JSON is text that opens like a JSON document but does not parse: `{` followed by `"` or `}`,
    `[` followed by what can start a JSON value or `]`, or a whole text in double quotes. So a truncated
    document is flagged, while `[INFO] started`, `{{ template }}` or `"Hi," she said` are just text.
-#}
{% macro json_text_problem(raw_text) -%}
    case
        when consolidate.json_too_deep({{ raw_text }}) then 'too_deep_json'
        when consolidate.is_python_json({{ raw_text }}) then 'unsupported_json'
        when {{ raw_text }} ~ '^[[:space:]]*(\{[[:space:]]*("|\}|$)|\[[[:space:]]*([][{"0-9tfn-]|$)|"(.*")?[[:space:]]*$)'
            then 'malformed_json'
        else 'text'
    end
{%- endmacro %}


{% macro memory_value(raw_value, parsed_value, kind) -%}
    case {{ kind }}
        when 'null' then 'null'::jsonb
        when 'json' then {{ parsed_value }}
        else to_jsonb({{ raw_value }})
    end
{%- endmacro %}


{% macro memory_data_type(kind) -%}
    case {{ kind }}
        when 'null' then 'json'
        when 'json' then 'json'
        when 'binary' then 'binary'
        when 'pickle' then 'pickle'
        when 'unsupported_json' then 'unsupported_json'
        else 'text'
    end
{%- endmacro %}


{#- The flag a value kind raises for source column `column_name` (NULL for none). -#}
{% macro memory_value_flag(kind, column_name) -%}
    case {{ kind }}
        when 'invalid_compressed' then 'invalid_compressed:{{ column_name }}'
        when 'unsupported_json' then 'json_rejected_by_postgres:{{ column_name }}'
        when 'malformed_json' then 'malformed_json:{{ column_name }}'
        when 'too_deep_json' then 'json_too_deep:{{ column_name }}'
    end
{%- endmacro %}


{#- The whole rule in one expression each, for tests over a handful of literal rows (parses more than once). -#}
{% macro normalize_memory_value(raw_value, storage_type=none, is_binary='false') -%}
    {%- set parsed = parse_memory_value(raw_value, storage_type, is_binary) -%}
    {%- set kind = memory_value_kind(raw_value, parsed, storage_type, is_binary) -%}
    {{ memory_value(raw_value, parsed, kind) }} as value,
    {{ memory_data_type(kind) }} as data_type,
    {{ memory_value_flag(kind, 'value') }} as flag
{%- endmacro %}


{#- Text that is JSON -> that JSON; other text -> a JSON string of it (nothing is lost); NULL stays NULL. -#}
{% macro text_to_jsonb(column) -%}
    coalesce(consolidate.try_jsonb({{ column }}), to_jsonb({{ column }}))
{%- endmacro %}


{#-
    Adds source-specific fields to a metadata document under one key, e.g. {"claude_flow_v3": {...}}.
    Object metadata is extended; NULL starts from {}; any other JSON (array, string) is kept under
    "metadata" so nothing is overwritten. An empty fields object leaves the metadata untouched.
-#}
{% macro attach_to_metadata(metadata, fields_key, fields) -%}
    {%- if fields | trim == "'{}'::jsonb" -%}
        {{ metadata }}
    {%- else -%}
    case
        when {{ fields }} = '{}'::jsonb then {{ metadata }}
        when {{ metadata }} is null or jsonb_typeof({{ metadata }}) = 'object'
            then coalesce({{ metadata }}, '{}'::jsonb) || jsonb_build_object('{{ fields_key }}', {{ fields }})
        else jsonb_build_object('metadata', {{ metadata }}, '{{ fields_key }}', {{ fields }})
    end
    {%- endif -%}
{%- endmacro %}
