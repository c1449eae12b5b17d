{#-
  Page, screen and track events with their person's session and bot flags (README "Analyst
  marts"). Sessions are per person across devices: a new session starts at a person's first
  event and at every event more than var analytics_session_timeout_minutes after the
  previous one (a gap of exactly the timeout continues the session). Identify, group and
  alias calls are not in the input, so they neither start nor extend sessions.

  Incremental per person, from the first session an event changed: for every person whose
  events differ from the stored rows (new or late events, events an identify or alias moved
  to or away from them; compared message by message), the pre_hook deletes the stored
  sessions that end less than the timeout before the person's earliest changed event, and
  all of them if the person's bot flags changed (macro analytics_delete_stale_sessions).
  The build then sessionizes only the person's events that are not stored any more,
  numbering on from the sessions kept: the first of them starts a session in a full refresh
  too (the last kept event is more than the timeout earlier), so a late event that joins two
  sessions, or an identify that moves anonymous sessions to a known person, gives the same
  rows as a full refresh, while a person's new session after a visit rewrites that session
  only. Unattributed events (no usable id) have no session: only changed ones are rewritten.
  On Spark with plain Parquet rows cannot be deleted, so there the model is a table, rebuilt
  in full every run (segment_rows_replaceable).
-#}
{{ config(
    materialized=('incremental' if segment_rows_replaceable() else 'table'),
    incremental_strategy='append',
    pre_hook="{{ analytics_delete_stale_sessions(ref('int_events_joined_to_persons')) }}",
) }}
{%- set timeout = var('analytics_session_timeout_minutes') | int %}

{#- The source view is read once per CTE, never as a CTE of its own: a CTE read twice is
    materialised with every wide context column of every event, which was most of an
    incremental build. -#}
{%- set source_events = ref('int_events_joined_to_persons') %}

with

{% if is_incremental() %}
-- after the pre_hook the table holds each person's unchanged sessions: sessionize the rest
-- (a stored message id is stored under its current person: the pre_hook deleted the others)
scope as (
    select e.*
    from {{ source_events }} as e
    where not exists (
        select 1 from {{ this }} as kept where kept.message_id = e.message_id
    )
),

-- where each person's numbering goes on from
kept_sessions as (
    select
        person_id,
        max(session_number) as kept_session_count
    from {{ this }}
    where person_id is not null and person_id in (select person_id from scope)
    group by person_id
),

-- bot flags are over all of a person's events, kept ones too
flag_events as (
    select e.person_id, e.event_at, e.is_bot_user_agent
    from {{ source_events }} as e
    where e.person_id in (select person_id from scope)
),
{% else %}
scope as (
    select * from {{ source_events }}
),

flag_events as (
    select person_id, event_at, is_bot_user_agent from {{ source_events }}
),
{% endif %}

per_minute as (
    select
        person_id,
        {{ dbt.date_trunc('minute', 'event_at') }} as event_minute,
        count(*) as event_count,
        max(case when is_bot_user_agent then 1 else 0 end) as has_bot_user_agent
    from flag_events
    where person_id is not null
    group by person_id, {{ dbt.date_trunc('minute', 'event_at') }}
),

person_flags as (
    select
        person_id,
        max(has_bot_user_agent) as has_bot_user_agent,
        max(case when event_count > {{ var('analytics_bot_max_events_per_minute') | int }} then 1 else 0 end) as has_bot_rate
    from per_minute
    group by person_id
),

-- The window passes run over these four columns only (sorting wide rows is what costs);
-- the context columns are joined back by message_id at the end.
narrow as (
    select
        message_id,
        person_id,
        event_at,
        case when message_type in ('page', 'screen') then 1 else 0 end as is_view
    from scope
    where person_id is not null
),

gaps as (
    select
        narrow.*,
        lag(event_at) over (partition by person_id order by event_at, message_id) as previous_event_at,
        row_number() over (partition by person_id order by event_at, message_id) as person_event_number
    from narrow
),

starts as (
    select
        gaps.*,
        case
            when previous_event_at is null then 1
            when event_at > {{ dbt.dateadd('minute', timeout, 'previous_event_at') }} then 1
            else 0
        end as is_session_start
    from gaps
),

numbered as (
    select
        starts.*,
        sum(is_session_start) over (
            partition by person_id order by event_at, message_id
            rows between unbounded preceding and current row
        ) as session_number,
        -- positions only grow along the window, so the running max over session starts is
        -- the position of the current session's first event
        max(case when is_session_start = 1 then person_event_number end) over (
            partition by person_id order by event_at, message_id
            rows between unbounded preceding and current row
        ) as session_start_number
    from starts
),

views as (
    select
        message_id,
        row_number() over (
            partition by person_id, session_number order by event_at, message_id
        ) as view_number_in_session,
        lead(event_at) over (
            partition by person_id, session_number order by event_at, message_id
        ) as next_view_at
    from numbered
    where is_view = 1
),

session_starts as (
    select person_id, person_event_number, message_id as first_message_id
    from starts
    where is_session_start = 1
),

sessionized as (
    select
        n.message_id,
        {{ dbt.hash('s.first_message_id') }} as session_id,
        {% if is_incremental() -%}
        n.session_number + coalesce(k.kept_session_count, 0) as session_number,
        {%- else -%}
        n.session_number,
        {%- endif %}
        n.person_event_number - n.session_start_number + 1 as event_number_in_session,
        n.is_session_start = 1 as is_session_start,
        v.view_number_in_session,
        v.next_view_at,
        case when v.next_view_at is not null
            then {{ dbt.datediff('n.event_at', 'v.next_view_at', 'second') }} end as seconds_to_next_view
    from numbered as n
    inner join session_starts as s
        on s.person_id = n.person_id and s.person_event_number = n.session_start_number
    left join views as v on v.message_id = n.message_id
    {% if is_incremental() -%}
    left join kept_sessions as k on k.person_id = n.person_id
    {%- endif %}
)

select
    v.message_id,
    v.message_type,
    v.event_name,
    v.person_id,
    v.user_id,
    v.anonymous_id,
    v.event_at,
    v.received_at,
    v.load_id,
    v.source_id,
    z.session_id,
    z.session_number,
    z.event_number_in_session,
    z.is_session_start,
    z.view_number_in_session,
    z.next_view_at,
    z.seconds_to_next_view,
    v.page_url,
    v.page_host,
    v.page_path,
    v.page_title,
    v.referrer,
    v.referrer_host,
    v.utm_source,
    v.utm_medium,
    v.utm_campaign,
    v.utm_term,
    v.utm_content,
    v.gclid,
    v.fbclid,
    v.msclkid,
    v.channel,
    v.user_agent,
    v.device_category,
    v.is_bot_user_agent,
    coalesce(f.has_bot_user_agent = 1 or f.has_bot_rate = 1, false) as is_bot_person,
    case
        when f.has_bot_user_agent = 1 then 'user_agent'
        when f.has_bot_rate = 1 then 'event_rate'
    end as bot_reason,
    v.event_fingerprint,
    {{ segment_run_marker() }} as changed_by_run
from scope as v
left join sessionized as z on z.message_id = v.message_id
left join person_flags as f on f.person_id = v.person_id
