{#-
  Spark-only helpers (the adapter-dispatched SQL fragments live in cross_db.sql).
-#}

{#
  on-run-start hook: when var segment_raw_parquet = {path: <folder>, tables: [names]} is set,
  (re)defines each raw table as a view `<segment_schema>.<name>` over the Parquet files in
  <folder>/<name>/ (for example exported from a DuckDB warehouse with COPY ... (FORMAT
  parquet)). Views, not tables: re-creating one never deletes data and picks up columns added
  by later loads; an existing table of the same name makes the build fail instead of being
  replaced. Does nothing when the var is unset or on other adapters.
#}
{% macro segment_register_raw_parquet() %}
  {%- set raw = var('segment_raw_parquet', none) -%}
  {%- if execute and raw and target.type == 'spark' -%}
    {%- set schema = adapter.quote(var('segment_schema')) -%}
    {%- do run_query('create schema if not exists ' ~ schema) -%}
    {%- for table in raw['tables'] -%}
      {%- set location = (raw['path'] ~ '/' ~ table) | replace('`', '``') -%}
      {%- do run_query(
          'create or replace view ' ~ schema ~ '.' ~ adapter.quote(table)
          ~ ' as select * from parquet.`' ~ location ~ '`'
      ) -%}
    {%- endfor -%}
  {%- endif -%}
{% endmacro %}

{#
  dbt's listagg on Spark (dbt-spark's ignores order_by_clause, so list order was arbitrary):
  ordered by the measure itself, the only order this project asks for; any other order fails
  the compilation instead of being dropped silently.
#}
{% macro spark__listagg(measure, delimiter_text, order_by_clause, limit_num) -%}
  {%- set sorted = order_by_clause and (order_by_clause | trim | lower) == ('order by ' ~ measure | trim | lower) -%}
  {%- if (order_by_clause and not sorted) or limit_num -%}
    {%- do exceptions.raise_compiler_error(
        'listagg on Spark supports only "order by <measure>" and no limit, got: ' ~ order_by_clause) -%}
  {%- endif -%}
  array_join({{ 'array_sort(' if sorted }}collect_list({{ measure }}){{ ')' if sorted }}, {{ delimiter_text }})
{%- endmacro %}
