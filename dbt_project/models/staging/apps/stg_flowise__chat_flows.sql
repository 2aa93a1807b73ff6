{{ typed_app_table('raw_flowise', 'chat_flow') }}
