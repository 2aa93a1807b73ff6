{#-
    How the memory models are kept incrementally. A build applies only what is new since the last build:
    the loads that became current, the loads that stopped being current, and writes in the write log not
    yet in int_memory_ranked (the write path applies its writes itself, so normally there are none).
    Their (namespace, key) pairs are int_memory_changed_keys; int_memory_ranked and the three memory marts
    replace exactly those entries' rows (the `replace_keys` strategy below). A full build (the first one,
    or `consolidate build --full-refresh`) computes everything from raw and the write log; both give the
    same rows, ids included (ids live in consolidate.entry_ids and are never renumbered).

    Builds and writes exclude each other with the advisory locks `consolidate.marts` (one key per table,
    memory_mart_tables): every model that writes int_memory_ranked or a memory mart holds its table's key
    exclusively for its transaction (lock_memory_marts), every write in PostgreSQL holds all four shared.
    So a build's marts, which read only int_memory_ranked and entry_ids, are built side by side. Triggers on those tables stand aside only while
    `consolidate.maintaining_marts` is on (set by the strategy and by the write path for their own
    statements); any other DML is captured as a write (the marts) or refused (ranked, history).
-#}

{% macro memory_ranked_relation() -%}
    {{ return(adapter.get_relation(database=target.database, schema='intermediate', identifier='int_memory_ranked')) }}
{%- endmacro %}


{#- Whether this run builds the memory models incrementally: a previous build exists and no --full-refresh. -#}
{% macro memory_incremental_build() -%}
    {{ return(execute and not flags.FULL_REFRESH and memory_ranked_relation() is not none) }}
{%- endmacro %}


{#- A staging model's SQL for one raw memory table, over the raw rows matching `raw_rows_filter`. -#}
{% macro memory_staging_sql(source_name, table_name, raw_rows_filter) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- if source_name == 'raw_claude_flow_v2' -%}
        {{ stg_claude_flow_v2__memory_entries_sql(relation, raw_rows_filter) }}
    {%- elif source_name == 'raw_claude_flow_v3' -%}
        {{ stg_claude_flow_v3__memory_entries_sql(relation, raw_rows_filter) }}
    {%- elif source_name == 'raw_extended_memory' -%}
        {{ stg_extended_memory__memory_store_sql(relation, raw_rows_filter) }}
    {%- else -%}
        {{ exceptions.raise_compiler_error("no memory staging for " ~ source_name ~ "." ~ table_name) }}
    {%- endif -%}
{%- endmacro %}


{#-
    Incremental strategy `replace_keys`: every row of the changed entries (int_memory_changed_keys) is
    replaced by the model's rows for them (an entry that has no rows any more simply goes). The model's
    rows are computed first, into dbt's temporary table, so they may read the target's old rows.
    A model with one row per entry (unique_key (namespace, key): the marts DML may write) updates the row
    of an entry that keeps one in place: an UPDATE or DELETE on the mart waiting on that row then follows
    it to its new version and is applied, where a deleted row would make it do nothing, silently.
-#}
{% macro get_incremental_replace_keys_sql(arg_dict) -%}
    {%- set target_relation = arg_dict['target_relation'] -%}
    {%- set temp_relation = arg_dict['temp_relation'] -%}
    {%- set names = arg_dict['dest_columns'] | map(attribute='name') | list -%}
    {%- set columns = get_quoted_csv(names) -%}
    set local consolidate.maintaining_marts = 'on';
    {%- if arg_dict['unique_key'] %}
    update {{ target_relation }} as target
    set ({{ columns }}) = ({% for name in names %}fresh.{{ adapter.quote(name) }}{{ ", " if not loop.last }}{% endfor %})
    from {{ temp_relation }} as fresh
    where target.namespace = fresh.namespace
      and target.key = fresh.key;
    delete from {{ target_relation }} as target
    using {{ ref('int_memory_changed_keys') }} as changed
    where target.namespace = changed.namespace
      and target.key = changed.key
      and not exists (select 1 from {{ temp_relation }} as fresh
                      where fresh.namespace = target.namespace and fresh.key = target.key);
    insert into {{ target_relation }} ({{ columns }})
    select {{ columns }} from {{ temp_relation }} as fresh
    where not exists (select 1 from {{ target_relation }} as target
                      where target.namespace = fresh.namespace and target.key = fresh.key);
    {%- else %}
    delete from {{ target_relation }} as target
    using {{ ref('int_memory_changed_keys') }} as changed
    where target.namespace = changed.namespace
      and target.key = changed.key;
    insert into {{ target_relation }} ({{ columns }})
    select {{ columns }} from {{ temp_relation }};
    {%- endif %}
{%- endmacro %}


{#- The tables a write in PostgreSQL changes, each with its own lock key (see above). -#}
{% macro memory_mart_tables() -%}
    {{ return(['int_memory_ranked', 'unified_memory', 'performance_metrics', 'unified_memory_history']) }}
{%- endmacro %}


{#- The advisory lock key of one of memory_mart_tables, as the arguments of pg_advisory_xact_lock. -#}
{% macro memory_mart_lock_key(table_name) -%}
    hashtext('consolidate.marts'), hashtext({{ table_name }})
{%- endmacro %}


{#-
    pre_hook of reconciliation: no write in PostgreSQL is in flight while it counts the marts (every write
    holds all the keys shared; one held exclusively waits for those under way and holds back new ones).
-#}
{% macro lock_memory_marts_for_counting() -%}
    select pg_advisory_xact_lock({{ memory_mart_lock_key("'" ~ memory_mart_tables()[0] ~ "'") }})
{%- endmacro %}


{#- pre_hook of every model that writes int_memory_ranked or a memory mart: its own table's key. -#}
{% macro lock_memory_marts() -%}
    {%- if this.identifier not in memory_mart_tables() -%}
        {{ exceptions.raise_compiler_error(this.identifier ~ " is not one of memory_mart_tables()") }}
    {%- endif -%}
    select pg_advisory_xact_lock({{ memory_mart_lock_key("'" ~ this.identifier ~ "'") }})
{%- endmacro %}


{#-
    An index dbt's `indexes` config cannot express (a partial one). On a full build the old table still
    holds the name while it is swapped out, so the name is freed first; an incremental build keeps it.
-#}
{% macro ensure_index(relation, name, definition) -%}
do $do$
begin
    if not exists (select 1 from pg_index join pg_class on pg_class.oid = pg_index.indexrelid
                   where pg_index.indrelid = '{{ relation }}'::regclass and pg_class.relname = '{{ name }}') then
        drop index if exists {{ adapter.quote(relation.schema) }}.{{ name }};
        create index {{ name }} on {{ relation }} {{ definition }};
    end if;
end
$do$
{%- endmacro %}


{#- A row trigger (or a statement trigger with for_each='statement') created once per table. -#}
{% macro ensure_trigger(relation, name, timing, events, function, for_each='row') -%}
do $do$
begin
    if not exists (select 1 from pg_trigger where tgrelid = '{{ relation }}'::regclass and tgname = '{{ name }}') then
        create trigger {{ name }} {{ timing }} {{ events }} on {{ relation }}
            for each {{ for_each }} execute function {{ function }};
    end if;
end
$do$
{%- endmacro %}


{#- int_memory_ranked and unified_memory_history are derived: only builds and the write path change them. -#}
{% macro refuse_direct_writes(relation) -%}
    {{ ensure_trigger(relation, 'derived_from_versions', 'before', 'insert or update or delete or truncate',
                      'consolidate.refuse_writes_to_derived_table()', for_each='statement') }}
{%- endmacro %}


{#-
    post_hook of int_memory_ranked: every entry in it that has no id yet gets one, numbered per mart after
    the mart's highest id in (namespace, key) order. int_memory_load_changes says whether this was a full
    build (look at every entry) or an incremental one (look at the changed entries only).
-#}
{% macro assign_entry_ids(ranked) -%}
select pg_advisory_xact_lock(hashtext('consolidate.entry_ids'));
insert into {{ source('consolidate', 'entry_ids') }} (namespace, key, mart, id)
select
    new_entries.namespace,
    new_entries.key,
    new_entries.mart,
    coalesce(highest.id, 0) + row_number() over (partition by new_entries.mart order by new_entries.namespace, new_entries.key)
from (
    select entries.namespace, entries.key, {{ memory_mart_of('entries.namespace') }} as mart
    from (
        -- each branch with its own anti-join, so the incremental one probes the ids' index per changed
        -- entry (one anti-join over both would be planned for the full build's million rows)
        select ranked.namespace, ranked.key
        from {{ ranked }} as ranked
        where ranked.version_rank = 1
          and exists (select 1 from {{ ref('int_memory_load_changes') }} where change = 'full')
          and not exists (select 1 from {{ source('consolidate', 'entry_ids') }} as known
                          where known.namespace = ranked.namespace and known.key = ranked.key)
        union all
        select ranked.namespace, ranked.key
        from {{ ref('int_memory_changed_keys') }} as changed
        inner join {{ ranked }} as ranked
            on ranked.namespace = changed.namespace and ranked.key = changed.key
        where ranked.version_rank = 1
          and not exists (select 1 from {{ ref('int_memory_load_changes') }} where change = 'full')
          and not exists (select 1 from {{ source('consolidate', 'entry_ids') }} as known
                          where known.namespace = ranked.namespace and known.key = ranked.key)
    ) as entries
) as new_entries
left join (
    -- each mart's highest id, by its (mart, id) index (grouping would read every id)
    select marts.mart, (select max(known.id) from {{ source('consolidate', 'entry_ids') }} as known
                        where known.mart = marts.mart) as id
    from (values ('unified_memory'), ('performance_metrics')) as marts (mart)
) as highest
    on highest.mart = new_entries.mart
{%- endmacro %}


{#-
    What the tests of an incremental build look at. A build that changed only some entries, after a build
    whose tests all passed, needs to check only what changed since: the loads that became current, the
    entries it recomputed (int_memory_changed_keys) and the entries written in PostgreSQL since that
    build started (their write_id is above its watermark). Anything else is as the passing build left it
    (only builds and the write path change these tables, and both replace whole entries by the same SQL).
    Otherwise (a full build, no passing build before, or a failed one) the tests check everything.
    consolidate.memory_builds (loader/ledger.py, migration 7) is that record: one row per dbt invocation
    (on-run-start), marked passed at its end (on-run-end) when it ran tests and none failed.
-#}
{% macro start_memory_build() -%}
    {%- set selected = selected_resources | select('in', memory_model_ids()) | list -%}
insert into consolidate.memory_builds (invocation_id, marts_schema, write_watermark, project_digest, compiled_from,
                                       memory_models)
select '{{ invocation_id }}', '{{ target.schema }}', coalesce(max(write_id), 0),
       nullif('{{ env_var("CONSOLIDATE_PROJECT_DIGEST", "") }}', ''),
       nullif('{{ env_var("CONSOLIDATE_COMPILED_FROM", "") }}', ''),
       {{ 'null' if selected else "'none'" }}
from {{ api.Relation.create(database=target.database, schema='raw_postgres', identifier='memory_writes') }}
{%- endmacro %}


{#-
    The models whose tables carry the memory state from build to build: int_memory_ranked and the marts, and
    the tables an incremental build of them reads (what changed since the last one). Ledger migration 14
    (memory_builds.memory_models) records whether an invocation built 'none', 'all' or 'some' of them: 'none'
    when it selected none (set as it starts, so one that dies stays 'none'), else at its end (NULL if it
    died). An incremental build continues only from 'all' (loader/ledger.py memory_models_left_whole).
-#}
{% macro memory_model_ids() -%}
    {%- set ids = [] -%}
    {%- for name in ['int_memory_load_changes', 'int_memory_new_versions', 'int_memory_changed_keys'] + memory_mart_tables() -%}
        {%- do ids.append('model.' ~ project_name ~ '.' ~ name) -%}
    {%- endfor -%}
    {{ return(ids) }}
{%- endmacro %}


{#- on-run-end: whether it passed, and which memory models it built (memory_model_ids). -#}
{% macro finish_memory_build(results) -%}
    {%- set tests = results | selectattr('node.resource_type', 'equalto', 'test') | list -%}
    {%- set failed = results | selectattr('status', 'in', ['error', 'fail', 'runtime error']) | list -%}
    {%- set memory_models = results | selectattr('node.unique_id', 'in', memory_model_ids()) | list -%}
    {%- set built = memory_models | selectattr('status', 'equalto', 'success') | list -%}
    {%- set memory_state = 'none' if not memory_models
                           else ('all' if built | length == memory_model_ids() | length else 'some') -%}
update consolidate.memory_builds
set tests_run = {{ tests | length }}, passed = {{ 'true' if not failed else 'false' }},
    memory_models = '{{ memory_state }}'
where invocation_id = '{{ invocation_id }}'
{%- endmacro %}


{#- This invocation counted the reconciliation (its post-hook): the next one may recount only what changed. -#}
{% macro mark_build_reconciled() -%}
update consolidate.memory_builds set reconciled = true where invocation_id = '{{ invocation_id }}'
{%- endmacro %}


{#-
    'incremental' (check only what changed, see above) or 'full'; read when a test is compiled. The
    relations are named, not ref()'d: generic tests (macros/scoped_generic_tests.sql) depend on their model only.
-#}
{% macro memory_test_scope() -%}
    {%- if var('test_every_entry', false) | string | lower in ['true', '1', 'yes'] -%}
        {{ return('full') }}
    {%- endif -%}
    {%- set load_changes = adapter.get_relation(database=target.database, schema='intermediate',
                                                identifier='int_memory_load_changes') if execute else none -%}
    {#- nothing built yet (a first build; a compile or lint on a loaded database): everything -#}
    {%- if load_changes is none -%}
        {{ return('full') }}
    {%- endif -%}
    {#- the latest invocation ran tests and all passed, and the latest that built memory models built all of
        them and tested them (the ledger's memory_models_left_whole, the rule the builds read too): a `dbt
        run`, a failed or killed build or a selection in between leaves marts no test has passed since -#}
    {%- set found = run_query(
        "select exists (select 1 from " ~ load_changes ~ " where change = 'full'), "
        ~ "coalesce((select passed and tests_run > 0 from consolidate.memory_builds where marts_schema = '"
        ~ target.schema ~ "' and invocation_id <> '" ~ invocation_id ~ "' order by started_at desc limit 1), false), "
        ~ "consolidate.memory_models_left_whole('" ~ target.schema ~ "', '" ~ invocation_id ~ "', true)").rows[0] -%}
    {{ return('incremental' if not found[0] and found[1] and found[2] else 'full') }}
{%- endmacro %}


{#- The entries an incremental build's tests check (see memory_test_scope). -#}
{% macro memory_test_entries() -%}
select namespace, key from {{ api.Relation.create(database=target.database, schema='intermediate', identifier='int_memory_changed_keys') }}
union
select namespace, key from {{ api.Relation.create(database=target.database, schema='raw_postgres', identifier='memory_writes') }}
where write_id > (
    select coalesce(max(write_watermark), 0) from consolidate.memory_builds
    where marts_schema = '{{ target.schema }}' and invocation_id <> '{{ invocation_id }}'
      and started_at = (select max(started_at) from consolidate.memory_builds
                        where marts_schema = '{{ target.schema }}' and invocation_id <> '{{ invocation_id }}')
)
{%- endmacro %}


{#-
    `row` (an alias of rows with load_id, source_path, source_table and source_rowid: a memory version, or a
    raw row under those names) is not retired: a file's current rows are its current load's parts' rows
    that no row-level change load retired (consolidate.current_load_parts, consolidate.retired_rows;
    loader/load/delta.py).
-#}
{% macro not_retired(row) -%}
not exists (
    select 1 from {{ source('consolidate', 'retired_rows') }} as retired
    where retired.row_load_id = {{ row }}.load_id
      and retired.source_path = {{ row }}.source_path
      and retired.source_table = {{ row }}.source_table
      and retired.source_rowid = {{ row }}.source_rowid
)
{%- endmacro %}


{#-
    Whether reconciliation may count only what changed (reconciliation.sql): the invocation before this one
    rebuilt it, with this same dbt project. Otherwise (a build in between that did not reconcile, like
    `dbt build --exclude reconciliation` or one that died; another project; plain dbt) it counts every file.
-#}
{% macro reconciliation_can_continue() -%}
    {%- if not execute -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set rows = run_query(
        "select previous.reconciled and previous.project_digest = this_build.project_digest
         from consolidate.memory_builds as this_build
         cross join lateral (
             select reconciled, project_digest from consolidate.memory_builds
             where marts_schema = this_build.marts_schema and invocation_id <> this_build.invocation_id
             order by started_at desc limit 1
         ) as previous
         where this_build.invocation_id = '" ~ invocation_id ~ "'").rows -%}
    {{ return(rows | length > 0 and rows[0][0] == true) }}
{%- endmacro %}


{#-
    The write log's highest write_id when the last build that reconciled started (memory_builds.reconciled,
    set by reconciliation's post_hook): writes above it may have changed what reconciliation counts.
-#}
{% macro reconciled_write_watermark() -%}
select coalesce(max(write_watermark), 0) from consolidate.memory_builds
where marts_schema = '{{ target.schema }}' and reconciled and invocation_id <> '{{ invocation_id }}'
  and started_at = (select max(started_at) from consolidate.memory_builds
                    where marts_schema = '{{ target.schema }}' and reconciled
                      and invocation_id <> '{{ invocation_id }}')
{%- endmacro %}


{#- post_hook of reconciliation: the rows of files whose counted load is no longer their current one. -#}
{% macro drop_files_no_longer_current(relation) -%}
delete from {{ relation }} as counted
where not exists (
    select 1 from {{ source('consolidate', 'current_loads') }} as current_load
    where current_load.source_path = counted.source_path and current_load.load_id = counted.load_id
)
{%- endmacro %}
