"""Identity incremental by component equals a full build (README "Incremental builds").

A first load is built; then two second loads, each followed by an incremental `dbt run` of
the identity models (and what they read) that must equal a `--full-refresh` build in every
relation:
- SCOPED (only new messages: the map recomputes the components they touch) brings
  - an alias that merges two stored persons, plus a late page of the second user id earlier
    than anything of the first (the merged person is named after it);
  - an alias that joins a new user id, seen before all the others, to the end of a stored
    person's chain of three user ids: all of them and the person's anonymous id take its id,
    though neither a new message nor a link of one names c1 or anon-c1;
  - an identify of a stored anonymous-only person (it joins a user's person);
  - a second person's user id on a stored anonymous id, which splits it off its person: a
    shared device from then on, its anonymous messages attributed by time;
  - junk anonymous ids beside user ids (they link nothing);
  - a brand new person;
  - a stored alias's previous id, until then typed anonymous, now seen as a user id: its
    anonymous row goes, a user row and a user-to-user link come;
- REPLACED (a stored identify delivered again with another user id, received earlier, loaded
  past a short --dedup-window, so the new copy replaces the stored one): the old link is
  gone, which the map notices from its per-identifier message counts, and it recomputes
  every identifier.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dbt_helpers import copy_db, load_archive, query, run_dbt
from test_dbt_incremental_paths import assert_builds_equal, message, write_archive

pytestmark = pytest.mark.slow
# the identity models and what they read; the models downstream of them are compared after
# a merge and a shared device by test_dbt_incremental_paths.py
VARS = ["--select", "+int_events_mapped_to_persons", "+identity_graph",
        "--vars", "{identity_max_user_ids_per_anonymous_id: 2}"]
MAP = "analytics_intermediate.int_identifiers_mapped_to_persons"
EVENTS = "analytics_intermediate.int_events_mapped_to_persons"
RECOMPUTE_ALL = "recomputing every identifier"

FIRST = [
    message("identify", "f01", "2024-05-06T09:00:00", anonymousId="anon-p1", userId="p1"),
    message("page", "f02", "2024-05-06T09:01:00", anonymousId="anon-p1"),
    message("identify", "f03", "2024-05-06T10:00:00", anonymousId="anon-p2", userId="p2"),
    message("page", "f04", "2024-05-06T10:01:00", anonymousId="anon-p2"),
    # an anonymous-only person
    message("page", "f05", "2024-05-06T11:00:00", anonymousId="anon-q"),
    # anon-s belongs to s1's person, until s2 (another person) shows up on it
    message("identify", "f06", "2024-05-06T12:00:00", anonymousId="anon-s", userId="s1"),
    message("page", "f07", "2024-05-06T12:05:00", anonymousId="anon-s"),
    message("identify", "f08", "2024-05-06T12:30:00", anonymousId="anon-s2", userId="s2"),
    # an alias from a previous id never seen elsewhere: typed anonymous (person u9)
    message("alias", "f09", "2024-05-06T13:00:00", userId="u9", previousId="old-9"),
    message("page", "f10", "2024-05-06T13:05:00", userId="u9"),
    # x1's identify, delivered again with another user id in the REPLACED load
    message("identify", "f11", "2024-05-06T14:00:00", anonymousId="anon-x", userId="x1"),
    message("page", "f12", "2024-05-06T14:05:00", anonymousId="anon-x"),
    # one person of a chain of three user ids (c1, seen first, names it) and an anonymous id
    message("identify", "f14", "2024-05-06T16:00:00", anonymousId="anon-c1", userId="c1"),
    message("alias", "f15", "2024-05-06T16:10:00", userId="c2", previousId="c1"),
    message("alias", "f16", "2024-05-06T16:20:00", userId="c4", previousId="c2"),
    # a person nothing later touches
    message("identify", "f13", "2024-05-06T15:00:00", anonymousId="anon-k", userId="k1"),
]
SCOPED = [
    message("alias", "s01", "2024-05-07T09:00:00", userId="p1", previousId="p2"),
    message("page", "s02", "2024-05-06T08:00:00", userId="p2"),
    message("identify", "s03", "2024-05-07T10:00:00", anonymousId="anon-q", userId="q1"),
    message("identify", "s04", "2024-05-07T11:00:00", anonymousId="anon-s", userId="s2"),
    message("page", "s05", "2024-05-07T11:05:00", anonymousId="anon-s"),
    message("track", "s06", "2024-05-07T12:00:00", anonymousId="anonymousId", userId="p1", event="Signed In"),
    message("track", "s07", "2024-05-07T12:01:00", anonymousId="undefined", userId="q1", event="Signed In"),
    message("identify", "s08", "2024-05-07T13:00:00", anonymousId="anon-n", userId="n1"),
    message("page", "s09", "2024-05-07T13:05:00", anonymousId="anon-n"),
    message("page", "s10", "2024-05-07T14:00:00", userId="old-9"),
    # c3, seen before c1, aliased to c4: the whole stored person (c1 and anon-c1 too, which
    # neither a new message nor a link of one names) is c3's now
    message("page", "s11", "2024-05-05T09:00:00", userId="c3"),
    message("alias", "s12", "2024-05-07T15:00:00", userId="c4", previousId="c3"),
]
REPLACED = [
    {**message("identify", "f11", "2024-05-06T14:00:00", anonymousId="anon-x", userId="x2"),
     "receivedAt": "2024-05-06T14:00:00.100Z"},
]
# the REPLACED load counts a message as a duplicate only if a run of the last 0.86 s loaded it
WINDOW = ["--dedup-window", "0.00001"]


def compared(db: Path, work: Path, name: str) -> tuple[Path, Path, str]:
    """(incremental, full refresh, the incremental run's output) after a `dbt run` on `db`."""
    output = run_dbt(["run", *VARS], db, work / name).output
    incremental = copy_db(db, work / f"{name}-incremental.duckdb")
    full = copy_db(db, work / f"{name}-full.duckdb")
    run_dbt(["run", "--full-refresh", *VARS], full, work / f"{name}-full")
    return incremental, full, output


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, str]]:
    work = tmp_path_factory.mktemp("dbt_incremental_identity")
    db = work / "warehouse.duckdb"
    load_archive(write_archive(work / "first", 1714953600000, FIRST), db)
    run_dbt(["run", *VARS], db, work)
    load_archive(write_archive(work / "scoped", 1715040000000, SCOPED), db)
    scoped = compared(db, work, "scoped")
    time.sleep(1)  # the earlier loads are outside WINDOW
    load_archive(write_archive(work / "replaced", 1715126400000, REPLACED), db, *WINDOW)
    return {"scoped": scoped, "replaced": compared(db, work, "replaced")}


def persons(db: Path) -> dict[tuple[str, str], tuple[str, bool]]:
    rows = query(db, f"select identifier_type, identifier, person_id, is_shared_device from {MAP}")
    return {(t, i): (p, s) for t, i, p, s in rows}


def test_the_scoped_load_hits_every_case_and_keeps_untouched_rows(builds):
    """The scenario happened (else equality below would prove nothing), through the scoped
    path: the rows of a person nothing touched keep the first build's stamp."""
    incremental, _, output = builds["scoped"]
    mapped = persons(incremental)
    # the merge, named after p2's late page of 08:00 (earlier than p1's first sighting)
    for identifier in [("user", "p1"), ("user", "p2"), ("anonymous", "anon-p1"), ("anonymous", "anon-p2")]:
        assert mapped[identifier] == ("p2", False)
    for identifier in [("user", "c1"), ("user", "c2"), ("user", "c3"), ("user", "c4"),
                       ("anonymous", "anon-c1")]:
        assert mapped[identifier] == ("c3", False)
    assert mapped["anonymous", "anon-q"] == ("q1", False)
    # anon-s split off s1's person: a shared device, its later page attributed by time to s2
    assert mapped["anonymous", "anon-s"] == ("s1", True)
    assert query(incremental, f"""select message_id, person_id, attribution_rule from {EVENTS}
                                  where message_id in ('f07', 's05') order by 1""") == [
        ("f07", "s1", "shared_device_latest_identification"),
        ("s05", "s2", "shared_device_latest_identification")]
    # junk ids are no identifiers
    assert not {i for _, i in mapped} & {"anonymousId", "undefined"}
    assert mapped["user", "n1"] == mapped["anonymous", "anon-n"] == ("n1", False)
    # old-9 is a user id now: no anonymous row left, one person with u9
    assert ("anonymous", "old-9") not in mapped
    assert mapped["user", "old-9"] == mapped["user", "u9"]
    stamps = dict(query(incremental, f"""select identifier, changed_by_run from {MAP}
                                         where identifier in ('k1', 'anon-k', 'p1')"""))
    assert stamps["k1"] == stamps["anon-k"] < stamps["p1"]
    assert RECOMPUTE_ALL not in output


def test_a_replaced_linking_message_recomputes_every_identifier(builds):
    incremental, _, output = builds["replaced"]
    mapped = persons(incremental)
    assert mapped["anonymous", "anon-x"] == ("x2", False)
    # f11 was x1's only message: x1 is gone
    assert ("user", "x1") not in mapped
    assert query(incremental, f"select person_id from {EVENTS} where message_id = 'f12'") == [("x2",)]
    assert RECOMPUTE_ALL in output


@pytest.mark.parametrize("load", ["scoped", "replaced"])
def test_incremental_build_equals_full_refresh_in_every_relation(builds, load):
    incremental, full, _ = builds[load]
    assert_builds_equal(incremental, full, {MAP, EVENTS, "analytics.identity_graph",
                                            "analytics_intermediate.int_identity_links_unioned"})
