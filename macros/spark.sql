{#-
  Spark-only helpers (the adapter-dispatched SQL fragments live in cross_db.sql).
-#}

{#
  on-run-start hook: when var segment_raw_parquet = {path: <folder>, tables: [names]} is set,
  (re)defines each listed table that is a source of this project as a view
  `<segment_schema>.<name>` over the Parquet files in <folder>/<name>/ (export_parquet.py
  writes them from a DuckDB warehouse). Views, not tables: re-creating one never deletes data
  and picks up columns added by later loads; an existing table of the same name makes the
  build fail instead of being replaced. Does nothing when the var is unset or off Spark.
#}
{% macro segment_register_raw_parquet() %}
  {%- set raw = var('segment_raw_parquet', none) -%}
  {%- if execute and raw and target.type == 'spark' -%}
    {%- set schema = adapter.quote(var('segment_schema')) -%}
    {%- do run_query('create schema if not exists ' ~ schema) -%}
    {#- only the tables the project reads: each view costs a look at its files' schema -#}
    {%- set read = [] -%}
    {%- for node in graph.sources.values() if node.source_name == 'segment' -%}
      {%- do read.append(node.identifier) -%}
    {%- endfor -%}
    {%- for table in raw['tables'] if table in read -%}
      {%- set location = (raw['path'] ~ '/' ~ table) | replace('`', '``') -%}
      {%- do run_query(
          'create or replace view ' ~ schema ~ '.' ~ adapter.quote(table)
          ~ ' as select * from parquet.`' ~ location ~ '`'
      ) -%}
    {%- endfor -%}
  {%- endif -%}
{% endmacro %}


{#
  dbt.dateadd and dbt.datediff on Spark with DuckDB's meaning for parts of a day and less:
  dbt-spark's versions go through to_unix_timestamp, which drops the fraction of a second
  (a 30-minute session timeout then splits events exactly 30 minutes apart). Adding keeps
  microseconds (timestampadd); a difference counts the part's boundaries crossed, as DuckDB's
  date_diff does. Months, quarters and years use dbt-spark's macros.
#}
{% macro spark__dateadd(datepart, interval, from_date_or_timestamp) -%}
  {%- if datepart | lower in ('week', 'day', 'hour', 'minute', 'second', 'millisecond', 'microsecond') -%}
  timestampadd({{ datepart | upper }}, {{ interval }}, {{ from_date_or_timestamp }})
  {%- else -%}
  {{ dbt_spark.spark__dateadd(datepart, interval, from_date_or_timestamp) }}
  {%- endif -%}
{%- endmacro %}

{% macro spark__datediff(first_date, second_date, datepart) -%}
  {%- set seconds = {'second': 1, 'minute': 60, 'hour': 3600}.get(datepart | lower) -%}
  {%- if seconds -%}
  (floor(unix_seconds(cast({{ second_date }} as timestamp)) / {{ seconds }})
   - floor(unix_seconds(cast({{ first_date }} as timestamp)) / {{ seconds }}))
  {%- else -%}
  {{ dbt_spark.spark__datediff(first_date, second_date, datepart) }}
  {%- endif -%}
{%- endmacro %}
