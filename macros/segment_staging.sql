{#-
  Staging over the loader's raw tables. A raw table or column exists only once data for it
  arrived, so every staging model is generated from a fixed output spec:
  - a missing table gives a typed empty select (the build still works on an empty warehouse);
  - a missing column gives cast(null as <type>);
  - present columns are cast defensively by kind, whatever type the loader inferred.
-#}

{# Output columns every staging model starts with. #}
{% macro segment_common_spec() -%}
  {{ return([
    {'name': 'message_id', 'from': ['id'], 'kind': 'string'},
    {'name': 'anonymous_id', 'from': ['anonymous_id'], 'kind': 'id'},
    {'name': 'user_id', 'from': ['user_id'], 'kind': 'id'},
    {'name': 'event_at', 'from': ['timestamp', 'received_at'], 'kind': 'timestamp'},
    {'name': 'received_at', 'from': ['received_at'], 'kind': 'timestamp'},
    {'name': 'sent_at', 'from': ['sent_at'], 'kind': 'timestamp'},
    {'name': 'original_timestamp', 'from': ['original_timestamp'], 'kind': 'timestamp'},
    {'name': 'loaded_at', 'from': ['uuid_ts'], 'kind': 'timestamp'},
    {'name': 'load_id', 'from': ['load_id'], 'kind': 'bigint'},
    {'name': 'source_id', 'from': ['source_id'], 'kind': 'string'},
  ]) }}
{%- endmacro %}

{#
  {column: data_type} of raw table `table_name` (lower-cased names), or none when the table
  does not exist. Unit tests override this macro's answer (overrides: macros:).
#}
{% macro segment_table_columns(table_name, relation) -%}
  {%- if not execute -%}
    {{ return(none) }}
  {%- endif -%}
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

{# SQL type for a spec kind. #}
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

{# Expression for one output column: the first non-null of its present source columns. #}
{% macro segment_output_expression(spec, columns, alias) -%}
  {%- set parts = [] -%}
  {%- for name in spec['from'] -%}
    {%- if name in columns -%}
      {%- do parts.append(segment_cast_column(alias ~ '.' ~ adapter.quote(name), columns[name], spec['kind'])) -%}
    {%- endif -%}
  {%- endfor -%}
  {%- if parts | length == 0 and spec['kind'] == 'present' -%}false
  {%- elif parts | length == 0 -%}cast(null as {{ segment_kind_type(spec['kind']) }})
  {%- elif spec['kind'] == 'present' -%}({{ parts | join(' or ') }})
  {%- elif parts | length == 1 -%}{{ parts[0] }}
  {%- else -%}coalesce({{ parts | join(', ') }})
  {%- endif -%}
{%- endmacro %}

{#
  The whole staging select for raw table `table_name`: common columns + `columns` (a list of
  {name, from: [raw columns, first non-null wins], kind}; kinds: string, id, trimmed,
  currency, timestamp, bigint, number, money, boolean, present = "any of them is not null"), one row per message id (the
  earliest received copy wins: the loader already dedups; this is a second line of defence).
#}
{% macro segment_staging(table_name, columns) -%}
  {%- set relation = source('segment', table_name) -%}
  {%- set raw_columns = segment_table_columns(table_name, relation) -%}
  {%- set spec = segment_common_spec() + columns -%}
  {%- if raw_columns is none %}
-- raw table {{ var('segment_schema') }}.{{ table_name }} does not exist yet: typed, empty
select
  {%- for c in spec %}
  cast(null as {{ segment_kind_type(c['kind']) }}) as {{ c['name'] }}{{ ',' if not loop.last }}
  {%- endfor %}
where 1 = 0
  {%- else -%}
  {%- set order_by = [] -%}
  {%- for name in ['received_at', 'load_id', 'uuid_ts'] if name in raw_columns -%}
    {%- do order_by.append('raw.' ~ adapter.quote(name)) -%}
  {%- endfor %}
select
  {%- for c in spec %}
  {{ segment_output_expression(c, raw_columns, 'deduplicated') }} as {{ c['name'] }}{{ ',' if not loop.last }}
  {%- endfor %}
from (
  select
    raw.*,
    row_number() over (
      partition by raw.{{ adapter.quote('id') }}
      order by {{ order_by | join(', ') if order_by else 'raw.' ~ adapter.quote('id') }}
    ) as dedup_rank
  from {{ relation }} as raw
) as deduplicated
where dedup_rank = 1
  {%- endif %}
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
