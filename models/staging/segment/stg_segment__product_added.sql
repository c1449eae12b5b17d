-- One row per Product Added message (Segment e-commerce spec; the funnel's second step).
{{ segment_staging('product_added', [
    {'name': 'event_name', 'from': ['event_text', 'event'], 'kind': 'string'},
    {'name': 'cart_id', 'from': ['cart_id'], 'kind': 'trimmed'},
    {'name': 'product_id', 'from': ['product_id'], 'kind': 'trimmed'},
    {'name': 'sku', 'from': ['sku'], 'kind': 'trimmed'},
    {'name': 'product_name', 'from': ['name'], 'kind': 'string'},
    {'name': 'category', 'from': ['category'], 'kind': 'string'},
    {'name': 'price', 'from': ['price'], 'kind': 'money'},
    {'name': 'quantity', 'from': ['quantity'], 'kind': 'bigint'},
]) }}
