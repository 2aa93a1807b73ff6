{#-
    post_hook of every model: when this invocation swapped the model's relation in (a table, a view, or an
    incremental model's full refresh: the old one renamed `<name>__dbt_backup`, dropped with CASCADE after
    the commit), every view built on the old relation is re-pointed at the new one first, in the same
    transaction: `create or replace view` with its definition naming the new relation, which keeps the
    view, its INSTEAD OF triggers and its grants. So the compatibility views, active_sessions and a
    user's own views never vanish while a full refresh runs, nor stay gone when it dies. A view whose
    definition no longer fits the new relation (its columns changed) is left to the CASCADE, as before,
    and its own model makes it again.
    dbt's relation cache drops the old relation's dependents with it; keep_dependent_views_in_dbt_cache, a
    post_hook run after that drop, puts the views now built on the new relation back, so a later model of
    the same invocation that builds one of them replaces it instead of creating it again.
-#}
{% macro keep_dependent_views(relation) -%}
    {%- if execute and relation is not none and not is_incremental() -%}
    {%- set backup = make_backup_relation(relation, 'table') -%}
do $do$
declare
    dependent record;
begin
    for dependent in
        select distinct rewrite.ev_class::regclass::text as view_name, pg_get_viewdef(rewrite.ev_class) as definition
        from pg_depend as dependency
        inner join pg_rewrite as rewrite on rewrite.oid = dependency.objid
        inner join pg_class as view_class on view_class.oid = rewrite.ev_class
        where dependency.classid = 'pg_rewrite'::regclass
          and dependency.refclassid = 'pg_class'::regclass
          and dependency.refobjid = to_regclass('{{ backup }}')
          and view_class.relkind = 'v'
          and view_class.oid <> dependency.refobjid
    loop
        begin
            execute format('create or replace view %s as %s', dependent.view_name,
                           replace(dependent.definition, {{ dbt.string_literal(backup.identifier) }},
                                   {{ dbt.string_literal(relation.identifier) }}));
        exception when others then
            raise notice 'view % is left to be made again by its model: %', dependent.view_name, sqlerrm;
        end;
    end loop;
end
$do$
    {%- endif -%}
{%- endmacro %}


{% macro keep_dependent_views_in_dbt_cache(relation) -%}
    {%- if execute and relation is not none and not is_incremental() -%}
        {%- set dependents = run_query(
            "select distinct namespace.nspname, view_class.relname
             from pg_depend as dependency
             inner join pg_rewrite as rewrite on rewrite.oid = dependency.objid
             inner join pg_class as view_class on view_class.oid = rewrite.ev_class
             inner join pg_namespace as namespace on namespace.oid = view_class.relnamespace
             where dependency.classid = 'pg_rewrite'::regclass
               and dependency.refclassid = 'pg_class'::regclass
               and dependency.refobjid = to_regclass(" ~ dbt.string_literal(relation | string) ~ ")
               and view_class.relkind = 'v'
               and view_class.oid <> dependency.refobjid") -%}
        {%- for schema_name, view_name in dependents.rows -%}
            {%- do adapter.cache_added(api.Relation.create(database=relation.database, schema=schema_name,
                                                           identifier=view_name, type='view')) -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}
