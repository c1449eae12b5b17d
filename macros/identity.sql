{#-
  Identity graph helpers (portable SQL: CTEs, joins, window functions, least()).
-#}

{#
  CTEs (to be placed inside a WITH list, no leading/trailing comma) labelling the connected
  components of the undirected graph in `edges` (columns node_a, node_b; text node keys).
  Produces `<prefix>_labels(node, label)` (label = a node of the same component) and
  `<prefix>_check(unconverged_edges)`.

  Each of the `max_iterations` rounds, unrolled at compile time:
    1. nb: every node takes the smallest label among itself and its neighbours;
    2. hook: every label group adopts the smallest nb label seen by any of its members;
    3. jump: every node replaces its label by its label's label (pointer jumping).
  Groups merge with a neighbour group each round, so a chain of n links needs about
  log2(n) rounds, not n. After the last round `unconverged_edges` counts edges whose two
  ends still disagree: 0 means the labels are exactly the components; anything else must
  fail the build (see segment_fail_if), never be used as an answer.
#}
{% macro segment_connected_components(edges, prefix, max_iterations) -%}
{{ prefix }}_e as (
    select node_a as src, node_b as dst from {{ edges }}
    union all select node_b as src, node_a as dst from {{ edges }}
    union all select node_a as src, node_a as dst from {{ edges }}
    union all select node_b as src, node_b as dst from {{ edges }}
),
{{ prefix }}_l0 as (
    select distinct src as node, src as label from {{ prefix }}_e
),
{%- for k in range(1, max_iterations + 1) %}
{%- set prev = prefix ~ '_l' ~ (k - 1) %}
{{ prefix }}_nb{{ k }} as (
    select e.src as node, min(l.label) as label
    from {{ prefix }}_e as e
    inner join {{ prev }} as l on l.node = e.dst
    group by e.src
),
{{ prefix }}_hook{{ k }} as (
    select p.label as root, min(nb.label) as label
    from {{ prev }} as p
    inner join {{ prefix }}_nb{{ k }} as nb on nb.node = p.node
    group by p.label
),
{{ prefix }}_hooked{{ k }} as (
    select p.node, least(nb.label, h.label) as label
    from {{ prev }} as p
    inner join {{ prefix }}_nb{{ k }} as nb on nb.node = p.node
    inner join {{ prefix }}_hook{{ k }} as h on h.root = p.label
),
{{ prefix }}_l{{ k }} as (
    select a.node, least(a.label, coalesce(b.label, a.label)) as label
    from {{ prefix }}_hooked{{ k }} as a
    left join {{ prefix }}_hooked{{ k }} as b on b.node = a.label
),
{%- endfor %}
{{ prefix }}_labels as (
    select node, label from {{ prefix }}_l{{ max_iterations }}
),
{{ prefix }}_check as (
    select count(*) as unconverged_edges
    from {{ edges }} as e
    inner join {{ prefix }}_labels as a on a.node = e.node_a
    inner join {{ prefix }}_labels as b on b.node = e.node_b
    where a.label <> b.label
)
{%- endmacro %}

{#
  CTEs `<prefix>_clean` (messages with cleaned ids) and `<prefix>` (one row per distinct
  typed link and origin) from a relation shaped like int_events_unioned:
    from_type ('anonymous' | 'user'), from_id, to_id (always a user id),
    link_source ('message': one message carried both ids | 'alias': previous_id -> user_id),
    first_linked_at, last_linked_at, link_count.
  An alias previous_id is a user id if that value was ever seen as a user id, else an
  anonymous id if seen as one, else (never seen) a user id.
#}
{% macro segment_identity_links(events, prefix) -%}
{{ prefix }}_clean as (
    select
        message_id,
        message_type,
        {{ segment_clean_id('anonymous_id') }} as anonymous_id,
        {{ segment_clean_id('user_id') }} as user_id,
        {{ segment_clean_id('previous_id') }} as previous_id,
        event_at
    from {{ events }}
),
{{ prefix }}_known_users as (
    select distinct user_id as identifier from {{ prefix }}_clean where user_id is not null
),
{{ prefix }}_known_anonymous as (
    select distinct anonymous_id as identifier from {{ prefix }}_clean where anonymous_id is not null
),
{{ prefix }}_all as (
    select
        'anonymous' as from_type,
        anonymous_id as from_id,
        user_id as to_id,
        'message' as link_source,
        event_at
    from {{ prefix }}_clean
    where anonymous_id is not null and user_id is not null
    union all
    select
        case
            when ku.identifier is not null then 'user'
            when ka.identifier is not null then 'anonymous'
            else 'user'
        end as from_type,
        c.previous_id as from_id,
        c.user_id as to_id,
        'alias' as link_source,
        c.event_at
    from {{ prefix }}_clean as c
    left join {{ prefix }}_known_users as ku on ku.identifier = c.previous_id
    left join {{ prefix }}_known_anonymous as ka on ka.identifier = c.previous_id
    where c.message_type = 'alias' and c.previous_id is not null and c.user_id is not null
),
{{ prefix }} as (
    select
        from_type,
        from_id,
        to_id,
        link_source,
        min(event_at) as first_linked_at,
        max(event_at) as last_linked_at,
        count(*) as link_count
    from {{ prefix }}_all
    where not (from_type = 'user' and from_id = to_id)
    group by from_type, from_id, to_id, link_source
)
{%- endmacro %}
