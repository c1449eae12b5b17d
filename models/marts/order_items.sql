{#-
  One row per product line of an order's products[] (from the order's counted completion).
  quantity defaults to 1 when absent; price and quantity sent as strings are parsed.

  Incremental by order: an order's lines depend only on its row in int_orders_deduplicated,
  and they keep its message_id (the counted completion), person_id, placed_at, currency and
  products_fingerprint. The pre_hook deletes the lines of orders whose row differs in one of
  those, or is gone (a re-delivered copy of the completion at another time or with other
  products, or a merge of persons; macro
  segment_delete_changed_rows); then the orders without lines are parsed (orders without
  products have none, and are parsed again each run: a null or empty array costs nothing).
  A table on Spark with plain Parquet (no row deletes there), rebuilt in full every run.
-#}
{{ config(
    materialized=('incremental' if segment_rows_replaceable() else 'table'),
    incremental_strategy='append',
    on_schema_change='append_new_columns',
    pre_hook="{{ segment_delete_changed_rows('order_id', ref('int_orders_deduplicated'), ['message_id', 'person_id', 'placed_at', 'currency', 'products_fingerprint']) }}",
) }}

with

orders as (
    select order_id, message_id, person_id, placed_at, currency, products_json, products_fingerprint
    from {{ ref('int_orders_deduplicated') }} as o
    {%- if is_incremental() %}
    -- the pre_hook deleted the lines of every changed order: parse the orders without lines
    where not exists (select 1 from {{ this }} as kept where kept.order_id = o.order_id)
    {%- endif %}
),

lines as (
    {{ segment_json_array_rows('orders', 'products_json') }}
),

parsed as (
    select
        order_id,
        line_number,
        message_id,
        person_id,
        placed_at,
        currency,
        products_fingerprint,
        coalesce({{ segment_json_text('element_json', 'product_id') }}, {{ segment_json_text('element_json', 'id') }}) as product_id,
        {{ segment_json_text('element_json', 'sku') }} as sku,
        {{ segment_json_text('element_json', 'name') }} as product_name,
        {{ segment_json_text('element_json', 'category') }} as category,
        {{ segment_json_text('element_json', 'variant') }} as variant,
        {{ segment_json_text('element_json', 'brand') }} as brand,
        {{ segment_try_cast('trim(' ~ segment_json_text('element_json', 'price') ~ ')', segment_type_money()) }} as price,
        {{ segment_try_cast(segment_try_cast('trim(' ~ segment_json_text('element_json', 'quantity') ~ ')', dbt.type_float()), dbt.type_bigint()) }} as quantity_sent
    from lines
)

select
    {{ dbt.concat(['order_id', "'-'", 'cast(line_number as ' ~ dbt.type_string() ~ ')']) }} as order_item_id,
    order_id,
    cast(line_number as {{ dbt.type_int() }}) as line_number,
    person_id,
    placed_at,
    currency,
    product_id,
    sku,
    product_name,
    category,
    variant,
    brand,
    price,
    coalesce(quantity_sent, 1) as quantity,
    cast(price * coalesce(quantity_sent, 1) as {{ segment_type_money() }}) as line_total,
    message_id,
    products_fingerprint
from parsed
