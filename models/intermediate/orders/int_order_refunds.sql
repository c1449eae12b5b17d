-- One row per Order Refunded message. refund_amount NULL = no amount sent = a full refund.
-- has_order tells whether the refunded order is in the data (orphans go to orphan_refunds).
with

refunds as (
    select * from {{ ref('stg_segment__order_refunded') }}
),

orders as (
    select order_id from {{ ref('int_orders_completed') }}
)

select
    r.message_id as refund_id,
    r.order_id,
    r.event_at as refunded_at,
    r.currency,
    r.refund_amount,
    r.refund_amount is null as is_full_refund,
    o.order_id is not null as has_order,
    p.person_id,
    r.user_id,
    r.anonymous_id,
    r.source_id
from refunds as r
left join orders as o on o.order_id = r.order_id
left join {{ ref('int_identity_event_persons') }} as p on p.message_id = r.message_id
