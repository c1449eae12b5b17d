{#-
  One row per (person_id, id type, id value) (README "identity_graph"): the bridge analysts
  join to any table holding a user id or an anonymous id. link_rule says why the id belongs
  to the person:
  - person_id: the user id that is the person's id (its earliest-seen user id);
  - alias: a user id (or anonymous id) joined through alias calls;
  - seen_with_user_id: an anonymous id that arrived on a message carrying the person's user id;
  - shared_device_first_user: an anonymous id seen with several persons' user ids (shared
    device): mapped to the first identified, its events attributed by time;
  - anonymous_only: an anonymous id never identified (the person is the anonymous id).

  Incremental by identifier: a row is a function of its identifier's row in
  int_identifiers_mapped_to_persons and of whether an alias names the id, and a new alias
  naming an id makes the map rewrite that id's row. So the pre_hook deletes the rows whose
  map row is gone or was written (changed_by_run) after this table's newest row, and the
  build adds the map's rows written since. A table where rows cannot be deleted (Spark on
  plain Parquet).
-#}
{%- set replaceable = segment_rows_replaceable() %}
{#- append: the pre_hook deleted every row the build writes again, no delete by key needed -#}
{{ config(
    materialized=('incremental' if replaceable else 'table'),
    incremental_strategy=('append' if replaceable else none),
    on_schema_change='append_new_columns',
    pre_hook="{{ segment_identity_graph_delete_changed(ref('int_identifiers_mapped_to_persons')) }}",
) }}

with

person_map as (
    select * from {{ ref('int_identifiers_mapped_to_persons') }}
    {%- if is_incremental() %}
    where changed_by_run > {{ segment_newest_marker(this) }}
    {%- endif %}
),

-- ids named by alias calls (the small aliases table, not the whole link graph; staging
-- cleaned the ids)
aliases as (
    select previous_id, user_id
    from {{ ref('stg_segment__aliases') }}
),

alias_ids as (
    select previous_id as identifier from aliases where previous_id is not null and user_id is not null
    union
    select user_id as identifier from aliases where previous_id is not null and user_id is not null
)

select
    m.person_id,
    m.identifier_type as id_type,
    m.identifier as id_value,
    m.first_seen_at,
    m.last_seen_at,
    case
        when m.identifier_type = 'user' and m.identifier = m.person_id then 'person_id'
        when m.is_shared_device then 'shared_device_first_user'
        when a.identifier is not null then 'alias'
        when m.identifier_type = 'anonymous' and m.identifier = m.person_id then 'anonymous_only'
        else 'seen_with_user_id'
    end as link_rule,
    m.is_shared_device,
    {{ segment_run_marker() }} as changed_by_run
from person_map as m
left join alias_ids as a on a.identifier = m.identifier
