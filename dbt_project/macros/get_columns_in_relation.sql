{#-
    dbt-postgres's get_columns_in_relation, except that array columns report their element type
    (`text[]`, from udt_name) instead of information_schema's bare `ARRAY`. dbt builds unit-test
    fixtures from these types (`cast(... as <type>)`), and `cast(null as ARRAY)` is a syntax error: every
    unit test over a relation with an array column (raw `_binary_columns`, the models' `flags`) needs this.
-#}
{% macro postgres__get_columns_in_relation(relation) -%}
  {% call statement('get_columns_in_relation', fetch_result=True) %}
      select
          column_name,
          case
              when data_type = 'ARRAY' and left(udt_name, 1) = '_' then substr(udt_name, 2) || '[]'
              else data_type
          end as data_type,
          character_maximum_length,
          numeric_precision,
          numeric_scale

      from {{ relation.information_schema('columns') }}
      where table_name = '{{ relation.identifier | replace("'", "''") }}'
        {% if relation.schema %}
        and table_schema = '{{ relation.schema | replace("'", "''") }}'
        {% endif %}
      order by ordinal_position

  {% endcall %}
  {% set table = load_result('get_columns_in_relation').table %}
  {{ return(sql_convert_columns_in_relation(table)) }}
{% endmacro %}
