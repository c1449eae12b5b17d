-- One row per page call.
{%- set raw = segment_table_columns('pages') %}

with

source as (
    {{ segment_deduplicated_source('pages', raw) }}
),

renamed as (
    select
        {{ segment_common_columns(raw) }},
        {{ segment_column(raw, 'name', 'string') }} as page_name,
        {{ segment_column(raw, 'category', 'string') }} as page_category,
        {{ segment_column(raw, ['url', 'context_page_url'], 'string') }} as page_url,
        {{ segment_column(raw, ['path', 'context_page_path'], 'string') }} as page_path,
        {{ segment_column(raw, ['title', 'context_page_title'], 'string') }} as page_title,
        {{ segment_column(raw, ['referrer', 'context_page_referrer'], 'trimmed') }} as referrer,
        {{ segment_column(raw, ['search', 'context_page_search'], 'trimmed') }} as search,
        {{ segment_column(raw, 'context_campaign_source', 'string') }} as utm_source,
        {{ segment_column(raw, 'context_campaign_medium', 'string') }} as utm_medium,
        {{ segment_column(raw, 'context_campaign_name', 'string') }} as utm_campaign,
        {{ segment_column(raw, 'context_campaign_term', 'string') }} as utm_term,
        {{ segment_column(raw, 'context_campaign_content', 'string') }} as utm_content,
        {{ segment_column(raw, 'context_ip', 'string') }} as ip,
        {{ segment_column(raw, 'context_user_agent', 'string') }} as user_agent
    from source
)

select * from renamed
