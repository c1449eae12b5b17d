-- One row per track call. event_name is the name as sent; event_slug the snake_case table name.
{%- set raw = segment_table_columns('tracks') %}

with

source as (
    {{ segment_deduplicated_source('tracks', raw) }}
),

renamed as (
    select
        {{ segment_common_columns(raw) }},
        {{ segment_column(raw, ['event_text', 'event'], 'string') }} as event_name,
        {{ segment_column(raw, 'event', 'string') }} as event_slug,
        {{ segment_column(raw, 'context_page_url', 'string') }} as page_url,
        {{ segment_column(raw, 'context_page_path', 'string') }} as page_path,
        {{ segment_column(raw, 'context_page_title', 'string') }} as page_title,
        {{ segment_column(raw, 'context_page_referrer', 'trimmed') }} as referrer,
        {{ segment_column(raw, 'context_campaign_source', 'string') }} as utm_source,
        {{ segment_column(raw, 'context_campaign_medium', 'string') }} as utm_medium,
        {{ segment_column(raw, 'context_campaign_name', 'string') }} as utm_campaign,
        {{ segment_column(raw, 'context_campaign_term', 'string') }} as utm_term,
        {{ segment_column(raw, 'context_campaign_content', 'string') }} as utm_content,
        {{ segment_column(raw, 'context_ip', 'string') }} as ip,
        {{ segment_column(raw, 'context_user_agent', 'string') }} as user_agent,
        {{ segment_column(raw, 'context_library_name', 'string') }} as library_name,
        {{ segment_column(raw, 'context_library_version', 'string') }} as library_version
    from source
)

select * from renamed
