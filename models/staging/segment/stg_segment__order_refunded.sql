-- One row per Order Refunded message. refund_amount is `total` (Segment's example) or,
-- failing that, `amount`. amount_sent tells "no amount sent" (a full refund) apart from
-- "an amount was sent but is not a number" (refund_amount NULL, amount_sent true).
{{ segment_staging('order_refunded', [
    {'name': 'event_name', 'from': ['event_text', 'event'], 'kind': 'string'},
    {'name': 'order_id', 'from': ['order_id'], 'kind': 'trimmed'},
    {'name': 'currency', 'from': ['currency'], 'kind': 'currency'},
    {'name': 'refund_amount', 'from': ['total', 'amount'], 'kind': 'money'},
    {'name': 'amount_sent', 'from': ['total', 'amount'], 'kind': 'present'},
    {'name': 'products_json', 'from': ['products'], 'kind': 'string'},
]) }}
