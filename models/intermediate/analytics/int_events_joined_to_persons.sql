{{ config(materialized='view') }}
-- Page, screen and track messages with their context and the person the identity models
-- attribute them to today (a view: identity is rebuilt every run, so this is always current).
select
    c.*,
    ep.person_id,
    ep.attribution_rule,
    ep.user_id,
    ep.anonymous_id,
    ep.changed_by_run
from {{ ref('int_events_contextualized') }} as c
inner join {{ ref('int_events_mapped_to_persons') }} as ep on ep.message_id = c.message_id
