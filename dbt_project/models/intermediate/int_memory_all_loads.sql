{{ config(materialized='view') }}
{#- Every memory version of every load, current or not: what `consolidate lineage` reads. -#}

{%- set memory_models = [
    'stg_claude_flow_v2__memory_entries',
    'stg_claude_flow_v3__memory_entries',
    'stg_extended_memory__memory_store',
] -%}

{% for model in memory_models %}
select {{ memory_version_columns() | join(', ') }}
from {{ ref(model) }}
{% if not loop.last %}union all{% endif %}
{% endfor %}
