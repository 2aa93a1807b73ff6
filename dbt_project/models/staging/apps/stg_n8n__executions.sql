{{ typed_app_table('raw_n8n', 'execution_entity') }}
