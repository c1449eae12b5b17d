-- One row per Order Completed message (every spelling that snake-cases to order_completed).
-- A reloaded thank-you page gives two rows for one order_id: int_orders_deduplicated keeps one.
{%- set raw = segment_table_columns('order_completed') %}

with

source as (
    {{ segment_deduplicated_source('order_completed', raw) }}
),

renamed as (
    select
        {{ segment_common_columns(raw) }},
        {{ segment_column(raw, ['event_text', 'event'], 'string') }} as event_name,
        {{ segment_column(raw, 'order_id', 'trimmed') }} as order_id,
        {{ segment_column(raw, 'checkout_id', 'trimmed') }} as checkout_id,
        {{ segment_column(raw, 'currency', 'currency') }} as currency,
        {{ segment_column(raw, 'subtotal', 'money') }} as subtotal,
        {{ segment_column(raw, 'total', 'money') }} as total,
        {{ segment_column(raw, 'revenue', 'money') }} as revenue,
        {{ segment_column(raw, 'tax', 'money') }} as tax,
        {{ segment_column(raw, 'shipping', 'money') }} as shipping,
        {{ segment_column(raw, 'discount', 'money') }} as discount,
        {{ segment_column(raw, 'coupon', 'trimmed') }} as coupon,
        {{ segment_column(raw, 'products', 'string') }} as products_json
    from source
)

select * from renamed
