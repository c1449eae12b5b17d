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
-#}
with

person_map as (
    select * from {{ ref('int_identifiers_mapped_to_persons') }}
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
    m.is_shared_device
from person_map as m
left join alias_ids as a on a.identifier = m.identifier
