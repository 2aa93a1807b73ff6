-- The value rule of normalize_memory_value, compared as jsonb inside PostgreSQL. dbt unit tests compare
-- results in Python after psycopg2 has decoded jsonb, where the JSON number 42 and the JSON string "42"
-- look alike; this test tells them apart.

with cases (raw_value, storage_type, expected_value, expected_data_type) as (

    values
        ('{"a": [1, 2]}',                             null,     '{"a": [1, 2]}',                 'json'),
        ('42',                                        null,     '42',                            'json'),
        ('"42"',                                      null,     '"42"',                          'json'),
        ('true',                                      null,     'true',                          'json'),
        ('null',                                      null,     'null',                          'json'),
        (null,                                        null,     'null',                          'json'),
        ('hello world, not JSON',                     null,     '"hello world, not JSON"',       'text'),
        ('# Markdown\n- item',                        null,     '"# Markdown\\n- item"',         'text'),
        ('__compressed__eyJzZXNzaW9uSWQiOiJzMSJ9',    null,     '{"sessionId": "s1"}',           'json'),
        ('__compressed__NDI=',                        null,     '42',                            'json'),
        ('__compressed__cGxhaW4=',                    null,     '"__compressed__cGxhaW4="',      'text'),
        ('__compressed__!!!',                         null,     '"__compressed__!!!"',           'text'),
        ('__compressed__//79',                        null,     '"__compressed__//79"',          'text'),
        ('"\u0000"',                                  null,     '"\"\\u0000\""',                 'text'),
        ('"\ud800"',                                  null,     '"\"\\ud800\""',                 'text'),
        ('1e1000000',                                 null,     '"1e1000000"',                   'text'),
        ('gASVCAAAAAAAAACMBGFiY2SULg==',              'pickle', '"gASVCAAAAAAAAACMBGFiY2SULg=="', 'pickle'),
        ('12345678',                                  'pickle', '"12345678"',                    'pickle'),
        ('"str"',                                     'str',    '"str"',                         'json')

),

normalized as (

    select
        cases.*,
        {{ normalize_memory_value('cases.raw_value', storage_type='cases.storage_type') }}
    from cases

)

select *
from normalized
where value is distinct from expected_value::jsonb
   or data_type is distinct from expected_data_type
