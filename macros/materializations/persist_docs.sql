{#-
  Column comments on DuckDB: dbt-duckdb's duckdb__alter_column_comment (1.11.1,
  macros/persist_docs.sql) without its own column lookup. dbt's persist_docs
  (default__persist_docs, dbt-core 1.11) already asks DuckDB for the relation's columns and
  passes only the documented columns that exist (validate_doc_columns); dbt-duckdb's macro then
  asked for them a second time to filter again, one more statement per table, view and
  incremental model on every run. The comments written are the same, except that a documented
  column whose name differs from the stored one only in letter case (unquoted, so DuckDB
  resolves it) now gets its comment, where dbt-duckdb's case-sensitive second filter skipped it
  without a word.
-#}
{% macro duckdb__alter_column_comment(relation, column_dict) %}
  {% for column_name in column_dict %}
    {% set comment = column_dict[column_name]['description'] %}
    {% set escaped_comment = duckdb_escape_comment(comment) %}
    comment on column {{ relation }}.{{ adapter.quote(column_name) if column_dict[column_name]['quote'] else column_name }} is {{ escaped_comment }};
  {% endfor %}
{% endmacro %}
