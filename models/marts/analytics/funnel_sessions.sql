{#-
  One row per session (README "funnel_sessions"): when the session first reached each step
  of Segment's e-commerce funnel, Product Viewed -> Product Added -> Checkout Started ->
  Order Completed. A step counts only at or after the previous step was reached; event
  names are compared case-insensitively with `_` as a space (order_completed counts).

  Incremental by session: a row depends only on its session's events, and it carries the
  session's events_fingerprint. The pre_hook deletes the rows whose session is gone from
  the sessions mart or stored there with another fingerprint, person or start (macro
  segment_delete_changed_rows), then the sessions without a row are built:
  after a small load, a few thousand instead of every session. A table on Spark with plain
  Parquet (no row deletes there), rebuilt in full every run.
-#}
{{ config(
    materialized=('incremental' if segment_rows_replaceable() else 'table'),
    incremental_strategy='append',
    on_schema_change='append_new_columns',
    pre_hook="{{ segment_delete_changed_rows('session_id', ref('sessions'), ['events_fingerprint', 'person_id', 'started_at']) }}",
) }}
{%- set steps = ['product viewed', 'product added', 'checkout started', 'order completed'] %}

with

sessions as (
    select session_id, person_id, started_at, session_date, channel, events_fingerprint
    from {{ ref('sessions') }} as s
    {%- if is_incremental() %}
    -- the pre_hook deleted every changed row: build the sessions without one
    where not exists (select 1 from {{ this }} as kept where kept.session_id = s.session_id)
    {%- endif %}
),

funnel_events as (
    select session_id, event_at, lower(replace(event_name, '_', ' ')) as step_name
    from {{ ref('int_events_sessionized') }}
    where message_type = 'track'
        and session_id is not null
        and lower(replace(event_name, '_', ' ')) in ('{{ steps | join("', '") }}')
        {%- if is_incremental() %}
        and session_id in (select session_id from sessions)
        {%- endif %}
),

{%- for step in steps %}
{%- set column = step | replace(' ', '_') ~ '_at' %}
step_{{ loop.index }} as (
    select s.session_id, min(e.event_at) as {{ column }}
    from sessions as s
    {% if not loop.first -%}
    inner join step_{{ loop.index - 1 }} as previous on previous.session_id = s.session_id
    {% endif -%}
    inner join funnel_events as e
        on e.session_id = s.session_id
        and e.step_name = '{{ step }}'
        {% if not loop.first -%}
        and e.event_at >= previous.{{ steps[loop.index0 - 1] | replace(' ', '_') ~ '_at' }}
        {%- endif %}
    group by s.session_id
),
{%- endfor %}

joined as (
    select
        s.*
        {%- for step in steps %},
        step_{{ loop.index }}.{{ step | replace(' ', '_') ~ '_at' }}
        {%- endfor %}
    from sessions as s
    {%- for step in steps %}
    left join step_{{ loop.index }} on step_{{ loop.index }}.session_id = s.session_id
    {%- endfor %}
)

select
    session_id,
    person_id,
    started_at,
    session_date,
    channel,
    product_viewed_at,
    product_added_at,
    checkout_started_at,
    order_completed_at,
    cast(case
        when order_completed_at is not null then 4
        when checkout_started_at is not null then 3
        when product_added_at is not null then 2
        when product_viewed_at is not null then 1
        else 0
    end as {{ dbt.type_bigint() }}) as furthest_step,
    events_fingerprint
from joined
