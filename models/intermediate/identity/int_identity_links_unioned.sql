{#-
  Every distinct link of the identity graph and where it comes from: the input of
  int_identifiers_mapped_to_persons, and the answer to "why are these two ids one person?".
  - message: one message carried both an anonymous id and a user id;
  - alias: an alias call linked previous_id to user_id. previous_id is typed `user` when
    that value was ever seen as a user id (on any message, aliases included), else
    `anonymous` (seen as one, or never seen elsewhere: what the device called the person
    before the alias). A user id aliased to itself links nothing.
  Ids arrive cleaned by staging.
-#}
with

events as (
    select message_type, anonymous_id, user_id, previous_id, event_at
    from {{ ref('int_events_unioned') }}
),

known_user_ids as (
    select distinct user_id as identifier from events where user_id is not null
),

all_links as (
    select
        'anonymous' as from_type,
        anonymous_id as from_id,
        user_id as to_id,
        'message' as link_source,
        event_at
    from events
    where anonymous_id is not null and user_id is not null
    union all
    select
        case when known.identifier is not null then 'user' else 'anonymous' end as from_type,
        e.previous_id as from_id,
        e.user_id as to_id,
        'alias' as link_source,
        e.event_at
    from events as e
    left join known_user_ids as known on known.identifier = e.previous_id
    where e.message_type = 'alias' and e.previous_id is not null and e.user_id is not null
)

select
    from_type,
    from_id,
    'user' as to_type,
    to_id,
    link_source,
    min(event_at) as first_linked_at,
    max(event_at) as last_linked_at,
    count(*) as link_count
from all_links
where not (from_type = 'user' and from_id = to_id)
group by from_type, from_id, to_id, link_source
