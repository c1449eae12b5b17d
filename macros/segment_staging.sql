{#-
  Helpers of the staging models (models/staging/segment/stg_segment__*.sql). Each model reads
  like plain SQL: `source` (the raw table, one row per message id) -> `renamed` (one line per
  output column) -> select. The macros exist only because the loader creates a raw table or
  column when the first data for it arrives, and infers its type from that data:
  - segment_table_columns says which raw columns exist now (none: the table does not);
  - a missing table gives no rows, a missing column a typed NULL (segment_column), so the
    project builds on an empty warehouse and downstream types never depend on the data;
  - present columns are cast defensively by kind, whatever type the loader inferred.
  Kinds: string, id (trimmed, junk values NULL), trimmed (NULL when empty), currency (upper
  case), timestamp, bigint, number, money (try-cast; text is trimmed first), boolean, present
  ("any of the raw columns is not null").
-#}

{# The columns every staging model starts with (in `renamed`, from CTE `source`). #}
{% macro segment_common_columns(raw) -%}
        {{ segment_column(raw, 'id', 'string') }} as message_id,
        {{ segment_column(raw, 'anonymous_id', 'id') }} as anonymous_id,
        {{ segment_column(raw, 'user_id', 'id') }} as user_id,
        {{ segment_column(raw, ['timestamp', 'received_at'], 'timestamp') }} as event_at,
        {{ segment_column(raw, 'received_at', 'timestamp') }} as received_at,
        {{ segment_column(raw, 'sent_at', 'timestamp') }} as sent_at,
        {{ segment_column(raw, 'original_timestamp', 'timestamp') }} as original_timestamp,
        {{ segment_column(raw, 'uuid_ts', 'timestamp') }} as loaded_at,
        {{ segment_column(raw, 'load_id', 'bigint') }} as load_id,
        {{ segment_column(raw, 'source_id', 'string') }} as source_id
{%- endmacro %}

{#
  {column: data_type} of raw table `table_name` (lower-cased names), or none when the table
  does not exist. Unit tests override this macro's answer (overrides: macros:).
#}
{% macro segment_table_columns(table_name) -%}
  {%- if not execute -%}
    {{ return(none) }}
  {%- endif -%}
  {%- set relation = source('segment', table_name) -%}
  {%- set found = adapter.get_relation(database=relation.database, schema=relation.schema, identifier=relation.identifier) -%}
  {%- if found is none -%}
    {{ return(none) }}
  {%- endif -%}
  {%- set columns = {} -%}
  {%- for column in adapter.get_columns_in_relation(found) -%}
    {%- do columns.update({column.name | lower: column.data_type | lower}) -%}
  {%- endfor -%}
  {{ return(columns) }}
{%- endmacro %}

{#
  The body of CTE `source`: raw table `table_name`, one row per message id (the earliest
  received copy wins: the loader already dedups; this is a second line of defence). No rows
  when the table does not exist yet (`raw` is none).
  Written as "ids seen once" union all "the first copy of ids seen more than once" rather
  than one window over every row: a filter of a consumer on other columns (the incremental
  models' load_id > watermark) then reaches the raw table's scan, and only the new rows are
  cast, instead of ranking every raw row on every build. Same rows as the window (a NULL id
  is one partition there, so it goes through the window here too).
#}
{% macro segment_deduplicated_source(table_name, raw) -%}
  {%- if raw is none -%}
    -- raw table {{ var('segment_schema') }}.{{ table_name }} does not exist yet: no rows
    select 1 as dedup_rank where 1 = 0
  {%- else -%}
    {%- set id = adapter.quote('id') -%}
    {%- set order_by = [] -%}
    {%- for name in ['received_at', 'load_id', 'uuid_ts'] if name in raw -%}
      {%- do order_by.append('raw.' ~ adapter.quote(name)) -%}
    {%- endfor -%}
    select raw.*, 1 as dedup_rank
    from {{ source('segment', table_name) }} as raw
    where raw.{{ id }} in (
        select {{ id }} from {{ source('segment', table_name) }} group by {{ id }} having count(*) = 1
    )
    union all
    select *
    from (
        select
            raw.*,
            row_number() over (
                partition by raw.{{ id }}
                order by {{ order_by | join(', ') if order_by else 'raw.' ~ id }}
            ) as dedup_rank
        from {{ source('segment', table_name) }} as raw
        where raw.{{ id }} is null or raw.{{ id }} in (
            select {{ id }} from {{ source('segment', table_name) }} group by {{ id }} having count(*) > 1
        )
    ) as ranked
    where dedup_rank = 1
  {%- endif -%}
{%- endmacro %}

{# SQL type of a column kind. #}
{% macro segment_kind_type(kind) -%}
  {%- if kind == 'timestamp' -%}{{ segment_type_timestamp() }}
  {%- elif kind == 'bigint' -%}{{ dbt.type_bigint() }}
  {%- elif kind == 'money' -%}{{ segment_type_money() }}
  {%- elif kind == 'number' -%}{{ dbt.type_float() }}
  {%- elif kind in ('boolean', 'present') -%}{{ dbt.type_boolean() }}
  {%- else -%}{{ dbt.type_string() }}
  {%- endif -%}
{%- endmacro %}

{# Typed expression for one existing raw column. #}
{% macro segment_cast_column(column_sql, source_type, kind) -%}
  {%- set numeric_source = source_type.startswith('bigint') or source_type.startswith('double')
      or source_type.startswith('decimal') or source_type.startswith('integer')
      or source_type.startswith('float') or source_type.startswith('hugeint')
      or source_type.startswith('numeric') or source_type.startswith('real') -%}
  {%- set text = 'cast(' ~ column_sql ~ ' as ' ~ dbt.type_string() ~ ')' -%}
  {%- if kind == 'present' -%}({{ column_sql }} is not null)
  {%- elif kind == 'id' -%}{{ segment_clean_id(text) }}
  {%- elif kind == 'trimmed' -%}nullif(trim({{ text }}), '')
  {%- elif kind == 'currency' -%}nullif(upper(trim({{ text }})), '')
  {%- elif kind == 'timestamp' -%}
    {%- if 'timestamp' in source_type -%}cast({{ column_sql }} as {{ segment_type_timestamp() }})
    {%- else -%}{{ segment_try_cast(text, segment_type_timestamp()) }}{%- endif -%}
  {%- elif kind in ('money', 'number', 'bigint') -%}
    {%- if numeric_source -%}{{ segment_try_cast(column_sql, segment_kind_type(kind)) }}
    {%- else -%}{{ segment_try_cast('trim(' ~ text ~ ')', segment_kind_type(kind)) }}{%- endif -%}
  {%- elif kind == 'boolean' -%}
    {%- if source_type.startswith('bool') -%}{{ column_sql }}
    {%- else -%}{{ segment_try_cast('lower(trim(' ~ text ~ '))', dbt.type_boolean()) }}{%- endif -%}
  {%- else -%}{{ text }}
  {%- endif -%}
{%- endmacro %}

{#
  One output column of `renamed`: the first non-null of the raw columns `from` (a name or a
  list) that exist, cast by `kind` (header); a typed NULL when none exists.
#}
{% macro segment_column(raw, from, kind) -%}
  {%- set names = [from] if from is string else from -%}
  {%- set parts = [] -%}
  {%- for name in names if raw is not none and name in raw -%}
    {%- do parts.append(segment_cast_column('source.' ~ adapter.quote(name), raw[name], kind)) -%}
  {%- endfor -%}
  {%- if parts | length == 0 and kind == 'present' -%}false
  {%- elif parts | length == 0 -%}cast(null as {{ segment_kind_type(kind) }})
  {%- elif kind == 'present' -%}({{ parts | join(' or ') }})
  {%- elif parts | length == 1 -%}{{ parts[0] }}
  {%- else -%}coalesce({{ parts | join(', ') }})
  {%- endif -%}
{%- endmacro %}

{#
  An identifier, trimmed; NULL when empty or a junk value (var segment_junk_ids, compared
  case-insensitively). Applied once, in staging: later models read ids as staged.
#}
{% macro segment_clean_id(expression) -%}
  case
    when lower(trim({{ expression }})) in (
      {%- for junk in var('segment_junk_ids') -%}'{{ junk | lower | replace("'", "''") }}'{{ ', ' if not loop.last }}{%- endfor -%}
    ) then null
    else trim({{ expression }})
  end
{%- endmacro %}
