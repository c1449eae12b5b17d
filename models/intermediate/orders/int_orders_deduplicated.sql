-- One row per order_id: its first Order Completed message (by event time, then receipt).
-- Repeated completions of one order (a reloaded thank-you page, a retried call with a new
-- messageId) count once; completion_count says how many were seen.
with

completions as (
    select
        c.*,
        p.person_id,
        row_number() over (
            partition by c.order_id
            order by c.event_at, c.received_at, c.message_id
        ) as completion_rank,
        count(*) over (partition by c.order_id) as completion_count
    from {{ ref('stg_segment__order_completed') }} as c
    left join {{ ref('int_events_mapped_to_persons') }} as p on p.message_id = c.message_id
    where c.order_id is not null
)

select
    order_id,
    message_id,
    person_id,
    user_id,
    anonymous_id,
    event_name,
    event_at as placed_at,
    coalesce(currency, '{{ var("segment_default_currency") }}') as currency,
    subtotal,
    total,
    revenue,
    tax,
    shipping,
    discount,
    coupon,
    checkout_id,
    products_json,
    -- order_items compares it to find a re-delivered completion with other products
    {{ segment_hash_number('products_json') }} as products_fingerprint,
    completion_count,
    source_id
from completions
where completion_rank = 1
