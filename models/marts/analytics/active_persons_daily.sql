-- One row per UTC day on which anyone was active (README "active_persons_daily"): persons
-- with a page, screen or track event that day (DAU), in the 7 days ending that day (WAU) and
-- in the 30 days ending that day (MAU). From the events mart, so bots are left out by default.
with

person_days as (
    select distinct person_id, event_date
    from {{ ref('events') }}
    where person_id is not null
),

-- Each active day of a person covers the days until the person's next active day, at most
-- 7 (30) days: those spans never overlap, so plain counts give distinct persons.
spans as (
    select
        person_id,
        event_date,
        lead(event_date) over (partition by person_id order by event_date) as next_event_date
    from person_days
),

days as (
    select event_date, count(*) as daily_active_persons
    from person_days
    group by event_date
)

{%- for name, width in [('weekly', 7), ('monthly', 30)] %},

{{ name }} as (
    select d.event_date, count(*) as {{ name }}_active_persons
    from days as d
    inner join spans as s
        on s.event_date <= d.event_date
        and d.event_date < {{ dbt.dateadd('day', width, 's.event_date') }}
        and (s.next_event_date is null or d.event_date < s.next_event_date)
    group by d.event_date
)
{%- endfor %}

select
    d.event_date as activity_date,
    d.daily_active_persons,
    w.weekly_active_persons,
    m.monthly_active_persons
from days as d
inner join weekly as w on w.event_date = d.event_date
inner join monthly as m on m.event_date = d.event_date
