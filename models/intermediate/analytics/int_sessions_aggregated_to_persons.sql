{{ config(materialized='table') }}
-- One row per person with sessions: the first session (first touch) and the latest session
-- (last touch), for the users mart.
with

ranked as (
    select
        person_id,
        session_id,
        traffic_source,
        utm_medium,
        utm_campaign,
        channel,
        started_at,
        row_number() over (partition by person_id order by started_at, session_id) as first_rank,
        count(*) over (partition by person_id) as session_count
    from {{ ref('sessions') }}
)

select
    f.person_id,
    f.started_at as first_touch_at,
    f.traffic_source as first_touch_source,
    f.utm_medium as first_touch_medium,
    f.utm_campaign as first_touch_campaign,
    f.channel as first_touch_channel,
    l.started_at as last_touch_at,
    l.traffic_source as last_touch_source,
    l.utm_medium as last_touch_medium,
    l.utm_campaign as last_touch_campaign,
    l.channel as last_touch_channel
from ranked as f
inner join ranked as l on l.person_id = f.person_id and l.first_rank = l.session_count
where f.first_rank = 1
