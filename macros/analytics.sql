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
  pre_hook of the sessions mart: delete the stored sessions that int_events_sessionized
  (`source`) rewrote since this table's last build (rows with a newer changed_by_run: a
  session whose events, number, person or bot flag changed is rewritten whole), and the
  stored sessions whose id no longer exists there (merged into another, or gone with their
  person's bot flag). No-op on a full build.
#}
{% macro analytics_delete_changed_sessions(source) -%}
  {%- if is_incremental() -%}
  delete from {{ this }}
  where session_id in (
    select session_id
    from {{ source }}
    where changed_by_run > {{ segment_newest_marker(this) }} and session_id is not null
    union all
    select stored.session_id
    from {{ this }} as stored
    where not exists (select 1 from {{ source }} as e where e.session_id = stored.session_id)
  )
  {%- else -%}
  select 1
  {%- endif -%}
{%- endmacro %}

{#
  pre_hook of int_events_sessionized: delete the stored rows that an incremental build must
  sessionize again, so that what stays is, per person, a run of unchanged sessions that no
  changed event can touch. The candidates are the rows of `source` (message_id, person_id,
  event_at, load_id, is_bot_user_agent, changed_by_run) written since the table's last build
  (changed_by_run newer than the newest it holds): every message attributed since then. A
  person's changed events are the candidates not stored under that person, at that time or
  from that load (a copy with other content that replaced the stored one), and the stored
  rows of those messages. Deleted per person with a change: every session
  that ends less than var analytics_session_timeout_minutes before the earliest changed
  event (a later session too, being later), all sessions if the person's bot flags change,
  and the changed unattributed rows (NULL person: no sessions). No-op on a full build.
#}
{% macro analytics_delete_stale_sessions(source) -%}
  {%- if is_incremental() -%}
  {%- set timeout = var('analytics_session_timeout_minutes') | int -%}
  {#- written into the SQL as a number, so that it filters the scan -#}
  {%- set seen = segment_newest_marker(this) %}
  delete from {{ this }}
  where message_id in (
    with

    current_rows as (
      select message_id, coalesce(person_id, '~') as person_key, event_at, load_id
      from {{ source }}
      where changed_by_run > {{ seen }}
    ),

    -- the candidates whose person, time or copy differs from the stored row, or that are not
    -- stored (a message never leaves the source: its rows are only added or replaced). The
    -- copy is its load: a re-delivered copy that replaced the stored one (the same time and
    -- person, other campaign, url or received_at) comes with a newer load_id
    changed as (
      select c.person_key as current_key, c.event_at as current_at,
        s.message_id as stored_id, coalesce(s.person_id, '~') as stored_key, s.event_at as stored_at
      from current_rows as c
      left join {{ this }} as s on s.message_id = c.message_id
      where s.message_id is null
        or c.person_key <> coalesce(s.person_id, '~')
        or c.event_at <> s.event_at
        or c.load_id <> s.load_id
    ),

    arrived as (
      select current_key as person_key, current_at as event_at
      from changed where current_key is not null
    ),

    departed as (
      select stored_id as message_id, stored_key as person_key, stored_at as event_at
      from changed where stored_id is not null
    ),

    cuts as (
      select person_key, min(event_at) as cut_at
      from (
        select person_key, event_at from arrived
        union all
        select person_key, event_at from departed
      ) as changed_events
      where person_key <> '~'
      group by person_key
    ),

    -- the stored rows of the persons with a change (read from the table, not a CTE, so that
    -- only those persons' rows are materialised)
    stored_rows as (
      select s.message_id, s.person_id as person_key, s.event_at, s.session_id, s.bot_reason
      from {{ this }} as s
      where s.person_id in (select person_key from cuts)
    ),

    -- bot flags as int_events_sessionized derives them, over the person's current events
    per_minute as (
      select c.person_id as person_key, {{ dbt.date_trunc('minute', 'c.event_at') }} as event_minute,
        count(*) as event_count,
        max(case when c.is_bot_user_agent then 1 else 0 end) as has_bot_user_agent
      from {{ source }} as c
      where c.person_id in (select person_key from cuts)
      group by c.person_id, {{ dbt.date_trunc('minute', 'c.event_at') }}
    ),

    current_flags as (
      select person_key,
        case
          when max(has_bot_user_agent) = 1 then 'user_agent'
          when max(case when event_count > {{ var('analytics_bot_max_events_per_minute') | int }} then 1 else 0 end) = 1
            then 'event_rate'
        end as bot_reason
      from per_minute
      group by person_key
    ),

    stored_flags as (
      select person_key, max(bot_reason) as bot_reason
      from stored_rows
      group by person_key
    ),

    session_ends as (
      select person_key, session_id, max(event_at) as ended_at
      from stored_rows
      group by person_key, session_id
    )

    select e.message_id
    from stored_rows as e
    inner join session_ends as se on se.person_key = e.person_key and se.session_id = e.session_id
    inner join cuts as c on c.person_key = e.person_key
    left join current_flags as cf on cf.person_key = e.person_key
    left join stored_flags as sf on sf.person_key = e.person_key
    where {{ dbt.dateadd('minute', timeout, 'se.ended_at') }} >= c.cut_at
      or coalesce(cf.bot_reason, '') <> coalesce(sf.bot_reason, '')
    union all
    select message_id from departed where person_key = '~'
  )
  {%- else -%}
  select 1
  {%- endif -%}
{%- endmacro %}
