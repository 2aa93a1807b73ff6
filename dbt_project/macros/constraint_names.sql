{#-
    dbt creates a contracted table as `<model>__dbt_tmp` and renames it, so its constraints (and their
    indexes) keep names like `unified_memory__dbt_tmp_key_namespace_key`, which are what a refused write
    reports. After the rename, this gives each one its model's name (`unified_memory_key_namespace_key`).
    Only in a build that creates the table (a first or full build): an incremental build runs no DDL
    here, whatever names an older version left (a rename would lock the live table against every reader).
-#}
{% macro name_constraints_after_the_model(relation) -%}
{%- if is_incremental() -%}
select 1 /* an incremental build made no constraint: nothing to rename, and no lock to take */
{%- else -%}
do $do$
declare
    tmp_constraint record;
    wanted text;
    replaced text := format('%I.%I', '{{ relation.schema }}', '{{ relation.identifier }}__dbt_backup');
begin
    for tmp_constraint in
        select conname from pg_constraint
        where conrelid = '{{ relation }}'::regclass and conname like '%\_\_dbt\_tmp%'
    loop
        -- and without the number PostgreSQL appended when the name was taken (by the table replaced)
        wanted := regexp_replace(replace(tmp_constraint.conname, '__dbt_tmp', ''), '(_(pkey|key|check|excl))[0-9]+$', '\1');
        -- the table this build replaced, dropped once the build commits, still holds the name: it gives it up
        if exists (select 1 from pg_constraint where conrelid = to_regclass(replaced) and conname = wanted) then
            execute format('alter table %s rename constraint %I to %I', replaced, wanted, left(wanted, 40) || '__replaced');
        end if;
        if to_regclass(format('%I.%I', '{{ relation.schema }}', wanted)) is null
           and not exists (select 1 from pg_constraint where conrelid = '{{ relation }}'::regclass and conname = wanted) then
            execute format('alter table {{ relation }} rename constraint %I to %I', tmp_constraint.conname, wanted);
        end if;
    end loop;
end
$do$
{%- endif -%}
{%- endmacro %}
