{#-
  Every message attributed to one person (or to nobody when it carries no usable id).
  - a message with a user id belongs to that user id's person;
  - a message with only an anonymous id belongs to that id's person, except on a shared
    device (int_identifiers_mapped_to_persons.is_shared_device): there it belongs to the user most
    recently identified on the device at the message's time (identification = any message
    carrying the device's anonymous id and a user id, or an alias from it), and messages
    before the first identification belong to the first identified user.

  Incremental by message (unique_key message_id): the person map (one row per identifier,
  small beside the messages) is recomputed every run; a build then re-attributes only
    - messages of loads newer than the table's (new and re-delivered messages),
    - messages of the user ids and anonymous ids whose person in the map differs from the
      one their stored rows carry (a late alias or identify merged two persons), or whose
      anonymous id became a shared device,
    - every anonymous message of a device attributed by time, now or at the last build (a
      late identification anywhere on its timeline can move any of them; shared devices are
      few).
  Every other message keeps the person it has, which is the one a full refresh gives.
  changed_by_run marks the build that wrote the row (segment_run_marker): the change feed of
  int_events_sessionized, which compares only the rows written since its own last build.
  Where rows cannot be replaced (Spark on plain Parquet) the model is a table, rebuilt in
  full every run: the honest choice when a merge moves old rows.
-#}
{{ config(
    materialized=('incremental' if segment_rows_replaceable() else 'table'),
    unique_key='message_id',
    incremental_strategy=(segment_incremental_strategy() if segment_rows_replaceable() else none),
    on_schema_change='append_new_columns',
) }}

with

events as (
    select
        message_id,
        message_type,
        anonymous_id,
        user_id,
        previous_id,
        event_at,
        received_at,
        load_id,
        source_id
    from {{ ref('int_events_unioned') }}
),

person_map as (
    select * from {{ ref('int_identifiers_mapped_to_persons') }}
),

shared_devices as (
    select identifier as anonymous_id
    from person_map
    where identifier_type = 'anonymous' and is_shared_device
),

{% if is_incremental() %}
-- each identifier's person as the stored rows carry it (min <> max: rows disagree)
stored_identifiers as (
    select 'user' as identifier_type, user_id as identifier,
        min(person_id) as min_person_id, max(person_id) as max_person_id
    from {{ this }}
    where attribution_rule = 'user_id'
    group by user_id
    union all
    select 'anonymous' as identifier_type, anonymous_id as identifier,
        min(person_id) as min_person_id, max(person_id) as max_person_id
    from {{ this }}
    where attribution_rule = 'anonymous_id'
    group by anonymous_id
),

changed_identifiers as (
    select s.identifier_type, s.identifier
    from stored_identifiers as s
    left join person_map as m
        on m.identifier_type = s.identifier_type and m.identifier = s.identifier
    where m.person_id is null
        or m.person_id <> s.min_person_id
        or m.person_id <> s.max_person_id
        or m.is_shared_device
),

-- devices attributed by time now or at the last build: all their anonymous messages again
timed_devices as (
    select anonymous_id from shared_devices
    union
    select anonymous_id from {{ this }} where attribution_rule like 'shared_device%'
),

scoped as (
    select e.*
    from events as e
    where e.load_id > (select coalesce(max(load_id), -1) from {{ this }})
        or e.user_id in (
            select identifier from changed_identifiers where identifier_type = 'user'
        )
        or (e.user_id is null and e.anonymous_id in (
            select identifier from changed_identifiers where identifier_type = 'anonymous'
            union all
            select anonymous_id from timed_devices
        ))
),
{% else %}
scoped as (
    select * from events
),
{% endif %}

identifications as (
    select e.anonymous_id, e.event_at, e.message_id, e.user_id
    from events as e
    inner join shared_devices as s on s.anonymous_id = e.anonymous_id
    where e.user_id is not null
    union all
    select e.previous_id as anonymous_id, e.event_at, e.message_id, e.user_id
    from events as e
    inner join shared_devices as s on s.anonymous_id = e.previous_id
    where e.message_type = 'alias' and e.user_id is not null
),

device_timeline as (
    select anonymous_id, event_at, message_id, user_id, 1 as is_identification
    from identifications
    union all
    select e.anonymous_id, e.event_at, e.message_id, cast(null as {{ dbt.type_string() }}) as user_id,
        0 as is_identification
    from events as e
    inner join shared_devices as s on s.anonymous_id = e.anonymous_id
    where e.user_id is null
),

sequenced as (
    select
        device_timeline.*,
        sum(is_identification) over (
            partition by anonymous_id
            order by event_at, is_identification desc, message_id
            rows between unbounded preceding and current row
        ) as identification_number
    from device_timeline
),

numbered_identifications as (
    select anonymous_id, identification_number, user_id
    from sequenced
    where is_identification = 1
),

shared_device_attribution as (
    select
        s.message_id,
        coalesce(latest.user_id, first_identified.user_id) as user_id,
        case
            when s.identification_number = 0 then 'shared_device_before_first_identification'
            else 'shared_device_latest_identification'
        end as attribution_rule
    from sequenced as s
    left join numbered_identifications as latest
        on latest.anonymous_id = s.anonymous_id
        and latest.identification_number = s.identification_number
    left join numbered_identifications as first_identified
        on first_identified.anonymous_id = s.anonymous_id
        and first_identified.identification_number = 1
    where s.is_identification = 0
)

select
    e.message_id,
    e.message_type,
    case
        when e.user_id is not null then user_map.person_id
        when sda.message_id is not null then device_user_map.person_id
        when e.anonymous_id is not null then anonymous_map.person_id
    end as person_id,
    case
        when e.user_id is not null then 'user_id'
        when sda.message_id is not null then sda.attribution_rule
        when e.anonymous_id is not null then 'anonymous_id'
        else 'unattributed'
    end as attribution_rule,
    e.user_id,
    e.anonymous_id,
    e.event_at,
    e.received_at,
    e.load_id,
    e.source_id,
    {{ segment_run_marker() }} as changed_by_run
from scoped as e
left join person_map as user_map
    on user_map.identifier_type = 'user' and user_map.identifier = e.user_id
left join person_map as anonymous_map
    on anonymous_map.identifier_type = 'anonymous' and anonymous_map.identifier = e.anonymous_id
left join shared_device_attribution as sda
    on sda.message_id = e.message_id
left join person_map as device_user_map
    on device_user_map.identifier_type = 'user' and device_user_map.identifier = sda.user_id
