{#-
    The `value` and `data_type` columns shared by every memory staging model.
      - SQL NULL                                   -> JSON null      ('json')
      - storage type `pickle` (extended-memory)    -> the base64 text as a JSON string ('pickle'; never unpickled)
      - `__compressed__` + base64 of JSON          -> the decoded JSON ('json')
      - text that parses as JSON                   -> that JSON      ('json')
      - anything else (plain text, Markdown, bad compressed payloads) -> a JSON string of the text ('text')
    The original text is kept alongside as raw_value.
-#}
{% macro normalize_memory_value(raw_value, storage_type=none) -%}
    {%- set parsed_json -%}
        case
            when left({{ raw_value }}, 14) = '__compressed__' then consolidate.try_decode_compressed({{ raw_value }})
            else consolidate.try_jsonb({{ raw_value }})
        end
    {%- endset -%}
    case
        when {{ raw_value }} is null then 'null'::jsonb
        {% if storage_type -%}
        when {{ storage_type }} = 'pickle' then to_jsonb({{ raw_value }})
        {% endif -%}
        else coalesce({{ parsed_json }}, to_jsonb({{ raw_value }}))
    end as value,
    case
        when {{ raw_value }} is null then 'json'
        {% if storage_type -%}
        when {{ storage_type }} = 'pickle' then 'pickle'
        {% endif -%}
        when {{ parsed_json }} is not null then 'json'
        else 'text'
    end as data_type
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
