{#-
    Typed staging of an application table (n8n, Flowise): every raw column cast to the type its SQLite
    CREATE TABLE declared. The loader parses each table's DDL with sqlglot (loader/sources/sqlite_ddl.py)
    and keeps the declared type per column in consolidate.load_columns.declared_type; for each raw column
    this takes the type most current loads declared. A value that does not fit its declared type (SQLite stores
    anything anywhere) becomes NULL; raw keeps the original. The lineage columns follow (source_table,
    source_path, source_sha256, load_id, source_rowid, loaded_at). Every load's rows are there (filter on
    consolidate.current_loads for the current ones); a model whose raw table no load has made yet is empty.
    For the applications themselves, see `consolidate app-copy`.
-#}
{% macro typed_app_table(source_name, table, excluded_columns=[], key_columns=['id']) -%}
    {#- The raw table's columns come from the catalog, not from dbt's relation cache: the cache does not
        list a source's schema up front, and a thread looking the table up while another thread's cache
        miss is listing that schema finds it empty (the view was then built with no rows). -#}
    {%- set relation = source(source_name, table) -%}
    {%- set columns = adapter.get_columns_in_relation(relation) if execute else [] -%}
    {%- if columns | length == 0 %}
select
    {%- for key in key_columns %}
    null::text as {{ quote_identifier(key) }},
    {%- endfor %}
    {{ staging_lineage_nulls(table) }}
where false
    {%- else -%}
    {%- set declared = declared_types_of(source_name, table) -%}
    {%- set excluded = (excluded_columns + lineage_columns()) | map('lower') | list %}
select
    {%- for column in columns if column.name | lower not in excluded %}
    {{ cast_to_declared(quote_identifier(column.name), declared.get(column.name)) }} as {{ quote_identifier(column.name) }},
    {%- endfor %}
    {{ staging_lineage(table) }}
from {{ source(source_name, table) }}
    {%- endif -%}
{%- endmacro %}


{#- raw column -> the declared type most current loads of this raw table recorded (compile time). -#}
{% macro declared_types_of(raw_schema, raw_table) -%}
    {%- set found = {} -%}
    {%- if execute -%}
        {%- set rows = run_query(
            "select c.raw_column, mode() within group (order by c.declared_type)
             from consolidate.load_columns as c
             join consolidate.current_loads as l using (load_id, source_path)
             join consolidate.load_tables as t using (load_id, source_path, source_table)
             where t.raw_schema = '" ~ raw_schema ~ "' and t.raw_table = '" ~ (raw_table | replace("'", "''")) ~ "'
               and c.declared_type is not null
             group by c.raw_column").rows -%}
        {%- for row in rows -%}
            {%- do found.update({row[0]: row[1]}) -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(found) }}
{%- endmacro %}


{#-
    Raw text -> the SQL type a SQLite declaration names (sqlglot's spelling), by SQLite's own affinity
    rules where the name says no more: BOOLEAN -> boolean (0/1, true/false); INT types -> bigint;
    DATETIME / TIMESTAMP -> timestamptz (naive text is UTC); REAL / FLOAT / DOUBLE -> double precision;
    DECIMAL / NUMERIC -> numeric; JSON -> jsonb; anything else (TEXT, VARCHAR(n), UUID, BLOB hex) -> text.
-#}
{% macro cast_to_declared(column, declared_type) -%}
    {%- set kind = (declared_type or '') | upper | replace(' ', '') -%}
    {%- set base = kind.split('(')[0] -%}
    {%- if base == 'BOOLEAN' -%}
        case lower(trim({{ column }})) when '1' then true when 'true' then true when '0' then false when 'false' then false end
    {%- elif base in ('INT', 'INTEGER', 'BIGINT', 'SMALLINT', 'TINYINT', 'MEDIUMINT', 'UBIGINT', 'UINT') -%}
        case when {{ column }} ~ '^\s*[+-]?[0-9]{1,18}\s*$' then trim({{ column }})::bigint end
    {%- elif base in ('DATETIME', 'TIMESTAMP', 'TIMESTAMPTZ', 'DATETIME64') -%}
        {{ text_to_timestamptz(column) }}
    {%- elif base in ('DOUBLE', 'FLOAT', 'REAL') -%}
        consolidate.try_numeric({{ column }})::double precision
    {%- elif base in ('DECIMAL', 'NUMERIC') -%}
        consolidate.try_numeric({{ column }})
    {%- elif base in ('JSON', 'JSONB') -%}
        consolidate.try_jsonb({{ column }})
    {%- else -%}
        {{ column }}
    {%- endif -%}
{%- endmacro %}


{#- staging_lineage's columns, all NULL (a model over a raw table no load has made yet). -#}
{% macro staging_lineage_nulls(source_table) -%}
    '{{ source_table }}'::text as source_table,
    null::text as source_path,
    null::text as source_sha256,
    null::text as load_id,
    null::bigint as source_rowid,
    null::timestamptz as loaded_at
{%- endmacro %}
