{#-
  The view materialization on DuckDB: dbt's own (global_project view.sql, dbt-core 1.11), plus
  one step. dbt re-creates every view on every run: create the new definition as
  <view>__dbt_tmp, rename the old one away, rename the new one in, comment the view and each
  documented column (persist_docs), drop the old one: about 12 statements and their Python
  per view, for the 15 views of this project on every hourly run although a view changes only
  when the project or a raw table's columns change. Here, right after creating
  <view>__dbt_tmp, the two definitions are compared (segment_view_unchanged: DuckDB's text of
  each, the columns' names and types, and the comments persist_docs would write); when they
  are the same the temporary view is dropped and the stored view is kept as it is. Any
  difference, a --full-refresh, or a model with hooks takes dbt's path unchanged.
-#}
{%- materialization view, adapter='duckdb' -%}

  {%- set existing_relation = load_cached_relation(this) -%}
  {%- set target_relation = this.incorporate(type='view') -%}
  {%- set intermediate_relation =  make_intermediate_relation(target_relation) -%}
  {%- set preexisting_intermediate_relation = load_cached_relation(intermediate_relation) -%}
  {%- set backup_relation_type = 'view' if existing_relation is none else existing_relation.type -%}
  {%- set backup_relation = make_backup_relation(target_relation, backup_relation_type) -%}
  {%- set preexisting_backup_relation = load_cached_relation(backup_relation) -%}
  {% set grant_config = config.get('grants') %}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}

  {{ drop_relation_if_exists(preexisting_intermediate_relation) }}
  {{ drop_relation_if_exists(preexisting_backup_relation) }}

  -- `BEGIN` happens here:
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {% call statement('main') -%}
    {{ get_create_view_as_sql(intermediate_relation, sql) }}
  {%- endcall %}

  {#- the added step: keep a stored view that equals the new one -#}
  {%- if existing_relation is not none and existing_relation.is_view and not should_full_refresh()
        and not pre_hooks and not post_hooks and not grant_config
        and segment_view_unchanged(existing_relation, intermediate_relation) -%}
    {% do adapter.drop_relation(intermediate_relation) %}
    {{ adapter.commit() }}
    {{ return({'relations': [target_relation]}) }}
  {%- endif -%}

  {% if existing_relation is not none %}
    {% set existing_relation = load_cached_relation(existing_relation) %}
    {% if existing_relation is not none %}
        {{ adapter.rename_relation(existing_relation, backup_relation) }}
    {% endif %}
  {% endif %}
  {{ adapter.rename_relation(intermediate_relation, target_relation) }}

  {% set should_revoke = should_revoke(existing_relation, full_refresh_mode=True) %}
  {% do apply_grants(target_relation, grant_config, should_revoke=should_revoke) %}

  {% do persist_docs(target_relation, model) %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}

  {{ adapter.commit() }}

  {{ drop_relation_if_exists(backup_relation) }}

  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}

{%- endmaterialization -%}


{#
  True when view `stored` is what re-creating it from `candidate` (the new definition, just
  created beside it) would leave: the same SQL as DuckDB keeps it (its text of each, the view
  names aside), the same columns (names and types, in order), and the comments that
  persist_docs would write (the model's description on the view when persist_docs.relation is
  on, each documented column's description when persist_docs.columns is on, none elsewhere).
  One catalog query; anything unexpected answers false (the view is then re-created).
#}
{% macro segment_view_unchanged(stored, candidate) -%}
  {#- one row per column of the two views (agate turns nested values into text: keep it flat) -#}
  {%- set query -%}
    select
        v.view_name,
        replace(v.sql, '{{ candidate.identifier }}', '{{ stored.identifier }}') as definition,
        v.comment as view_comment,
        c.column_name,
        c.data_type,
        c.comment as column_comment
    from duckdb_views() as v
    left join duckdb_columns() as c
        on c.database_name = v.database_name and c.schema_name = v.schema_name
        and c.table_name = v.view_name
    where v.database_name = '{{ stored.database }}' and v.schema_name = '{{ stored.schema }}'
        and v.view_name in ('{{ stored.identifier }}', '{{ candidate.identifier }}')
    order by v.view_name, c.column_index
  {%- endset -%}
  {%- set views = {stored.identifier: [], candidate.identifier: []} -%}
  {%- for row in run_query(query).rows -%}
    {%- do views[row[0]].append(row) -%}
  {%- endfor -%}
  {%- set old = views[stored.identifier] -%}
  {%- set new = views[candidate.identifier] -%}
  {%- if not old or old | length != new | length or old[0][1] != new[0][1] -%}
    {{ return(false) }}
  {%- endif -%}
  {%- for o in old -%}
    {%- set n = new[loop.index0] -%}
    {%- if o[3] != n[3] or o[4] != n[4] -%}
      {{ return(false) }}
    {%- endif -%}
  {%- endfor -%}
  {#- the comments: segment_docs_current (macros/materializations/persist_docs.sql) -#}
  {{ return(segment_docs_current(old[0][2], old | map(attribute=3) | list, old | map(attribute=5) | list)) }}
{%- endmacro %}
