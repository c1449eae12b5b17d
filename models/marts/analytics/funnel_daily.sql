-- One row per UTC day with sessions (README "funnel_daily"): how many sessions started that
-- day and how many of them reached each funnel step; conversion = ordering sessions / sessions.
select
    session_date,
    cast(count(*) as {{ dbt.type_bigint() }}) as session_count,
    cast(sum(case when furthest_step >= 1 then 1 else 0 end) as {{ dbt.type_bigint() }}) as product_viewed_sessions,
    cast(sum(case when furthest_step >= 2 then 1 else 0 end) as {{ dbt.type_bigint() }}) as product_added_sessions,
    cast(sum(case when furthest_step >= 3 then 1 else 0 end) as {{ dbt.type_bigint() }}) as checkout_started_sessions,
    cast(sum(case when furthest_step >= 4 then 1 else 0 end) as {{ dbt.type_bigint() }}) as order_completed_sessions,
    cast(sum(case when furthest_step >= 4 then 1 else 0 end) as double)
        / count(*) as conversion_rate
from {{ ref('funnel_sessions') }}
group by session_date
