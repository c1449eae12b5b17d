-- One row per Product Viewed message (Segment e-commerce spec; the funnel's first step).
{{ segment_staging('product_viewed', [
    {'name': 'event_name', 'from': ['event_text', 'event'], 'kind': 'string'},
    {'name': 'product_id', 'from': ['product_id'], 'kind': 'trimmed'},
    {'name': 'sku', 'from': ['sku'], 'kind': 'trimmed'},
    {'name': 'product_name', 'from': ['name'], 'kind': 'string'},
    {'name': 'category', 'from': ['category'], 'kind': 'string'},
    {'name': 'price', 'from': ['price'], 'kind': 'money'},
    {'name': 'currency', 'from': ['currency'], 'kind': 'currency'},
]) }}
