{#-
  The incremental materialization on DuckDB: dbt-duckdb's own (1.11.1,
  macros/materializations/incremental.sql), with one change in the incremental SQL path. There,
  after the new rows are in the temporary table, dbt asks DuckDB for the columns of the
  temporary table and of the stored one (on_schema_change), and persist_docs then comments
  the table, asks for its columns twice and comments each documented column: about six
  statements, each with dbt's own Python, for each incremental model of this project on every
  hourly run although the columns and the comments change only with the project. Here one
  catalog query (segment_incremental_catalog) reads both tables' columns and the stored
  comments; when the two tables have the same columns (names and types: what dbt's
  on_schema_change check compares) the schema-change step is skipped (it would find no change
  and insert the same columns), and when the stored comments are the ones persist_docs would
  write, persist_docs is skipped. Any difference, a strategy other than delete+insert or
  append, a Python model, MotherDuck (no temporary tables), a --full-refresh or a first build
  takes dbt-duckdb's path unchanged.
-#}
{% materialization incremental, adapter="duckdb", supported_languages=['sql', 'python'] -%}

  {%- set language = model['language'] -%}
  -- relations
  {%- set existing_relation = load_cached_relation(this) -%}
  {%- set target_relation = this.incorporate(type='table') -%}
  {%- set intermediate_relation = make_intermediate_relation(target_relation)-%}
  {%- set backup_relation_type = 'table' if existing_relation is none else existing_relation.type -%}
  {%- set backup_relation = make_backup_relation(target_relation, backup_relation_type) -%}

  -- configs
  {%- set unique_key = config.get('unique_key') -%}
  {%- set full_refresh_mode = (should_full_refresh()  or existing_relation.is_view) -%}
  {%- set on_schema_change = incremental_validate_on_schema_change(config.get('on_schema_change'), default='ignore') -%}
  {%- set partitioned_by = none -%}
  {%- set sorted_by = none -%}
  {%- if existing_relation is none or full_refresh_mode -%}
    {%- set partitioned_by = duckdb__get_partitioned_by(target_relation, false) -%}
    {%- set sorted_by = duckdb__get_sorted_by(target_relation, false) -%}
  {%- endif -%}
  {%- set skip_auto_begin = (partitioned_by or sorted_by) and adapter.is_ducklake(target_relation) -%}

  {%- set preexisting_intermediate_relation = load_cached_relation(intermediate_relation)-%}
  {%- set preexisting_backup_relation = load_cached_relation(backup_relation) -%}
  {% set grant_config = config.get('grants') %}
  {{ drop_relation_if_exists(preexisting_intermediate_relation) }}
  {{ drop_relation_if_exists(preexisting_backup_relation) }}

  {% set to_drop = [] %}
  {% set dropped_dependents = [] %}
  {%- set batch_id = adapter.batch_id_for_model(model) -%}
  {% set temporary_relation = duckdb__dispatch_temporary_relation(target_relation, batch_id) %}
  {% set temp_relation = temporary_relation.relation %}
  {% set temporary = temporary_relation.temporary %}
  {% if not temporary %}
    {% do to_drop.append(temp_relation) %}
  {% endif %}
  {#- the added step's catalog (none: dbt-duckdb's path) -#}
  {% set catalog = none %}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  -- `BEGIN` happens here:
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {% if existing_relation is none %}
    {% set build_sql = create_table_as(False, target_relation, compiled_code, language, partitioned_by=partitioned_by, sorted_by=sorted_by) %}
  {% elif full_refresh_mode and has_foreign_key_constraints(existing_relation) %}
    {% set dropped_dependents = drop_relation_for_rebuild(existing_relation) %}
    {% set build_sql = create_table_as(False, target_relation, compiled_code, language, partitioned_by=partitioned_by, sorted_by=sorted_by) %}
  {% elif full_refresh_mode %}
    {% set build_sql = create_table_as(False, intermediate_relation, compiled_code, language, partitioned_by=partitioned_by, sorted_by=sorted_by) %}
    {% set need_swap = true %}
  {% else %}
    {% if language == 'python' %}
      {% set build_python = create_table_as(temporary, temp_relation, compiled_code, language, partitioned_by=none, sorted_by=none) %}
      {% call statement("pre", language=language) %}
        {{- build_python }}
      {% endcall %}
    {% else %} {# SQL #}
      {% do run_query(create_table_as(temporary, temp_relation, compiled_code, language, partitioned_by=none, sorted_by=none)) %}
    {% endif %}
    {% set incremental_strategy = config.get('incremental_strategy') or 'default' %}

    {#- the added step: one catalog query instead of the schema-change check's two -#}
    {% if language == 'sql' and temporary and incremental_strategy in ('delete+insert', 'append') %}
      {% set catalog = segment_incremental_catalog(temp_relation, existing_relation) %}
    {% endif %}
    {% if catalog is not none and catalog.same_columns %}
      {% set dest_columns = catalog.columns %}
    {% else %}
      {#- dbt-duckdb's path -#}
      {% do adapter.expand_target_column_types(
               from_relation=temp_relation,
               to_relation=target_relation) %}
      {% set dest_columns = process_schema_changes(on_schema_change, temp_relation, existing_relation) %}
      {% if not dest_columns %}
        {% set dest_columns = adapter.get_columns_in_relation(existing_relation) %}
      {% endif %}
    {% endif %}

    {% set incremental_predicates = config.get('predicates', none) or config.get('incremental_predicates', none) %}
    {% set strategy_sql_macro_func = adapter.get_incremental_strategy_macro(context, incremental_strategy) %}
    {% set strategy_arg_dict = ({'target_relation': target_relation, 'temp_relation': temp_relation, 'unique_key': unique_key, 'dest_columns': dest_columns, 'incremental_predicates': incremental_predicates }) %}
    {% set build_sql = strategy_sql_macro_func(strategy_arg_dict) %}
    {% set language = "sql" %}

  {% endif %}

  {% call statement("main", language=language, auto_begin=not skip_auto_begin) %}
      {{- build_sql }}
  {% endcall %}

  {% if need_swap %}
      {% do drop_indexes_on_relation(target_relation) %}
      {% if may_be_foreign_key_target(target_relation) %}
        {% set dropped_dependents = drop_foreign_key_dependents(target_relation) %}
      {% endif %}
      {% do adapter.rename_relation(target_relation, backup_relation) %}
      {% do adapter.rename_relation(intermediate_relation, target_relation) %}
      {% do to_drop.append(backup_relation) %}
  {% endif %}
  {% do restore_foreign_key_dependents(dropped_dependents) %}

  {% set should_revoke = should_revoke(existing_relation, full_refresh_mode) %}
  {% do apply_grants(target_relation, grant_config, should_revoke=should_revoke) %}

  {% if existing_relation is none or existing_relation.is_view or should_full_refresh() %}
    {% do create_indexes(target_relation) %}
  {% endif %}

  {% if catalog is none or not (catalog.same_columns and catalog.docs_current) %}
    {% do persist_docs(target_relation, model) %}
  {% endif %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}

  -- `COMMIT` happens here
  {% do adapter.commit() %}

  {% for rel in to_drop %}
      {% if not adapter.is_motherduck() %}
        {% do drop_indexes_on_relation(rel) %}
      {% endif %}
      {% do adapter.drop_relation(rel) %}
  {% endfor %}

  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}

{%- endmaterialization %}


{#
  The columns of an incremental model's new rows (`temp`, a temporary table) and of its stored
  table (`stored`), and the stored table's comments, in one catalog query. Returns none when
  either table is not found (the caller then takes dbt's path), else a dict:
  same_columns: both have the same column names with the same types (DuckDB's type text, as
  dbt's on_schema_change check compares them; order aside, as there);
  columns: the stored table's columns (api.Column), for the insert's column list;
  docs_current: the stored comments are the ones persist_docs would write (segment_docs_current).
#}
{% macro segment_incremental_catalog(temp, stored) -%}
  {%- set query -%}
    select
        t.database_name = 'temp' as is_new,
        c.column_name,
        c.data_type,
        c.comment as column_comment,
        t.comment as table_comment
    from duckdb_tables() as t
    left join duckdb_columns() as c
        on c.database_name = t.database_name and c.schema_name = t.schema_name
        and c.table_name = t.table_name
    where (t.database_name = 'temp' and t.table_name = '{{ temp.identifier }}')
        or (t.database_name = '{{ stored.database }}' and t.schema_name = '{{ stored.schema }}'
            and t.table_name = '{{ stored.identifier }}' and not t.temporary)
    order by is_new, c.column_index
  {%- endset -%}
  {%- set new = {} -%}
  {%- set old = [] -%}
  {%- for row in run_query(query).rows -%}
    {%- if row[0] -%}
      {%- do new.update({row[1]: row[2]}) -%}
    {%- else -%}
      {%- do old.append(row) -%}
    {%- endif -%}
  {%- endfor -%}
  {%- if not new or not old or old[0][1] is none -%}
    {{ return(none) }}
  {%- endif -%}
  {%- set differing = [] -%}
  {%- for o in old if new.get(o[1]) != o[2] -%}
    {%- do differing.append(o[1]) -%}
  {%- endfor -%}
  {%- set same_columns = old | length == new | length and not differing -%}
  {%- set columns = [] -%}
  {%- for o in old -%}
    {%- do columns.append(api.Column.create(o[1], o[2])) -%}
  {%- endfor -%}
  {{ return({
      'same_columns': same_columns,
      'columns': columns,
      'docs_current': segment_docs_current(old[0][4], old | map(attribute=1) | list, old | map(attribute=3) | list),
  }) }}
{%- endmacro %}
