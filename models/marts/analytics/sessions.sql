{#-
  One row per session (README "sessions"): a person's run of page, screen and track events
  with no gap over var analytics_session_timeout_minutes, across all their devices.
  Acquisition (referrer, UTM, click ids, channel, device) is the session's first event's;
  landing and exit pages are its first and last page calls. Persons flagged as bots are left
  out unless var analytics_include_bots.

  Incremental by session: int_events_sessionized rewrites every row of a session that
  changes (its events, number, person or bot flag), marking it with the build
  (changed_by_run). The pre_hook deletes the stored sessions with rows written since this
  table's last build and the stored sessions whose id is gone (macro
  analytics_delete_changed_sessions), then the sessions not stored are built from those
  rows; the others are kept. A table on Spark with plain Parquet (no row deletes there),
  rebuilt in full every run.
-#}
{%- set bots_filter = 'true' if var('analytics_include_bots') else 'not is_bot_person' %}
{{ config(
    materialized=('incremental' if segment_rows_replaceable() else 'table'),
    incremental_strategy='append',
    on_schema_change='append_new_columns',
    pre_hook="{{ analytics_delete_changed_sessions(ref('int_events_sessionized')) }}",
) }}

with

source_events as (
    select *
    from {{ ref('int_events_sessionized') }}
    where person_id is not null and {{ bots_filter }}
),

{% if is_incremental() %}
-- the pre_hook deleted every changed session, so the sessions to build are the ones whose
-- id is not stored; each has rows written since this table's last build (read before the
-- pre_hook ran), a filter that leaves only those rows to compare
scope as (
    select e.*
    from source_events as e
    where e.changed_by_run > {{ segment_newest_marker(this) }}
        and not exists (select 1 from {{ this }} as kept where kept.session_id = e.session_id)
),
{% else %}
scope as (
    select * from source_events
),
{% endif %}

totals as (
    select
        session_id,
        person_id,
        min(session_number) as session_number,
        min(event_at) as started_at,
        max(event_at) as ended_at,
        count(*) as event_count,
        sum(case when message_type = 'page' then 1 else 0 end) as page_view_count,
        sum(case when message_type = 'screen' then 1 else 0 end) as screen_view_count,
        sum(case when message_type = 'track' then 1 else 0 end) as track_count,
        -- a device is an anonymous id (Segment's browser/app install id); min <> max says
        -- "more than one" without a distinct count
        coalesce(min(anonymous_id) <> max(anonymous_id), false) as is_cross_device,
        max(case when is_bot_person then 1 else 0 end) as is_bot_person,
        sum(event_fingerprint) as events_fingerprint
    from scope
    group by session_id, person_id
),

first_events as (
    select *
    from scope
    where event_number_in_session = 1
),

pages as (
    select
        session_id,
        page_url,
        page_path,
        row_number() over (partition by session_id order by event_at, message_id) as first_rank,
        count(*) over (partition by session_id) as page_count
    from scope
    where message_type = 'page'
)

select
    t.session_id,
    t.person_id,
    cast(t.session_number as {{ dbt.type_bigint() }}) as session_number,
    t.started_at,
    t.ended_at,
    {{ segment_utc_date('t.started_at') }} as session_date,
    cast({{ dbt.datediff('t.started_at', 't.ended_at', 'second') }} as {{ dbt.type_bigint() }}) as duration_seconds,
    cast(t.event_count as {{ dbt.type_bigint() }}) as event_count,
    cast(t.page_view_count as {{ dbt.type_bigint() }}) as page_view_count,
    cast(t.screen_view_count as {{ dbt.type_bigint() }}) as screen_view_count,
    cast(t.track_count as {{ dbt.type_bigint() }}) as track_count,
    landing.page_url as landing_page_url,
    landing.page_path as landing_page_path,
    exit_page.page_url as exit_page_url,
    exit_page.page_path as exit_page_path,
    f.referrer,
    f.referrer_host,
    f.utm_source,
    f.utm_medium,
    f.utm_campaign,
    f.utm_term,
    f.utm_content,
    f.gclid,
    f.fbclid,
    f.msclkid,
    f.channel,
    -- source for attribution: the campaign source, else the external referrer's host
    coalesce(f.utm_source, case when f.channel <> 'direct' then f.referrer_host end) as traffic_source,
    f.device_category,
    f.source_id as first_source_id,
    t.is_cross_device,
    t.page_view_count + t.screen_view_count <= 1 and t.event_count = 1 as is_bounce,
    t.is_bot_person = 1 as is_bot_person,
    cast(t.events_fingerprint as {{ dbt.type_bigint() }}) as events_fingerprint,
    {{ segment_run_marker() }} as changed_by_run
from totals as t
inner join first_events as f on f.session_id = t.session_id
left join pages as landing on landing.session_id = t.session_id and landing.first_rank = 1
left join pages as exit_page on exit_page.session_id = t.session_id and exit_page.first_rank = exit_page.page_count
