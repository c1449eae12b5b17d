-- One row per page call.
{{ segment_staging('pages', [
    {'name': 'page_name', 'from': ['name'], 'kind': 'string'},
    {'name': 'page_category', 'from': ['category'], 'kind': 'string'},
    {'name': 'page_url', 'from': ['url', 'context_page_url'], 'kind': 'string'},
    {'name': 'page_path', 'from': ['path', 'context_page_path'], 'kind': 'string'},
    {'name': 'page_title', 'from': ['title', 'context_page_title'], 'kind': 'string'},
    {'name': 'referrer', 'from': ['referrer', 'context_page_referrer'], 'kind': 'trimmed'},
    {'name': 'search', 'from': ['search', 'context_page_search'], 'kind': 'trimmed'},
    {'name': 'utm_source', 'from': ['context_campaign_source'], 'kind': 'string'},
    {'name': 'utm_medium', 'from': ['context_campaign_medium'], 'kind': 'string'},
    {'name': 'utm_campaign', 'from': ['context_campaign_name'], 'kind': 'string'},
    {'name': 'utm_term', 'from': ['context_campaign_term'], 'kind': 'string'},
    {'name': 'utm_content', 'from': ['context_campaign_content'], 'kind': 'string'},
    {'name': 'ip', 'from': ['context_ip'], 'kind': 'string'},
    {'name': 'user_agent', 'from': ['context_user_agent'], 'kind': 'string'},
]) }}
