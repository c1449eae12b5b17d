{{ config(materialized='view') }}
-- One row per page, screen and track message (README "events"): the spine for funnels,
-- retention and active persons. A view over the incremental int_events_sessionized;
-- persons flagged as bots are left out unless var analytics_include_bots.
select
    message_id,
    message_type,
    event_name,
    person_id,
    user_id,
    anonymous_id,
    session_id,
    cast(event_number_in_session as {{ dbt.type_bigint() }}) as event_number_in_session,
    event_at,
    {{ segment_utc_date('event_at') }} as event_date,
    source_id,
    page_url,
    page_path,
    page_title,
    referrer_host,
    utm_source,
    utm_medium,
    utm_campaign,
    channel,
    device_category,
    is_bot_user_agent,
    is_bot_person
from {{ ref('int_events_sessionized') }}
{% if not var('analytics_include_bots') -%}
where not is_bot_person
{%- endif %}
