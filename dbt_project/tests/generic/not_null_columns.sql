{#-
    Fails for every row with NULL in any of `columns`: not_null for several columns in one pass over the
    model (a view computes its columns once per row read, and a build runs one test node instead of one each).
-#}
{% test not_null_columns(model, columns) %}

select {{ columns | join(', ') }}
from {{ model }}
where {% for column in columns %}{{ column }} is null{{ ' or ' if not loop.last }}{% endfor %}

{% endtest %}
