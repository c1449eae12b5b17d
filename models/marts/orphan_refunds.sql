-- Refunds that are not applied to any order, kept visible instead of dropped (reason):
-- order_not_in_data: the order was placed before the archive starts, or its order_id was
-- never completed; currency_mismatch: sent in another currency than the order's (never
-- converted, never subtracted from the order).
select
    refund_id,
    order_id,
    case when not has_order then 'order_not_in_data' else 'currency_mismatch' end as reason,
    refunded_at,
    currency,
    order_currency,
    refund_amount,
    is_full_refund,
    is_unparsed_amount,
    person_id,
    user_id,
    anonymous_id,
    source_id
from {{ ref('int_refunds_matched_to_orders') }}
where not has_order or is_currency_mismatch
