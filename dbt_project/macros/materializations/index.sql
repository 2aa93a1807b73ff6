{#-
    materialized='index': a node whose SQL is a table (a ref) and whose config `index` is the definition of
    an index on it (e.g. `using gin (value jsonb_path_ops)`). It creates that index, named as the node,
    unless the table has an index of that definition already (an incremental build, or a database that
    got it from the table's own `indexes` config before).

    For an index that readers need and the build does not: as a node of its own it is built after the
    table's transaction commits, while the tests read the table, instead of inside it, where every test
    waited for it. It builds no relation of its own; the index is the table's, and goes with it when a
    full refresh replaces the table (this node then builds it again).
-#}
{% materialization index, adapter='postgres' %}
    {%- set table = sql | trim -%}
    {%- set definition = config.require('index') | trim -%}
    {%- call statement('main') -%}
do $do$
begin
    if not exists (select 1 from pg_index
                   where indrelid = {{ dbt.string_literal(table) }}::regclass
                     and pg_get_indexdef(indexrelid) ilike '% ' || {{ dbt.string_literal(definition) }}) then
        create index {{ adapter.quote(this.identifier) }} on {{ table }} {{ definition }};
    end if;
end
$do$
    {%- endcall -%}
    {%- do adapter.commit() -%}
    {{ return({'relations': []}) }}
{% endmaterialization %}
