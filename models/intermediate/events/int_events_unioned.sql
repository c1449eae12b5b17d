{#-
  Every Segment message once, whatever its call type: the thin, event-level spine that the
  identity models read. Incremental on load_id (load time, never event time): each build
  appends what the loader added since the last build; late-arriving events with old
  timestamps are therefore picked up. Re-delivered message ids replace their row
  (unique_key), so an incremental build equals a full refresh.
-#}
{{ config(unique_key='message_id') }}

{%- set parts = [
    ('track', 'stg_segment__tracks', 'event_name'),
    ('page', 'stg_segment__pages', 'page_name'),
    ('screen', 'stg_segment__screens', 'screen_name'),
    ('identify', 'stg_segment__identifies', none),
    ('group', 'stg_segment__groups', none),
    ('alias', 'stg_segment__aliases', none),
] %}

with

{% for message_type, model, name_column in parts %}
{{ message_type }}_messages as (
    select
        message_id,
        '{{ message_type }}' as message_type,
        {{ name_column if name_column else 'cast(null as ' ~ dbt.type_string() ~ ')' }} as event_name,
        anonymous_id,
        user_id,
        {{ 'previous_id' if message_type == 'alias' else 'cast(null as ' ~ dbt.type_string() ~ ')' }} as previous_id,
        event_at,
        received_at,
        load_id,
        source_id
    from {{ ref(model) }}
    {% if is_incremental() -%}
    where load_id > (select coalesce(max(load_id), -1) from {{ this }})
    {%- endif %}
),
{% endfor %}

unioned as (
    {% for message_type, model, name_column in parts -%}
    select * from {{ message_type }}_messages
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
),

-- message ids are unique across the warehouse (loader contract); keep one copy if not
ranked as (
    select
        unioned.*,
        row_number() over (
            partition by message_id
            order by received_at, load_id, message_type
        ) as copy_rank
    from unioned
)

select
    message_id,
    message_type,
    event_name,
    anonymous_id,
    user_id,
    previous_id,
    event_at,
    received_at,
    load_id,
    source_id
from ranked
where copy_rank = 1
