{#-
    post_hook of every model: when this invocation swapped the model's table in (a table, or an incremental
    model's full refresh: the old one renamed `<name>__dbt_backup`, dropped with CASCADE after the commit),
    every view built on the old relation is re-pointed at the new one first, in the same transaction:
    `create or replace view` with its definition naming the new relation and its options
    (security_invoker, security_barrier, check_option), which keeps the view, its INSTEAD OF triggers and
    its grants. So the compatibility views, active_sessions and a user's own views never vanish while a
    full refresh runs, nor stay gone when it dies: a view writers keep busy past three deadlocks fails
    the model instead (its transaction rolls back, the old table and the view stay). The definitions are read with an empty search_path, so
    every relation in them is named with its schema (the backup's name, as quote_ident spells it, also
    qualifies its columns, and is replaced everywhere). A view that cannot be re-pointed
    (its columns no longer fit the new relation) is left to the CASCADE, as before, and its own model makes
    it again. Two marts swapped side by side that one view reads (compat.memory_entries reads
    unified_memory and performance_metrics) can deadlock over it: the one PostgreSQL aborts waits for the
    other's commit and tries again. A view model's swap is left as dbt does it: the views under it are
    models of the same DAG.
    dbt's relation cache drops the old relation's dependents with it, and theirs; a post_hook run after
    that drop (keep_dependent_views_in_dbt_cache) puts back every view now built on the new relation, so
    a later model of the same invocation that builds one of them replaces it instead of creating it again.
-#}
{% macro keep_dependent_views(relation) -%}
    {%- if execute and relation is not none and swaps_a_table() -%}
    {%- set backup = make_backup_relation(relation, 'table') -%}
do $do$
declare
    dependent record;
    definition text;
    options text;
    previous_search_path text := current_setting('search_path');
begin
    perform set_config('search_path', '', true);
    for dependent in
        select distinct reading.view_oid
        from ({{ views_reading("to_regclass(" ~ dbt.string_literal(backup | string) ~ ")") }}) as reading
    loop
        for attempt in 1..3 loop
            begin
                select pg_get_viewdef(dependent.view_oid), array_to_string(view_class.reloptions, ', ')
                into definition, options
                from pg_class as view_class where view_class.oid = dependent.view_oid;
                execute format('create or replace view %s %s as %s', dependent.view_oid::regclass,
                               coalesce('with (' || options || ')', ''),
                               replace(definition, quote_ident({{ dbt.string_literal(backup.identifier) }}),
                                       quote_ident({{ dbt.string_literal(relation.identifier) }})));
                exit;
            exception
                -- another model re-pointing the same view holds a relation it reads: once it commits, again.
                -- A writer through the view waiting for this model's lock on the marts holds the view: the
                -- model fails and rolls back (the old table and the view stay) rather than drop the view
                when deadlock_detected then
                    if attempt = 3 then
                        raise exception 'view % could not be re-pointed at the new %: writers through it kept it '
                                        'busy (%); nothing of this model is kept, the view stays as it was: '
                                        'run the full refresh again', dependent.view_oid::regclass,
                                        {{ dbt.string_literal(relation | string) }}, sqlerrm
                            using errcode = 'lock_not_available';
                    end if;
                when others then
                    raise notice 'view % is left to be made again by its model: %', dependent.view_oid, sqlerrm;
                    exit;
            end;
        end loop;
    end loop;
    perform set_config('search_path', previous_search_path, true);
end
$do$
    {%- endif -%}
{%- endmacro %}


{% macro keep_dependent_views_in_dbt_cache(relation) -%}
    {%- if execute and relation is not none and swaps_a_table() -%}
        {%- set dependents = run_query(
            "with recursive dependent (view_oid) as (
                 " ~ views_reading("to_regclass(" ~ dbt.string_literal(relation | string) ~ ")") ~ "
                 union
                 select reading.view_oid
                 from dependent
                 cross join lateral (" ~ views_reading("dependent.view_oid") ~ ") as reading
             )
             select namespace.nspname, view_class.relname
             from dependent
             inner join pg_class as view_class on view_class.oid = dependent.view_oid
             inner join pg_namespace as namespace on namespace.oid = view_class.relnamespace") -%}
        {%- for schema_name, view_name in dependents.rows -%}
            {%- do adapter.cache_added(api.Relation.create(database=relation.database, schema=schema_name,
                                                           identifier=view_name, type='view')) -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}


{#- Whether this model's run swaps a new table in for an existing one (the backup keep_dependent_views reads). -#}
{% macro swaps_a_table() -%}
    {{ return(config.get('materialized') in ['table', 'incremental'] and not is_incremental()) }}
{%- endmacro %}


{#- The views (relkind v) whose definition reads the relation `relation_oid` (an SQL expression), as view_oid. -#}
{% macro views_reading(relation_oid) -%}
select rewrite.ev_class as view_oid
from pg_depend as dependency
inner join pg_rewrite as rewrite on rewrite.oid = dependency.objid
inner join pg_class as view_class on view_class.oid = rewrite.ev_class
where dependency.classid = 'pg_rewrite'::regclass
  and dependency.refclassid = 'pg_class'::regclass
  and dependency.refobjid = {{ relation_oid }}
  and view_class.relkind = 'v'
  and view_class.oid <> dependency.refobjid
{%- endmacro %}
