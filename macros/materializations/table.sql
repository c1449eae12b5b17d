{#-
  The table materialization on DuckDB: dbt-duckdb's own (1.11.1,
  macros/materializations/table.sql) with one change. dbt-duckdb builds the new table as
  <table>__dbt_tmp, looks up the old one's indexes, renames the old one to <table>__dbt_backup
  and the new one into place, commits, then drops the backup in a transaction of its own: four
  statements around the CREATE for each table of this project on every run (the drop of the
  backup often waits for DuckDB's automatic checkpoint). dbt-duckdb already has a path that
  drops the old table inside the model's transaction and creates the new one under its final
  name (build_in_place, for tables with foreign keys, with dbt-duckdb's own
  drop_relation_for_rebuild); here every stored table takes it, so the swap is one DROP in the
  same transaction and no backup is left to drop: a failed build rolls back to the old table
  as before. A model whose SQL reads its own table ({{ this }}), a view in the table's place, a
  first build and DuckLake's pre-1.5.3 workarounds keep dbt-duckdb's rename path.
-#}
{% materialization table, adapter="duckdb", supported_languages=['sql', 'python'] %}

  {%- set language = model['language'] -%}

  {%- set existing_relation = load_cached_relation(this) -%}
  {%- set target_relation = this.incorporate(type='table') %}
  {%- set intermediate_relation =  make_intermediate_relation(target_relation) -%}
  -- the intermediate_relation should not already exist in the database; get_relation
  -- will return None in that case. Otherwise, we get a relation that we can drop
  -- later, before we try to use this name for the current operation
  {%- set preexisting_intermediate_relation = load_cached_relation(intermediate_relation) -%}
  /*
      See ../view/view.sql for more information about this relation.
  */
  {%- set backup_relation_type = 'table' if existing_relation is none else existing_relation.type -%}
  {%- set backup_relation = make_backup_relation(target_relation, backup_relation_type) -%}
  -- as above, the backup_relation should not already exist
  {%- set preexisting_backup_relation = load_cached_relation(backup_relation) -%}
  {%- set use_ducklake_table_workarounds = adapter.use_ducklake_table_workarounds(target_relation) -%}
  {#- the one change: rebuild a stored table in place (see the header) -#}
  {%- set build_in_place = has_foreign_key_constraints(existing_relation)
        or (existing_relation is not none and existing_relation.is_table
            and not use_ducklake_table_workarounds and this.render() not in compiled_code) -%}
  {%- set dropped_dependents = [] -%}
  -- grab current tables grants config for comparision later on
  {% set grant_config = config.get('grants') %}

  -- drop the temp relations if they exist already in the database
  {{ drop_relation_if_exists(preexisting_intermediate_relation) }}
  {{ drop_relation_if_exists(preexisting_backup_relation) }}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}

  -- `BEGIN` happens here:
  {{ run_hooks(pre_hooks, inside_transaction=True) }}
  {%- set partitioned_by = duckdb__get_partitioned_by(target_relation, false) -%}
  {%- set sorted_by = duckdb__get_sorted_by(target_relation, false) -%}

  {% if build_in_place %}
    {#-- Tables with foreign keys must not be renamed (see has_foreign_key_constraints),
         so replace the existing relation inside this transaction instead of swapping --#}
    {% if existing_relation is not none %}
      {% set dropped_dependents = drop_relation_for_rebuild(existing_relation) %}
    {% endif %}
    {% call statement('main', language=language) -%}
      {{- create_table_as(False, target_relation, compiled_code, language, partitioned_by=partitioned_by, sorted_by=sorted_by) }}
    {%- endcall %}
    {% do restore_foreign_key_dependents(dropped_dependents) %}
  {% else %}
    -- build model
    {% call statement('main', language=language) -%}
      {{- create_table_as(False, intermediate_relation, compiled_code, language, partitioned_by=partitioned_by, sorted_by=sorted_by) }}
    {%- endcall %}

    -- cleanup
    {% if existing_relation is not none %}
        {#-- Drop indexes and foreign key dependents before renaming to avoid dependency errors --#}
        {% do drop_indexes_on_relation(existing_relation) %}
        {% if existing_relation.is_table and may_be_foreign_key_target(existing_relation) %}
          {% set dropped_dependents = drop_foreign_key_dependents(existing_relation) %}
        {% endif %}
        {{ adapter.rename_relation(existing_relation, backup_relation) }}
    {% endif %}

    {{ adapter.rename_relation(intermediate_relation, target_relation) }}
    {% do restore_foreign_key_dependents(dropped_dependents) %}
  {% endif %}

  {% do create_indexes(target_relation) %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}

  {% set should_revoke = should_revoke(existing_relation, full_refresh_mode=True) %}
  {% do apply_grants(target_relation, grant_config, should_revoke=should_revoke) %}
  {% if not use_ducklake_table_workarounds %}
    {% do persist_docs(target_relation, model) %}
  {% endif %}

  -- `COMMIT` happens here
  {{ adapter.commit() }}

  {% if use_ducklake_table_workarounds %}
    {# Before DuckDB 1.5.3, DuckLake could lose table ALTER metadata during rename. #}
    {% if partitioned_by %}
      {% call statement('reassert_partitioned_by', auto_begin=False) -%}
        {{ duckdb__alter_table_set_partitioned_by(target_relation, partitioned_by) }}
      {%- endcall %}
    {% endif %}
    {% if sorted_by %}
      {% call statement('reassert_sorted_by', auto_begin=False) -%}
        {{ duckdb__alter_table_set_sorted_by(target_relation, sorted_by) }}
      {%- endcall %}
    {% endif %}
    {# Pre-1.5.3 DuckLake versions can conflict when comments are persisted in the transaction. #}
    {% do persist_docs(target_relation, model) %}
  {% endif %}

  -- finally, drop the existing/backup relation after the commit (built in place: there is none)
  {% if not build_in_place %}
    {{ drop_relation_if_exists(backup_relation) }}
  {% endif %}

  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
