-- One row per track call. event_name is the name as sent; event_slug the snake_case table name.
{{ segment_staging('tracks', [
    {'name': 'event_name', 'from': ['event_text', 'event'], 'kind': 'string'},
    {'name': 'event_slug', 'from': ['event'], 'kind': 'string'},
    {'name': 'page_url', 'from': ['context_page_url'], 'kind': 'string'},
    {'name': 'page_path', 'from': ['context_page_path'], 'kind': 'string'},
    {'name': 'ip', 'from': ['context_ip'], 'kind': 'string'},
    {'name': 'user_agent', 'from': ['context_user_agent'], 'kind': 'string'},
    {'name': 'library_name', 'from': ['context_library_name'], 'kind': 'string'},
    {'name': 'library_version', 'from': ['context_library_version'], 'kind': 'string'},
]) }}
