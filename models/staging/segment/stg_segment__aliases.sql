-- One row per alias call: previous_id is now known as user_id.
{{ segment_staging('aliases', [
    {'name': 'previous_id', 'from': ['previous_id'], 'kind': 'id'},
]) }}
