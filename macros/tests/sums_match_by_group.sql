{#-
  Reconciliation: sum(column_name) per `group_by` in this model equals sum(`to_column`) per
  `to_group_by` in `to`, within `tolerance`, after the optional `where` / `to_where` filters.
  A group present on one side only fails unless its sum is 0. Used for "money in the users
  marts equals money in orders, per currency".
-#}
{% test sums_match_by_group(model, column_name, group_by, to, to_column, to_group_by=none, where=none, to_where=none, tolerance=0.0001) %}
with
left_side as (
    select {{ group_by }} as group_key, sum({{ column_name }}) as total
    from {{ model }}
    {% if where %}where {{ where }}{% endif %}
    group by {{ group_by }}
),
right_side as (
    select {{ to_group_by or group_by }} as group_key, sum({{ to_column }}) as total
    from {{ to }}
    {% if to_where %}where {{ to_where }}{% endif %}
    group by {{ to_group_by or group_by }}
),
compared as (
    select
        coalesce(l.group_key, r.group_key) as group_key,
        coalesce(l.total, 0) as model_total,
        coalesce(r.total, 0) as to_total
    from left_side as l
    full outer join right_side as r on l.group_key = r.group_key
)
select *
from compared
where abs(model_total - to_total) > {{ tolerance }}
{% endtest %}
