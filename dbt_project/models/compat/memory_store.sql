{{ config(alias='memory_store', schema='compat_extended_memory', materialized='view',
          post_hook=["{{ compat_write_trigger(this, 'write_compat_memory_store') }}"]) }}

{#-
    extended-memory's `memory_store`, read from unified_memory's `extended-memory` namespace, for the
    extended-memory application (search_path = compat_extended_memory): value as the application stores it,
    JSON text but for pickle and what JSON cannot hold (consolidate.extended_memory_value), type as the
    application wrote it when that fits the value, else named from the value (consolidate.extended_memory_type;
    both in macros/compat.sql, and `consolidate rollback` writes both back), times as naive UTC text
    `YYYY-MM-DD HH:MM:SS.ffffff`.
-#}

select
    key,
    consolidate.extended_memory_value(value, data_type) as value,
    consolidate.extended_memory_type(value, data_type, metadata) as type,
    to_char(created_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') as created_at,
    to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') as updated_at,
    to_char(accessed_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') as accessed_at,
    access_count
from {{ ref('unified_memory') }}
where namespace = 'extended-memory'
