{#-
  Small adapter-dispatched helpers. Every engine-specific piece of SQL in this project lives
  here (the DuckDB and Spark implementations are exercised by the tests; Spark's through
  tests/dbt/test_dbt_spark.py). Add an <adapter>__ version to port.
-#}

{# Compile-time error for a helper that has no SQL for the current adapter yet. #}
{% macro segment_not_ported(name) -%}
  {{ exceptions.raise_compiler_error(name ~ ' has no implementation for adapter ' ~ adapter.type() ~ ': add ' ~ adapter.type() ~ '__' ~ name ~ ' to macros/cross_db.sql') }}
{%- endmacro %}

{# A cast that yields NULL instead of failing. #}
{% macro segment_try_cast(expression, type) -%}
  {{ return(adapter.dispatch('segment_try_cast', 'segment_warehouse')(expression, type)) }}
{%- endmacro %}
{% macro default__segment_try_cast(expression, type) -%}
  {{ dbt.safe_cast(expression, type) }}
{%- endmacro %}
{% macro duckdb__segment_try_cast(expression, type) -%}
  try_cast({{ expression }} as {{ type }})
{%- endmacro %}
{% macro spark__segment_try_cast(expression, type) -%}
  try_cast({{ expression }} as {{ type }})
{%- endmacro %}

{# Timestamp type that keeps the instant (the loader writes TIMESTAMPTZ). #}
{% macro segment_type_timestamp() -%}
  {{ return(adapter.dispatch('segment_type_timestamp', 'segment_warehouse')()) }}
{%- endmacro %}
{% macro default__segment_type_timestamp() -%}
  {{ dbt.type_timestamp() }}
{%- endmacro %}
{% macro duckdb__segment_type_timestamp() -%}
  timestamp with time zone
{%- endmacro %}

{# Money: exact decimal, 4 places (covers 0-, 2- and 3-decimal currencies without rounding). #}
{% macro segment_type_money() -%}
  decimal(18, 4)
{%- endmacro %}

{# Text of one top-level key of a JSON object held as text (NULL when absent). #}
{% macro segment_json_text(json_expression, key) -%}
  {{ return(adapter.dispatch('segment_json_text', 'segment_warehouse')(json_expression, key)) }}
{%- endmacro %}
{% macro default__segment_json_text(json_expression, key) -%}
  {{ segment_not_ported('segment_json_text') }}
{%- endmacro %}
{% macro duckdb__segment_json_text(json_expression, key) -%}
  json_extract_string({{ json_expression }}, '$.{{ key }}')
{%- endmacro %}
{% macro spark__segment_json_text(json_expression, key) -%}
  get_json_object({{ json_expression }}, '$.{{ key }}')
{%- endmacro %}

{#
  Sorted array of the (non-null) values of `expression` in a group: DuckDB LIST, Spark ARRAY.
#}
{% macro segment_sorted_array_agg(expression) -%}
  {{ return(adapter.dispatch('segment_sorted_array_agg', 'segment_warehouse')(expression)) }}
{%- endmacro %}
{% macro default__segment_sorted_array_agg(expression) -%}
  array_agg({{ expression }} order by {{ expression }})
{%- endmacro %}
{% macro duckdb__segment_sorted_array_agg(expression) -%}
  list({{ expression }} order by {{ expression }})
{%- endmacro %}
{% macro spark__segment_sorted_array_agg(expression) -%}
  array_sort(collect_list({{ expression }}))
{%- endmacro %}

{# Number of elements of an array. #}
{% macro segment_array_size(expression) -%}
  {{ return(adapter.dispatch('segment_array_size', 'segment_warehouse')(expression)) }}
{%- endmacro %}
{% macro default__segment_array_size(expression) -%}
  cardinality({{ expression }})
{%- endmacro %}
{% macro duckdb__segment_array_size(expression) -%}
  len({{ expression }})
{%- endmacro %}
{% macro spark__segment_array_size(expression) -%}
  size({{ expression }})
{%- endmacro %}

{#
  One row per element of a JSON array column: every column of `relation` plus
  `line_number` (1-based) and `element_json` (the element as JSON text). Rows whose
  column is NULL, not valid JSON or not an array produce no element rows.
#}
{% macro segment_json_array_rows(relation, json_column) -%}
  {{ return(adapter.dispatch('segment_json_array_rows', 'segment_warehouse')(relation, json_column)) }}
{%- endmacro %}
{% macro default__segment_json_array_rows(relation, json_column) -%}
  {{ segment_not_ported('segment_json_array_rows') }}
{%- endmacro %}
{% macro duckdb__segment_json_array_rows(relation, json_column) -%}
  select exploded.* exclude (json_elements),
         cast(json_elements[line_number] as varchar) as element_json
  from (
    select src.*, unnest(generate_series(1, len(src.json_elements))) as line_number
    from (
      select r.*, try_cast({{ json_column }} as json[]) as json_elements
      from {{ relation }} as r
    ) as src
    where src.json_elements is not null and len(src.json_elements) > 0
  ) as exploded
{%- endmacro %}
{% macro spark__segment_json_array_rows(relation, json_column) -%}
  select r.*, pe.pos + 1 as line_number, pe.col as element_json
  from {{ relation }} as r
  lateral view posexplode(from_json({{ json_column }}, 'array<string>')) pe as pos, col
{%- endmacro %}

{#
  An expression that aborts the query with `message` when `condition` is true, else NULL.
  Used to make the identity graph fail loudly instead of returning a partial answer.
#}
{% macro segment_fail_if(condition, message) -%}
  {{ return(adapter.dispatch('segment_fail_if', 'segment_warehouse')(condition, message)) }}
{%- endmacro %}
{% macro default__segment_fail_if(condition, message) -%}
  {{ segment_not_ported('segment_fail_if') }}
{%- endmacro %}
{% macro duckdb__segment_fail_if(condition, message) -%}
  case when {{ condition }} then error('{{ message }}') end
{%- endmacro %}
{% macro spark__segment_fail_if(condition, message) -%}
  case when {{ condition }} then raise_error('{{ message }}') end
{%- endmacro %}

{#
  A number in [0, 1e9+7) derived from a hash of `expression` (one SQL expression, or several
  separated by commas: both engines' hash functions take several): summed over a set of rows it is
  an order-independent checksum of that set (incremental analytics models compare such sums
  to find persons whose events changed). Summing stays far inside BIGINT.
#}
{% macro segment_hash_number(expression) -%}
  {{ return(adapter.dispatch('segment_hash_number', 'segment_warehouse')(expression)) }}
{%- endmacro %}
{% macro default__segment_hash_number(expression) -%}
  {{ segment_not_ported('segment_hash_number') }}
{%- endmacro %}
{% macro duckdb__segment_hash_number(expression) -%}
  cast(hash({{ expression }}) % 1000000007 as {{ dbt.type_bigint() }})
{%- endmacro %}
{% macro spark__segment_hash_number(expression) -%}
  pmod(xxhash64({{ expression }}), 1000000007)
{%- endmacro %}

{#
  The first capture group of regular expression `pattern` in `expression`, NULL when it does
  not match or captures nothing. DuckDB and Spark both have regexp_extract with this meaning.
#}
{% macro segment_regexp_extract(expression, pattern) -%}
  {{ return(adapter.dispatch('segment_regexp_extract', 'segment_warehouse')(expression, pattern)) }}
{%- endmacro %}
{% macro default__segment_regexp_extract(expression, pattern) -%}
  nullif(regexp_extract({{ expression }}, '{{ pattern }}', 1), '')
{%- endmacro %}

{# The UTC calendar date of an instant (DuckDB's date_trunc would use the session time zone). #}
{% macro segment_utc_date(expression) -%}
  {{ return(adapter.dispatch('segment_utc_date', 'segment_warehouse')(expression)) }}
{%- endmacro %}
{% macro default__segment_utc_date(expression) -%}
  cast(timezone('UTC', {{ expression }}) as date)
{%- endmacro %}
{% macro spark__segment_utc_date(expression) -%}
  to_date(to_utc_timestamp({{ expression }}, current_timezone()))
{%- endmacro %}

{#
  Incremental strategy of the event models: one that replaces re-delivered unique keys
  where the table format can update rows, else insert_overwrite of new load_id partitions.
#}
{% macro segment_incremental_strategy() -%}
  {{ return(adapter.dispatch('segment_incremental_strategy', 'segment_warehouse')()) }}
{%- endmacro %}
{% macro default__segment_incremental_strategy() -%}
  {{ return('delete+insert') }}
{%- endmacro %}
{% macro spark__segment_incremental_strategy() -%}
  {%- set row_level_updates = env_var('SEGMENT_SPARK_FILE_FORMAT', 'parquet') | lower in ('delta', 'iceberg', 'hudi') -%}
  {{ return('merge' if row_level_updates else 'insert_overwrite') }}
{%- endmacro %}
{% macro databricks__segment_incremental_strategy() -%}
  {{ return('merge') }}
{%- endmacro %}

{#
  True where an incremental build can delete or replace rows by key (DuckDB; Spark on
  Delta/Iceberg/Hudi), false on Spark plain Parquet (insert_overwrite of whole partitions
  only). Models whose incremental builds move old rows (a merge re-attributes history) are
  tables where this is false.
#}
{% macro segment_rows_replaceable() -%}
  {{ return(segment_incremental_strategy() != 'insert_overwrite') }}
{%- endmacro %}


{#
  Where clause of an incremental model on load_id (columns load_id, message_id of `alias`):
  only loads newer than the table's; under insert_overwrite (rows cannot be replaced) also
  only message ids not in the table yet. The table's latest load_id is read first and
  written into the SQL as a number, so the database can use it as a plain filter on the raw
  tables' scans (a subquery there is a join, evaluated after the staging views).
#}
{% macro segment_newer_loads(alias) -%}
{%- set latest = -1 -%}
{%- if execute -%}
  {%- set found = run_query('select coalesce(max(load_id), -1) from ' ~ this).columns[0].values()[0] -%}
  {%- set latest = found | int -%}
{%- endif %}
where {{ alias }}.load_id > {{ latest }}
  {%- if segment_incremental_strategy() == 'insert_overwrite' %}
    and not exists (
        select 1 from {{ this }} as existing where existing.message_id = {{ alias }}.message_id
    )
  {%- endif %}
{%- endmacro %}


{#
  The change marker of the rows a build writes (column changed_by_run): when this dbt
  invocation started (run_started_at), in microseconds since 1970, so it grows from run to
  run, and a full refresh marks every row as new. An incremental model reads only the rows of
  its source whose marker is newer than the newest one it holds (segment_newest_marker): the
  rows written since its own last build, whichever models ran in between.
#}
{% macro segment_run_marker() -%}
  cast({{ (run_started_at.timestamp() * 1000000) | int }} as {{ dbt.type_bigint() }})
{%- endmacro %}

{# The newest changed_by_run in `relation` (-1 when empty), read at run time as a number. #}
{% macro segment_newest_marker(relation) -%}
  {%- set newest = -1 -%}
  {%- if execute -%}
    {%- do segment_require_stored_columns(relation, ['changed_by_run']) -%}
    {%- set newest = run_query('select coalesce(max(changed_by_run), -1) from ' ~ relation).columns[0].values()[0] | int -%}
  {%- endif -%}
  {{ return(newest) }}
{%- endmacro %}

{#
  Fail with the fix in the message when an incremental model's stored table lacks a column
  its incremental logic reads: a table built by an older version of the project (before the
  change feed or a stored source column existed) cannot be updated in place, and DuckDB's own
  error would only say the column is not found.
#}
{% macro segment_require_stored_columns(relation, columns) -%}
  {%- if execute -%}
    {%- set stored = adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list -%}
    {%- set missing = columns | reject('in', stored) | list -%}
    {%- if stored and missing -%}
      {{ exceptions.raise_compiler_error(
          relation ~ " was built by an older version of this project: it has no column " ~ missing | join(', ')
          ~ ", which its incremental build reads. Rebuild the project once after an upgrade: dbt run --full-refresh"
          ~ " (the minimum for this model alone is dbt run --full-refresh --select " ~ relation.identifier
          ~ "+, but bookkeeping columns of other models, such as the fingerprints, may also follow an older"
          ~ " formula and then differ from a fresh build)") }}
    {%- endif -%}
  {%- endif -%}
{%- endmacro %}


{#
  pre_hook of an incremental model whose rows are a function of one row of `source` per
  `key`, and which stores the `columns` of that source row it was built from: delete the
  stored rows whose key has no source row with the same columns (changed or gone; NULLs
  compare equal). The build then adds the keys without rows. No-op on a full build.
#}
{% macro segment_delete_changed_rows(key, source, columns) -%}
  {%- if is_incremental() -%}
  {%- do segment_require_stored_columns(this, [key] + columns) -%}
  delete from {{ this }}
  where {{ key }} in (
    select stored.{{ key }}
    from {{ this }} as stored
    left join {{ source }} as current_rows
      on current_rows.{{ key }} = stored.{{ key }}
      {%- for column in columns %}
      and (current_rows.{{ column }} = stored.{{ column }}
        or (current_rows.{{ column }} is null and stored.{{ column }} is null))
      {%- endfor %}
    where current_rows.{{ key }} is null
  )
  {%- else -%}
  select 1
  {%- endif -%}
{%- endmacro %}

