-- first_order_at and last_order_at mean the same on users and user_order_totals: the first
-- and last non-cancelled order (NULL when every order was cancelled). Returns disagreements.
with

per_person as (
    select
        person_id,
        min(first_order_at) as first_order_at,
        max(last_order_at) as last_order_at
    from {{ ref('user_order_totals') }}
    group by person_id
)

select u.person_id, u.first_order_at, p.first_order_at as totals_first_order_at,
    u.last_order_at, p.last_order_at as totals_last_order_at
from {{ ref('users') }} as u
left join per_person as p on p.person_id = u.person_id
where not (
    coalesce(u.first_order_at = p.first_order_at, u.first_order_at is null and p.first_order_at is null)
    and coalesce(u.last_order_at = p.last_order_at, u.last_order_at is null and p.last_order_at is null)
)
