{#-
    Generic tests (not_null, accepted_values) on the memory models check, in an incremental build after a
    passing one (memory_test_scope), only the rows of the changed entries' keys (memory_test_entries). That
    is exact: a row of an unchanged entry is as the passing build checked it. Any other build, and every
    test on another model, sees the whole relation (and a `where` config as dbt applies it). Uniqueness on
    these models is the marts' contracts' constraints, not tests: a scoped unique test would miss a new
    duplicate of an unchanged row, so one fails the compilation.
    The keys are an array (`= any(array(...))`, computed once), so the filter reaches the indexes on key
    inside the compatibility views' unions; a semi-join would be planned after scanning them. Tables indexed
    on (namespace, key) get the namespaces too (a superset of the changed entries, so still exact).
-#}

{% macro postgres__get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- set relation_sql = relation if not where else '(select * from ' ~ relation ~ ' where ' ~ where ~ ')' -%}
    {%- set tested_model = (model.get('attached_node') or '').split('.')[-1] -%}
    {%- set memory_model = tested_model in ['int_memory_ranked', 'unified_memory', 'performance_metrics',
                                            'unified_memory_history', 'memory_entries_v2', 'memory_entries_v3',
                                            'memory_store'] -%}
    {%- set test_name = (model.get('test_metadata') or {}).get('name') -%}
    {%- if memory_model and test_name in ['unique', 'unique_combination'] -%}
        {{ exceptions.raise_compiler_error(tested_model ~ ": a " ~ test_name ~ " test on a memory model; "
                                           ~ "declare a unique constraint in its contract instead") }}
    {%- endif -%}
    {%- if memory_model and memory_test_scope() == 'incremental' -%}
        {%- set entries = memory_test_entries() -%}
        {%- set of_changed_entries -%}
key = any(array(select key from ({{ entries }}) as changed_entries))
            {%- if tested_model in ['int_memory_ranked', 'unified_memory_history'] %}
and namespace = any(array(select namespace from ({{ entries }}) as changed_entries))
            {%- endif -%}
        {%- endset -%}
        {%- set filtered -%}
(select * from {{ relation_sql }} as tested where {{ of_changed_entries }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- elif where -%}
        {%- do return(relation_sql ~ ' dbt_subquery') -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
