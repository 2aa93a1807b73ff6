{#-
    dbt-postgres's create_table_as, except for a table under an enforced contract. dbt creates that table
    with its constraints and then inserts the rows; PostgreSQL plans an INSERT ... SELECT without parallel
    workers and adds every row to the constraints' indexes one by one. Here the rows come first, from a
    CREATE TABLE ... AS (parallel, each column cast to its declared type), and the constraints follow in one
    ALTER TABLE: one pass checks the not-null and check constraints, and each index is built in one sorted
    pass. The table ends with the same columns, types, defaults and constraints (names included: dbt names
    no column constraint, so PostgreSQL does either way). A type with a modifier (varchar(n), numeric(p, s))
    is set by the ALTER TABLE rather than cast: like dbt's INSERT, it refuses a value too long rather than
    cutting it. At 1M rows unified_memory's rows and constraints took 4.6 s this way; an INSERT of the same
    rows alone took 5.4 s.
-#}
{% macro postgres__create_table_as(temporary, relation, sql) -%}
  {%- set unlogged = config.get('unlogged', default=false) -%}
  {%- set sql_header = config.get('sql_header', none) -%}
  {%- set contract_config = config.get('contract') -%}

  {{ sql_header if sql_header is not none }}

  create {% if temporary -%}
    temporary
  {%- elif unlogged -%}
    unlogged
  {%- endif %} table {{ relation }}
  {% if contract_config.enforced %}
    {{ get_assert_columns_equivalent(sql) }}
  {% endif -%}
  as
  {% if contract_config.enforced and not temporary -%}
  select
    {%- for column in model['columns'].values() %}
    {% if type_set_by_alter(column) -%}
    {{ contract_column_name(column) }}
    {%- else -%}
    cast({{ contract_column_name(column) }} as {{ column['data_type'] }}) as {{ contract_column_name(column) }}
    {%- endif %}
    {{- "," if not loop.last }}
    {%- endfor %}
  from (
    {{ sql }}
  ) as model_subq;
  {%- set actions = contract_constraint_actions() %}
  {%- if actions %}
  alter table {{ relation }}
    {%- for action in actions %}
    {{ action }}{{ "," if not loop.last }}
    {%- endfor %};
  {%- endif %}
  {%- else %}
  (
    {{ sql }}
  );
  {%- endif %}
{%- endmacro %}


{% macro contract_column_name(column) -%}
  {{ adapter.quote(column['name']) if column.get('quote') else column['name'] }}
{%- endmacro %}


{#- A declared type with a modifier (varchar(n), numeric(p, s)): the ALTER TABLE sets it, not a cast. -#}
{% macro type_set_by_alter(column) -%}
  {{ return('(' in column['data_type']) }}
{%- endmacro %}


{#-
    The ALTER TABLE actions that give a table made by CREATE TABLE ... AS the types with a modifier and the
    constraints the model's contract declares: not null, check, primary key and unique, and a default (the
    `custom` constraint `default <expression>`). Any other kind (or one of these with text dbt would put after
    it inline) fails the compilation by name rather than being left out.
-#}
{% macro contract_constraint_actions() -%}
  {%- set actions = [] -%}
  {%- set table_constraints = [] -%}
  {%- for column in model['columns'].values() -%}
    {%- set name = contract_column_name(column) -%}
    {%- if type_set_by_alter(column) -%}
      {%- do actions.append('alter column ' ~ name ~ ' type ' ~ column['data_type']) -%}
    {%- endif -%}
    {%- for constraint in column.get('constraints', []) -%}
      {%- set kind = constraint['type'] -%}
      {%- set expression = (constraint.get('expression') or '') | trim -%}
      {%- if kind == 'not_null' and not expression -%}
        {%- do actions.append('alter column ' ~ name ~ ' set not null') -%}
      {%- elif kind in ['primary_key', 'unique'] and not expression or kind == 'check' and expression -%}
        {%- set table_constraint = {} -%}
        {%- do table_constraint.update(constraint) -%}
        {%- do table_constraint.update({'columns': [name], 'name': none}) -%}
        {%- do table_constraints.append(table_constraint) -%}
      {%- elif kind == 'custom' and expression.lower().startswith('default ') -%}
        {%- do actions.append('alter column ' ~ name ~ ' set ' ~ expression) -%}
      {%- else -%}
        {{ exceptions.raise_compiler_error(
            model['name'] ~ "." ~ column['name'] ~ ": a " ~ kind ~ " constraint" ~
            (" (" ~ expression ~ ")" if expression else "") ~
            " is not one macros/create_table_as.sql knows how to add after the rows") }}
      {%- endif -%}
    {%- endfor -%}
  {%- endfor -%}
  {%- do table_constraints.extend(model['constraints']) -%}
  {%- for constraint in adapter.render_raw_model_constraints(raw_constraints=table_constraints) -%}
    {%- do actions.append('add ' ~ constraint) -%}
  {%- endfor -%}
  {{ return(actions) }}
{%- endmacro %}
