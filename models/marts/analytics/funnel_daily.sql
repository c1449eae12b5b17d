-- One row per UTC day with sessions (README "funnel_daily"): how many sessions started that
-- day and how many of them reached each funnel step; conversion = ordering sessions / sessions.
select
    session_date,
    count(*) as session_count,
    sum(case when furthest_step >= 1 then 1 else 0 end) as product_viewed_sessions,
    sum(case when furthest_step >= 2 then 1 else 0 end) as product_added_sessions,
    sum(case when furthest_step >= 3 then 1 else 0 end) as checkout_started_sessions,
    sum(case when furthest_step >= 4 then 1 else 0 end) as order_completed_sessions,
    cast(sum(case when furthest_step >= 4 then 1 else 0 end) as {{ dbt.type_float() }})
        / count(*) as conversion_rate
from {{ ref('funnel_sessions') }}
group by session_date
