{#-
    Epoch number (text) -> timestamptz. claude-flow v2 writes seconds and v3 milliseconds, but a column
    can hold the other unit, so the magnitude decides: |x| >= 1e11 is milliseconds (1e11 s would be the
    year 5138), else seconds. |x| >= 1e14 fits neither and becomes NULL, as does non-numeric text.
-#}
{#- The two magnitudes of that rule, written once (loader/verify/rules.py has them for validate's model). -#}
{% macro epoch_milliseconds_from() %}1e11{% endmacro %}
{% macro epoch_unusable_from() %}1e14{% endmacro %}


{% macro epoch_to_timestamptz(expression) -%}
    {{ epoch_number_to_timestamptz('consolidate.try_numeric(' ~ expression ~ ')') }}
{%- endmacro %}


{#- The same rule from the number itself (consolidate.try_numeric of the text, computed once). -#}
{% macro epoch_number_to_timestamptz(number) -%}
    {%- set number = '(' ~ number ~ ')' -%}
    case
        when abs({{ number }}) < {{ epoch_milliseconds_from() }}
            then to_timestamp({{ number }}::double precision)
        when abs({{ number }}) < {{ epoch_unusable_from() }}
            then to_timestamp({{ number }}::double precision / 1000)
    end
{%- endmacro %}


{#-
    ISO-like text `YYYY-MM-DD[ T]HH:MM:SS[.fff…][Z|±HH[:MM]]` -> timestamptz; naive values are UTC
    (SQLite's CURRENT_TIMESTAMP, Python's str(datetime.utcnow())). Anything else -> NULL, never an error.
-#}
{% macro text_to_timestamptz(expression) -%}
    {%- set column = '(' ~ expression ~ ')' -%}
    case
        when {{ column }} !~ '^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[ T]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?$'
            then null
        when left({{ column }}, 4) = '0000'
            then null
        -- the pattern lets through days a month does not have (2025-02-31); casting those would raise
        when substr({{ column }}, 9, 2)::int > extract(day from
                make_date(left({{ column }}, 4)::int, substr({{ column }}, 6, 2)::int, 1) + interval '1 month - 1 day')
            then null
        when {{ column }} ~ '(Z|[+-][0-9:]+)$'
            then {{ column }}::timestamptz
        else {{ column }}::timestamp at time zone 'UTC'
    end
{%- endmacro %}
