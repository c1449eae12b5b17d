{#-
  One row per identifier (user id or anonymous id) with the person it belongs to.

  Rules (README, "Identity: who is a person"):
  - identifiers arrive cleaned by staging (trimmed; junk values NULL: segment_clean_id);
  - user ids linked by alias calls (previous_id -> user_id) are one person, over chains of
    any length (connected components in materialised rounds, macros/identity.sql; the build
    fails past var identity_max_iterations rounds);
  - an anonymous id joins the person of the user id(s) it was seen with;
  - shared device guard: an anonymous id seen with user ids of two or more different persons,
    or with more than var identity_max_user_ids_per_anonymous_id user ids (a broken id that
    an SDK sent for everyone), merges nothing. It is flagged is_shared_device and mapped to
    the person identified on it first; its events are attributed by time in
    int_events_mapped_to_persons;
  - person_id = the earliest-seen user id of the person (ties: smallest id); a person without
    any user id is its anonymous id.

  Incremental by component (README "Incremental builds", which says why it equals a full
  build): segment_identity_scope writes the identifiers to recompute (the ids of the new
  loads' messages, the ends of their links, the whole stored persons of those user ids and
  the anonymous ids linked to them) into a working table; every CTE below then reads only
  their messages and links, users outside the scope keep their stored person, and the
  post_hook deletes the scope's rows not rewritten (ids whose type changed). message_count
  and last_load_id are kept per identifier for that scope. A table where rows cannot be
  deleted (Spark on plain Parquet).
-#}
{%- set max_iterations = var('identity_max_iterations') | int %}
{%- set replaceable = segment_rows_replaceable() %}
{{ config(
    materialized=('incremental' if replaceable else 'table'),
    unique_key=['identifier_type', 'identifier'],
    incremental_strategy=(segment_incremental_strategy() if replaceable else none),
    on_schema_change='append_new_columns',
    post_hook=[
        "{{ segment_identity_delete_stale() }}",
        "{{ segment_drop_components_tables('cc') }}",
        "{{ segment_drop_identity_scope() }}",
    ],
) }}

{#- the identifiers to recompute (none: all of them), a working table; see the header -#}
{%- set scope = segment_identity_scope() if is_incremental() and replaceable else none %}
{%- if execute and not scope and model.resource_type != 'unit_test' %}{% do segment_drop_identity_scope() %}{% endif %}

{#- the strong links (alias calls between user ids) as one statement, for the rounds' tables -#}
{%- set user_edges_sql -%}
select from_id as node_a, to_id as node_b from {{ ref('int_identity_links_unioned') }} where from_type = 'user'
{%- if scope %}
    and to_id in (select identifier from {{ scope }} where identifier_type = 'user')
{%- endif %}
{%- endset %}

with

links as (
    select * from {{ ref('int_identity_links_unioned') }}
),

events as (
    select anonymous_id, user_id, event_at, load_id from {{ ref('int_events_unioned') }}
),

{% if scope -%}
scope_users as (
    select identifier from {{ scope }} where identifier_type = 'user'
),

scope_anonymous_ids as (
    select identifier from {{ scope }} where identifier_type = 'anonymous'
),
{%- endif %}

sightings as (
    select 'user' as identifier_type, user_id as identifier, event_at, load_id
    from events where user_id is not null
    {%- if scope %} and user_id in (select identifier from scope_users){% endif %}
    union all
    select 'anonymous' as identifier_type, anonymous_id as identifier, event_at, load_id
    from events where anonymous_id is not null
    {%- if scope %} and anonymous_id in (select identifier from scope_anonymous_ids){% endif %}
    union all
    -- the alias message is counted (and its load seen) as its user id's
    select from_type as identifier_type, from_id as identifier, first_linked_at as event_at,
        cast(null as {{ dbt.type_bigint() }}) as load_id
    from links where link_source = 'alias'
    {%- if scope %}
        and exists (
            select 1 from {{ scope }} as s
            where s.identifier_type = links.from_type and s.identifier = links.from_id
        )
    {%- endif %}
),

nodes as (
    select
        identifier_type,
        identifier,
        min(event_at) as first_seen_at,
        max(event_at) as last_seen_at,
        count(load_id) as message_count,
        max(load_id) as last_load_id
    from sightings
    group by identifier_type, identifier
),

-- strong links: alias calls between user ids
user_edges as (
    {{ user_edges_sql }}
),

{{ segment_connected_components('user_edges', user_edges_sql, 'cc', max_iterations) }},

user_components as (
    select
        n.identifier as user_id,
        n.first_seen_at,
        coalesce(cc.label, n.identifier) as component_id
    from nodes as n
    left join cc_labels as cc on cc.node = n.identifier
    where n.identifier_type = 'user'
),

component_persons as (
    select component_id, user_id as person_id
    from (
        select
            component_id,
            user_id,
            row_number() over (
                partition by component_id order by first_seen_at, user_id
            ) as person_rank
        from user_components
    ) as ranked
    where person_rank = 1
),

user_persons as (
    select uc.user_id, cp.person_id
    from user_components as uc
    inner join component_persons as cp on cp.component_id = uc.component_id
),

anonymous_links as (
    select
        l.from_id as anonymous_id,
        l.to_id as user_id,
        l.first_linked_at,
        up.person_id
    from links as l
    inner join (
        select user_id, person_id from user_persons
        {%- if scope %}
        union all
        -- users outside the scope keep their person: read it from the stored map
        select identifier as user_id, person_id
        from {{ this }}
        where identifier_type = 'user'
            and identifier not in (select identifier from scope_users)
            and identifier in (
                select to_id from links
                where from_type = 'anonymous'
                    and from_id in (select identifier from scope_anonymous_ids)
            )
        {%- endif %}
    ) as up on up.user_id = l.to_id
    where l.from_type = 'anonymous'
    {%- if scope %}
        and l.from_id in (select identifier from scope_anonymous_ids)
    {%- endif %}
),

anonymous_persons as (
    select
        anonymous_id,
        count(distinct person_id) as person_count,
        count(distinct user_id) as user_id_count
    from anonymous_links
    group by anonymous_id
),

anonymous_first_person as (
    select anonymous_id, person_id
    from (
        select
            anonymous_id,
            person_id,
            row_number() over (
                partition by anonymous_id order by first_linked_at, user_id
            ) as link_rank
        from anonymous_links
    ) as ranked
    where link_rank = 1
),

mapped as (
    select
        'user' as identifier_type,
        up.user_id as identifier,
        up.person_id,
        false as is_shared_device
    from user_persons as up
    union all
    select
        'anonymous' as identifier_type,
        n.identifier,
        coalesce(afp.person_id, n.identifier) as person_id,
        coalesce(
            ap.person_count > 1
            or ap.user_id_count > {{ var('identity_max_user_ids_per_anonymous_id') | int }},
            false
        ) as is_shared_device
    from nodes as n
    left join anonymous_persons as ap on ap.anonymous_id = n.identifier
    left join anonymous_first_person as afp on afp.anonymous_id = n.identifier
    where n.identifier_type = 'anonymous'
)

select
    m.identifier_type,
    m.identifier,
    m.person_id,
    m.is_shared_device,
    n.first_seen_at,
    n.last_seen_at,
    n.message_count,
    n.last_load_id,
    {{ segment_run_marker() }} as changed_by_run
from mapped as m
inner join nodes as n
    on n.identifier_type = m.identifier_type and n.identifier = m.identifier
