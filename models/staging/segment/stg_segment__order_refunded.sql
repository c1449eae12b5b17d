-- One row per Order Refunded message. refund_amount is `total` (Segment's example) or,
-- failing that, `amount`; NULL means no amount was sent (a full refund).
{{ segment_staging('order_refunded', [
    {'name': 'event_name', 'from': ['event_text', 'event'], 'kind': 'string'},
    {'name': 'order_id', 'from': ['order_id'], 'kind': 'trimmed'},
    {'name': 'currency', 'from': ['currency'], 'kind': 'currency'},
    {'name': 'refund_amount', 'from': ['total', 'amount'], 'kind': 'money'},
    {'name': 'products_json', 'from': ['products'], 'kind': 'string'},
]) }}
