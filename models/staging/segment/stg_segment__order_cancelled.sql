-- One row per Order Cancelled message.
{%- set raw = segment_table_columns('order_cancelled') %}

with

source as (
    {{ segment_deduplicated_source('order_cancelled', raw) }}
),

renamed as (
    select
        {{ segment_common_columns(raw) }},
        {{ segment_column(raw, ['event_text', 'event'], 'string') }} as event_name,
        {{ segment_column(raw, 'order_id', 'trimmed') }} as order_id,
        {{ segment_column(raw, 'currency', 'currency') }} as currency,
        {{ segment_column(raw, 'total', 'money') }} as total,
        {{ segment_column(raw, 'reason', 'string') }} as reason
    from source
)

select * from renamed
