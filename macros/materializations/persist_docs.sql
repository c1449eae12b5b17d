{#-
  Column comments on DuckDB: dbt-duckdb's duckdb__alter_column_comment (1.11.1,
  macros/persist_docs.sql) without its own column lookup. dbt's persist_docs
  (default__persist_docs, dbt-core 1.11) already asks DuckDB for the relation's columns and
  passes only the documented columns that exist (validate_doc_columns); dbt-duckdb's macro then
  asked for them a second time to filter again, one more statement per table, view and
  incremental model on every run. The comments written are the same, except that a documented
  column whose name differs from the stored one only in letter case (unquoted, so DuckDB
  resolves it) now gets its comment, where dbt-duckdb's case-sensitive second filter skipped it
  without a word. Below it, segment_docs_current: whether a relation's stored comments are
  already the ones persist_docs would write (used by the view and incremental materializations).
-#}
{% macro duckdb__alter_column_comment(relation, column_dict) %}
  {% for column_name in column_dict %}
    {% set comment = column_dict[column_name]['description'] %}
    {% set escaped_comment = duckdb_escape_comment(comment) %}
    comment on column {{ relation }}.{{ adapter.quote(column_name) if column_dict[column_name]['quote'] else column_name }} is {{ escaped_comment }};
  {% endfor %}
{% endmacro %}


{#
  True when a relation's stored comments (`relation_comment`; `column_comments`, one per name
  in `column_names`) are the ones persist_docs writes for the current model: the model's
  description on the relation when persist_docs.relation is on, each documented column's
  description when persist_docs.columns is on, and no comment anywhere else (persist_docs
  never removes one, so a stale comment keeps dbt's path, which leaves it as dbt does).
#}
{% macro segment_docs_current(relation_comment, column_names, column_comments) -%}
  {%- set wanted_relation = model.description if config.persist_relation_docs() and model.description else none -%}
  {%- if relation_comment != wanted_relation -%}
    {{ return(false) }}
  {%- endif -%}
  {%- set documented = model.columns if config.persist_column_docs() and model.columns else {} -%}
  {%- for name in column_names -%}
    {%- set wanted = documented[name]['description'] if name in documented else none -%}
    {%- if column_comments[loop.index0] != wanted -%}
      {{ return(false) }}
    {%- endif -%}
  {%- endfor -%}
  {{ return(true) }}
{%- endmacro %}
