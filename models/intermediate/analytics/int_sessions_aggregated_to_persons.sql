{#-
  One row per person with sessions: the first session (first touch) and the latest session
  (last touch), for the users mart.

  Incremental by person: a row depends only on the person's sessions, and it carries their
  count and the sum of their events_fingerprint. The pre_hook deletes the rows of persons
  whose sessions in the sessions mart no longer match those (or who have none left; macro
  segment_delete_changed_rows), then the persons without a row are built. A
  table on Spark with plain Parquet (no row deletes there), rebuilt in full every run.
-#}
{{ config(
    materialized=('incremental' if segment_rows_replaceable() else 'table'),
    incremental_strategy='append',
    on_schema_change='append_new_columns',
    pre_hook="{{ segment_delete_changed_rows('person_id', '(select person_id, count(*) as session_count, sum(events_fingerprint) as sessions_fingerprint from ' ~ ref('sessions') ~ ' group by person_id)', ['session_count', 'sessions_fingerprint']) }}",
) }}

with

sessions as (
    select *
    from {{ ref('sessions') }} as s
    {%- if is_incremental() %}
    -- the pre_hook deleted every changed person: build the persons without a row
    where not exists (select 1 from {{ this }} as kept where kept.person_id = s.person_id)
    {%- endif %}
),

ranked as (
    select
        person_id,
        session_id,
        traffic_source,
        utm_medium,
        utm_campaign,
        channel,
        started_at,
        row_number() over (partition by person_id order by started_at, session_id) as first_rank,
        count(*) over (partition by person_id) as session_count,
        sum(events_fingerprint) over (partition by person_id) as sessions_fingerprint
    from sessions
)

select
    f.person_id,
    f.started_at as first_touch_at,
    f.traffic_source as first_touch_source,
    f.utm_medium as first_touch_medium,
    f.utm_campaign as first_touch_campaign,
    f.channel as first_touch_channel,
    l.started_at as last_touch_at,
    l.traffic_source as last_touch_source,
    l.utm_medium as last_touch_medium,
    l.utm_campaign as last_touch_campaign,
    l.channel as last_touch_channel,
    cast(f.session_count as {{ dbt.type_bigint() }}) as session_count,
    cast(f.sessions_fingerprint as {{ dbt.type_bigint() }}) as sessions_fingerprint
from ranked as f
inner join ranked as l on l.person_id = f.person_id and l.first_rank = l.session_count
where f.first_rank = 1
