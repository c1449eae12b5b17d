-- One row per track call. event_name is the name as sent; event_slug the snake_case table name.
{{ segment_staging('tracks', [
    {'name': 'event_name', 'from': ['event_text', 'event'], 'kind': 'string'},
    {'name': 'event_slug', 'from': ['event'], 'kind': 'string'},
    {'name': 'page_url', 'from': ['context_page_url'], 'kind': 'string'},
    {'name': 'page_path', 'from': ['context_page_path'], 'kind': 'string'},
    {'name': 'page_title', 'from': ['context_page_title'], 'kind': 'string'},
    {'name': 'referrer', 'from': ['context_page_referrer'], 'kind': 'trimmed'},
    {'name': 'utm_source', 'from': ['context_campaign_source'], 'kind': 'string'},
    {'name': 'utm_medium', 'from': ['context_campaign_medium'], 'kind': 'string'},
    {'name': 'utm_campaign', 'from': ['context_campaign_name'], 'kind': 'string'},
    {'name': 'utm_term', 'from': ['context_campaign_term'], 'kind': 'string'},
    {'name': 'utm_content', 'from': ['context_campaign_content'], 'kind': 'string'},
    {'name': 'ip', 'from': ['context_ip'], 'kind': 'string'},
    {'name': 'user_agent', 'from': ['context_user_agent'], 'kind': 'string'},
    {'name': 'library_name', 'from': ['context_library_name'], 'kind': 'string'},
    {'name': 'library_version', 'from': ['context_library_version'], 'kind': 'string'},
]) }}
