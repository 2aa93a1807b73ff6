{#-
    Generic tests (not_null, unique, accepted_values, unique_combination) on the memory models check, in an
    incremental build after a passing one (memory_test_scope), only the rows that can have changed since:
    the rows of the changed entries' keys (memory_test_entries), and for `unique` on another column, every
    row sharing that column's value with one of them. That is exact: a row of an unchanged entry is as the
    passing build checked it, and a duplicate that is new involves a changed row. Any other build, and
    every test on another model, sees the whole relation (and a `where` config as dbt applies it).
    The keys are an array (`= any(array(...))`, computed once), so the filter reaches the indexes on key
    inside the compatibility views' unions; a semi-join would be planned after scanning them. Tables indexed
    on (namespace, key) get the namespaces too (a superset of the changed entries, so still exact).
-#}

{% macro postgres__get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- set relation_sql = relation if not where else '(select * from ' ~ relation ~ ' where ' ~ where ~ ')' -%}
    {%- set tested_model = model.get('attached_node') or '' -%}
    {%- if tested_model.split('.')[-1] in ['int_memory_ranked', 'unified_memory', 'performance_metrics',
                                           'unified_memory_history', 'memory_entries_v2', 'memory_entries_v3',
                                           'memory_store']
          and memory_test_scope() == 'incremental' -%}
        {%- set test_name = (model.get('test_metadata') or {}).get('name') -%}
        {%- set column = model.get('column_name') -%}
        {%- set entries = memory_test_entries() -%}
        {%- set of_changed_entries -%}
key = any(array(select key from ({{ entries }}) as changed_entries))
            {%- if tested_model.split('.')[-1] in ['int_memory_ranked', 'unified_memory_history'] %}
and namespace = any(array(select namespace from ({{ entries }}) as changed_entries))
            {%- endif -%}
        {%- endset -%}
        {%- if test_name == 'unique' and column and column != 'key' -%}
            {%- set filtered -%}
(select * from {{ relation_sql }} as tested
 where {{ adapter.quote(column) }} = any(array(
     select {{ adapter.quote(column) }} from {{ relation_sql }} as changed_rows where {{ of_changed_entries }}
 ))) dbt_subquery
            {%- endset -%}
        {%- else -%}
            {%- set filtered -%}
(select * from {{ relation_sql }} as tested where {{ of_changed_entries }}) dbt_subquery
            {%- endset -%}
        {%- endif -%}
        {%- do return(filtered) -%}
    {%- elif where -%}
        {%- do return(relation_sql ~ ' dbt_subquery') -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
