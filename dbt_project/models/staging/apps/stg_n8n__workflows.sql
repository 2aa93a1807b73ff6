{{ typed_app_table('raw_n8n', 'workflow_entity') }}
