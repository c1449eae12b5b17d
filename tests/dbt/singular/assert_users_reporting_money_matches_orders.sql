-- users.lifetime_reporting_* = the sums of the person's orders' reporting_* amounts when
-- every order has a rate, NULL otherwise (a partial sum would look complete). Returns
-- the persons where that does not hold.
with

per_person as (
    select
        person_id,
        count(*) as order_rows,
        count(reporting_net_total) as rated_rows,
        sum(reporting_gross_total) as gross_total,
        sum(reporting_refunded_amount) as refunded_amount,
        sum(reporting_net_total) as net_total
    from {{ ref('orders') }}
    where person_id is not null
    group by person_id
),

expected as (
    select
        person_id,
        case when order_rows = rated_rows then gross_total end as gross_total,
        case when order_rows = rated_rows then refunded_amount end as refunded_amount,
        case when order_rows = rated_rows then net_total end as net_total
    from per_person
)

select u.person_id
from {{ ref('users') }} as u
left join expected as e on e.person_id = u.person_id
where not (
    coalesce(u.lifetime_reporting_gross_total = e.gross_total,
             u.lifetime_reporting_gross_total is null and e.gross_total is null)
    and coalesce(u.lifetime_reporting_refunded_amount = e.refunded_amount,
                 u.lifetime_reporting_refunded_amount is null and e.refunded_amount is null)
    and coalesce(u.lifetime_reporting_net_total = e.net_total,
                 u.lifetime_reporting_net_total is null and e.net_total is null)
)
