{{ config(materialized='table') }}
-- One row per order: the session its (first) Order Completed message belongs to, and the
-- person's last non-direct session that started at most var analytics_attribution_lookback_days
-- before the order was placed (and not after it), for the orders mart.
with

orders as (
    select order_id, person_id, placed_at, message_id from {{ ref('int_orders_deduplicated') }}
),

order_sessions as (
    select o.order_id, e.session_id
    from orders as o
    inner join {{ ref('int_events_sessionized') }} as e on e.message_id = o.message_id
    -- only sessions in the sessions mart (a bot's order has none unless bots are included)
    inner join {{ ref('sessions') }} as s on s.session_id = e.session_id
),

candidates as (
    select
        o.order_id,
        s.session_id,
        s.traffic_source,
        s.utm_medium,
        s.utm_campaign,
        s.channel,
        row_number() over (partition by o.order_id order by s.started_at desc, s.session_id desc) as touch_rank
    from orders as o
    inner join {{ ref('sessions') }} as s
        on s.person_id = o.person_id
        and s.channel <> 'direct'
        and s.started_at <= o.placed_at
        and s.started_at >= {{ dbt.dateadd('day', -1 * (var('analytics_attribution_lookback_days') | int), 'o.placed_at') }}
)

select
    o.order_id,
    os.session_id,
    c.session_id as attributed_session_id,
    c.traffic_source as attributed_source,
    c.utm_medium as attributed_medium,
    c.utm_campaign as attributed_campaign,
    c.channel as attributed_channel
from orders as o
left join order_sessions as os on os.order_id = o.order_id
left join candidates as c on c.order_id = o.order_id and c.touch_rank = 1
