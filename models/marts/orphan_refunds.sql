-- Refunds whose order is not in the data (placed before the archive starts, or an order_id
-- that was never completed). Kept visible instead of dropped; never added to orders.
select
    refund_id,
    order_id,
    refunded_at,
    currency,
    refund_amount,
    is_full_refund,
    is_unparsed_amount,
    person_id,
    user_id,
    anonymous_id,
    source_id
from {{ ref('int_order_refunds') }}
where not has_order
