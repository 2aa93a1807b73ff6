{{ stg_extended_memory__memory_store_sql(source('raw_extended_memory', 'memory_store')) }}
