-- One row per screen call (mobile).
{{ segment_staging('screens', [
    {'name': 'screen_name', 'from': ['name', '_name'], 'kind': 'string'},
    {'name': 'screen_category', 'from': ['category'], 'kind': 'string'},
    {'name': 'app_version', 'from': ['context_app_version'], 'kind': 'string'},
    {'name': 'device_model', 'from': ['context_device_model'], 'kind': 'string'},
    {'name': 'os_name', 'from': ['context_os_name'], 'kind': 'string'},
    {'name': 'os_version', 'from': ['context_os_version'], 'kind': 'string'},
    {'name': 'utm_source', 'from': ['context_campaign_source'], 'kind': 'string'},
    {'name': 'utm_medium', 'from': ['context_campaign_medium'], 'kind': 'string'},
    {'name': 'utm_campaign', 'from': ['context_campaign_name'], 'kind': 'string'},
    {'name': 'utm_term', 'from': ['context_campaign_term'], 'kind': 'string'},
    {'name': 'utm_content', 'from': ['context_campaign_content'], 'kind': 'string'},
    {'name': 'user_agent', 'from': ['context_user_agent'], 'kind': 'string'},
]) }}
