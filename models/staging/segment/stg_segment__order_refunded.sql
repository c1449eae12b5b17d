-- One row per Order Refunded message. refund_amount is `total` (Segment's example) or,
-- failing that, `amount`. amount_sent tells "no amount sent" (a full refund) apart from
-- "an amount was sent but is not a number" (refund_amount NULL, amount_sent true).
{%- set raw = segment_table_columns('order_refunded') %}

with

source as (
    {{ segment_deduplicated_source('order_refunded', raw) }}
),

renamed as (
    select
        {{ segment_common_columns(raw) }},
        {{ segment_column(raw, ['event_text', 'event'], 'string') }} as event_name,
        {{ segment_column(raw, 'order_id', 'trimmed') }} as order_id,
        {{ segment_column(raw, 'currency', 'currency') }} as currency,
        {{ segment_column(raw, ['total', 'amount'], 'money') }} as refund_amount,
        {{ segment_column(raw, ['total', 'amount'], 'present') }} as amount_sent,
        {{ segment_column(raw, 'products', 'string') }} as products_json
    from source
)

select * from renamed
