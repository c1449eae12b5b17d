-- One row per group call.
{%- set raw = segment_table_columns('groups') %}

with

source as (
    {{ segment_deduplicated_source('groups', raw) }}
),

renamed as (
    select
        {{ segment_common_columns(raw) }},
        {{ segment_column(raw, 'group_id', 'trimmed') }} as group_id,
        {{ segment_column(raw, 'name', 'string') }} as group_name,
        {{ segment_column(raw, 'plan', 'string') }} as group_plan
    from source
)

select * from renamed
