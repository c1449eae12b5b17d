{#-
  Identity graph helpers (portable SQL: CTEs, joins, window functions, least()).
-#}

{#
  Connected components of the undirected graph of `edges_sql` (a standalone select of text
  columns node_a, node_b), as a CTE `<prefix>_labels(node, label)` to place inside a WITH
  list (no leading/trailing comma); label = the smallest node of the node's component.

  Iterative rounds that each materialise a table, so every query stays small whatever the
  graph (Spark's analyzer cannot plan rounds unrolled as chained CTEs). At execution time:
    <model>__<prefix>_edges    the edges both ways plus a self-loop per node,
    <model>__<prefix>_labels_0 every node labelled by itself,
  then round k writes <model>__<prefix>_labels_<k mod 2> from the other one
  (segment_components_hook, then segment_components_jump) until no edge joins two
  different labels. Past
  `max_iterations` rounds the build fails with an error: labels that have not converged are
  never used as an answer. A chain of n links needs about log2(n) rounds. The working
  tables stay until the model is built; its post-hook (segment_drop_components_tables)
  drops them.

  dbt unit tests hand their inputs over as CTEs of one query, which a separate statement
  cannot read; there, and only there, the same rounds are chained as CTEs in the query,
  `max_iterations` of them, and the query fails (segment_fail_if) if they did not converge.
  `edges` names the CTE of the model holding the same edges as `edges_sql`.
#}
{% macro segment_connected_components(edges, edges_sql, prefix, max_iterations) -%}
{%- if execute and model.resource_type != 'unit_test' -%}
{{ prefix }}_labels as (
    select node, label from {{ segment_components_iterate(edges_sql, prefix, max_iterations) }}
)
{%- else -%}
{{ prefix }}_e as (
    {{ segment_components_edges(edges) }}
),
{{ prefix }}_l0 as (
    select distinct src as node, src as label from {{ prefix }}_e
),
{%- for k in range(1, max_iterations + 1) %}
{{ prefix }}_h{{ k }} as (
    {{ segment_components_hook(prefix ~ '_e', prefix ~ '_l' ~ (k - 1)) }}
),
{{ prefix }}_l{{ k }} as (
    {{ segment_components_jump(prefix ~ '_h' ~ k) }}
),
{%- endfor %}
{{ prefix }}_check as (
    {{ segment_components_unconverged(prefix ~ '_e', prefix ~ '_l' ~ max_iterations) }}
),
{{ prefix }}_labels as (
    select l.node, l.label
    from {{ prefix }}_l{{ max_iterations }} as l
    cross join {{ prefix }}_check as c
    where {{ segment_fail_if(
        'c.unconverged_edges > 0', segment_components_error(max_iterations)) }} is null
)
{%- endif -%}
{%- endmacro %}

{#- The message of a graph that has not converged (no quotes: it goes into SQL text). -#}
{% macro segment_components_error(max_iterations) -%}
identity graph did not converge within {{ max_iterations }} iterations: raise var identity_max_iterations
{%- endmacro %}

{#- src, dst: every edge both ways and a self-loop per node (a node sees its own label). -#}
{% macro segment_components_edges(edges) -%}
select distinct
        case when side.k in (0, 2) then e.node_a else e.node_b end as src,
        case when side.k in (0, 3) then e.node_b else e.node_a end as dst
    from {{ edges }} as e
    cross join (
        select 0 as k union all select 1 as k union all select 2 as k union all select 3 as k
    ) as side
{%- endmacro %}

{#
  First half of a round, reading the previous labels once: every node takes the smallest
  label among itself and its neighbours (nb), then every group of nodes sharing a label
  adopts the smallest nb of its members (hooking: whole groups merge each round).
#}
{% macro segment_components_hook(edges, labels) -%}
select node, least(nb_label, min(nb_label) over (partition by own_label)) as label
    from (
        select
            e.src as node,
            min(l.label) as nb_label,
            min(case when e.dst = e.src then l.label end) as own_label
        from {{ edges }} as e
        inner join {{ labels }} as l on l.node = e.dst
        group by e.src
    ) as neighbourhood
{%- endmacro %}

{#- Second half: pointer jumping, every node takes its label's label when smaller. -#}
{% macro segment_components_jump(hooked) -%}
select a.node, least(a.label, coalesce(b.label, a.label)) as label
    from {{ hooked }} as a
    left join {{ hooked }} as b on b.node = a.label
{%- endmacro %}

{#- Edges whose two ends still carry different labels: 0 means converged. -#}
{% macro segment_components_unconverged(edges, labels) -%}
select count(*) as unconverged_edges
    from {{ edges }} as e
    inner join {{ labels }} as a on a.node = e.src
    inner join {{ labels }} as b on b.node = e.dst
    where a.label <> b.label
{%- endmacro %}

{#
  The execution-time loop of segment_connected_components: returns the relation holding
  the converged labels; raises a compiler error (failing the model) past max_iterations.
#}
{% macro segment_components_iterate(edges_sql, prefix, max_iterations) -%}
{%- set edges = segment_components_table(prefix ~ '_edges') -%}
{%- set labels = [segment_components_table(prefix ~ '_labels_0'),
                  segment_components_table(prefix ~ '_labels_1')] -%}
{%- do segment_drop_components_tables(prefix) -%}
{%- do run_query(get_create_table_as_sql(False, edges,
        segment_components_edges('(' ~ edges_sql ~ ')'))) -%}
{%- do run_query(get_create_table_as_sql(False, labels[0],
        'select distinct src as node, src as label from ' ~ edges)) -%}
{%- set state = {'current': 0, 'converged': false} -%}
{%- for k in range(1, max_iterations + 1) -%}
  {%- if not state.converged -%}
  {%- set previous = labels[(k - 1) % 2] -%}
  {%- set current = labels[k % 2] -%}
  {%- do adapter.drop_relation(current) -%}
  {%- set round_sql -%}
    with hooked as ({{ segment_components_hook(edges, previous) }})
    {{ segment_components_jump('hooked') }}
  {%- endset -%}
  {%- do run_query(get_create_table_as_sql(False, current, round_sql)) -%}
  {%- do state.update({'current': k % 2}) -%}
  {%- set unconverged = run_query(segment_components_unconverged(edges, current)).columns[0].values()[0] -%}
  {%- if unconverged == 0 -%}
    {%- do state.update({'converged': true}) -%}
  {%- endif -%}
  {%- endif -%}
{%- endfor -%}
{%- if not state.converged -%}
  {%- do segment_drop_components_tables(prefix) -%}
  {%- do exceptions.raise_compiler_error(segment_components_error(max_iterations)) -%}
{%- endif -%}
{%- do adapter.drop_relation(labels[1 - state.current]) -%}
{{ return(labels[state.current]) }}
{%- endmacro %}

{#- A working table of the current model: <model>__<name>, beside it. -#}
{% macro segment_components_table(name) -%}
{{ return(this.incorporate(path={'identifier': this.identifier ~ '__' ~ name}, type='table')) }}
{%- endmacro %}

{#- Drops the working tables of segment_connected_components (a post-hook of its model). -#}
{% macro segment_drop_components_tables(prefix) -%}
{%- for name in ['_edges', '_labels_0', '_labels_1'] -%}
  {%- do adapter.drop_relation(segment_components_table(prefix ~ name)) -%}
{%- endfor -%}
{%- endmacro %}

{#
  The scope of an incremental build of int_identifiers_mapped_to_persons, as a working table
  <model>__scope(identifier_type, identifier) that the model filters on (README "Incremental
  builds" says why the result equals a full build):
  - V: every id (user id, anonymous id, alias previous id) of the messages of loads newer
    than the map's (its greatest last_load_id);
  - the links with an end in V (new links, and old aliases whose previous id is now typed
    user), and both their ends;
  - users: all of the above, plus every user of the stored persons (old components) of any
    of them, so a component is always recomputed whole, from all its links;
  - anonymous ids: all of the above, plus every anonymous id linked to one of those users
    (its person, or its shared-device flag, may change with theirs).
  Each identifier value is put under both types, so a value whose type changes (a previous id
  later seen as a user id) loses its old row (segment_identity_delete_stale).
  Messages are only ever added to int_events_unioned, except a stored copy that a later load
  replaces (dedup keeps the earliest received copy; README "Dedup"): its old ids are gone from
  every table. The map keeps message_count per identifier, so if the stored loads' messages
  carry another number of ids than the map counted, V is every id, in the messages or in the
  map (a full recomputation through the same path: the rows of ids that vanished go too).
  Returns none (recompute everything, no working table) in unit tests.
#}
{% macro segment_identity_scope() -%}
{%- if not execute or model.resource_type == 'unit_test' -%}
  {{ return(none) }}
{%- endif -%}
{%- do segment_require_stored_columns(this, ['message_count', 'last_load_id', 'changed_by_run']) -%}
{%- set events = ref('int_events_unioned') -%}
{%- set links = ref('int_identity_links_unioned') -%}
{%- set stored = run_query('select coalesce(max(last_load_id), -1), coalesce(sum(message_count), 0) from ' ~ this) -%}
{%- set watermark = stored.columns[0].values()[0] | int -%}
{%- set counted = stored.columns[1].values()[0] | int -%}
{%- set kept = run_query('select count(user_id) + count(anonymous_id) from ' ~ events
    ~ ' where load_id <= ' ~ watermark).columns[0].values()[0] | int -%}
{%- if kept != counted -%}
  {%- do log(this.identifier ~ ': a stored message was replaced by a later copy; recomputing every identifier', info=true) -%}
  {%- set watermark = -1 -%}
{%- endif -%}
{%- set scope = segment_components_table('scope') -%}
{%- set scope_sql -%}
with new_ids as (
    select user_id as identifier from {{ events }} where load_id > {{ watermark }} and user_id is not null
    union
    select anonymous_id from {{ events }} where load_id > {{ watermark }} and anonymous_id is not null
    union
    select previous_id from {{ events }}
    where load_id > {{ watermark }} and message_type = 'alias' and previous_id is not null
    {%- if kept != counted %}
    union
    -- ids of the replaced copies are in no table but the map now
    select identifier from {{ this }}
    {%- endif %}
),
touched_links as (
    select from_id, to_id from {{ links }}
    where from_id in (select identifier from new_ids) or to_id in (select identifier from new_ids)
),
touched as (
    select identifier from new_ids
    union
    select from_id from touched_links
    union
    select to_id from touched_links
),
scope_users as (
    select identifier from touched
    union
    select identifier from {{ this }}
    where identifier_type = 'user' and person_id in (
        select person_id from {{ this }}
        where identifier_type = 'user' and identifier in (select identifier from touched)
    )
)
select 'user' as identifier_type, identifier from scope_users
union all
select 'anonymous' as identifier_type, identifier from (
    select identifier from touched
    union
    select from_id from {{ links }}
    where from_type = 'anonymous' and to_id in (select identifier from scope_users)
) as scope_anonymous_ids
{%- endset -%}
{%- do adapter.drop_relation(scope) -%}
{%- do run_query(get_create_table_as_sql(False, scope, scope_sql)) -%}
{{ return(scope) }}
{%- endmacro %}

{#
  post_hook of int_identifiers_mapped_to_persons: after an incremental build wrote the rows of
  its scope (stamped changed_by_run by this run), delete the scope's older rows that were not
  rewritten: identifiers that no longer exist under that type. No-op without a scope table
  (a full build); the empty table it then creates is dropped by the next post_hook. A
  plain select where rows cannot be deleted (the model is a table there).
#}
{% macro segment_identity_delete_stale() -%}
{%- set scope = segment_components_table('scope') -%}
{%- if not segment_rows_replaceable() -%}
select 1
{%- else -%}
{%- if execute -%}
  {%- do run_query('create table if not exists ' ~ scope
      ~ ' as select identifier_type, identifier from ' ~ this ~ ' where 1 = 0') -%}
{%- endif -%}
delete from {{ this }}
where changed_by_run < {{ segment_run_marker() }}
    and (
        (identifier_type = 'user' and identifier in (
            select identifier from {{ scope }} where identifier_type = 'user'))
        or (identifier_type = 'anonymous' and identifier in (
            select identifier from {{ scope }} where identifier_type = 'anonymous'))
    )
{%- endif -%}
{%- endmacro %}

{#- Drops the scope table of segment_identity_scope (a post-hook of its model). -#}
{% macro segment_drop_identity_scope() -%}
{%- do adapter.drop_relation(segment_components_table('scope')) -%}
{%- endmacro %}
