-- One row per group call.
{{ segment_staging('groups', [
    {'name': 'group_id', 'from': ['group_id'], 'kind': 'trimmed'},
    {'name': 'group_name', 'from': ['name'], 'kind': 'string'},
    {'name': 'group_plan', 'from': ['plan'], 'kind': 'string'},
]) }}
