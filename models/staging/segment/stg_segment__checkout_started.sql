-- One row per Checkout Started message (Segment e-commerce spec; the funnel's third step).
{%- set raw = segment_table_columns('checkout_started') %}

with

source as (
    {{ segment_deduplicated_source('checkout_started', raw) }}
),

renamed as (
    select
        {{ segment_common_columns(raw) }},
        {{ segment_column(raw, ['event_text', 'event'], 'string') }} as event_name,
        {{ segment_column(raw, 'order_id', 'trimmed') }} as order_id,
        {{ segment_column(raw, 'checkout_id', 'trimmed') }} as checkout_id,
        {{ segment_column(raw, 'currency', 'currency') }} as currency,
        {{ segment_column(raw, 'total', 'money') }} as total,
        {{ segment_column(raw, 'revenue', 'money') }} as revenue,
        {{ segment_column(raw, 'discount', 'money') }} as discount,
        {{ segment_column(raw, 'coupon', 'trimmed') }} as coupon
    from source
)

select * from renamed
