{#-
  Every page, screen and track message once, with the context analysts filter on: page,
  referrer, campaign (UTM) and click ids, user agent, device category, bot user agent and the
  visit's channel (macros/analytics.sql). Nothing here depends on identity, so the model is
  incremental on load_id exactly like int_events_unioned: a build reads only the loader's
  newer loads; a re-delivered message id replaces its row (on Spark with plain Parquet: new
  load_id partitions, ids already present keep theirs; see int_events_unioned).
-#}
{%- set strategy = segment_incremental_strategy() %}
{{ config(
    unique_key='message_id',
    incremental_strategy=strategy,
    partition_by=(['load_id'] if strategy == 'insert_overwrite' else none),
) }}

{%- set parts = [
    ('page', 'stg_segment__pages', 'page_name', 'page_url', 'page_path', 'page_title', 'referrer'),
    ('screen', 'stg_segment__screens', 'screen_name', none, none, none, none),
    ('track', 'stg_segment__tracks', 'event_name', 'page_url', 'page_path', 'page_title', 'referrer'),
] %}
{%- set utm = ['source', 'medium', 'campaign', 'term', 'content'] %}
{%- set null_string = 'cast(null as ' ~ dbt.type_string() ~ ')' %}

with

{% for message_type, model, name_column, url, path, title, referrer in parts %}
{{ message_type }}_messages as (
    select
        message_id,
        '{{ message_type }}' as message_type,
        {{ name_column }} as event_name,
        event_at,
        received_at,
        load_id,
        source_id,
        {{ url or null_string }} as page_url,
        {{ path or null_string }} as page_path,
        {{ title or null_string }} as page_title,
        {{ referrer or null_string }} as referrer,
        {%- for field in utm %}
        nullif(trim(utm_{{ field }}), '') as campaign_{{ field }},
        {%- endfor %}
        user_agent
    from {{ ref(model) }} as staged
    {% if is_incremental() -%}
    {{ segment_newer_loads('staged') }}
    {%- endif %}
),
{% endfor %}

unioned as (
    {% for part in parts -%}
    select * from {{ part[0] }}_messages
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
),

parsed as (
    select
        unioned.*,
        {{ analytics_url_host('page_url') }} as page_host,
        {{ analytics_url_host('referrer') }} as referrer_host,
        {%- for field in utm %}
        -- context.campaign wins; else the utm_ parameter of the page URL
        coalesce(campaign_{{ field }}, {{ analytics_url_parameter('page_url', 'utm_' ~ field) }}) as utm_{{ field }},
        {%- endfor %}
        {{ analytics_url_parameter('page_url', 'gclid') }} as gclid,
        {{ analytics_url_parameter('page_url', 'fbclid') }} as fbclid,
        {{ analytics_url_parameter('page_url', 'msclkid') }} as msclkid
    -- staging keeps one row per message id and ids are unique across tables (the loader's
    -- contract; the unique test on message_id checks it): no second dedup pass here
    from unioned
)

select
    message_id,
    message_type,
    event_name,
    event_at,
    received_at,
    load_id,
    source_id,
    page_url,
    page_host,
    page_path,
    page_title,
    referrer,
    referrer_host,
    {%- for field in utm %}
    utm_{{ field }},
    {%- endfor %}
    gclid,
    fbclid,
    msclkid,
    {{ analytics_channel('utm_source', 'utm_medium', 'gclid', 'msclkid', 'referrer_host', 'page_host') }} as channel,
    user_agent,
    {{ analytics_device_category('user_agent') }} as device_category,
    {{ analytics_is_bot_user_agent('user_agent') }} as is_bot_user_agent,
    -- the time and the load too: a re-delivered copy of a message (at another time, or at the
    -- same time with other content: another campaign, url, event name) changes its
    -- session's events_fingerprint, which the incremental funnel_sessions and person touches
    -- compare; a copy that replaces the stored one always comes with a newer load
    {{ segment_hash_number('message_id, event_at, load_id') }} as event_fingerprint
from parsed
