-- One row per alias call: previous_id is now known as user_id.
{%- set raw = segment_table_columns('aliases') %}

with

source as (
    {{ segment_deduplicated_source('aliases', raw) }}
),

renamed as (
    select
        {{ segment_common_columns(raw) }},
        {{ segment_column(raw, 'previous_id', 'id') }} as previous_id
    from source
)

select * from renamed
