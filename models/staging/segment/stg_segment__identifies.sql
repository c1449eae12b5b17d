-- One row per identify call. Each trait in var segment_user_traits reads `traits.<t>` first,
-- then `context.traits.<t>` (RudderStack and some mobile SDKs put traits only there).
{%- set raw = segment_table_columns('identifies') %}

with

source as (
    {{ segment_deduplicated_source('identifies', raw) }}
),

renamed as (
    select
        {{ segment_common_columns(raw) }},
        {%- for trait in var('segment_user_traits') %}
        {{ segment_column(raw, [trait, 'context_traits_' ~ trait], 'string') }} as {{ trait }},
        {%- endfor %}
        {{ segment_column(raw, 'context_library_name', 'string') }} as library_name
    from source
)

select * from renamed
