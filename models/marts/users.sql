{#-
  One row per person (README, "Marts"): every identifier (native lists), activity span,
  latest traits, orders and money. Orders and money follow the orders mart: first and last
  order are non-cancelled orders; cancelled orders add nothing to money. Money columns are
  filled only when all of the person's orders use one currency (lifetime_currency);
  otherwise see user_order_totals. lifetime_reporting_* add every order's reporting_*
  amounts (one currency: var reporting_currency), NULL if an order's currency has no rate.

  Incremental by person. A row is a function of the person's rows in these inputs only:
  int_identifiers_mapped_to_persons (identifiers, shared flags), int_events_mapped_to_persons
  (messages, and through their message_id and load_id the counted copy's time, anonymous id
  and traits), the shared flag of the anonymous ids of those messages, orders (and
  user_order_totals, built from them) and int_sessions_aggregated_to_persons. Each row keeps
  inputs_fingerprint, a hash of the person's rows in all of them (macro
  segment_person_fingerprints), recomputed from the inputs' current rows every run; the
  pre_hook deletes the rows whose person's fingerprint differs or who left the person map
  (merged into another), then the persons without a row are built. Comparing with the current
  rows, not reading a change feed, is what finds a person who only LOST rows (a merge, a
  shared device's messages moving to another user), and it costs one aggregate of the
  attributed messages' ids, a third of a full build. Changing var segment_user_traits or
  reporting_currency needs a --full-refresh. A table on Spark with plain Parquet (no row
  deletes there), rebuilt in full every run.
-#}
{{ config(
    materialized=('incremental' if segment_rows_replaceable() else 'table'),
    incremental_strategy='append',
    on_schema_change='append_new_columns',
    pre_hook="{{ segment_delete_changed_rows('person_id', '(' ~ segment_person_fingerprints() ~ ')', ['inputs_fingerprint']) }}",
) }}
{%- set traits = var('segment_user_traits') %}
{#- The attributed messages, read where needed rather than as one CTE: a CTE read three times
    is materialised with every column of every message, most of this model's time. -#}
{#- Incremental: only the persons without a row (CTE persons) are built. -#}
{%- set in_persons = ' in (select person_id from persons)' if is_incremental() else ' is not null' %}
{%- set event_persons = '(select * from ' ~ ref('int_events_mapped_to_persons') ~ ' where person_id' ~ in_persons ~ ')' %}

with

all_identifiers as (
    select * from {{ ref('int_identifiers_mapped_to_persons') }}
),

persons as (
    select distinct person_id
    from all_identifiers as m
    {%- if is_incremental() %}
    -- the pre_hook deleted every changed person
    where not exists (select 1 from {{ this }} as kept where kept.person_id = m.person_id)
    {%- endif %}
),

person_map as (
    select * from all_identifiers where person_id{{ in_persons }}
),

activity as (
    select
        ep.person_id,
        min(ep.event_at) as first_seen_at,
        max(ep.event_at) as last_seen_at,
        count(*) as message_count,
        max(case when m.is_shared_device then 1 else 0 end) as used_shared_device
    from {{ event_persons }} as ep
    -- a shared device's identifier may belong to another person: all identifiers
    left join all_identifiers as m
        on m.identifier_type = 'anonymous' and m.identifier = ep.anonymous_id
    group by ep.person_id
),

user_ids as (
    select
        person_id,
        count(*) as user_id_count,
        {{ segment_sorted_array_agg('identifier') }} as user_ids
    from person_map
    where identifier_type = 'user'
    group by person_id
),

person_anonymous_ids as (
    select person_id, identifier as anonymous_id
    from person_map
    where identifier_type = 'anonymous' and not is_shared_device
    union
    select person_id, anonymous_id
    from {{ event_persons }} as event_persons
    where anonymous_id is not null
),

anonymous_ids as (
    select
        person_id,
        count(*) as anonymous_id_count,
        {{ segment_sorted_array_agg('anonymous_id') }} as anonymous_ids
    from person_anonymous_ids
    group by person_id
),

identifies as (
    select i.*, ep.person_id
    from {{ ref('stg_segment__identifies') }} as i
    inner join {{ event_persons }} as ep on ep.message_id = i.message_id
),

trait_values as (
    {%- for trait in traits %}
    select
        person_id,
        '{{ trait }}' as trait,
        cast({{ adapter.quote(trait) }} as {{ dbt.type_string() }}) as trait_value,
        event_at,
        received_at,
        message_id
    from identifies
    where {{ adapter.quote(trait) }} is not null
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}
),

latest_traits as (
    select person_id, trait, trait_value
    from (
        select
            trait_values.*,
            row_number() over (
                partition by person_id, trait
                order by event_at desc, received_at desc, message_id desc
            ) as recency_rank
        from trait_values
    ) as ranked
    where recency_rank = 1
),

traits_pivoted as (
    select
        person_id
        {%- for trait in traits %},
        max(case when trait = '{{ trait }}' then trait_value end) as {{ adapter.quote(trait) }}
        {%- endfor %}
    from latest_traits
    group by person_id
),

orders as (
    select * from {{ ref('orders') }} where person_id{{ in_persons }}
),

order_ranks as (
    select
        person_id,
        order_id,
        placed_at,
        row_number() over (partition by person_id order by placed_at desc, order_id desc) as recency_rank,
        order_sequence_number
    from orders
    where not is_cancelled
),

order_summary as (
    select
        person_id,
        sum(order_count) as order_count,
        sum(cancelled_order_count) as cancelled_order_count,
        count(*) as currency_count,
        {{ segment_sorted_array_agg('currency') }} as order_currencies
    from {{ ref('user_order_totals') }}
    where person_id{{ in_persons }}
    group by person_id
),

reporting_totals as (
    select
        person_id,
        max(reporting_currency) as reporting_currency,
        -- NULL unless every order has a rate: a partial sum would look complete
        case when count(*) = count(reporting_net_total) then
            cast(sum(reporting_gross_total) as {{ segment_type_money() }}) end as gross_total,
        case when count(*) = count(reporting_net_total) then
            cast(sum(reporting_refunded_amount) as {{ segment_type_money() }}) end as refunded_amount,
        case when count(*) = count(reporting_net_total) then
            cast(sum(reporting_net_total) as {{ segment_type_money() }}) end as net_total
    from orders
    group by person_id
),

single_currency as (
    select person_id, currency, gross_total, refunded_amount, net_total
    from {{ ref('user_order_totals') }}
    where is_only_currency and person_id{{ in_persons }}
)

select
    p.person_id,
    coalesce(u.user_id_count, 0) > 0 as is_identified,
    u.user_ids,
    coalesce(u.user_id_count, 0) as user_id_count,
    a.anonymous_ids,
    coalesce(a.anonymous_id_count, 0) as anonymous_id_count,
    coalesce(act.used_shared_device, 0) = 1 as used_shared_device,
    act.first_seen_at,
    act.last_seen_at,
    coalesce(act.message_count, 0) as message_count
    {%- for trait in traits %},
    t.{{ adapter.quote(trait) }}
    {%- endfor %},
    cast(coalesce(os.order_count, 0) as {{ dbt.type_bigint() }}) as order_count,
    cast(coalesce(os.cancelled_order_count, 0) as {{ dbt.type_bigint() }}) as cancelled_order_count,
    os.order_currencies,
    first_order.order_id as first_order_id,
    first_order.placed_at as first_order_at,
    last_order.order_id as last_order_id,
    last_order.placed_at as last_order_at,
    sc.currency as lifetime_currency,
    sc.gross_total as lifetime_gross_total,
    sc.refunded_amount as lifetime_refunded_amount,
    sc.net_total as lifetime_net_total,
    coalesce(rt.reporting_currency, '{{ var("reporting_currency") }}') as reporting_currency,
    rt.gross_total as lifetime_reporting_gross_total,
    rt.refunded_amount as lifetime_reporting_refunded_amount,
    rt.net_total as lifetime_reporting_net_total,
    touch.first_touch_at,
    touch.first_touch_source,
    touch.first_touch_medium,
    touch.first_touch_campaign,
    touch.first_touch_channel,
    touch.last_touch_at,
    touch.last_touch_source,
    touch.last_touch_medium,
    touch.last_touch_campaign,
    touch.last_touch_channel,
    fingerprints.inputs_fingerprint
from persons as p
left join user_ids as u on u.person_id = p.person_id
left join anonymous_ids as a on a.person_id = p.person_id
left join activity as act on act.person_id = p.person_id
left join traits_pivoted as t on t.person_id = p.person_id
left join order_summary as os on os.person_id = p.person_id
left join order_ranks as first_order
    on first_order.person_id = p.person_id and first_order.order_sequence_number = 1
left join order_ranks as last_order
    on last_order.person_id = p.person_id and last_order.recency_rank = 1
left join single_currency as sc on sc.person_id = p.person_id
left join reporting_totals as rt on rt.person_id = p.person_id
left join {{ ref('int_sessions_aggregated_to_persons') }} as touch on touch.person_id = p.person_id
left join ({{ segment_person_fingerprints('persons' if is_incremental() else none) }}) as fingerprints on fingerprints.person_id = p.person_id
