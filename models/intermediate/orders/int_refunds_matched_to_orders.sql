-- One row per Order Refunded message. No amount sent = a full refund (is_full_refund).
-- An amount that was sent but is not a number counts as 0 and is flagged, never as full.
-- has_order tells whether the refunded order is in the data; is_currency_mismatch flags a
-- refund sent in another currency than its order's (a refund without currency is in the
-- order's). Neither is applied to an order: both go to orphan_refunds.
with

refunds as (
    select * from {{ ref('stg_segment__order_refunded') }}
),

orders as (
    select order_id, currency from {{ ref('int_orders_deduplicated') }}
)

select
    r.message_id as refund_id,
    r.order_id,
    r.event_at as refunded_at,
    r.currency,
    r.refund_amount,
    not r.amount_sent as is_full_refund,
    r.amount_sent and r.refund_amount is null as is_unparsed_amount,
    o.order_id is not null as has_order,
    o.currency as order_currency,
    coalesce(r.currency <> o.currency, false) as is_currency_mismatch,
    p.person_id,
    r.user_id,
    r.anonymous_id,
    r.source_id
from refunds as r
left join orders as o on o.order_id = r.order_id
left join {{ ref('int_events_mapped_to_persons') }} as p on p.message_id = r.message_id
