{#- Fails on identifier values that are padded or junk (see segment_clean_id). -#}
{% test not_junk_id(model, column_name) %}
select {{ column_name }}
from {{ model }}
where {{ column_name }} is not null
  and ({{ segment_clean_id(column_name) }} is null or {{ column_name }} <> trim({{ column_name }}))
{% endtest %}
