{{ config(materialized="view") }}
-- Every distinct link in the identity graph and where it comes from (for audit and
-- debugging: "why are these two ids one person?"). Same rules as int_identity_person_map.
with

{{ segment_identity_links(ref('int_events_unioned'), 'links') }}

select
    from_type,
    from_id,
    'user' as to_type,
    to_id,
    link_source,
    first_linked_at,
    last_linked_at,
    link_count
from links
