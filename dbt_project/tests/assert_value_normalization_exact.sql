-- The value rule of macros/memory_values.sql, compared as jsonb inside PostgreSQL. dbt unit tests compare
-- results in Python after psycopg2 has decoded jsonb, where the JSON number 42 and the JSON string "42"
-- look alike; this test tells them apart. Also the flag each value raises (NULL: none).

with cases (raw_value, storage_type, is_binary, expected_value, expected_data_type, expected_flag) as (

    values
        ('{"a": [1, 2]}',                             null,     false, '{"a": [1, 2]}',                 'json',             null),
        ('42',                                        null,     false, '42',                            'json',             null),
        ('"42"',                                      null,     false, '"42"',                          'json',             null),
        ('true',                                      null,     false, 'true',                          'json',             null),
        ('null',                                      null,     false, 'null',                          'json',             null),
        (null,                                        null,     false, 'null',                          'json',             null),
        ('hello world, not JSON',                     null,     false, '"hello world, not JSON"',       'text',             null),
        ('# Markdown\n- item',                        null,     false, '"# Markdown\\n- item"',         'text',             null),
        ('Infinity and beyond',                       null,     false, '"Infinity and beyond"',         'text',             null),
        ('__compressed__eyJzZXNzaW9uSWQiOiJzMSJ9',    null,     false, '{"sessionId": "s1"}',           'json',             null),
        ('__compressed__NDI=',                        null,     false, '42',                            'json',             null),
        ('__compressed__cGxhaW4=',                    null,     false, '"__compressed__cGxhaW4="',      'text',             'invalid_compressed:value'),
        ('__compressed__!!!',                         null,     false, '"__compressed__!!!"',           'text',             'invalid_compressed:value'),
        ('__compressed__//79',                        null,     false, '"__compressed__//79"',          'text',             'invalid_compressed:value'),
        ('"\u0000"',                                  null,     false, '"\"\\u0000\""',                 'unsupported_json', 'json_rejected_by_postgres:value'),
        ('"\ud800"',                                  null,     false, '"\"\\ud800\""',                 'unsupported_json', 'json_rejected_by_postgres:value'),
        ('1e1000000',                                 null,     false, '"1e1000000"',                   'unsupported_json', 'json_rejected_by_postgres:value'),
        ('NaN',                                       null,     false, '"NaN"',                         'unsupported_json', 'json_rejected_by_postgres:value'),
        ('{"a": NaN, "b": [Infinity, -Infinity]}',    null,     false, '"{\"a\": NaN, \"b\": [Infinity, -Infinity]}"', 'unsupported_json', 'json_rejected_by_postgres:value'),
        ('{"a": -NaN}',                               null,     false, '"{\"a\": -NaN}"',               'text',             'malformed_json:value'),
        ('{"truncated": ',                            null,     false, '"{\"truncated\": "',            'text',             'malformed_json:value'),
        ('  ["unclosed"',                             null,     false, '"  [\"unclosed\""',             'text',             'malformed_json:value'),
        ('[1, 2',                                     null,     false, '"[1, 2"',                       'text',             'malformed_json:value'),
        ('"C:\path"',                                null,     false, '"\"C:\\path\""',               'text',             'malformed_json:value'),
        ('{}}',                                       null,     false, '"{}}"',                         'text',             'malformed_json:value'),
        ('[INFO] build started',                      null,     false, '"[INFO] build started"',        'text',             null),
        ('{{ template }}',                            null,     false, '"{{ template }}"',              'text',             null),
        ('"Hi," she said',                            null,     false, '"\"Hi,\" she said"',            'text',             null),
        ('\x00ff7b7d',                                null,     true,  '"\\x00ff7b7d"',                 'binary',           null),
        ('\x7b7d',                                    'pickle', true,  '"\\x7b7d"',                     'binary',           null),
        ('gASVCAAAAAAAAACMBGFiY2SULg==',              'pickle', false, '"gASVCAAAAAAAAACMBGFiY2SULg=="', 'pickle',          null),
        ('12345678',                                  'pickle', false, '"12345678"',                    'pickle',           null),
        ('"str"',                                     'str',    false, '"str"',                         'json',             null),
        -- nested 512 levels: JSON; 513 (arrays, objects, or not even JSON): the text, flagged, never parsed
        (repeat('[', 512) || repeat(']', 512),        null,     false, repeat('[', 512) || repeat(']', 512), 'json',    null),
        (repeat('[', 513) || repeat(']', 513),        null,     false, to_jsonb(repeat('[', 513) || repeat(']', 513))::text, 'text', 'json_too_deep:value'),
        (repeat('{"a":', 513) || '1' || repeat('}', 513), null, false, to_jsonb(repeat('{"a":', 513) || '1' || repeat('}', 513))::text, 'text', 'json_too_deep:value'),
        (repeat('[', 3000),                           null,     false, to_jsonb(repeat('[', 3000))::text, 'text',             'json_too_deep:value'),
        ('["' || repeat('[', 3000) || '"]',           null,     false, '["' || repeat('[', 3000) || '"]', 'json',           null),
        ('__compressed__' || encode(convert_to(repeat('[', 600) || repeat(']', 600), 'UTF8'), 'base64'),
                                                      null,     false, to_jsonb('__compressed__' || encode(convert_to(repeat('[', 600) || repeat(']', 600), 'UTF8'), 'base64'))::text,
                                                                                                        'text',             'invalid_compressed:value')

),

normalized as (

    select
        cases.*,
        {{ normalize_memory_value('cases.raw_value', storage_type='cases.storage_type', is_binary='cases.is_binary') }}
    from cases

)

select *
from normalized
where value is distinct from expected_value::jsonb
   or data_type is distinct from expected_data_type
   or flag is distinct from expected_flag
