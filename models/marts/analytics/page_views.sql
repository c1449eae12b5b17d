{{ config(materialized='view') }}
-- One row per page view and screen view (README "page_views"), with its session, position in
-- the session and the time to the person's next view in that session. A view over the
-- incremental int_events_sessionized; bots left out unless var analytics_include_bots.
select
    message_id as view_id,
    message_type as view_type,
    event_name as view_name,
    person_id,
    session_id,
    cast(view_number_in_session as {{ dbt.type_bigint() }}) as view_number_in_session,
    event_at as viewed_at,
    next_view_at,
    cast(seconds_to_next_view as {{ dbt.type_bigint() }}) as seconds_to_next_view,
    page_url,
    page_host,
    page_path,
    page_title,
    referrer,
    referrer_host,
    utm_source,
    utm_medium,
    utm_campaign,
    utm_term,
    utm_content,
    channel,
    device_category,
    source_id
from {{ ref('int_events_sessionized') }}
where message_type in ('page', 'screen')
    and person_id is not null
    {%- if not var('analytics_include_bots') %}
    and not is_bot_person
    {%- endif %}
