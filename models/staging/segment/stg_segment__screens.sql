-- One row per screen call (mobile).
{%- set raw = segment_table_columns('screens') %}

with

source as (
    {{ segment_deduplicated_source('screens', raw) }}
),

renamed as (
    select
        {{ segment_common_columns(raw) }},
        {{ segment_column(raw, ['name', '_name'], 'string') }} as screen_name,
        {{ segment_column(raw, 'category', 'string') }} as screen_category,
        {{ segment_column(raw, 'context_app_version', 'string') }} as app_version,
        {{ segment_column(raw, 'context_device_model', 'string') }} as device_model,
        {{ segment_column(raw, 'context_os_name', 'string') }} as os_name,
        {{ segment_column(raw, 'context_os_version', 'string') }} as os_version,
        {{ segment_column(raw, 'context_campaign_source', 'string') }} as utm_source,
        {{ segment_column(raw, 'context_campaign_medium', 'string') }} as utm_medium,
        {{ segment_column(raw, 'context_campaign_name', 'string') }} as utm_campaign,
        {{ segment_column(raw, 'context_campaign_term', 'string') }} as utm_term,
        {{ segment_column(raw, 'context_campaign_content', 'string') }} as utm_content,
        {{ segment_column(raw, 'context_user_agent', 'string') }} as user_agent
    from source
)

select * from renamed
