{#-
  One row per order: the session its (first) Order Completed message belongs to, and the
  person's last non-direct session that started at most var analytics_attribution_lookback_days
  before the order was placed (and not after it), for the orders mart.

  Incremental by order. A row is a function of the order's person_id, placed_at and
  message_id (kept on the row) and of its person's sessions in the sessions mart (the
  completion's session is one of them). The pre_hooks delete the rows
  - of orders whose person_id, placed_at or message_id in int_orders_deduplicated differs,
    or that are gone (macro segment_delete_changed_rows);
  - of persons with a session that sessions wrote since this table's newest changed_by_run
    (the change feed: a new, changed or re-attributed session of the person, including the
    completion's new session when it moved);
  - whose session_id or attributed_session_id is no longer in sessions (a session merged
    into another, or left out as a bot's). A removed session that was neither leaves the
    row as it is: the latest candidate among the others is unchanged.
  Then the orders without a row are built. A table on Spark with plain Parquet (no row
  deletes there), rebuilt in full every run.
-#}
{{ config(
    materialized=('incremental' if segment_rows_replaceable() else 'table'),
    incremental_strategy='append',
    on_schema_change='append_new_columns',
    pre_hook=[
        "{{ segment_delete_changed_rows('order_id', ref('int_orders_deduplicated'), ['person_id', 'placed_at', 'message_id']) }}",
        "{{ segment_delete_orders_of_changed_sessions(ref('sessions')) }}",
    ],
) }}

with

orders as (
    select order_id, person_id, placed_at, message_id
    from {{ ref('int_orders_deduplicated') }} as o
    {%- if is_incremental() %}
    -- the pre_hooks deleted every changed order: build the orders without a row
    where not exists (select 1 from {{ this }} as kept where kept.order_id = o.order_id)
    {%- endif %}
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
    c.channel as attributed_channel,
    o.person_id,
    o.placed_at,
    o.message_id,
    {{ segment_run_marker() }} as changed_by_run
from orders as o
left join order_sessions as os on os.order_id = o.order_id
left join candidates as c on c.order_id = o.order_id and c.touch_rank = 1
