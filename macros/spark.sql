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
