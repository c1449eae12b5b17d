-- One row per Checkout Started message (Segment e-commerce spec; the funnel's third step).
{{ segment_staging('checkout_started', [
    {'name': 'event_name', 'from': ['event_text', 'event'], 'kind': 'string'},
    {'name': 'order_id', 'from': ['order_id'], 'kind': 'trimmed'},
    {'name': 'checkout_id', 'from': ['checkout_id'], 'kind': 'trimmed'},
    {'name': 'currency', 'from': ['currency'], 'kind': 'currency'},
    {'name': 'total', 'from': ['total'], 'kind': 'money'},
    {'name': 'revenue', 'from': ['revenue'], 'kind': 'money'},
    {'name': 'discount', 'from': ['discount'], 'kind': 'money'},
    {'name': 'coupon', 'from': ['coupon'], 'kind': 'trimmed'},
]) }}
