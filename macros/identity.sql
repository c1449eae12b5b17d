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
