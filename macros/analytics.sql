{#-
  Rules of the analyst marts (sessions, page views, attribution, bots), one macro each so the
  models and the README describe the same thing. Adapter-neutral: lower/like/case only, and
  regexp_extract through segment_regexp_extract.
-#}

{# One query-string parameter of a URL, NULL when absent or empty (not URL-decoded). #}
{% macro analytics_url_parameter(url, name) -%}
  {#- the like guard skips the regular expression on the many URLs without the parameter -#}
  case when {{ url }} like '%{{ name }}=%' then {{ segment_regexp_extract(url, '[?&]' ~ name ~ '=([^&#]*)') }} end
{%- endmacro %}

{# Lower-cased host of an absolute URL (scheme://host[:port]/...), NULL otherwise. #}
{% macro analytics_url_host(url) -%}
  {{ segment_regexp_extract('lower(' ~ url ~ ')', '^[a-z][a-z0-9+.-]*://([^/?#:]+)') }}
{%- endmacro %}

{#
  True when `expression` (a source or host name) names one of `domains` (a var holding a list
  of domain labels such as google or t.co): equal to it, or containing it as whole labels
  (www.google.com and google.co.uk match google; notgoogle.com does not).
#}
{% macro analytics_in_domain_list(expression, var_name) -%}
  {%- set domains = var(var_name) -%}
  ({%- for d in domains -%}
    {{ ' or ' if not loop.first }}'.' || lower(trim({{ expression }})) || '.' like '%.{{ d | lower | replace("'", "''") }}.%'
  {%- endfor -%}{{ 'false' if not domains }})
{%- endmacro %}

{# True when a user agent matches one of var analytics_bot_user_agents (case-insensitive substrings). #}
{% macro analytics_is_bot_user_agent(user_agent) -%}
  coalesce(({%- for token in var('analytics_bot_user_agents') -%}
    {{ ' or ' if not loop.first }}lower({{ user_agent }}) like '%{{ token | lower | replace("'", "''") }}%'
  {%- endfor -%}), false)
{%- endmacro %}

{#
  Device category from a user agent: bot (bot list), tablet, mobile, desktop; NULL without a
  user agent. Tablet before mobile because iPad and Android tablet agents also say "mobile"
  or "Android".
#}
{% macro analytics_device_category(user_agent) -%}
  case
    when {{ user_agent }} is null or trim({{ user_agent }}) = '' then null
    when {{ analytics_is_bot_user_agent(user_agent) }} then 'bot'
    when lower({{ user_agent }}) like '%ipad%' or lower({{ user_agent }}) like '%tablet%'
      or (lower({{ user_agent }}) like '%android%' and lower({{ user_agent }}) not like '%mobile%') then 'tablet'
    when lower({{ user_agent }}) like '%mobi%' or lower({{ user_agent }}) like '%iphone%'
      or lower({{ user_agent }}) like '%android%' or lower({{ user_agent }}) like '% ios %'
      or lower({{ user_agent }}) like '%; ios%' then 'mobile'
    else 'desktop'
  end
{%- endmacro %}

{#
  Channel of a visit, the first rule that matches (modelled on Google Analytics 4's default
  channel group, https://support.google.com/analytics/answer/9756891; README "Channels"):
  direct, paid_search, paid_social, display, paid_other, organic_social, organic_search,
  email, affiliate, referral, other. Arguments are SQL expressions; an external referrer is
  one whose host differs from the page's host.
#}
{% macro analytics_channel(utm_source, utm_medium, gclid, msclkid, referrer_host, page_host) -%}
  {%- set medium = 'lower(trim(' ~ utm_medium ~ '))' -%}
  {%- set source = 'lower(trim(' ~ utm_source ~ '))' -%}
  {%- set paid = "(" ~ medium ~ " in ('cpc', 'ppc', 'paidsearch', 'retargeting') or " ~ medium ~ " like 'paid%')" -%}
  {%- set no_utm = "(" ~ utm_source ~ " is null and " ~ utm_medium ~ " is null)" -%}
  {%- set click = "(" ~ gclid ~ " is not null or " ~ msclkid ~ " is not null)" -%}
  {%- set external = "(" ~ referrer_host ~ " is not null and " ~ referrer_host ~ " <> coalesce(" ~ page_host ~ ", ''))" -%}
  case
    when {{ no_utm }} and not {{ click }} and not {{ external }} then 'direct'
    when ({{ paid }} and ({{ analytics_in_domain_list(utm_source, 'analytics_search_sources') }} or {{ click }}))
      or ({{ utm_medium }} is null and {{ click }}) then 'paid_search'
    when {{ paid }} and {{ analytics_in_domain_list(utm_source, 'analytics_social_sources') }} then 'paid_social'
    when {{ medium }} in ('display', 'banner', 'expandable', 'interstitial', 'cpm') then 'display'
    when {{ paid }} then 'paid_other'
    when {{ analytics_in_domain_list(utm_source, 'analytics_social_sources') }}
      or {{ medium }} in ('social', 'social-network', 'social-media', 'sm', 'social network', 'social media')
      or ({{ no_utm }} and {{ analytics_in_domain_list(referrer_host, 'analytics_social_sources') }}) then 'organic_social'
    when {{ medium }} = 'organic' or {{ analytics_in_domain_list(utm_source, 'analytics_search_sources') }}
      or ({{ no_utm }} and {{ analytics_in_domain_list(referrer_host, 'analytics_search_sources') }}) then 'organic_search'
    when {{ medium }} in ('email', 'e-mail', 'e_mail', 'e mail') or {{ source }} in ('email', 'e-mail', 'e_mail', 'e mail') then 'email'
    when {{ medium }} in ('affiliate', 'affiliates') then 'affiliate'
    when {{ medium }} = 'referral' or ({{ no_utm }} and {{ external }}) then 'referral'
    else 'other'
  end
{%- endmacro %}

{#
  Person keys whose events in `source` (rows: person_id, event_fingerprint; one per event)
  differ from what `target` was built from (rows: person_id, `target_count`,
  `target_fingerprint` columns summed per person). Used by the incremental analytics models:
  only these persons are rebuilt, and their old rows are deleted first (pre_hook). A person
  whose events moved elsewhere (an identify merged them) differs too: it has rows in
  `target` and none in `source`. NULL person ids (unattributed events) are one key, '~'.
#}
{% macro analytics_changed_persons(source, target, target_count, target_fingerprint, source_filter='true') -%}
  select coalesce(s.person_key, t.person_key) as person_key
  from (
    select coalesce(person_id, '~') as person_key, count(*) as n, sum(event_fingerprint) as fp
    from {{ source }}
    where {{ source_filter }}
    group by coalesce(person_id, '~')
  ) as s
  full outer join (
    select coalesce(person_id, '~') as person_key, sum({{ target_count }}) as n, sum({{ target_fingerprint }}) as fp
    from {{ target }}
    group by coalesce(person_id, '~')
  ) as t on t.person_key = s.person_key
  where s.person_key is null or t.person_key is null or s.n <> t.n or s.fp <> t.fp
{%- endmacro %}

{# pre_hook of the incremental analytics models: delete the rows of changed persons. #}
{% macro analytics_delete_changed_persons(source, target_count, target_fingerprint, source_filter='true') -%}
  {%- if is_incremental() -%}
  delete from {{ this }}
  where coalesce(person_id, '~') in (
    {{ analytics_changed_persons(source, this, target_count, target_fingerprint, source_filter) }}
  )
  {%- else -%}
  select 1
  {%- endif -%}
{%- endmacro %}
