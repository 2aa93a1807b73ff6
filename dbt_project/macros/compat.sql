{#- How the compatibility views give values back to applications: the JSON text for `json`, the
    original string for everything kept as a JSON string (text, pickle, ...). -#}
{% macro compat_text_value(value, data_type) -%}
    case when {{ data_type }} = 'json' then {{ value }}::text else {{ value }} #>> '{}' end
{%- endmacro %}

{% macro epoch_milliseconds(timestamp) -%}
    floor(extract(epoch from {{ timestamp }}) * 1000)::bigint
{%- endmacro %}
