{#-
    The not-null, unique and check constraints the tables' enforced contracts declare
    (models/marts/<model>.yml) are in place in PostgreSQL; a check is matched by the columns it
    reads. PostgreSQL then refuses every row that would break one, at every write (a build, the write path,
    DML on a mart), so those columns carry no not_null / unique data tests of their own, nor do the
    compatibility views over them. A table built before its contract declared a constraint would lack it
    (an incremental build keeps the table it has; `consolidate build --full-refresh` recreates it): each
    missing one is a failing row.
-#}
{%- set contract_tables = ['unified_memory', 'performance_metrics', 'unified_memory_history', 'migration_metadata',
                           'reconciliation'] %}
{%- for model in contract_tables %}
-- depends_on: {{ ref(model) }}
{%- endfor %}

{%- set expected = [] %}
{%- if execute %}
    {%- for node in graph.nodes.values()
          if node.resource_type == 'model' and node.config.contract.enforced
          and node.config.materialized in ['table', 'incremental'] %}
        {%- if node.name not in contract_tables %}
            {{ exceptions.raise_compiler_error(node.name ~ " enforces a contract: add it to contract_tables") }}
        {%- endif %}
        {%- set relation = ref(node.name) | string %}
        {%- for column in node.columns.values() %}
            {%- set kinds = column.constraints | map(attribute='type') | list %}
            {%- if 'not_null' in kinds or 'primary_key' in kinds %}
                {%- do expected.append((relation, 'not null', [column.name])) %}
            {%- endif %}
            {%- if 'unique' in kinds or 'primary_key' in kinds %}
                {%- do expected.append((relation, 'unique', [column.name])) %}
            {%- endif %}
            {%- if 'check' in kinds %}
                {%- do expected.append((relation, 'check', [column.name])) %}
            {%- endif %}
        {%- endfor %}
        {%- for constraint in node.constraints if constraint.type in ['unique', 'primary_key'] %}
            {%- do expected.append((relation, 'unique', constraint.columns | sort)) %}
        {%- endfor %}
        {%- for constraint in node.constraints if constraint.type == 'check' %}
            {%- if not constraint.columns %}
                {{ exceptions.raise_compiler_error(node.name ~ ": a check constraint names the columns it reads") }}
            {%- endif %}
            {%- do expected.append((relation, 'check', constraint.columns | sort)) %}
        {%- endfor %}
    {%- endfor %}
{%- endif %}

with expected (relation_name, constraint_kind, column_names) as (

    {%- for relation, kind, columns in expected %}
    {{ 'values' if loop.first else '      ' }} ('{{ relation }}', '{{ kind }}', array[{% for c in columns %}'{{ c }}'{{ ", " if not loop.last }}{% endfor %}]::text[]){{ "," if not loop.last }}
    {%- else %}
    select null::text, null::text, null::text[] where false
    {%- endfor %}

),

-- every unique index on plain columns (a primary key's included) and every check constraint, by the columns
-- it covers or reads
constraint_keys (table_oid, constraint_kind, column_numbers) as (

    select pg_index.indrelid, 'unique', pg_index.indkey::int2[]
    from pg_index
    where pg_index.indisunique and pg_index.indpred is null and pg_index.indexprs is null

    union all

    select pg_constraint.conrelid, 'check', pg_constraint.conkey
    from pg_constraint
    where pg_constraint.contype = 'c'

),

-- the same with the column names in order
constraints_in_place as (

    select
        constraint_keys.table_oid,
        constraint_keys.constraint_kind,
        array(
            select pg_attribute.attname::text
            from unnest(constraint_keys.column_numbers) as key_column (attnum)
            inner join pg_attribute
                on pg_attribute.attrelid = constraint_keys.table_oid and pg_attribute.attnum = key_column.attnum
            order by pg_attribute.attname
        ) as column_names
    from constraint_keys

)

select expected.*
from expected
where to_regclass(expected.relation_name) is null
   or (expected.constraint_kind = 'not null' and not exists (
        select 1 from pg_attribute
        where pg_attribute.attrelid = to_regclass(expected.relation_name)
          and pg_attribute.attname = expected.column_names[1]
          and pg_attribute.attnotnull))
   or (expected.constraint_kind in ('unique', 'check') and not exists (
        select 1 from constraints_in_place
        where constraints_in_place.table_oid = to_regclass(expected.relation_name)
          and constraints_in_place.constraint_kind = expected.constraint_kind
          and constraints_in_place.column_names = expected.column_names))
