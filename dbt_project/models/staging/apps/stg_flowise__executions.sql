{{ typed_app_table('raw_flowise', 'execution') }}
