{#-
  One row per person and currency with orders: money is never summed across currencies.
  is_only_currency marks persons whose orders all use this one currency (those totals are
  repeated on the users mart). Money follows orders: cancelled orders add 0 to gross,
  refunded and net, so gross_total - refunded_amount = net_total. first_order_at and
  last_order_at are over non-cancelled orders, as on users (NULL if all were cancelled).

  Incremental by person: a person's rows are a function of the person's rows in orders only,
  and keep orders_fingerprint, a hash of those (macro segment_person_orders_fingerprints),
  recomputed from orders' current rows every run. The pre_hook deletes the rows of persons
  whose fingerprint differs or who have no order left (merged into another person), then the
  persons without rows are built. A table on Spark with plain Parquet (no row deletes there).
-#}
{{ config(
    materialized=('incremental' if segment_rows_replaceable() else 'table'),
    incremental_strategy='append',
    on_schema_change='append_new_columns',
    pre_hook="{{ segment_delete_changed_rows('person_id', '(' ~ segment_person_orders_fingerprints() ~ ')', ['orders_fingerprint']) }}",
) }}

with

orders as (
    select *
    from {{ ref('orders') }} as o
    where person_id is not null
    {%- if is_incremental() %}
    -- the pre_hook deleted every changed person: build the persons without rows
    and not exists (select 1 from {{ this }} as kept where kept.person_id = o.person_id)
    {%- endif %}
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
    {{ dbt.concat(['totals.person_id', "'|'", 'currency']) }} as person_currency_id,
    totals.*,
    count(*) over (partition by totals.person_id) = 1 as is_only_currency,
    cast(f.orders_fingerprint as {{ dbt.type_bigint() }}) as orders_fingerprint
from totals
inner join ({{ segment_person_orders_fingerprints('orders') }}) as f on f.person_id = totals.person_id
