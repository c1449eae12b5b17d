-- One row per Product Added message (Segment e-commerce spec; the funnel's second step).
{%- set raw = segment_table_columns('product_added') %}

with

source as (
    {{ segment_deduplicated_source('product_added', raw) }}
),

renamed as (
    select
        {{ segment_common_columns(raw) }},
        {{ segment_column(raw, ['event_text', 'event'], 'string') }} as event_name,
        {{ segment_column(raw, 'cart_id', 'trimmed') }} as cart_id,
        {{ segment_column(raw, 'product_id', 'trimmed') }} as product_id,
        {{ segment_column(raw, 'sku', 'trimmed') }} as sku,
        {{ segment_column(raw, 'name', 'string') }} as product_name,
        {{ segment_column(raw, 'category', 'string') }} as category,
        {{ segment_column(raw, 'price', 'money') }} as price,
        {{ segment_column(raw, 'quantity', 'bigint') }} as quantity
    from source
)

select * from renamed
