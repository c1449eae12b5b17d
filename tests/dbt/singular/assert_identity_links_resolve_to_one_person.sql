-- Independent check of the identity graph: every alias link, and every link from an
-- anonymous id that is not a shared device, must have both ends in the same person.
-- Returns the offending links (a failure means stitching did not converge or is wrong).
with map as (
    select * from {{ ref('int_identifiers_mapped_to_persons') }}
)
select l.*, f.person_id as from_person_id, t.person_id as to_person_id
from {{ ref('int_identity_links_unioned') }} as l
inner join map as f on f.identifier_type = l.from_type and f.identifier = l.from_id
inner join map as t on t.identifier_type = 'user' and t.identifier = l.to_id
where f.person_id <> t.person_id
  and not (l.from_type = 'anonymous' and f.is_shared_device)
