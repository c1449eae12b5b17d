"""The incremental marts (users, user_order_totals, int_sessions_attributed_to_orders,
active_persons_daily) equal a full refresh when a second load changes old rows.

A small archive in two loads: the first load is built, the second load brings
- an identify that merges two persons with orders (a visitor's anonymous id, anon-ida, with a
  page and an order, identifies as Hal): the anonymous person is gone, Hal's takes its
  messages, its session (which keeps its id) and its order;
- a late identification of a new user (Ned) on a shared device (the kiosk, over the cap of 2
  user ids): the kiosk's anonymous messages after it move from Lee to Ned, and Lee, who sends
  nothing new, only LOSES messages;
- a cancel and, later, a refund of an order of the first load (Ola's), sent by the staff's
  user id: Ola's orders change, her messages do not;
- two more users on Vic's device: it becomes a shared device, Vic keeps his messages and
  only his used_shared_device changes;
- a refund in another currency than its order's (Pia's EUR order refunded in USD: an orphan
  refund) and a USD order of the same person (she now has two currencies);
- a late paid-search page the day before Ray's order (which was placed in a direct session):
  the order's attributed touch appears although the order did not change;
- 21 events of Sam in one minute: Sam becomes a bot, his sessions leave the sessions mart, and
  his order keeps no session although neither the order nor any session of his was written;
- a late page of a new person (Quin) on a day when only Una was active: it gains one person;
- an identify of Una with a new plan: a new message outside any session, her only change;
then the incremental build must equal a --full-refresh build, every table and view.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dbt_helpers import copy_db, load_archive, query, run_dbt
from test_dbt_incremental_paths import assert_builds_equal, message, order, write_archive

pytestmark = pytest.mark.slow
VARS = ["--vars", "{identity_max_user_ids_per_anonymous_id: 2}"]
DAY = "2024-06-03"


def at(clock: str, day: str = DAY) -> str:
    return f"{day}T{clock}"


FIRST = [
    # Hal and an anonymous visitor: two persons with an order each
    message("identify", "h01", at("09:00:00"), anonymousId="anon-hal", userId="hal"),
    order("h02", at("09:05:00"), "hal", "O-hal-1", 10.0),
    # an hour after Hal's session: after the merge the visitor's session stays apart (same id)
    message("page", "i02", at("10:11:00"), anonymousId="anon-ida", properties={"path": "/i"}),
    message("track", "i03", at("10:15:00"), anonymousId="anon-ida", event="Order Completed",
            properties={"order_id": "O-ida-1", "total": 15.0, "currency": "USD"}),
    # the kiosk: three users (over the cap of 2), so its anonymous messages go by time
    message("identify", "k01", at("10:00:00"), anonymousId="kiosk", userId="kim"),
    message("page", "k02", at("10:05:00"), anonymousId="kiosk", properties={"path": "/k"}),
    message("identify", "k03", at("11:00:00"), anonymousId="kiosk", userId="lee"),
    message("page", "k04", at("11:05:00"), anonymousId="kiosk", properties={"path": "/l1"}),
    # not a page: Lee's sessions (first and last touch) stay as they are when he loses it
    message("group", "k05", at("11:40:00"), anonymousId="kiosk", groupId="g-1"),
    message("identify", "k06", at("12:00:00"), anonymousId="kiosk", userId="max"),
    message("page", "k07", at("12:05:00"), anonymousId="kiosk", properties={"path": "/m"}),
    # Ola's order, cancelled and refunded in the second load
    order("o01", at("13:00:00"), "ola", "O-ola-1", 40.0),
    # Pia's EUR order
    {**order("p01", at("13:30:00"), "pia", "O-pia-1", 25.0),
     "properties": {"order_id": "O-pia-1", "total": 25.0, "currency": "EUR"}},
    # Ray: an order in a direct session
    message("page", "r01", at("14:00:00"), userId="ray", properties={"path": "/r"}),
    order("r02", at("14:05:00"), "ray", "O-ray-1", 30.0),
    # Sam: an order in a session (he is no bot yet)
    message("page", "s01", at("15:00:00"), userId="sam", properties={"path": "/s"}),
    order("s02", at("15:05:00"), "sam", "O-sam-1", 35.0),
    message("page", "u01", at("16:00:00", "2024-06-01"), userId="una", properties={"path": "/u"}),
    # Vic's device, his alone so far
    message("identify", "v01", at("17:00:00"), anonymousId="anon-v", userId="vic"),
    message("page", "v02", at("17:05:00"), anonymousId="anon-v", properties={"path": "/v"}),
]
SECOND = [
    # the visitor identifies as Hal: Hal's person (seen first) takes the visitor's
    message("identify", "h03", at("09:00:00", "2024-06-04"), anonymousId="anon-ida", userId="hal"),
    # Ned identified late on the kiosk: k05 (11:40) moves from Lee to Ned
    message("identify", "k08", at("11:30:00"), anonymousId="kiosk", userId="ned"),
    # sent by the shop's staff (another user id): only Ola's order changes, not her messages
    message("track", "o02", at("10:00:00", "2024-06-04"), userId="ops", event="Order Cancelled",
            properties={"order_id": "O-ola-1"}),
    message("track", "o03", at("10:00:00", "2024-06-05"), userId="ops", event="Order Refunded",
            properties={"order_id": "O-ola-1", "total": 40.0, "currency": "USD"}),
    message("track", "p02", at("10:00:00", "2024-06-04"), userId="pia", event="Order Refunded",
            properties={"order_id": "O-pia-1", "total": 5.0, "currency": "USD"}),
    order("p03", at("11:00:00", "2024-06-04"), "pia", "O-pia-2", 12.0),
    message("page", "r03", at("14:00:00", "2024-06-02"), userId="ray", properties={
        "path": "/r", "url": "https://shop.example/r?utm_source=google&utm_medium=cpc"}),
    *[message("track", f"s1{n:02d}", at(f"12:00:{n:02d}", "2024-06-04"), userId="sam",
              event="Product Viewed", properties={"product_id": "P1"}) for n in range(21)],
    message("page", "q01", at("17:00:00", "2024-06-01"), userId="quin", properties={"path": "/q"}),
    # Una's new plan: a message outside any session, her only change
    message("identify", "u02", at("09:00:00", "2024-06-04"), userId="una", traits={"plan": "pro"}),
    # two more users on Vic's device: a shared device now, Vic's messages stay his
    message("identify", "v03", at("09:00:00", "2024-06-04"), anonymousId="anon-v", userId="wes"),
    message("identify", "v04", at("10:00:00", "2024-06-04"), anonymousId="anon-v", userId="xia"),
]


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(after the first load, incremental, full refresh) databases."""
    work = tmp_path_factory.mktemp("dbt_incremental_marts")
    db = work / "warehouse.duckdb"
    load_archive(write_archive(work / "first", 1717372800000, FIRST), db)
    run_dbt(["seed"], db, work)
    run_dbt(["run", *VARS], db, work)
    before = copy_db(db, work / "before.duckdb")
    load_archive(write_archive(work / "second", 1717459200000, SECOND), db)
    run_dbt(["run", *VARS], db, work)
    incremental = copy_db(db, work / "incremental.duckdb")
    run_dbt(["run", "--full-refresh", *VARS], db, work)
    return before, incremental, db


def test_the_second_load_changes_the_old_rows(builds):
    """The scenario happened (else the equality below would prove nothing)."""
    before, incremental, _ = builds
    users = """select person_id, message_count, order_count from analytics.users
               where person_id in ('hal', 'anon-ida', 'lee', 'ned', 'quin') order by 1"""
    assert query(before, users) == [("anon-ida", 2, 1), ("hal", 2, 1), ("lee", 3, 0)]
    # Hal took the visitor's messages and order; Lee lost k05 to Ned
    assert query(incremental, users) == [("hal", 5, 2), ("lee", 2, 0), ("ned", 2, 0), ("quin", 1, 0)]
    shared = "select used_shared_device, message_count from analytics.users where person_id = 'vic'"
    assert (query(before, shared), query(incremental, shared)) == ([(False, 2)], [(True, 2)])
    una = "select plan, message_count from analytics.users where person_id = 'una'"
    assert (query(before, una), query(incremental, una)) == ([(None, 1)], [("pro", 2)])
    ola = "select order_count, cancelled_order_count from analytics.users where person_id = 'ola'"
    assert (query(before, ola), query(incremental, ola)) == ([(1, 0)], [(0, 1)])
    assert query(incremental, """select message_id from analytics_intermediate.int_events_mapped_to_persons
                                 where person_id = 'ned' order by 1""") == [("k05",), ("k08",)]
    assert query(incremental, """select order_id, status, refund_count, net_total from analytics.orders
                                 where order_id in ('O-ola-1', 'O-pia-1') order by 1""") == [
        ("O-ola-1", "cancelled", 1, 0), ("O-pia-1", "completed", 0, 25)]
    assert query(incremental, """select order_id, reason from analytics.orphan_refunds""") == [
        ("O-pia-1", "currency_mismatch")]
    totals = """select currency, order_count, net_total, is_only_currency from analytics.user_order_totals
                where person_id = 'pia' order by 1"""
    assert query(before, totals) == [("EUR", 1, 25, True)]
    assert query(incremental, totals) == [("EUR", 1, 25, False), ("USD", 1, 12, False)]
    touch = """select o.order_id, o.attributed_channel, o.session_id is not null
               from analytics.orders as o where o.order_id in ('O-ray-1', 'O-sam-1') order by 1"""
    assert query(before, touch) == [("O-ray-1", None, True), ("O-sam-1", None, True)]
    assert query(incremental, touch) == [("O-ray-1", "paid_search", True), ("O-sam-1", None, False)]
    day = "select daily_active_persons from analytics.active_persons_daily where activity_date = '2024-06-01'"
    assert (query(before, day), query(incremental, day)) == ([(1,)], [(2,)])


def test_incremental_marts_equal_a_full_refresh_in_every_relation(builds):
    _, incremental, full = builds
    assert_builds_equal(incremental, full, {"analytics.users", "analytics.user_order_totals",
                                            "analytics.active_persons_daily",
                                            "analytics_intermediate.int_sessions_attributed_to_orders"})
