-- One row per person and currency with orders: money is never summed across currencies.
-- is_only_currency marks persons whose orders all use this one currency (those totals are
-- repeated on the users mart). Money follows orders: cancelled orders add 0 to gross,
-- refunded and net, so gross_total - refunded_amount = net_total. first_order_at and
-- last_order_at are over non-cancelled orders, as on users (NULL if all were cancelled).
with

orders as (
    select * from {{ ref('orders') }} where person_id is not null
),

totals as (
    select
        person_id,
        currency,
        cast(sum(case when is_cancelled then 0 else 1 end) as {{ dbt.type_bigint() }}) as order_count,
        cast(sum(case when is_cancelled then 1 else 0 end) as {{ dbt.type_bigint() }}) as cancelled_order_count,
        cast(sum(gross_total) as {{ segment_type_money() }}) as gross_total,
        cast(sum(refunded_amount) as {{ segment_type_money() }}) as refunded_amount,
        cast(sum(net_total) as {{ segment_type_money() }}) as net_total,
        min(case when not is_cancelled then placed_at end) as first_order_at,
        max(case when not is_cancelled then placed_at end) as last_order_at
    from orders
    group by person_id, currency
)

select
    {{ dbt.concat(['person_id', "'|'", 'currency']) }} as person_currency_id,
    totals.*,
    count(*) over (partition by person_id) = 1 as is_only_currency
from totals
