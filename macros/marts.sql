{#-
  Fingerprints of what a row of an incremental mart is built from (the incremental marts
  store the one they were built from and rebuild the keys whose fingerprint changed, macro
  segment_delete_changed_rows). Recomputed from the sources' current rows on every run, so a
  key that only LOST rows (a person whose messages moved to another person) shows too: a
  change feed of written rows cannot tell that.
-#}

{#
  segment_hash_number of several columns of any type, each as text with NULL as its own value
  (Spark's hashes skip NULL arguments, which would make (NULL, 'a') and ('a', NULL) equal).
#}
{% macro segment_columns_hash(columns) -%}
{%- set parts = [] -%}
{%- for column in columns -%}
  {%- do parts.append("coalesce(cast(" ~ column ~ " as " ~ dbt.type_string() ~ "), '<null>')") -%}
{%- endfor -%}
{{ segment_hash_number(parts | join(', ')) }}
{%- endmacro %}

{#
  One row per person of the person map: person_id and inputs_fingerprint, of every row the
  person's users row is built from (identifiers, attributed messages, orders, first and last
  touch). `persons`, when given, is a relation or CTE with a column person_id: only
  those persons. See models/marts/users.sql for why these inputs are complete.
#}
{#
  The condition on a person_id column that keeps `persons` (a relation or CTE with a column
  person_id), or every person when none: appended to `where <column>`.
#}
{% macro segment_persons_filter(persons) -%}
{{- (' in (select person_id from ' ~ persons ~ ')') if persons else ' is not null' -}}
{%- endmacro %}

{% macro segment_person_fingerprints(persons=none) -%}
{%- set only = segment_persons_filter(persons) -%}
select
    ids.person_id,
    {{ segment_columns_hash(['ids.identifier_count', 'ids.identifiers_fingerprint', 'ev.message_count',
        'ev.messages_fingerprint', 'ev.shared_device_message_count', 'o.order_count', 'o.orders_fingerprint',
        't.touch_fingerprint']) }} as inputs_fingerprint
from (
    select
        person_id,
        count(*) as identifier_count,
        sum({{ segment_columns_hash(['identifier_type', 'identifier', 'is_shared_device']) }}) as identifiers_fingerprint
    from {{ ref('int_identifiers_mapped_to_persons') }}
    where person_id{{ only }}
    group by person_id
) as ids
left join (
    -- a message's content (event time, anonymous id, traits) is that of its counted copy,
    -- which only a newer load can replace: message_id and load_id identify it
    select
        e.person_id,
        count(*) as message_count,
        sum({{ segment_hash_number('e.message_id, e.load_id') }}) as messages_fingerprint,
        -- users.used_shared_device: messages whose anonymous id is a shared device
        count(shared.identifier) as shared_device_message_count
    from {{ ref('int_events_mapped_to_persons') }} as e
    left join (
        select identifier from {{ ref('int_identifiers_mapped_to_persons') }}
        where identifier_type = 'anonymous' and is_shared_device
    ) as shared on shared.identifier = e.anonymous_id
    where e.person_id{{ only }}
    group by e.person_id
) as ev on ev.person_id = ids.person_id
left join (
    {{ segment_person_orders_fingerprints(persons) }}
) as o on o.person_id = ids.person_id
left join (
    select
        person_id,
        {{ segment_columns_hash(['first_touch_at', 'first_touch_source', 'first_touch_medium', 'first_touch_campaign',
            'first_touch_channel', 'last_touch_at', 'last_touch_source', 'last_touch_medium', 'last_touch_campaign',
            'last_touch_channel']) }} as touch_fingerprint
    from {{ ref('int_sessions_aggregated_to_persons') }}
    where person_id{{ only }}
) as t on t.person_id = ids.person_id
{%- endmacro %}


{#
  One row per person with orders: person_id, order_count and orders_fingerprint (of the
  person's rows in the orders mart: every column user_order_totals and users read). `persons`
  as in segment_person_fingerprints.
#}
{% macro segment_person_orders_fingerprints(persons=none) -%}
    select
        person_id,
        count(*) as order_count,
        sum({{ segment_columns_hash(['order_id', 'placed_at', 'is_cancelled', 'order_sequence_number', 'currency',
            'gross_total', 'refunded_amount', 'net_total', 'reporting_currency', 'reporting_gross_total',
            'reporting_refunded_amount', 'reporting_net_total']) }}) as orders_fingerprint
    from {{ ref('orders') }}
    where person_id{{ segment_persons_filter(persons) }}
    group by person_id
{%- endmacro %}


{#
  pre_hook of int_sessions_attributed_to_orders (a row per order, built from its person's
  sessions): delete the rows of persons with a session that `sessions` wrote since this
  table's newest changed_by_run, and the rows whose session_id or attributed_session_id is
  gone from `sessions`. No-op on a full build.
#}
{% macro segment_delete_orders_of_changed_sessions(sessions) -%}
  {%- if is_incremental() -%}
  {%- set newest = segment_newest_marker(this) -%}
  {%- do segment_require_stored_columns(this, ['person_id', 'session_id', 'attributed_session_id']) -%}
  delete from {{ this }}
  where order_id in (
    select stored.order_id
    from {{ this }} as stored
    left join {{ sessions }} as own on own.session_id = stored.session_id
    left join {{ sessions }} as touch on touch.session_id = stored.attributed_session_id
    where stored.person_id in (select person_id from {{ sessions }} where changed_by_run > {{ newest }})
      or (stored.session_id is not null and own.session_id is null)
      or (stored.attributed_session_id is not null and touch.session_id is null)
  )
  {%- else -%}
  select 1
  {%- endif -%}
{%- endmacro %}
