-- One row per Order Cancelled message.
{{ segment_staging('order_cancelled', [
    {'name': 'event_name', 'from': ['event_text', 'event'], 'kind': 'string'},
    {'name': 'order_id', 'from': ['order_id'], 'kind': 'trimmed'},
    {'name': 'currency', 'from': ['currency'], 'kind': 'currency'},
    {'name': 'total', 'from': ['total'], 'kind': 'money'},
    {'name': 'reason', 'from': ['reason'], 'kind': 'string'},
]) }}
