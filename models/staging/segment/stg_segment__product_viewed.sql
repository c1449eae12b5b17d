-- One row per Product Viewed message (Segment e-commerce spec; the funnel's first step).
{%- set raw = segment_table_columns('product_viewed') %}

with

source as (
    {{ segment_deduplicated_source('product_viewed', raw) }}
),

renamed as (
    select
        {{ segment_common_columns(raw) }},
        {{ segment_column(raw, ['event_text', 'event'], 'string') }} as event_name,
        {{ segment_column(raw, 'product_id', 'trimmed') }} as product_id,
        {{ segment_column(raw, 'sku', 'trimmed') }} as sku,
        {{ segment_column(raw, 'name', 'string') }} as product_name,
        {{ segment_column(raw, 'category', 'string') }} as category,
        {{ segment_column(raw, 'price', 'money') }} as price,
        {{ segment_column(raw, 'currency', 'currency') }} as currency
    from source
)

select * from renamed
