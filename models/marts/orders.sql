{#-
  One row per order_id that has an Order Completed message (README, "Marts").
  Money rules:
  - amounts come from the order's first completion; repeated completions count once;
  - refunded_amount: partial refunds add up (capped at total); any refund without an amount
    is a full refund (= total); amounts sent as strings are parsed in staging;
  - a refund in another currency than the order's is not applied (see orphan_refunds);
  - an Order Cancelled message makes the order cancelled, and a cancelled order is out of
    the money: gross_total, refunded_amount and net_total are 0 (refunds received for it
    still count in refund_count);
  - gross_total = total otherwise, net_total = gross_total - refunded_amount, always;
  - order_sequence_number counts a person's non-cancelled orders by placed_at (NULL for
    cancelled orders); is_first_order = sequence 1.
  - reporting_*: the three amounts in var reporting_currency at the seed exchange_rates'
    rate (NULL when the seed has no rate for the order's currency).
  Refunds of orders that are not in the data are in orphan_refunds, not here.
-#}
with

orders as (
    select * from {{ ref('int_orders_deduplicated') }}
),

item_totals as (
    select
        order_id,
        count(*) as line_count,
        cast(sum(quantity) as {{ dbt.type_bigint() }}) as item_count,
        cast(sum(line_total) as {{ segment_type_money() }}) as items_subtotal
    from {{ ref('order_items') }}
    group by order_id
),

refund_totals as (
    select
        order_id,
        count(*) as refund_count,
        coalesce(sum(refund_amount), 0) as partial_refund_sum,
        max(case when is_full_refund then 1 else 0 end) as has_full_refund,
        max(refunded_at) as last_refunded_at
    from {{ ref('int_refunds_matched_to_orders') }}
    where has_order and not is_currency_mismatch
    group by order_id
),

cancellations as (
    select order_id, min(event_at) as cancelled_at
    from {{ ref('stg_segment__order_cancelled') }}
    where order_id is not null
    group by order_id
),

rates as (
    select currency, rate_to_reporting
    from {{ ref('exchange_rates') }}
    where reporting_currency = '{{ var("reporting_currency") }}'
),

amounts as (
    select
        o.*,
        coalesce(i.line_count, 0) as line_count,
        coalesce(i.item_count, 0) as item_count,
        i.items_subtotal,
        coalesce(r.refund_count, 0) as refund_count,
        r.last_refunded_at,
        c.cancelled_at,
        c.cancelled_at is not null as is_cancelled,
        cast(
            case
                when r.refund_count is null or c.cancelled_at is not null then 0
                when r.has_full_refund = 1 then o.total
                when o.total is null then r.partial_refund_sum
                when r.partial_refund_sum > o.total then o.total
                else r.partial_refund_sum
            end
        as {{ segment_type_money() }}) as refunded_amount
    from orders as o
    left join item_totals as i on i.order_id = o.order_id
    left join refund_totals as r on r.order_id = o.order_id
    left join cancellations as c on c.order_id = o.order_id
),

derived as (
    select
        *,
        case
            when is_cancelled then 'cancelled'
            when refunded_amount > 0 and refunded_amount >= total then 'refunded'
            when refunded_amount > 0 then 'partially_refunded'
            else 'completed'
        end as status,
        cast(case when is_cancelled then 0 else total end as {{ segment_type_money() }}) as gross_total,
        cast(
            case when is_cancelled then 0 else total end - refunded_amount
        as {{ segment_type_money() }}) as net_total,
        cast(case
            when not is_cancelled and person_id is not null then row_number() over (
                partition by person_id, is_cancelled order by placed_at, order_id
            )
        end as {{ dbt.type_int() }}) as order_sequence_number
    from amounts
)

select
    derived.order_id,
    derived.person_id,
    derived.placed_at,
    derived.currency,
    subtotal,
    total,
    revenue,
    tax,
    shipping,
    discount,
    coupon,
    gross_total,
    refunded_amount,
    refund_count,
    last_refunded_at,
    is_cancelled,
    cancelled_at,
    status,
    net_total,
    '{{ var("reporting_currency") }}' as reporting_currency,
    cast(gross_total * rates.rate_to_reporting as {{ segment_type_money() }}) as reporting_gross_total,
    cast(refunded_amount * rates.rate_to_reporting as {{ segment_type_money() }}) as reporting_refunded_amount,
    -- each amount rounded once, so reporting gross - refunded = net exactly
    cast(
        cast(gross_total * rates.rate_to_reporting as {{ segment_type_money() }})
        - cast(refunded_amount * rates.rate_to_reporting as {{ segment_type_money() }})
    as {{ segment_type_money() }}) as reporting_net_total,
    item_count,
    line_count,
    items_subtotal,
    order_sequence_number,
    coalesce(order_sequence_number = 1, false) as is_first_order,
    completion_count,
    derived.message_id,
    user_id,
    anonymous_id,
    event_name,
    checkout_id,
    source_id,
    touch.session_id,
    touch.attributed_session_id,
    touch.attributed_source,
    touch.attributed_medium,
    touch.attributed_campaign,
    touch.attributed_channel
from derived
left join rates on rates.currency = derived.currency
left join {{ ref('int_sessions_attributed_to_orders') }} as touch on touch.order_id = derived.order_id
