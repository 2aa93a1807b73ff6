{{ typed_app_table('raw_n8n', 'credentials_entity', excluded_columns=['data']) }}
