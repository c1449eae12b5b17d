{{ config(materialized='view') }}
-- Page, screen and track messages with their context and the person the identity models
-- attribute them to today (a view: identity is rebuilt every run, so this is always current).
select
    c.*,
    ep.person_id,
    ep.attribution_rule,
    ep.user_id,
    ep.anonymous_id
from {{ ref('int_analytics_event_context') }} as c
inner join {{ ref('int_identity_event_persons') }} as ep on ep.message_id = c.message_id
