{#-
  Every Segment message once, whatever its call type: the thin, event-level spine that the
  identity models read. Incremental on load_id (load time, never event time): each build
  appends what the loader added since the last build; late-arriving events with old
  timestamps are therefore picked up. Re-delivered message ids replace their row
  (unique_key), so an incremental build equals a full refresh.
  Where rows cannot be updated in place (Spark on plain Parquet: segment_incremental_strategy
  gives insert_overwrite), the table is partitioned by load_id, each build writes only the new
  loads' partitions, and a message id already in the table keeps its row (the loader never
  writes one id twice, so this differs from replacing only for a warehouse that breaks that).
-#}
{%- set strategy = segment_incremental_strategy() %}
{{ config(
    unique_key='message_id',
    incremental_strategy=strategy,
    partition_by=(['load_id'] if strategy == 'insert_overwrite' else none),
) }}

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
    from {{ ref(model) }} as staged
    {% if is_incremental() -%}
    {{ segment_newer_loads('staged') }}
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
