"""Incremental builds equal a full refresh on the paths where old rows must change.

A small archive in two loads (written here, loaded by the loader): the first load is built,
the second load brings
- a late alias that merges two persons who both have orders (Bea's person joins Ann's);
- a refund for an order of the first load, and a full refund for another;
- a cancel of an order completed in the first load, and an earlier completion of another one
  with other products (it becomes the counted completion: the order's lines change);
- a third user id on an anonymous id, which crosses var identity_max_user_ids_per_anonymous_id
  (set to 2 here): the device becomes a shared device although all its users are one person;
- a late page 20 minutes after a stored session (it joins that session) and a late Product
  Viewed inside it (its funnel row changes), and a new session of a person whose stored
  session stays (numbered on from it);
- stored messages delivered again at an earlier time (loaded past a short --dedup-window,
  and received earlier, so the new copies count): Ann's completion moves before her first
  page (the order's lines move), Dan's stays inside its session (it ends earlier), and the
  only page of Fay, who has nothing else new, moves her first touch;
- stored messages delivered again at the SAME time, same person, received earlier, with other
  content: Gus's landing page with another campaign and url (his session's source and his first
  touch change), and his order's completion with other products (the order's lines change);
then the incremental build must equal a --full-refresh build, every table and view.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest
from dbt_helpers import copy_db, load_archive, query, run_dbt, table_difference

pytestmark = pytest.mark.slow
VARS = ["--vars", "{identity_max_user_ids_per_anonymous_id: 2}"]
SOURCE = "src_web"


def message(kind: str, mid: str, at: str, **fields) -> dict:
    """One Segment message received a second after `at` (an ISO time without zone)."""
    return {"messageId": mid, "type": kind, "timestamp": f"{at}.000Z",
            "receivedAt": f"{at}.900Z", **fields}


def order(mid: str, at: str, user: str, order_id: str, total: float) -> dict:
    return message("track", mid, at, userId=user, event="Order Completed", properties={
        "order_id": order_id, "total": total, "currency": "USD",
        "products": [{"product_id": "P1", "price": total, "quantity": 1}]})


FIRST = [
    message("identify", "m01", "2024-05-06T09:00:00", anonymousId="anon-ann", userId="ann"),
    message("page", "m02", "2024-05-06T09:01:00", anonymousId="anon-ann", properties={"path": "/"}),
    order("m03", "2024-05-06T09:05:00", "ann", "O-ann-1", 100.0),
    message("identify", "m04", "2024-05-06T10:00:00", anonymousId="anon-bea", userId="bea"),
    message("page", "m05", "2024-05-06T10:01:00", anonymousId="anon-bea", properties={"path": "/"}),
    order("m06", "2024-05-06T10:05:00", "bea", "O-bea-1", 40.0),
    order("m07", "2024-05-06T11:00:00", "ann", "O-ann-2", 50.0),
    order("m08", "2024-05-06T12:00:00", "cid", "O-cid-1", 30.0),
    order("m09", "2024-05-06T12:30:00", "cid", "O-cid-2", 20.0),
    # device D: two user ids of one person (aliased), at the cap of 2: not shared
    message("identify", "m10", "2024-05-06T13:00:00", anonymousId="anon-d", userId="dan"),
    message("identify", "m11", "2024-05-06T13:10:00", anonymousId="anon-d", userId="dan-2"),
    message("alias", "m12", "2024-05-06T13:11:00", userId="dan", previousId="dan-2"),
    message("page", "m13", "2024-05-06T13:20:00", anonymousId="anon-d", properties={"path": "/d"}),
    order("m14", "2024-05-06T13:30:00", "dan", "O-dan-1", 10.0),
    message("page", "m15", "2024-05-06T14:00:00", userId="fay", properties={"path": "/f"}),
    # Gus: a page that starts his only session, from a newsletter, and an order
    message("page", "m16", "2024-05-06T15:00:00", userId="gus", properties={
        "path": "/g", "url": "https://shop.example/g?utm_source=newsletter&utm_medium=email"}),
    order("m17", "2024-05-06T15:05:00", "gus", "O-gus-1", 60.0),
]
SECOND = [
    # Bea's person merges into Ann's (ann is seen first, so the person is ann)
    message("alias", "n01", "2024-05-07T09:00:00", userId="ann", previousId="bea"),
    message("page", "n02", "2024-05-07T09:01:00", anonymousId="anon-bea", properties={"path": "/again"}),
    # a late event of the first day
    message("page", "n03", "2024-05-06T10:30:00", anonymousId="anon-ann", properties={"path": "/late"}),
    message("track", "n04", "2024-05-07T10:00:00", userId="cid", event="Order Refunded",
            properties={"order_id": "O-cid-2", "total": 5.0, "currency": "USD"}),
    message("track", "n05", "2024-05-07T10:05:00", userId="ann", event="Order Refunded",
            properties={"order_id": "O-ann-2"}),
    message("track", "n06", "2024-05-07T10:10:00", userId="cid", event="Order Cancelled",
            properties={"order_id": "O-cid-1"}),
    # late: 20 minutes after Cid's stored session of the first day ended, so it joins it
    message("page", "n11", "2024-05-06T12:50:00", userId="cid", properties={"path": "/late"}),
    # late too, in the same stored session: its funnel row now reaches Product Viewed
    message("track", "n12", "2024-05-06T12:40:00", userId="cid", event="Product Viewed",
            properties={"product_id": "P1"}),
    # an earlier completion of a stored order, with other products: it becomes the counted one
    message("track", "n13", "2024-05-06T12:20:00", userId="cid", event="Order Completed",
            properties={"order_id": "O-cid-2", "total": 20.0, "currency": "USD",
                        "products": [{"product_id": "P2", "price": 10.0, "quantity": 2}]}),
    # a third user id of Dan's person on device D: over the cap, D becomes a shared device
    message("identify", "n07", "2024-05-07T11:00:00", anonymousId="anon-d", userId="dan-3"),
    message("alias", "n08", "2024-05-07T11:01:00", userId="dan", previousId="dan-3"),
    message("page", "n09", "2024-05-07T11:05:00", anonymousId="anon-d", properties={"path": "/d2"}),
    order("n10", "2024-05-07T12:00:00", "eve", "O-eve-1", 70.0),
    # copies of stored completions, stamped and received earlier than the stored ones
    order("m03", "2024-05-06T08:55:00", "ann", "O-ann-1", 100.0),
    order("m14", "2024-05-06T13:25:00", "dan", "O-dan-1", 10.0),
    message("page", "m15", "2024-05-06T13:58:00", userId="fay", properties={"path": "/f"}),
    # copies of Gus's page and order at the SAME time, same person, received earlier (so they
    # count) with other content: another campaign and url, other products
    message("page", "m16", "2024-05-06T15:00:00", userId="gus", receivedAt="2024-05-06T15:00:00.100Z",
            properties={"path": "/g2", "url": "https://shop.example/g2?utm_source=google&utm_medium=cpc"},
            context={"campaign": {"source": "google", "medium": "cpc", "name": "spring"}}),
    {**order("m17", "2024-05-06T15:05:00", "gus", "O-gus-1", 60.0), "receivedAt": "2024-05-06T15:05:00.100Z",
     "properties": {"order_id": "O-gus-1", "total": 60.0, "currency": "USD",
                    "products": [{"product_id": "P3", "price": 20.0, "quantity": 3}]}},
]
# the second load counts a message as a duplicate only if a run of the last 0.86 s loaded it
WINDOW = ["--dedup-window", "0.00001"]


def write_archive(root: Path, day_ms: int, messages: list[dict]) -> Path:
    folder = root / "segment-logs" / SOURCE / str(day_ms)
    folder.mkdir(parents=True)
    with gzip.open(folder / f"{day_ms}.part.gz", "wt") as fh:
        fh.write("".join(json.dumps(m) + "\n" for m in messages))
    return root / "segment-logs"


def relations(db: Path) -> list[str]:
    """Every table and view the project builds (seeds and staging views included)."""
    rows = query(db, """select table_schema, table_name from information_schema.tables
                        where table_schema like 'analytics%' order by 1, 2""")
    return [f"{schema}.{name}" for schema, name in rows]


def assert_builds_equal(incremental: Path, full: Path, among: set[str]) -> None:
    """The incremental build holds the full refresh's relations (`among` with them), each with
    the same rows (change markers aside)."""
    names = relations(full)
    assert relations(incremental) == names
    assert among <= set(names)
    differences = {name: table_difference(incremental, full, name) for name in names}
    assert {name: d for name, d in differences.items() if d != (0, 0)} == {}


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(incremental, full refresh) databases after the second load."""
    work = tmp_path_factory.mktemp("dbt_incremental_paths")
    db = work / "warehouse.duckdb"
    load_archive(write_archive(work / "first", 1714953600000, FIRST), db)
    run_dbt(["seed"], db, work)
    run_dbt(["run", *VARS], db, work)
    time.sleep(1)  # the first load is outside WINDOW (dbt run alone takes longer)
    load_archive(write_archive(work / "second", 1715040000000, SECOND), db, *WINDOW)
    run_dbt(["run", *VARS], db, work)
    incremental = copy_db(db, work / "incremental.duckdb")
    run_dbt(["run", "--full-refresh", *VARS], db, work)
    return incremental, db


def test_the_second_load_hits_the_hard_paths(builds):
    """The scenario happened (else equality below would prove nothing)."""
    incremental, _ = builds
    assert query(incremental, """select order_id, person_id, status, refunded_amount, order_sequence_number
                                 from analytics.orders order by order_id""") == [
        ("O-ann-1", "ann", "completed", 0, 1),
        ("O-ann-2", "ann", "refunded", 50, 3),
        ("O-bea-1", "ann", "completed", 0, 2),
        ("O-cid-1", "cid", "cancelled", 0, None),
        ("O-cid-2", "cid", "partially_refunded", 5, 1),
        ("O-dan-1", "dan", "completed", 0, 1),
        ("O-eve-1", "eve", "completed", 0, 1),
        ("O-gus-1", "gus", "completed", 0, 1),
    ]
    assert query(incremental, """select person_id, order_count from analytics.users
                                 where person_id in ('ann', 'bea') order by 1""") == [("ann", 3)]
    assert query(incremental, """select is_shared_device from analytics_intermediate.int_identifiers_mapped_to_persons
                                 where identifier = 'anon-d'""") == [(True,)]
    assert query(incremental, """select attribution_rule, person_id from analytics_intermediate.int_events_mapped_to_persons
                                 where message_id = 'm13'""") == [("shared_device_latest_identification", "dan")]
    # Cid's late page extends the first day's session; Dan's new session is his second
    assert query(incremental, """select person_id, session_number,
                                   strftime(timezone('UTC', started_at), '%m-%d %H:%M'),
                                   strftime(timezone('UTC', ended_at), '%m-%d %H:%M')
                                 from analytics.sessions where person_id in ('cid', 'dan')
                                 order by 1, 2""") == [
        ("cid", 1, "05-06 12:00", "05-06 12:50"),
        ("cid", 2, "05-07 10:00", "05-07 10:10"),
        ("dan", 1, "05-06 13:20", "05-06 13:25"),
        ("dan", 2, "05-07 11:05", "05-07 11:05"),
    ]
    # the order's lines come from its new counted completion
    assert query(incremental, """select product_id, quantity, message_id from analytics.order_items
                                 where order_id = 'O-cid-2'""") == [("P2", 2, "n13")]
    # the stored session's funnel row was rebuilt from its new events; Ann's person took Bea's
    # sessions (its last touch is the refund call on the second day)
    assert query(incremental, """select furthest_step, strftime(timezone('UTC', product_viewed_at), '%H:%M')
                                 from analytics.funnel_sessions
                                 where person_id = 'cid' and started_at < '2024-05-07'""") == [(1, "12:40")]
    assert query(incremental, """select strftime(timezone('UTC', first_touch_at), '%m-%d %H:%M'),
                                   strftime(timezone('UTC', last_touch_at), '%m-%d %H:%M'), session_count
                                 from analytics_intermediate.int_sessions_aggregated_to_persons
                                 where person_id = 'ann'""") == [("05-06 08:55", "05-07 10:05", 4)]
    # Fay's only change is her page's time (her session's messages are the same)
    assert query(incremental, """select strftime(timezone('UTC', first_touch_at), '%m-%d %H:%M')
                                 from analytics_intermediate.int_sessions_aggregated_to_persons
                                 where person_id = 'fay'""") == [("05-06 13:58",)]
    # the re-delivered earlier copies count: the orders and their lines moved
    assert query(incremental, """select distinct order_id, strftime(timezone('UTC', placed_at), '%H:%M')
                                 from analytics.order_items where order_id in ('O-ann-1', 'O-dan-1')
                                 order by 1""") == [("O-ann-1", "08:55"), ("O-dan-1", "13:25")]


def test_a_copy_with_other_content_at_the_same_time_rebuilds_its_rows(builds):
    """Same message id, person and time, other content: the incremental build shows the new
    copy's campaign, url and products (as a full refresh does), not the stored ones."""
    incremental, _ = builds
    assert query(incremental, """select landing_page_path, utm_source, utm_medium, utm_campaign, channel
                                 from analytics.sessions where person_id = 'gus'""") == [
        ("/g2", "google", "cpc", "spring", "paid_search")]
    assert query(incremental, """select first_touch_source, first_touch_campaign from analytics.users
                                 where person_id = 'gus'""") == [("google", "spring")]
    assert query(incremental, """select product_id, quantity, message_id from analytics.order_items
                                 where order_id = 'O-gus-1'""") == [("P3", 3, "m17")]


def test_incremental_build_equals_full_refresh_in_every_relation(builds):
    incremental, full = builds
    assert_builds_equal(incremental, full, {"analytics.orders", "analytics.users", "analytics.sessions",
                                            "analytics_intermediate.int_events_mapped_to_persons"})


def test_a_table_built_before_a_stored_column_existed_fails_with_the_fix(builds, tmp_path):
    """An incremental table built by an older version of the project lacks a column its
    incremental build reads (the change feed's changed_by_run; a stored source column): the
    run fails on that model with the command that fixes it, not with DuckDB's bare binder
    error, and the fix works."""
    import duckdb

    _, full = builds
    db = copy_db(full, tmp_path / "older.duckdb")
    con = duckdb.connect(str(db))
    con.execute("ALTER TABLE analytics.sessions DROP COLUMN changed_by_run")
    con.execute("ALTER TABLE analytics.order_items DROP COLUMN message_id")
    con.close()
    failed = run_dbt(["run", "--select", "sessions", "order_items", *VARS], db, tmp_path, check=False)
    assert failed.returncode != 0
    for model, column in (("sessions", "changed_by_run"), ("order_items", "message_id")):
        assert f"has no column {column}" in failed.output, failed.output
        assert f"dbt run --full-refresh --select {model}+" in failed.output, failed.output
    # the whole project first: other models' bookkeeping (fingerprints) may follow an older formula
    assert "Rebuild the project once after an upgrade: dbt run --full-refresh (" in failed.output, failed.output
    run_dbt(["run", "--full-refresh", "--select", "sessions+", "order_items+", *VARS], db, tmp_path)
    assert run_dbt(["run", *VARS], db, tmp_path).returncode == 0
