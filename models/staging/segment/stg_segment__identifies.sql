-- One row per identify call. Each trait in var segment_user_traits reads `traits.<t>` first,
-- then `context.traits.<t>` (RudderStack and some mobile SDKs put traits only there).
{%- set trait_columns = [] -%}
{%- for trait in var('segment_user_traits') -%}
  {%- do trait_columns.append({'name': trait, 'from': [trait, 'context_traits_' ~ trait], 'kind': 'string'}) -%}
{%- endfor %}
{{ segment_staging('identifies', trait_columns + [
    {'name': 'library_name', 'from': ['context_library_name'], 'kind': 'string'},
]) }}
