-- One row per screen call (mobile).
{{ segment_staging('screens', [
    {'name': 'screen_name', 'from': ['name', '_name'], 'kind': 'string'},
    {'name': 'screen_category', 'from': ['category'], 'kind': 'string'},
    {'name': 'app_version', 'from': ['context_app_version'], 'kind': 'string'},
    {'name': 'device_model', 'from': ['context_device_model'], 'kind': 'string'},
    {'name': 'os_name', 'from': ['context_os_name'], 'kind': 'string'},
    {'name': 'os_version', 'from': ['context_os_version'], 'kind': 'string'},
]) }}
