-- One row per Order Completed message (every spelling that snake-cases to order_completed).
-- A reloaded thank-you page gives two rows for one order_id: int_orders_deduplicated keeps one.
{{ segment_staging('order_completed', [
    {'name': 'event_name', 'from': ['event_text', 'event'], 'kind': 'string'},
    {'name': 'order_id', 'from': ['order_id'], 'kind': 'trimmed'},
    {'name': 'checkout_id', 'from': ['checkout_id'], 'kind': 'trimmed'},
    {'name': 'currency', 'from': ['currency'], 'kind': 'currency'},
    {'name': 'subtotal', 'from': ['subtotal'], 'kind': 'money'},
    {'name': 'total', 'from': ['total'], 'kind': 'money'},
    {'name': 'revenue', 'from': ['revenue'], 'kind': 'money'},
    {'name': 'tax', 'from': ['tax'], 'kind': 'money'},
    {'name': 'shipping', 'from': ['shipping'], 'kind': 'money'},
    {'name': 'discount', 'from': ['discount'], 'kind': 'money'},
    {'name': 'coupon', 'from': ['coupon'], 'kind': 'trimmed'},
    {'name': 'products_json', 'from': ['products'], 'kind': 'string'},
]) }}
